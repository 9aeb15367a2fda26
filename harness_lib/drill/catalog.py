"""The drills: each a fault on a running simulator and the reactions the stack owes it.

A drill is declared as data: how to inject the fault and how to recover (control-channel
calls), which ground-truth event marks the fault and the recovery (latencies are measured from
the simulator's own time stamps), and the reactions with their default deadlines. Users adjust
deadlines with a drill config (``[deadlines]`` for every drill, ``[drills.NAME]`` for one) or
``--deadline [DRILL.]REACTION=SECONDS``; see :func:`apply_deadlines`.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DRILLS",
    "REACTIONS",
    "Action",
    "Drill",
    "DrillConfigError",
    "Reaction",
    "apply_deadlines",
    "load_drill_config",
    "select",
]

REACTIONS: dict[str, str] = {
    "leaves_live": "the data-mode flag leaves live within {d} of the fault",
    "returns_live": "the data-mode flag returns to live, with a real bid and ask, within {d} of "
    "recovery",
    "reconnected": "the stack reconnects to the gateway within {d} of the drop",
    "resubscribed": "the stack requests its market data again (a new reqMktData at the "
    "gateway) within {d} of {a}",
    "no_duplicates": "no quote or fill is shown twice (the same message within {w})",
    "position_matches": "the position shown equals the broker's within {d} of recovery",
    "no_position_from_reject": "a rejected order never shows as a position",
}
"""Every reaction a drill can declare, with the sentence `harness drill --list` prints."""

DUPLICATE_WINDOW_S = 0.5
"""Two identical messages from one endpoint this close together are one message shown twice
(a double subscription publishes both in the same event-loop turn, milliseconds apart; a
deliberate re-publish of unchanged state is never that fast, as every drill holds its fault at
least ``MIN_HOLD_S``)."""

MIN_HOLD_S = 1.0
"""A fault is held at least this long before recovery, however quickly the stack reacted."""

SETTLE_S = 2.0
"""After the last recovery reaction, the stack is watched this much longer for duplicates."""


@dataclass(frozen=True, slots=True)
class Action:
    """One control-channel call: ``POST /faults`` with a body, ``DELETE /faults/X``, ..."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    """One reaction a drill expects, with its deadline in seconds (None: no deadline)."""

    name: str
    deadline: float | None = None
    after: str = "recovery"
    """What the latency is measured from: 'fault' or 'recovery'."""

    def describe(self) -> str:
        """The sentence, with its deadline."""
        d = "-" if self.deadline is None else f"{self.deadline:g} s"
        a = "the fault" if self.after == "fault" else "recovery"
        return REACTIONS[self.name].format(d=d, w=f"{DUPLICATE_WINDOW_S:g} s", a=a)


@dataclass(frozen=True, slots=True)
class Drill:
    """A named fault, how to cause and end it, and what the stack must do."""

    name: str
    text: str
    inject: tuple[Action, ...]
    fault_event: tuple[str, str]
    """(event, scenario) in the simulator's ground truth that marks the fault's moment."""
    recover: tuple[Action, ...]
    recovery_event: tuple[str, str] | None
    """The ground-truth event that marks recovery; None = the fault's own moment (a drop
    ends at once: the simulator takes the reconnect)."""
    reactions: tuple[Reaction, ...]
    transient: bool = False
    """The fault state lasts only until the stack reconnects: a polled endpoint can miss it."""
    order: Mapping[str, Any] | None = None
    """An order the drill places on the simulator once the fault holds (action, quantity)."""

    def reaction(self, name: str) -> Reaction | None:
        """The drill's reaction of that name, if it declares one."""
        return next((r for r in self.reactions if r.name == name), None)


def _post(name: str, **params: Any) -> Action:
    return Action("POST", "/faults", {"name": name, "params": params})


def _clear(name: str) -> Action:
    return Action("DELETE", f"/faults/{name}")


_LEAVE = Reaction("leaves_live", 5.0, "fault")
_RETURN = Reaction("returns_live", 10.0)
_NODUP = Reaction("no_duplicates", None, "fault")
_POS = Reaction("position_matches", 5.0)
# A heartbeat must wait for silence before it can tell, then recovers by resubscribing.
_STALE_LEAVE = Reaction("leaves_live", 8.0, "fault")
_STALE_RESUB = Reaction("resubscribed", 8.0, "fault")
_OUTAGE = 3600.0  # held until the drill recovers it: the drill, not a timer, ends the outage

