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
from typing import Annotated, Any, ClassVar


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
    def exit_code(self) -> ExitCode:
        """The process exit code the CLI uses for this verdict."""
        return _EXIT_CODES[self]

    @property
    def mark(self) -> str:
        """A one-character mark for people scanning a phone or a terminal."""
        return "✅" if self in (Verdict.PASS, Verdict.SKIPPED) else "🚨"


class JsonSchema(dict):
    """Extra JSON Schema keywords for a field, attached with ``Annotated[T, JsonSchema(...)]``.

    The report's JSON Schema is generated from these dataclasses (see
    :mod:`harness_lib.docschema`): types from the annotations, descriptions from the
    field and property docstrings, constraints from this marker."""


_EXIT_CODES = {
    Verdict.PASS: 0,
    Verdict.SKIPPED: 0,
    Verdict.FAIL: 1,
    Verdict.ABORTED: 1,
    Verdict.STALLED: 2,
    Verdict.REFUSED: 3,
    Verdict.BAD_INPUT: 4,
}

ExitCode = Annotated[int, JsonSchema(enum=sorted(set(_EXIT_CODES.values())))]
"""0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input (``Verdict.exit_code``)."""

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
    """A named moment reached inside a phase; the last one tells where a run stopped."""

    name: str
    """Checkpoint name, e.g. 'subscribed'."""
    t_mono: float
    """Monotonic clock reading in seconds; only differences between checkpoints of one run
    are meaningful."""
    t_wall: datetime
    """Wall-clock time the checkpoint was reached (ISO 8601, UTC)."""
    detail: str = ""
    """Free-form detail; may be empty."""


@dataclass(slots=True)
class IBMessage:
    """An error, warning or notice exactly as IB sent it (msg 4), with when it arrived."""

    code: int
    """IB error code, e.g. 354 (market data not subscribed) or 2104 (farm connection OK
    notice)."""
    message: str
    """IB's message text, unchanged."""
    req_id: int = -1
    """The request id the message refers to; -1 for connection-level messages."""
    t_wall: datetime = field(default_factory=utcnow)
    """When the message arrived (ISO 8601, UTC)."""

    def __str__(self) -> str:
        return f"IB {self.code}: {self.message}"


def _known_evidence() -> type:
    """The evidence keys phases are known to write, for the JSON Schema: the stack phase's
    (:class:`harness_lib.stack.checks.StackEvidence`). A function, so this module never
    imports the stack package (which imports this one); called when the schema is built."""
    from harness_lib.stack.checks import StackEvidence

    return StackEvidence


@dataclass(slots=True)
class PhaseResult:
    """The result of one phase: verdict, timing, checkpoints, metrics, evidence."""

    phase: Phase
    """Which phase: health, ticks, round_trip, stack or cleanup."""
    verdict: Verdict
    """What the phase concluded."""
    reason: str = ""
    """Why the phase got its verdict, in one line; may be empty on PASS."""
    started_at: datetime = field(default_factory=utcnow)
    """When the phase started (ISO 8601, UTC)."""
    duration_s: Annotated[float | None, JsonSchema(minimum=0)] = 0.0
    """How long the phase took, in seconds."""
    checkpoints: list[Checkpoint] = field(default_factory=list)
    """Checkpoints reached, in order."""
    metrics: Annotated[dict[str, Any], JsonSchema(known=KnownMetrics)] = field(default_factory=dict)
    """Numbers a phase measured. Known keys are listed; phases may add more. Values that
    were not observed are null (never NaN)."""
    evidence: Annotated[dict[str, Any], JsonSchema(known=_known_evidence)] = field(
        default_factory=dict
    )
    """Raw observations backing the verdict (ids, prices, positions); shape depends on the
    phase. Known keys are listed."""
    errors: list[IBMessage] = field(default_factory=list)
    """IB errors, warnings and notices received during the phase."""

    @property
    def ok(self) -> bool:
        """True when the phase passed or was not needed."""
        return self.verdict in (Verdict.PASS, Verdict.SKIPPED)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (datetimes as ISO strings, NaN as None)."""
        return _jsonable(dataclasses.asdict(self))


@dataclass(frozen=True, slots=True)
class KnownMetrics:
    """The metric keys phases are known to write (documentation for the JSON Schema; the
    metrics themselves stay a dict, so a phase can add a key without a schema change)."""

    first_bid_s: float | None
    """ticks: seconds from subscribing until the first real bid; null if none arrived."""
    first_ask_s: float | None
    """ticks: seconds from subscribing until the first real ask; null if none arrived."""
    market_data_type: int | str | None
    """ticks: IB market data type seen (1 live, 2 frozen, 3 delayed, 4 delayed frozen)."""
    total_cost: float | None
    """round_trip: commission plus slippage of the buy/sell round trip, in 'currency'."""
    commission: float | None
    """round_trip: commissions IB reported for both legs."""
    slippage: float | None
    """round_trip: cost of fills versus the quote at order time."""
    realized_pnl: float | None
    """round_trip: realized P&L IB reported for the round trip."""
    currency: str | None
    """round_trip: currency of the cost figures, e.g. USD."""
    observations: int | None
    """stack: how many observations the declared endpoints emitted during the run; each
    check's latency is under '<endpoint>.<check>_latency_s'."""


