"""Stack checks: pure judgments of what an endpoint showed against what the broker did.

Every function takes the endpoint's observations, the broker-side moments the harness
itself observed (quote ticks with their arrival stamps, fills with theirs) and ``now``
(epoch seconds), and returns a :class:`CheckResult`, or None while the check cannot be
decided yet (its deadline or hold window is still open). The same functions decide
early (the runner waits on them) and finally (``now = math.inf``).

Latency is always *stack moment − broker moment*, both stamped by this process on
arrival, so a report can say "dash-sse showed the fill 840 ms after the gateway
reported it". A stack that shows something before the harness's own connection heard
of it gets a negative latency: reported as measured, not hidden.

Verdicts: a stack that emitted nothing is STALLED; a wrong value is FAIL.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from harness_lib.models import JsonSchema, Verdict
from harness_lib.quotes import is_real

from .observe import Observation, QuoteSeen
from .spec import Endpoint

__all__ = [
    "AHEAD_S",
    "CHECK_NAMES",
    "RECENT_S",
    "RELATIVE_TOLERANCE",
    "BrokerFill",
    "BrokerTick",
    "CheckResult",
    "StackEvidence",
    "check_position",
    "check_quotes",
    "check_stream",
    "check_trade_id",
    "judge_quote",
]

CHECK_NAMES = ("stream", "quotes", "position_opened", "trade_id", "position_cleared")
RECENT_S = 5.0
"""A shown quote may match a broker quote that arrived up to this long before it..."""
AHEAD_S = 1.0
"""...or this long after it (the stack's own connection may hear of it first)."""
RELATIVE_TOLERANCE = 0.001
"""Default price tolerance: 0.1% of the broker price (one tick for most stocks)."""
_EPS = 1e-9


@dataclass(slots=True, frozen=True)
class BrokerTick:
    """One broker quote value as the harness received it."""

    field: str
    """``bid`` or ``ask``."""
    price: float
    t_wall: float


@dataclass(slots=True, frozen=True)
class BrokerFill:
    """One leg of this run's round trip as the harness observed it."""

    leg: str
    """``entry`` or ``exit``."""
    exec_ids: frozenset[str]
    perm_id: str | None
    quantity: float
    """Signed: +1 for a buy of one."""
    t_wall: float
    """When the first execDetails of the leg arrived."""
    submitted_wall: float
    """When the order was placed: the stack cannot have shown this fill before."""

    @property
    def ids(self) -> frozenset[str]:
        """Every id the stack may show for this trade."""
        return self.exec_ids | ({self.perm_id} if self.perm_id else set())


@dataclass(slots=True)
class CheckResult:
    """One stack check of one endpoint of the user's own stack (README: Stack checks):
    what it showed against what the broker did.

    The fields :meth:`to_dict` writes are the JSON report's declaration too (the schema is
    generated from them, see :mod:`harness_lib.docschema`)."""

    JSON_EXCLUDED: ClassVar[tuple[str, ...]] = ("details",)
    """Fields left out of :meth:`to_dict`: working detail, not part of the report."""

    name: Annotated[str, JsonSchema(enum=list(CHECK_NAMES))]
    """stream: reachable and well-formed; quotes: real live bid/ask matching the broker;
    position_opened / position_cleared: the position after the entry / exit fill (cleared
    stays cleared for the hold window); trade_id: each fill's own execId/permId."""
    endpoint: str
    """The declared endpoint name."""
    verdict: Verdict
    """What the check concluded; a stack that emitted nothing is STALLED, a wrong value
    FAIL."""
    reason: str
    """One line naming the endpoint and the expectation."""
    latency_s: float | None = None
    """Stack moment minus the broker moment the harness observed (quote arrival,
    execDetails arrival), in seconds; negative when the stack was first; null when not
    measured."""
    at_wall: float | None = None
    """When the stack showed what the check needed (epoch seconds); null if it never did."""
    expected: str = ""
    """What the check expected the stack to show, in words."""
    observed: str = ""
    """What the stack showed instead (or 'nothing'), in words."""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``endpoint.check``: the name of the checkpoint and the JUnit case."""
        return f"{self.endpoint}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (reports, store): the fields except :attr:`JSON_EXCLUDED`."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self.JSON_EXCLUDED
        }
        d["verdict"] = str(self.verdict)
        if self.latency_s is not None:
            d["latency_s"] = round(self.latency_s, 6)
        return d


@dataclass(slots=True)
class StackEvidence:
    """The stack phase's evidence: every check, and what was watched."""

    checks: list[CheckResult]
    """stack: every check of every declared endpoint (one JUnit case each)."""
    endpoints: list[dict[str, Any]]
    """stack: the declared endpoints as watched, header values and URL secrets hidden."""
    position_before: float
    """stack: the contract's net position before the run, which the position checks add
    this run's fills to."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``PhaseResult.evidence`` of the stack phase."""
        return {
            "checks": [c.to_dict() for c in self.checks],
            "endpoints": self.endpoints,
            "position_before": self.position_before,
        }


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _qty(x: float | None) -> str:
    if x is None:
        return "no number"
    return "flat" if abs(x) < _EPS else f"{x:+g}"


# ---------------------------------------------------------------------------
# stream: reachable and well-formed
# ---------------------------------------------------------------------------


def check_stream(
    ep: Endpoint, obs: Sequence[Observation], *, connected: bool, last_error: str | None
) -> CheckResult:
    """FAIL when the endpoint was never reachable (naming the cause) or emitted garbage."""
    if not connected:
        why = last_error or "no connection"
        return CheckResult(
            "stream",
            ep.name,
            Verdict.FAIL,
            f"{ep.name} unreachable at {ep.safe_url}: {why}",
            expected="a reachable endpoint",
            observed=why,
        )
    bad = [o for o in obs if o.error]
    if bad:
        first = bad[0]
        what = f"{first.error}: {first.raw[:60]!r}" if first.raw else first.error
        return CheckResult(
            "stream",
            ep.name,
            Verdict.FAIL,
            f"{ep.name} emitted {len(bad)} invalid message(s) of {len(obs)} (first: {what})",
            expected="every message parses and has the declared shape",
            observed=str(first.error),
        )
    return CheckResult(
        "stream",
        ep.name,
        Verdict.PASS,
        f"{ep.name} connected; {len(obs)} message(s), all well-formed",
    )


# ---------------------------------------------------------------------------
# quotes
# ---------------------------------------------------------------------------


def _tolerance(ep: Endpoint, price: float) -> float:
    return ep.tolerance if ep.tolerance is not None else abs(price) * RELATIVE_TOLERANCE


def _match(
    ep: Endpoint, field_: str, value: float, at: float, ticks: Sequence[BrokerTick]
) -> BrokerTick | None:
    """The broker tick ``value`` matches: the latest one at or before ``at`` (the standing
    quote counts however old), else the earliest one shortly after."""
    same = [t for t in ticks if t.field == field_]
    standing = [t for t in same if t.t_wall <= at]
    candidates = [t for t in standing if t.t_wall >= at - RECENT_S]
    if standing:
        candidates.append(standing[-1])
    before = [t for t in candidates if abs(t.price - value) <= _tolerance(ep, t.price) + _EPS]
    if before:
        return max(before, key=lambda t: t.t_wall)
    after = [
        t
        for t in same
        if at < t.t_wall <= at + AHEAD_S and abs(t.price - value) <= _tolerance(ep, t.price) + _EPS
    ]
    return min(after, key=lambda t: t.t_wall) if after else None


def judge_quote(
    ep: Endpoint, q: QuoteSeen, at: float, ticks: Sequence[BrokerTick]
) -> tuple[str | None, float | None]:
    """(None, broker moment) when the quote is real, live and matches; else (why, None).

    The quotes check applies it to each observation; the live view to the latest one.
    """
    assert ep.quote is not None
    if not (is_real(q.bid) and is_real(q.ask)):  # null, NaN, placeholder, IB's -1
        return (
            f"showed {q.describe()} (expected real numbers for bid and ask, not "
            "null/NaN/a placeholder)"
        ), None
    if ep.quote.mode is not None and q.mode not in ep.quote.live:
        live = " or ".join(repr(v) for v in ep.quote.live)
        return f"showed data mode {q.mode!r} (expected {live}) with {q.describe()}", None
    moments = []
    for name, value in (("bid", q.bid), ("ask", q.ask)):
        tick = _match(ep, name, value, at, ticks)
        if tick is None:
            seen = sorted(
                {
                    t.price
                    for t in ticks
                    if t.field == name and at - RECENT_S <= t.t_wall <= at + AHEAD_S
                }
            )
            near = f"{seen[0]:g}–{seen[-1]:g}" if seen else "none"
            return (
                f"showed {name} {value:g}, which matches no broker {name} of the last "
                f"{RECENT_S:g} s (broker: {near}; tolerance {_tolerance(ep, value):g})"
            ), None
        moments.append(tick.t_wall)
    return None, max(moments)


def check_quotes(
    ep: Endpoint,
    obs: Sequence[Observation],
    ticks: Sequence[BrokerTick],
    *,
    start: float,
    deadline_s: float,
    now: float,
    symbol: str,
) -> CheckResult | None:
    """Within ``deadline_s`` of ``start`` the endpoint shows a real, live bid and ask that
    match a broker quote within tolerance. PASS from the first such observation.

    The latency is measured on the first *change* of a real quote (bid or ask differs from
    the one shown before), not on the first quote shown: that one is usually the state a
    stack sends when we connect (or a page loads), and its age is our connect time, not the
    stack's latency. Until a change is seen within the deadline the check waits; with none
    at all it still passes, with the latency not measured."""
    assert ep.quote is not None
    end = start + deadline_s
    window = [o for o in obs if o.t_wall <= end]
    last_why = ""
    last_obs: Observation | None = None
    first: Observation | None = None
    moved: tuple[Observation, float] | None = None
    shown_before: tuple[float, float] | None = None
    for o in window:
        if o.quote is None:
            continue
        q = o.quote
        why, broker_at = judge_quote(ep, q, o.t_wall, ticks)
        now_shown = (q.bid, q.ask) if is_real(q.bid) and is_real(q.ask) else None
        if why is None:
            assert broker_at is not None and now_shown is not None
            first = first or o
            if shown_before is not None and now_shown != shown_before:
                moved = (o, o.t_wall - broker_at)
                break
        elif first is None:
            last_why, last_obs = why, o
        if now_shown is not None:
            shown_before = now_shown
    if first is not None and (moved is not None or now >= end):
        q = first.quote
        assert q is not None
        mode = f" ({q.mode})" if q.mode is not None else ""
        shown = f"{ep.name} showed {symbol} bid {q.bid:g} / ask {q.ask:g}{mode}"
        if moved is None:
            return CheckResult(
                "quotes",
                ep.name,
                Verdict.PASS,
                f"{shown}; latency not measured (the quote did not change within {deadline_s:g} s)",
                at_wall=first.t_wall,
                expected="real live bid/ask matching the broker",
                observed=q.describe(),
            )
        latency = moved[1]
        return CheckResult(
            "quotes",
            ep.name,
            Verdict.PASS,
            f"{shown}, and a quote change {_ms(latency)} after the gateway sent it",
            latency_s=latency,
            at_wall=first.t_wall,
            expected="real live bid/ask matching the broker",
            observed=q.describe(),
        )
    if first is not None:
        return None  # passing; waiting for a change to measure the latency on
    if now < end:
        return None
    expected = f"real live {symbol} bid/ask within {deadline_s:g} s"
    if not obs:
        return CheckResult(
            "quotes",
            ep.name,
            Verdict.STALLED,
            f"{ep.name} emitted nothing within {deadline_s:g} s (expected {symbol} bid/ask)",
            expected=expected,
            observed="nothing",
        )
    if last_obs is None:
        errors = [o for o in window if o.error]
        if errors and len(errors) == len(window):
            return CheckResult(
                "quotes",
                ep.name,
                Verdict.FAIL,
                f"{ep.name} emitted only invalid messages within {deadline_s:g} s "
                f"({errors[-1].error}); expected {symbol} bid/ask",
                expected=expected,
                observed=str(errors[-1].error),
            )
        return CheckResult(
            "quotes",
            ep.name,
            Verdict.STALLED,
            f"{ep.name} said nothing about the {symbol} quote within "
            f"{deadline_s:g} s ({len(window)} message(s))",
            expected=expected,
            observed="no quote",
        )
    return CheckResult(
        "quotes",
        ep.name,
        Verdict.FAIL,
        f"{ep.name} quotes check failed: {last_why}",
        at_wall=last_obs.t_wall,
        expected=expected,
        observed=last_obs.quote.describe() if last_obs.quote else "",
    )


# ---------------------------------------------------------------------------
# positions
# ---------------------------------------------------------------------------


def _timeline(obs: Sequence[Observation]) -> list[tuple[float, float | None, Any]]:
    """(moment, quantity, shown) of every observation that said something about the position."""
    return [
        (o.t_wall, o.position.quantity, o.position.shown) for o in obs if o.position is not None
    ]


def _state_at(tl: list[tuple[float, float | None, Any]], t: float) -> tuple[bool, float | None]:
    known, qty = False, None
    for at, q, _ in tl:
        if at > t:
            break
        known, qty = True, q
    return known, qty


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) < _EPS


