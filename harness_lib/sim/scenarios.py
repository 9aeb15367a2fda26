"""Named failure scenarios the simulator reproduces, each documented in one line.

A scenario changes how the simulated gateway behaves; it never changes the protocol.
Pick one at start (``harness sim --scenario NAME``) or switch while running
(``PaperGateway.set_scenario``). Timing knobs live in ``ScenarioParams``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any


class Scenario(StrEnum):
    """The behaviours a live gateway has shown, reproduced on demand."""

    HEALTHY = "healthy"
    """Quotes tick every 250 ms after a 50 ms first-tick delay; orders fill at the far quote."""
    SLOW_FIRST_TICK = "slow_first_tick"
    """The first tick arrives only after ``first_tick_delay`` seconds (default 3 s)."""
    NEVER_TICKS = "never_ticks"
    """Subscriptions are accepted but no tick ever arrives (illiquid or dead feed)."""
    DELAYED_ONLY = "delayed_only"
    """No live permission: warning 10167, marketDataType 3 and delayed tick ids (66-76)."""
    NOT_SUBSCRIBED = "not_subscribed"
    """Market data requests get error 354 'Requested market data is not subscribed'."""
    MARKET_CLOSED = "market_closed"
    """The market is closed: one frozen quote (marketDataType 2), then nothing."""
    STALE_STREAM = "stale_stream"
    """Ticks flow normally, then stop after ``stale_after`` seconds (default 2 s)."""
    DISCONNECT = "disconnect"
    """Clients are dropped ``disconnect_after`` s after connecting, or at ``disconnect_on``."""
    CONNECTIVITY_LOST = "connectivity_lost"
    """1100 after ``disconnect_after`` s, no ticks, then 1102 (or 1101) after ``outage_seconds``."""
    ORDER_REJECT = "order_reject"
    """Every order is rejected with error 201."""
    PARTIAL_FILL = "partial_fill"
    """Orders for more than one unit fill only part of their quantity and rest."""
    NO_FILL = "no_fill"
    """Orders are accepted (Submitted) but never fill, even when marketable."""
    COMMISSION_LATE = "commission_late"
    """Commission reports arrive ``commission_delay`` s after the fill, or never if negative."""
    LIVE_ACCOUNT = "live_account"
    """The managed account is a live account (U-prefixed): the paper guard must refuse."""
    REFUSE_CONNECTIONS = "refuse_connections"
    """New connections are closed right after the handshake for ``outage_seconds``."""
    FARM_DOWN = "farm_down"
    """Data farms broken (2103 market data, 2105 HMDS), no ticks; clearing sends 2104/2106."""


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    """Timing and shape knobs; each scenario reads the ones it needs."""

    first_tick_delay: float = 0.05
    """Seconds from reqMktData to the first tick (healthy default: 50 ms)."""
    tick_interval: float = 0.25
    """Seconds between quote updates; IB batches top-of-book roughly every 250 ms. 0 = top rate."""
    stale_after: float = 2.0
    disconnect_after: float = 1.0
    disconnect_on: str = ""
    """Order step that fires the disconnect, connectivity_lost or refuse_connections fault
    instead of a timer: 'order_submitted', 'filled' or 'cancel', optionally ':n' for the
    n-th occurrence (e.g. 'order_submitted:2' = when the second order is accepted)."""
    nth: int = 0
    """Which new order order_reject, no_fill and partial_fill apply to; 0 = every order."""
    outage_seconds: float = 2.0
    data_lost: bool = False
    """connectivity_lost: restore with 1101 (data lost) instead of 1102 (data maintained)."""
    commission_delay: float = 2.0
    partial_ratio: float = 0.5
    fill_delay: float = 0.02
    """Seconds between accepting a marketable order and filling it."""
    burst: int = 1
    """Quote updates per tick interval (benchmarks raise it to reach the top rate)."""
    history_update_interval: float = 5.0
    """Seconds between keepUpToDate historical bar updates (IB sends one every 4-6 s)."""
    con_id: int = 0
    """never_ticks: silence only this contract's streams; 0 = every contract."""

    def with_overrides(self, **overrides: Any) -> ScenarioParams:
        """A copy with some knobs changed; unknown names raise ValueError with the valid ones."""
        valid = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - valid)
        if bad:
            raise ValueError(f"unknown scenario parameter(s) {bad}; valid: {sorted(valid)}")
        return replace(self, **overrides)


DEFAULT_PARAMS: dict[Scenario, ScenarioParams] = {
    Scenario.SLOW_FIRST_TICK: ScenarioParams(first_tick_delay=3.0),
}


def parse_scenario(name: str) -> Scenario:
    """Turn a user-given name into a Scenario, with a one-line error listing valid names."""
    try:
        return Scenario(name.strip().lower().replace("-", "_"))
    except ValueError:
        valid = ", ".join(s.value for s in Scenario)
        raise ValueError(f"unknown scenario {name!r}; choose one of: {valid}") from None


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) for every scenario, for `harness sim --list` and docs."""
    import inspect

    src = inspect.getsource(Scenario)
    out = []
    for s in Scenario:
        marker = f'{s.name} = "{s.value}"'
        after = src.split(marker, 1)[1].split('"""', 2)
        out.append((s.value, after[1].strip() if len(after) > 2 else ""))
    return out
