"""The fault engine: active faults and the small named predicates the gateway consults.

A ``Fault`` is one named scenario with its own knobs and counters. The engine holds any
number of them at once, so two faults combine without subclassing the gateway
(``gw.faults.add("order_reject", nth=2)`` next to ``gw.faults.add("no_fill")``), and they
can be added and cleared while the gateway runs. ``PaperGateway.set_scenario`` is the
one-fault shorthand: it clears the engine and adds one.

Each question the gateway asks ("is this stream silent now?", "is this order rejected?")
is a table from scenario to predicate; the engine answers it over every active fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .scenarios import DEFAULT_PARAMS, Scenario, ScenarioParams, parse_scenario


class _Inst(Protocol):
    con_id: int


class _Stream(Protocol):
    first_sent: float | None
    inst: _Inst


@dataclass(slots=True)
class Fault:
    """One active fault: its scenario, knobs and the counters its triggers use."""

    scenario: Scenario
    params: ScenarioParams
    t0: float = field(default_factory=time.monotonic)
    new_orders: int = 0
    """New orders seen since the fault was added (``nth`` counts these)."""
    fired: bool = False
    """One-shot faults (disconnect, connectivity loss, refusal on an order step) fired."""
    step_counts: dict[str, int] = field(default_factory=dict)
    refuse_until: float = 0.0

    def applies_now(self) -> bool:
        """True when an order fault applies to the order being placed now: every order,
        or only the ``nth`` new one."""
        return self.params.nth == 0 or self.new_orders == self.params.nth

    def step_fires(self, step: str) -> bool:
        """Count an order step; True when it is the ``disconnect_on`` step that fires this
        fault (``step`` = its first occurrence, ``step:n`` = the n-th)."""
        n = self.step_counts[step] = self.step_counts.get(step, 0) + 1
        want = self.params.disconnect_on
        if not want or self.fired:
            return False
        name, _, count = want.partition(":")
        return name == step and n == (int(count) if count else 1)


# --- predicates, one table per question -------------------------------------------------------


def _never_ticks(f: Fault, sub: _Stream, now: float) -> bool:
    return f.params.con_id in (0, sub.inst.con_id)


def _always(f: Fault, sub: _Stream, now: float) -> bool:
    return True


def _stale(f: Fault, sub: _Stream, now: float) -> bool:
    return sub.first_sent is not None and now - sub.first_sent >= f.params.stale_after


SILENCES_STREAM: dict[Scenario, Callable[[Fault, _Stream, float], bool]] = {
    Scenario.NEVER_TICKS: _never_ticks,
    Scenario.STALE_STREAM: _stale,
    Scenario.FARM_DOWN: _always,
}
"""Faults that stop a running market-data stream (and history updates) from ticking."""

ORDER_FAULTS = (Scenario.ORDER_REJECT, Scenario.NO_FILL, Scenario.PARTIAL_FILL)
"""Faults that mark individual orders (all, or the ``nth``) when they are placed."""


class FaultEngine:
    """The set of active faults and the predicates over them."""

    def __init__(self) -> None:
        self.active: dict[Scenario, Fault] = {}

    # --- run-time control --------------------------------------------------------------------
    def add(self, scenario: str | Scenario, **params: Any) -> Fault:
        """Activate a fault (replacing one of the same name) with its knobs."""
        scen = scenario if isinstance(scenario, Scenario) else parse_scenario(scenario)
        base = DEFAULT_PARAMS.get(scen, ScenarioParams())
        fault = Fault(scen, base.with_overrides(**params))
        if scen == Scenario.REFUSE_CONNECTIONS and not fault.params.disconnect_on:
            fault.refuse_until = fault.t0 + fault.params.outage_seconds
        if scen != Scenario.HEALTHY:
            self.active[scen] = fault
        return fault

    def clear(self, scenario: str | Scenario | None = None) -> None:
        """Deactivate one fault, or all of them."""
        if scenario is None:
            self.active.clear()
            return
        scen = scenario if isinstance(scenario, Scenario) else parse_scenario(scenario)
        self.active.pop(scen, None)

    def get(self, scenario: Scenario) -> Fault | None:
        """The active fault of that name, if any."""
        return self.active.get(scenario)

    def has(self, scenario: Scenario) -> bool:
        """True while that fault is active."""
        return scenario in self.active

    # --- predicates --------------------------------------------------------------------------
    def stream_silent(self, sub: _Stream, now: float | None = None) -> bool:
        """True when a fault keeps this stream from sending its next update."""
        t = time.monotonic() if now is None else now
        return any(
            pred(f, sub, t)
            for scen, f in self.active.items()
            if (pred := SILENCES_STREAM.get(scen)) is not None
        )

    def new_order(self) -> frozenset[Scenario]:
        """Count a new order for every order fault; return those that apply to it."""
        hit = set()
        for scen in ORDER_FAULTS:
            f = self.active.get(scen)
            if f is not None:
                f.new_orders += 1
                if f.applies_now():
                    hit.add(scen)
        return frozenset(hit)

    def commission_delay(self) -> float:
        """Seconds to hold a commission report back (0 now, negative never)."""
        f = self.active.get(Scenario.COMMISSION_LATE)
        return f.params.commission_delay if f is not None else 0.0

    def partial_ratio(self) -> float:
        """The share of an order a partial-fill fault lets fill."""
        f = self.active.get(Scenario.PARTIAL_FILL)
        return f.params.partial_ratio if f is not None else 1.0

    def refusing(self, now: float | None = None) -> bool:
        """True while a refuse_connections fault is in its outage window."""
        t = time.monotonic() if now is None else now
        f = self.active.get(Scenario.REFUSE_CONNECTIONS)
        return f is not None and t < f.refuse_until

    def market_data_mode(self, requested: int, subscribed: bool) -> tuple[str, bool, bool]:
        """How a subscription is served under the active faults:
        (refusal 'not_subscribed' / 'delayed_warning' / '', delayed, frozen)."""
        refusal, delayed = "", False
        if not subscribed or self.has(Scenario.NOT_SUBSCRIBED):
            if requested in (1, 2):
                return "not_subscribed", False, False
            delayed = True
        elif self.has(Scenario.DELAYED_ONLY):
            if requested in (1, 2):
                refusal = "delayed_warning"
            delayed = True
        return refusal, delayed, self.market_closed()

    def market_closed(self) -> bool:
        """True while the market_closed fault holds every market closed."""
        return self.has(Scenario.MARKET_CLOSED)

    def live_account(self) -> bool:
        """True when the gateway must present a live (U-prefixed) account."""
        return self.has(Scenario.LIVE_ACCOUNT)