def _first_showing(
    tl: list[tuple[float, float | None, Any]], since: float, expected: float
) -> float | None:
    """The first moment at or after ``since`` at which the shown quantity equals ``expected``."""
    known, qty = _state_at(tl, since)
    if known and _same(qty, expected):
        return since
    return next((at for at, q, _ in tl if at >= since and _same(q, expected)), None)


def check_position(
    ep: Endpoint,
    obs: Sequence[Observation],
    fill: BrokerFill,
    *,
    expected: float,
    now: float,
    symbol: str,
    name: str = "position_opened",
    hold: float = 0.0,
) -> CheckResult | None:
    """After ``fill`` the endpoint shows quantity ``expected`` within the position deadline.

    With ``hold`` > 0 (``position_cleared``) the shown quantity must then stay ``expected``
    for ``hold`` seconds: any other value in that window is a repaint and fails.
    """
    deadline = fill.t_wall + ep.position_deadline
    tl = _timeline(obs)
    m = _first_showing(tl, fill.submitted_wall, expected)
    want = _qty(expected)
    what = f"{symbol} position {want}" if abs(expected) > _EPS else f"{symbol} position cleared"
    exp_text = f"{what} within {ep.position_deadline:g} s of the {fill.leg} fill"
    if m is None or m > deadline:
        if now < deadline:
            return None
        if not obs:
            return CheckResult(
                name,
                ep.name,
                Verdict.STALLED,
                f"{ep.name} emitted nothing (expected {exp_text})",
                expected=exp_text,
                observed="nothing",
            )
        _, shown = _state_at(tl, deadline)
        after = [(at, q, s) for at, q, s in tl if fill.submitted_wall <= at <= deadline]
        seen = ", ".join(_qty(q) if q is not None else repr(s) for _, q, s in after[-3:])
        observed = seen or (_qty(shown) if tl else "nothing about positions")
        return CheckResult(
            name,
            ep.name,
            Verdict.FAIL,
            f"{ep.name} {name} check failed: did not show the {what} within "
            f"{ep.position_deadline:g} s of the {fill.leg} fill (showed: {observed})",
            expected=exp_text,
            observed=observed,
        )
    latency = m - fill.t_wall
    if hold > 0:
        for at, q, s in tl:
            if m < at <= m + hold and not _same(q, expected):
                shown = _qty(q) if q is not None else repr(s)
                return CheckResult(
                    name,
                    ep.name,
                    Verdict.FAIL,
                    f"{ep.name} {name} check failed: repainted the closed {symbol} "
                    f"position ({shown}) {_ms(at - m)} after it cleared (expected "
                    f"it to stay {want} for {hold:g} s)",
                    latency_s=latency,
                    at_wall=at,
                    expected=exp_text,
                    observed=f"{shown} after clearing",
                )
        if now < m + hold:
            return None
        return CheckResult(
            name,
            ep.name,
            Verdict.PASS,
            f"{ep.name} showed the {what} {_ms(latency)} after the gateway "
            f"reported the {fill.leg} fill, and kept it for {hold:g} s",
            latency_s=latency,
            at_wall=m,
            expected=exp_text,
            observed=want,
        )
    return CheckResult(
        name,
        ep.name,
        Verdict.PASS,
        f"{ep.name} showed the {what} {_ms(latency)} after the gateway reported "
        f"the {fill.leg} fill",
        latency_s=latency,
        at_wall=m,
        expected=exp_text,
        observed=want,
    )


