"""What the live feed shows at one moment: a typed, immutable :class:`Snapshot`, and the
live verdict, which is the phases' own verdict and never a second rule.

How a snapshot is judged (see :func:`live_verdict`):

* until the health phase concludes: STALLED, "connecting";
* a concluded phase that did not pass: the run's verdict and reason, exactly as
  :class:`~harness_lib.models.RunReport` states them for ``harness run``;
* a connection lost (or a session that crashed): FAIL;
* while the ticks phase still runs: STALLED, "waiting" (only the phase may say PASS);
* after the ticks phase passed: the ticks phase's own staleness rule
  (:func:`harness_lib.phases.ticks.stale_reason`) on every snapshot, else PASS.

With a stack declared, :func:`with_stack` then applies the stack phase's own checks
(``stream`` and ``quotes`` from :mod:`harness_lib.stack.checks`, judged by the same
:class:`~harness_lib.stack.monitor.StackMonitor` as ``harness run``): a broker that passes
still gives FAIL or STALLED when an endpoint does, and PASS only once every endpoint's
checks are decided and passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pandas as pd

from harness_lib.models import PhaseResult, RunReport, Verdict, worst
from harness_lib.phases.ticks import stale_reason
from harness_lib.quotes import QUOTE_FIELDS as FIELDS

__all__ = [
    "MESSAGE_COLUMNS",
    "TICK_COLUMNS",
    "Account",
    "FarmNotice",
    "HealthPanel",
    "SessionPhases",
    "Snapshot",
    "StackQuote",
    "checkpoints_frame",
    "live_verdict",
    "messages_frame",
    "ticks_frame",
    "with_stack",
]

TICK_COLUMNS: tuple[str, ...] = (
    "run_id", "seq", "con_id", "symbol", "field", "tick_type", "price", "size",
    "t_mono", "t_wall", "t_wall_epoch", "market_data_type",
)  # fmt: skip
"""Columns of :attr:`Snapshot.ticks`: the store's ticks columns, so charts take either."""

MESSAGE_COLUMNS: tuple[str, ...] = ("t_wall", "source", "kind", "code", "req_id", "message")
"""Columns of :attr:`Snapshot.messages` (IB messages and feed events, newest last)."""

_CHECKPOINT_COLUMNS = ("phase", "name", "t_mono", "t_wall", "detail")


class Account(NamedTuple):
    """A managed account as the health panel shows it: masked, and whether it is paper."""

    account: str
    paper: bool


class FarmNotice(NamedTuple):
    """A market-data farm notice (IB 2103-2158): whether it is good news, and its text."""

    code: int
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class HealthPanel:
    """What the health panel shows: the target, its accounts and farm notices, and the
    health phase's verdict (None until it concludes)."""

    target: str | None = None
    simulated: bool = False
    server_version: int | None = None
    accounts: tuple[Account, ...] = ()
    farms: tuple[FarmNotice, ...] = ()
    connect_s: float | None = None
    clock_skew_s: float | None = None
    verdict: Verdict | None = None
    reason: str = "not connected"


@dataclass(frozen=True, slots=True)
class SessionPhases:
    """The phases a live session ran: health, then ticks (None when it did not run)."""

    health: PhaseResult | None = None
    ticks: PhaseResult | None = None


@dataclass(frozen=True, slots=True)
class StackQuote:
    """One endpoint of the user's stack as the live view shows it beside the broker's quote.

    The numbers are what the endpoint's latest quote showed, None where it showed no real
    number (null, NaN, a placeholder) or nothing yet. ``matches`` is the quotes check's own
    judgement (:func:`harness_lib.stack.checks.judge_quote`) of that latest quote: real,
    live and within tolerance of a recent broker quote.
    """

    endpoint: str
    kind: str
    bid: float | None = None
    ask: float | None = None
    last: float | None = None
    mode: str | None = None
    """The data-mode flag as shown (None: not declared or not shown)."""
    mode_live: bool | None = None
    """Whether ``mode`` is one of the declared live values (None: no mode declared/shown)."""
    shown: str = ""
    """The latest quote as shown, e.g. ``bid null, ask 'NaN', mode 'live'`` ("": none yet)."""
    at: datetime | None = None
    """When (UTC) the latest quote arrived."""
    age_s: float | None = None
    matches: bool | None = None
    """The latest quote is real, live and matches the broker (None: no quote shown yet)."""
    why: str = ""
    """Why the latest quote does not match ("" when it does or none was shown)."""
    latency_s: float | None = None
    """Latest quote's moment minus the broker quote it matched."""
    connected: bool = False
    error: str | None = None
    """The watcher's last connection failure, or the latest message's parse error."""
    messages: int = 0
    verdict: Verdict | None = None
    """The endpoint's stack checks so far (stream, quotes): None while undecided."""
    reason: str = "waiting for the stack"