@dataclass(slots=True)
class Target:
    """What the run talked to: a real IB gateway/TWS or the simulator. Every report names
    it, so a simulator run is never mistaken for a gateway run."""

    JSON_COMPUTED: ClassVar[tuple[str, ...]] = ("label",)
    """Properties that :meth:`to_dict` (and so the JSON Schema) adds to the fields."""

    host: str
    """Host name or address connected to."""
    port: Annotated[int, JsonSchema(minimum=0, maximum=65535)]
    """TCP port (e.g. 4002 paper gateway)."""
    client_id: int
    """IB API client id used."""
    simulated: bool = False
    """True when the target was the livefire simulator, not IB."""
    scenario: str | None = None
    """Simulator scenario name; null for a real gateway."""
    account: str | None = None
    """The account the run used, if known."""
    accounts: list[str] = field(default_factory=list)
    """All accounts the gateway reported (managedAccounts)."""
    server_version: int | None = None
    """IB API server version reported at connect."""

    @property
    def label(self) -> str:
        """One-line human description; starts with SIMULATOR for simulator runs."""
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
        """JSON-ready form: the fields plus :attr:`JSON_COMPUTED`."""
        d = dataclasses.asdict(self)
        d.update((name, getattr(self, name)) for name in self.JSON_COMPUTED)
        return d


@dataclass(slots=True)
class RunReport:
    """Everything a run concluded. Rendered to the console, JSON, JUnit and notifications."""

    JSON_COMPUTED: ClassVar[tuple[str, ...]] = ("verdict", "exit_code", "reason")
    """Properties that :meth:`to_dict` (and so the JSON Schema) adds to the fields."""
    JSON_EXCLUDED: ClassVar[tuple[str, ...]] = ("report_path",)
    """Fields left out of :meth:`to_dict`: where the report itself was written."""

    run_id: Annotated[str, JsonSchema(minLength=1)]
    """Unique id of the run; also the report's file name."""
    target: Target
    """What the run talked to."""
    contract: str
    """The contract the run subscribed to / traded, as given."""
    phases: list[PhaseResult] = field(default_factory=list)
    """Phase results in execution order."""
    started_at: datetime = field(default_factory=utcnow)
    """When the run started (ISO 8601, UTC)."""
    finished_at: datetime | None = None
    """When the run finished; null if it never concluded."""
    store_path: str | None = None
    """Path of the run store holding the full event history, if any."""
    report_path: str | None = None

    @property
    def verdict(self) -> Verdict:
        """The run's verdict: the most severe phase verdict."""
        return worst([p.verdict for p in self.phases])

    @property
    def exit_code(self) -> ExitCode:
        """Process exit code: 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input."""
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

    def failed_stack_checks(self) -> list[str]:
        """``endpoint.check (VERDICT)`` of every stack check that did not pass, in order
        (the console summary and the notification both name them)."""
        stack = self.phase(Phase.STACK)
        if stack is None:
            return []
        return [
            f"{c['endpoint']}.{c['name']} ({c['verdict']})"
            for c in stack.evidence.get("checks", [])
            if c.get("verdict") not in (Verdict.PASS, Verdict.SKIPPED)
        ]

    def metric(self, name: str) -> Any:
        """The first phase metric with this name (e.g. ``first_bid_s``, ``total_cost``)."""
        for p in self.phases:
            if name in p.metrics:
                return p.metrics[name]
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by the JSON report: the fields except
        :attr:`JSON_EXCLUDED`, plus :attr:`JSON_COMPUTED` (``report.SCHEMA`` is generated
        from the same declaration)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in self.JSON_EXCLUDED:
                continue
            value = getattr(self, f.name)
            if f.name == "target":
                value = value.to_dict()
            elif f.name == "phases":
                value = [p.to_dict() for p in value]
            d[f.name] = value
        d.update((name, getattr(self, name)) for name in self.JSON_COMPUTED)
        return _jsonable(d)


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