DRILLS: dict[str, Drill] = {
    d.name: d
    for d in (
        Drill(
            "disconnect",
            "the gateway drops every connection; it takes reconnects at once",
            (Action("POST", "/disconnect"),),
            ("dropped", "disconnect"),
            (),
            None,
            (_LEAVE, Reaction("reconnected", 5.0), _RETURN, _NODUP, _POS),
            transient=True,
        ),
        Drill(
            "lost_1102",
            "1100 connectivity lost, then 1102 restored with data maintained",
            (_post("connectivity_lost", disconnect_after=0.0, outage_seconds=_OUTAGE),),
            ("fired", "connectivity_lost"),
            (_clear("connectivity_lost"),),
            ("restored", "connectivity_lost"),
            (_LEAVE, _RETURN, _NODUP, _POS),
        ),
        Drill(
            "lost_1101",
            "1100 connectivity lost, then 1101 restored with data lost: the stack must resubscribe",
            (
                _post(
                    "connectivity_lost",
                    disconnect_after=0.0,
                    outage_seconds=_OUTAGE,
                    data_lost=True,
                ),
            ),
            ("fired", "connectivity_lost"),
            (_clear("connectivity_lost"),),
            ("restored", "connectivity_lost"),
            (_LEAVE, Reaction("resubscribed", 5.0), _RETURN, _NODUP, _POS),
        ),
        Drill(
            "stale_stream",
            "every running stream stops ticking (no notice): the stack's heartbeat must notice "
            "and resubscribe; then ticks resume",
            (_post("stale_stream", stale_after=0.0),),
            ("added", "stale_stream"),
            (_clear("stale_stream"),),
            ("cleared", "stale_stream"),
            (_STALE_LEAVE, _STALE_RESUB, _RETURN, _NODUP),
        ),
        Drill(
            "no_ticks",
            "the stack's own contract stops ticking (others tick on): the heartbeat must notice "
            "and resubscribe; then it ticks again",
            (Action("POST", "/faults", {"name": "never_ticks", "params": {"symbol": "{symbol}"}}),),
            ("added", "never_ticks"),
            (_clear("never_ticks"),),
            ("cleared", "never_ticks"),
            (_STALE_LEAVE, _STALE_RESUB, _RETURN, _NODUP),
        ),
        Drill(
            "farm_down",
            "2103 market data farm and 2105 HMDS farm broken (no ticks), then 2104/2106 OK",
            (_post("farm_down"),),
            ("added", "farm_down"),
            (_clear("farm_down"),),
            ("cleared", "farm_down"),
            (_LEAVE, _RETURN, _NODUP),
        ),
        Drill(
            "order_rejected",
            "an order the harness places is rejected (201); the stack must not show a position",
            (_post("order_reject"),),
            ("added", "order_reject"),
            (_clear("order_reject"),),
            ("cleared", "order_reject"),
            (Reaction("no_position_from_reject", None, "fault"), _POS, _NODUP),
            order={"action": "BUY", "quantity": 1},
        ),
        Drill(
            "partial_fill",
            "an order the harness places fills only half; the stack must show the half",
            (_post("partial_fill", partial_ratio=0.5),),
            ("added", "partial_fill"),
            (_clear("partial_fill"),),
            ("cleared", "partial_fill"),
            (_POS, _NODUP),
            order={"action": "BUY", "quantity": 2},
        ),
    )
}


def select(names: list[str]) -> list[Drill]:
    """The named drills (all when none is named); unknown names raise ValueError."""
    if not names:
        return list(DRILLS.values())
    out = []
    for n in names:
        key = n.strip().lower().replace("-", "_")
        if key not in DRILLS:
            raise ValueError(f"unknown drill {n!r}; choose from: {', '.join(DRILLS)}")
        out.append(DRILLS[key])
    return out


class DrillConfigError(ValueError):
    """A drill config or --deadline that cannot be used; the message names the fix."""


def _seconds(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise DrillConfigError(f"{where} = {v!r} is not a positive number of seconds")
    return float(v)


def load_drill_config(path: Path) -> dict[str, dict[str, float]]:
    """A drill config TOML -> {drill name or '*': {reaction: seconds}}.

    ``[deadlines]`` applies to every drill, ``[drills.NAME]`` to one (it wins)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DrillConfigError(f"cannot read drill config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DrillConfigError(f"malformed drill config {path}: {exc}") from None
    unknown = sorted(set(doc) - {"deadlines", "drills"})
    if unknown:
        raise DrillConfigError(
            f"drill config {path}: unknown table {unknown[0]!r}; use [deadlines] or [drills.NAME]"
        )
    out: dict[str, dict[str, float]] = {}
    tables = [("*", doc.get("deadlines", {})), *doc.get("drills", {}).items()]
    for drill, table in tables:
        if drill != "*" and drill not in DRILLS:
            raise DrillConfigError(
                f"drill config {path}: unknown drill {drill!r}; choose from: {', '.join(DRILLS)}"
            )
        if not isinstance(table, dict):
            raise DrillConfigError(f"drill config {path}: {drill} must be a table")
        for reaction, v in table.items():
            where = f"{'deadlines' if drill == '*' else 'drills.' + drill}.{reaction}"
            _known(reaction, where)
            out.setdefault(drill, {})[reaction] = _seconds(v, where)
    return out


def _known(reaction: str, where: str) -> None:
    if reaction not in REACTIONS:
        raise DrillConfigError(f"{where}: unknown reaction; choose from: {', '.join(REACTIONS)}")


def parse_deadline_flags(flags: list[str]) -> dict[str, dict[str, float]]:
    """``--deadline [DRILL.]REACTION=SECONDS`` flags -> the same shape as a drill config."""
    out: dict[str, dict[str, float]] = {}
    for flag in flags:
        key, sep, value = flag.partition("=")
        if not sep:
            raise DrillConfigError(f"--deadline {flag!r}: use [DRILL.]REACTION=SECONDS")
        drill, _, reaction = key.strip().rpartition(".")
        drill = drill or "*"
        if drill != "*" and drill not in DRILLS:
            raise DrillConfigError(f"--deadline {flag!r}: unknown drill {drill!r}")
        _known(reaction, f"--deadline {flag!r}")
        try:
            secs = float(value)
        except ValueError:
            secs = math.nan
        out.setdefault(drill, {})[reaction] = _seconds(secs, f"--deadline {key}")
    return out


def apply_deadlines(drill: Drill, *configs: Mapping[str, Mapping[str, float]]) -> Drill:
    """The drill with its deadlines overridden: later configs win, a drill's own table wins
    over ``*`` within one config."""
    over: dict[str, float] = {}
    for cfg in configs:
        over.update(cfg.get("*", {}))
        over.update(cfg.get(drill.name, {}))
    if not over:
        return drill
    reactions = tuple(
        replace(r, deadline=over[r.name]) if r.name in over and r.deadline is not None else r
        for r in drill.reactions
    )
    return replace(drill, reactions=reactions)
