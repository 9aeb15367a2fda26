"""Typed results shared by the phases, the runner, the store and every report.

Everything a run observes ends up in these plain dataclasses, so the console
summary, the JSON report, the JUnit file, the notification text and the store
all describe the same facts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """What a phase or a run concluded. Say PASS only for what was observed."""

    PASS = "PASS"
    """Every requested check observed what it needed."""
    FAIL = "FAIL"
    """Something was observed wrong (an IB error, delayed data, a position not flat)."""
    STALLED = "STALLED"
    """The broker never answered within the deadline (no ticks, no fill)."""
    REFUSED = "REFUSED"
    """A safety guard stopped the run before any order (live account, live port, limits)."""
    BAD_INPUT = "BAD_INPUT"
    """Configuration or arguments are wrong; nothing was sent."""
    ABORTED = "ABORTED"
    """The run was interrupted (Ctrl-C, killed process) before it could conclude."""
    SKIPPED = "SKIPPED"
    """The phase was not run (not requested, or an earlier phase made it pointless)."""

    @property
    def exit_code(self) -> int:
        """The process exit code the CLI uses for this verdict."""
        return _EXIT_CODES[self]

    @property
    def mark(self) -> str:
        """A one-character mark for people scanning a phone or a terminal."""
        return "✅" if self in (Verdict.PASS, Verdict.SKIPPED) else "🚨"


_EXIT_CODES = {
    Verdict.PASS: 0,
    Verdict.SKIPPED: 0,
    Verdict.FAIL: 1,
    Verdict.ABORTED: 1,
    Verdict.STALLED: 2,
    Verdict.REFUSED: 3,
    Verdict.BAD_INPUT: 4,
}

# Which verdict wins when phases disagree: a refusal explains everything after it,
# a failure is more specific than a stall, and SKIPPED never hides anything.
_SEVERITY = [
    Verdict.SKIPPED,
    Verdict.PASS,
    Verdict.STALLED,
    Verdict.ABORTED,
    Verdict.FAIL,
    Verdict.REFUSED,
    Verdict.BAD_INPUT,
]


def severity(verdict: Verdict) -> int:
    """Rank of a verdict when phases disagree (higher wins; see ``_SEVERITY``)."""
    return _SEVERITY.index(verdict)


def worst(verdicts: list[Verdict]) -> Verdict:
    """Combine phase verdicts into the run verdict (the most severe one wins)."""
    if not verdicts:
        return Verdict.SKIPPED
    return max(verdicts, key=severity)


class Phase(StrEnum):
    """The phases, in the order a run executes them."""

    HEALTH = "health"
    """Connect, check server version, accounts (paper guard), clock skew and farm notices."""
    TICKS = "ticks"
    """Qualify a contract, subscribe, and time when each ticker field becomes real."""
    ROUND_TRIP = "round_trip"
    """Buy then sell one contract on a paper account and measure the cost (opt-in)."""
    STACK = "stack"
    """Judge what the user's own stack showed (when one is declared; see harness_lib.stack)."""
    CLEANUP = "cleanup"
    """Cancel harness orders, flatten harness positions, unsubscribe, disconnect (always)."""


def finite(x: Any) -> float | None:
    """The value as a float, or None for None, NaN, infinities, IB's UNSET_DOUBLE
    (1.797e308) and anything that is not a number. Stored and recorded values go through
    this one rule, so 'unknown' is always None."""
    if x is None:
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    # NaN fails both comparisons; inf and UNSET_DOUBLE fail the bounds.
    return value if -1e300 < value < 1e300 else None


def utcnow() -> datetime:
    """Timezone-aware wall-clock time; every stored timestamp is UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class Checkpoint:
    """A named moment in a phase; the last one reached tells where a run stopped."""

    name: str
    t_mono: float
    t_wall: datetime
    detail: str = ""


@dataclass(slots=True)
class IBMessage:
    """An error, warning or notice as IB sent it (msg 4), with when it arrived."""

    code: int
    message: str
    req_id: int = -1
    t_wall: datetime = field(default_factory=utcnow)

    def __str__(self) -> str:
        return f"IB {self.code}: {self.message}"


@dataclass(slots=True)
class PhaseResult:
    """The typed result of one phase: verdict, timing, checkpoints, metrics, evidence."""

    phase: Phase
    verdict: Verdict
    reason: str = ""
    started_at: datetime = field(default_factory=utcnow)
    duration_s: float = 0.0
    checkpoints: list[Checkpoint] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    errors: list[IBMessage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the phase passed or was not needed."""
        return self.verdict in (Verdict.PASS, Verdict.SKIPPED)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO strings, NaN as None)."""
        return _jsonable(dataclasses.asdict(self))


@dataclass(slots=True)
class Target:
    """What a run talked to. Every report names it, so a simulator run is never mistaken
    for a gateway run."""

    host: str
    port: int
    client_id: int
    simulated: bool = False
    scenario: str | None = None
    account: str | None = None
    accounts: list[str] = field(default_factory=list)
    server_version: int | None = None

    @property
    def label(self) -> str:
        """One line for consoles and notifications."""
        where = f"{self.host}:{self.port}"
        acct = f" account {self.account}" if self.account else ""
        if self.simulated:
            scen = f" scenario {self.scenario}" if self.scenario else ""
            return f"SIMULATOR{scen} at {where}{acct}"
        return f"gateway {where}{acct}"

    @property
    def key(self) -> str:
        """What makes two runs 'the same target' for notify-on-change: the simulator is one
        target whatever port it got; a gateway is its host, port and account."""
        if self.simulated:
            return "simulator"
        return f"{self.host}:{self.port}/{self.account or ''}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dataclasses.asdict(self)
        d["label"] = self.label
        return d


@dataclass(slots=True)
class RunReport:
    """Everything a run concluded. Rendered to the console, JSON, JUnit and notifications."""

    run_id: str
    target: Target
    contract: str
    phases: list[PhaseResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    store_path: str | None = None
    report_path: str | None = None

    @property
    def verdict(self) -> Verdict:
        """The run's verdict: the most severe of its phases' verdicts."""
        return worst([p.verdict for p in self.phases])

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input."""
        return self.verdict.exit_code

    @property
    def failing_phase(self) -> PhaseResult | None:
        """The first phase whose verdict equals the run's verdict, if the run did not pass."""
        v = self.verdict
        if v in (Verdict.PASS, Verdict.SKIPPED):
            return None
        return next((p for p in self.phases if p.verdict == v), None)

    @property
    def reason(self) -> str:
        """Why the run got its verdict, in one line."""
        p = self.failing_phase
        if p is None:
            return "all requested phases passed"
        return f"{p.phase}: {p.reason}"

    def phase(self, name: Phase | str) -> PhaseResult | None:
        """The result of one phase, or None if it did not run."""
        return next((p for p in self.phases if p.phase == name), None)

    def metric(self, name: str) -> Any:
        """The first phase metric with this name (e.g. ``first_bid_s``, ``total_cost``)."""
        for p in self.phases:
            if name in p.metrics:
                return p.metrics[name]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by the JSON report (see ``report.SCHEMA``)."""
        return _jsonable(
            {
                "run_id": self.run_id,
                "verdict": str(self.verdict),
                "exit_code": self.exit_code,
                "reason": self.reason,
                "target": self.target.to_dict(),
                "contract": self.contract,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "store_path": self.store_path,
                "phases": [p.to_dict() for p in self.phases],
            }
        )


def _jsonable(obj: Any) -> Any:
    """Turn dataclass dicts into JSON-safe values: ISO datetimes, None for NaN/inf."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, StrEnum):
        return str(obj)
    return obj