# ---------------------------------------------------------------------------
# trade ids
# ---------------------------------------------------------------------------


def check_trade_id(
    ep: Endpoint,
    obs: Sequence[Observation],
    fills: Sequence[BrokerFill],
    *,
    now: float,
    symbol: str,
) -> CheckResult | None:
    """After each fill the ids shown for the contract's latest trade are that fill's own
    (its execIds or permId) within the deadline — never the previous trade's."""
    tl = [(o.t_wall, o.trade_ids) for o in obs if o.trade_ids is not None]
    passed: list[tuple[BrokerFill, float]] = []
    for i, fill in enumerate(fills):
        deadline = fill.t_wall + ep.position_deadline
        known, shown = False, None
        for at, ids in tl:
            if at > fill.submitted_wall:
                break
            known, shown = True, ids
        hits = [(fill.submitted_wall, shown)] if known else []
        hits += [(at, ids) for at, ids in tl if at > fill.submitted_wall]
        m = next((at for at, ids in hits if ids and set(ids) <= fill.ids), None)
        if m is not None and m <= deadline:
            passed.append((fill, m))
            continue
        if now < deadline:
            return None
        exp = (
            f"this run's {fill.leg} ids (execId {', '.join(sorted(fill.exec_ids))}"
            f"{f', permId {fill.perm_id}' if fill.perm_id else ''})"
        )
        if not obs:
            return CheckResult(
                "trade_id",
                ep.name,
                Verdict.STALLED,
                f"{ep.name} emitted nothing (expected {exp})",
                expected=exp,
                observed="nothing",
            )
        last = [ids for at, ids in hits if at <= deadline]
        got = last[-1] if last else None
        if got is None:
            observed, whose = "no trade ids", ""
        else:
            observed = ", ".join(got) or "no ids"
            earlier = [f for f in fills[:i] if got and set(got) & f.ids]
            whose = (
                f" — the {earlier[-1].leg}'s, the previous trade"
                if earlier
                else " — not this trade's (an earlier run's or another trade's)"
            )
        return CheckResult(
            "trade_id",
            ep.name,
            Verdict.FAIL,
            f"{ep.name} trade_id check failed: after the {fill.leg} fill it showed "
            f"{observed} for {symbol}'s latest trade{whose}; expected {exp} within "
            f"{ep.position_deadline:g} s",
            expected=exp,
            observed=observed,
        )
    if not passed:
        return CheckResult("trade_id", ep.name, Verdict.SKIPPED, "no fill to compare with")
    fill, m = passed[-1]
    latency = m - fill.t_wall
    legs = ", ".join(f"{f.leg} {_ms(at - f.t_wall)}" for f, at in passed)
    return CheckResult(
        "trade_id",
        ep.name,
        Verdict.PASS,
        f"{ep.name} showed each fill's own ids for {symbol} ({legs} after the "
        "gateway reported them)",
        latency_s=latency,
        at_wall=m,
        expected="this run's ids per fill",
        observed="matched",
    )


def decided(results: Sequence[CheckResult | None]) -> bool:
    """True when no check is still waiting."""
    return all(r is not None for r in results)


INF = math.inf