def with_stack(
    verdict: Verdict, reason: str, stack: Sequence[StackQuote], symbol: str | None
) -> tuple[Verdict, str]:
    """The live verdict once the stack is judged too (see the module docstring).

    A broker verdict that is not PASS stands (the broker path comes first). Otherwise the
    worst decided endpoint verdict wins, an undecided endpoint keeps it STALLED, and PASS
    says both the broker's and the stack's part.
    """
    if not stack or verdict != Verdict.PASS:
        return verdict, reason
    decided = [s for s in stack if s.verdict is not None]
    bad = worst([s.verdict for s in decided if s.verdict is not None]) if decided else None
    if bad is not None and bad not in (Verdict.PASS, Verdict.SKIPPED):
        first = next(s for s in decided if s.verdict == bad)
        return bad, f"stack: {first.reason}"
    waiting = [s for s in stack if s.verdict is None]
    if waiting:
        names = ", ".join(s.endpoint for s in waiting)
        return Verdict.STALLED, f"waiting for {names} to show {symbol or 'the'} bid/ask"
    lat = [f"{s.endpoint} {s.latency_s * 1000:.0f} ms" for s in stack if s.latency_s is not None]
    return verdict, f"{reason}; stack shows it" + (f" ({', '.join(lat)})" if lat else "")


def _empty_quote() -> dict[str, float]:
    return dict.fromkeys(FIELDS, math.nan)


def _no_times() -> dict[str, Any]:
    return dict.fromkeys(FIELDS)


@dataclass(frozen=True, eq=False, slots=True)
class Snapshot:
    """A consistent copy of the live view at ``taken_at``, safe to read from any thread.

    Mappings are keyed by the quote fields (:data:`harness_lib.quotes.QUOTE_FIELDS`).
    Frames are copies: a cell may change them without touching the feed.
    """

    verdict: Verdict = Verdict.SKIPPED
    """The live verdict (see the module docstring)."""
    reason: str = "not connected"
    """Why, in one line."""
    connected: bool = False
    state: str = "not connected"
    """connecting → subscribing → streaming, or failed / disconnected / closed."""
    target: str | None = None
    """The target's label (names the simulator when it is one)."""
    contract: str | None = None
    scenario: str | None = None
    """The embedded simulator's scenario, or None."""
    quote: Mapping[str, float] = field(default_factory=_empty_quote)
    """Each field's current value, nan until IB sends a real one (as ib_async's Ticker)."""
    market_data_type: int | None = None
    market_data: str | None = None
    """live / frozen / delayed / delayed-frozen, or None before IB says."""
    first_seconds: Mapping[str, float | None] = field(default_factory=_no_times)
    """Seconds from subscribing to each field's first real value (None: not yet)."""
    first_at: Mapping[str, datetime | None] = field(default_factory=_no_times)
    """When (UTC) each field's first real value arrived."""
    tick_count: int = 0
    last_tick_age_s: float | None = None
    ticks: pd.DataFrame = field(default_factory=lambda: ticks_frame([]))
    """The most recent ticks, :data:`TICK_COLUMNS` (what the live charts draw)."""
    messages: pd.DataFrame = field(default_factory=lambda: messages_frame([]))
    """IB messages and feed events, :data:`MESSAGE_COLUMNS`, newest last."""
    checkpoints: pd.DataFrame = field(default_factory=lambda: checkpoints_frame([]))
    health: HealthPanel = field(default_factory=HealthPanel)
    phases: SessionPhases = field(default_factory=SessionPhases)
    stale_after: float | None = None
    stack: tuple[StackQuote, ...] = ()
    """Each declared stack endpoint's latest quote and checks (empty: no stack declared)."""
    taken_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def exit_code(self) -> int:
        """The exit code a script reports for this snapshot's verdict."""
        return self.verdict.exit_code


def live_verdict(
    report: RunReport,
    *,
    state: str,
    problem: str,
    waited_s: float,
    tick_count: int,
    quiet_s: float | None,
    stale_after: float,
    quote: Mapping[str, float],
    market_data: str | None,
) -> tuple[Verdict, str]:
    """The live verdict of a session whose concluded phases are ``report.phases``.

    ``report`` holds the health and ticks results concluded so far (the ones still
    running are left out); its verdict and reason are the run's, as ``harness run`` says
    them. ``quiet_s`` is how long no tick arrived (None: none yet), ``waited_s`` how long
    the session has existed. Only a concluded ticks phase can make this PASS.
    """
    health = next((p for p in report.phases if p.phase == "health"), None)
    ticks = next((p for p in report.phases if p.phase == "ticks"), None)
    if health is None:
        return Verdict.STALLED, f"connecting to {report.target.label} ({waited_s:.1f} s)"
    if report.verdict not in (Verdict.PASS, Verdict.SKIPPED):
        return report.verdict, report.reason
    if state in ("disconnected", "failed"):
        return Verdict.FAIL, problem or "connection lost"
    if ticks is None:
        if tick_count == 0:
            return Verdict.STALLED, f"waiting for the first tick ({waited_s:.1f} s)"
        return Verdict.STALLED, f"waiting for the ticks phase to judge bid/ask ({waited_s:.1f} s)"
    if ticks.verdict != Verdict.PASS:
        return ticks.verdict, f"{ticks.phase}: {ticks.reason}"
    quiet = waited_s if quiet_s is None else quiet_s
    stale = stale_reason(quiet, stale_after, tick_count)
    if stale is not None:
        return Verdict.FAIL, f"{stale} (stale after {stale_after:g} s)"
    kind = market_data or "live"
    return (
        Verdict.PASS,
        f"bid {quote['bid']:g} / ask {quote['ask']:g} {kind}; last tick {quiet * 1000:.0f} ms ago",
    )


# ------------------------------------------------------------------------------ frames


def ticks_frame(rows: Sequence[Any]) -> pd.DataFrame:
    """Recorder TickRows as a frame with the store's ticks columns (what charts read)."""
    if not rows:
        return pd.DataFrame(columns=list(TICK_COLUMNS))
    cols = {
        "seq": [r.seq for r in rows],
        "con_id": [r.con_id for r in rows],
        "symbol": [r.symbol for r in rows],
        "field": [r.field for r in rows],
        "tick_type": [r.tick_type for r in rows],
        "price": [math.nan if r.price is None else r.price for r in rows],
        "size": [math.nan if r.size is None else r.size for r in rows],
        "t_mono": [r.t_mono for r in rows],
        "t_wall_epoch": [r.t_wall for r in rows],
        "market_data_type": [r.market_data_type for r in rows],
    }
    frame = pd.DataFrame(cols)
    frame.insert(0, "run_id", "live")
    frame["t_wall"] = pd.to_datetime(frame["t_wall_epoch"], unit="s", utc=True)
    return frame[list(TICK_COLUMNS)]


def checkpoints_frame(rows: Sequence[tuple[str, Any]]) -> pd.DataFrame:
    """Recorder (phase, Checkpoint) pairs as a frame: phase, name, t_mono, t_wall, detail."""
    frame = pd.DataFrame(
        [(phase, cp.name, cp.t_mono, cp.t_wall, cp.detail) for phase, cp in rows],
        columns=list(_CHECKPOINT_COLUMNS),
    )
    frame["t_wall"] = pd.to_datetime(frame["t_wall"], utc=True)
    return frame


def messages_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Log rows as a frame with :data:`MESSAGE_COLUMNS` (codes as nullable integers)."""
    frame = pd.DataFrame(list(rows), columns=list(MESSAGE_COLUMNS))
    frame["code"] = pd.to_numeric(frame["code"]).astype("Int64")
    frame["req_id"] = pd.to_numeric(frame["req_id"]).astype("Int64")
    return frame
