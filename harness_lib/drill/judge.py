"""Judging a drill's reactions: pure functions over what each endpoint showed and when.

Times are wall-clock epoch seconds: the simulator stamps its fault events with ``time.time()``
and the stack watchers stamp every observation on arrival the same way, on the same host.
Every verdict is from observation: a reaction nothing showed is FAIL (or SKIPPED when the
endpoint cannot show it), never PASS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness_lib.models import Verdict
from harness_lib.stack.observe import Observation
from harness_lib.stack.spec import Endpoint

from .catalog import DUPLICATE_WINDOW_S

__all__ = [
    "ReactionResult",
    "judge_duplicates",
    "judge_latency",
    "judge_leaves_live",
    "judge_no_position",
    "judge_position",
    "judge_returns_live",
    "live_at",
]

STREAMING = frozenset({"sse", "websocket"})
"""Kinds whose messages are events (a message twice is a duplicate); http polls a state and a
browser shows one, so neither can show a message twice."""


@dataclass(slots=True)
class ReactionResult:
    """Fault x reaction x endpoint: the measured latency and the verdict."""

    drill: str
    reaction: str
    endpoint: str
    deadline: float | None
    latency: float | None
    verdict: Verdict
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (report and store)."""
        return {
            "drill": self.drill,
            "reaction": self.reaction,
            "endpoint": self.endpoint,
            "deadline_s": self.deadline,
            "latency_s": self.latency,
            "verdict": self.verdict.value,
            "detail": self.detail,
        }


def _r(
    drill: str,
    reaction: str,
    ep: str,
    deadline: float | None,
    lat: float | None,
    v: Verdict,
    d: str,
) -> ReactionResult:
    return ReactionResult(drill, reaction, ep, deadline, lat, v, d)


def _quotes(obs: Sequence[Observation]) -> list[Observation]:
    return [o for o in obs if o.quote is not None and o.error is None]


def _is_live(ep: Endpoint, o: Observation) -> bool:
    assert ep.quote is not None and o.quote is not None
    return o.quote.mode in ep.quote.live


def live_at(ep: Endpoint, obs: Sequence[Observation], t: float) -> bool | None:
    """Whether the endpoint's last quote before ``t`` showed live (None: no quote yet or no
    data-mode declared)."""
    if ep.quote is None or ep.quote.mode is None:
        return None
    before = [o for o in _quotes(obs) if o.t_wall <= t]
    return _is_live(ep, before[-1]) if before else None


def _no_mode(ep: Endpoint) -> bool:
    return ep.quote is None or ep.quote.mode is None


def judge_leaves_live(
    drill: str,
    ep: Endpoint,
    obs: Sequence[Observation],
    t_fault: float,
    deadline: float,
    *,
    transient: bool,
) -> ReactionResult:
    """The first quote after the fault that is not live, within the deadline."""
    name = "leaves_live"
    if _no_mode(ep):
        return _r(drill, name, ep.name, deadline, None, Verdict.SKIPPED, "no data-mode declared")
    if transient and ep.kind == "http":
        return _r(drill, name, ep.name, deadline, None, Verdict.SKIPPED,
                  f"a state shorter than its {ep.interval:g} s poll can be missed")  # fmt: skip
    for o in _quotes(obs):
        if o.t_wall < t_fault:
            continue
        lat = o.t_wall - t_fault
        if lat > deadline:
            break
        if not _is_live(ep, o):
            assert o.quote is not None
            return _r(drill, name, ep.name, deadline, lat, Verdict.PASS,
                      f"showed {o.quote.mode!r} after {lat * 1000:.0f} ms")  # fmt: skip
    return _r(drill, name, ep.name, deadline, None, Verdict.FAIL,
              f"still showed live {deadline:g} s after the fault")  # fmt: skip


def judge_returns_live(
    drill: str, ep: Endpoint, obs: Sequence[Observation], t_recover: float, deadline: float
) -> ReactionResult:
    """The first live quote with a real bid and ask after recovery, within the deadline."""
    name = "returns_live"
    if _no_mode(ep):
        return _r(drill, name, ep.name, deadline, None, Verdict.SKIPPED, "no data-mode declared")
    for o in _quotes(obs):
        if o.t_wall < t_recover:
            continue
        lat = o.t_wall - t_recover
        if lat > deadline:
            break
        assert o.quote is not None
        if _is_live(ep, o) and o.quote.bid is not None and o.quote.ask is not None:
            return _r(drill, name, ep.name, deadline, lat, Verdict.PASS,
                      f"live again after {lat * 1000:.0f} ms")  # fmt: skip
    last = [o for o in _quotes(obs) if o.t_wall >= t_recover]
    shown = last[-1].quote.describe() if last and last[-1].quote else "no quote after recovery"
    return _r(drill, name, ep.name, deadline, None, Verdict.FAIL,
              f"not live {deadline:g} s after recovery (last shown: {shown})")  # fmt: skip


def judge_duplicates(
    drill: str, ep: Endpoint, obs: Sequence[Observation], t_from: float, t_to: float
) -> ReactionResult:
    """No message carrying a quote or a fill (trade ids) shown twice within the window."""
    name = "no_duplicates"
    if ep.kind not in STREAMING:
        return _r(drill, name, ep.name, None, None, Verdict.SKIPPED,
                  f"a {ep.kind} endpoint shows a state, not messages")  # fmt: skip
    seen: dict[str, float] = {}
    dups: list[Observation] = []
    n = 0
    for o in obs:
        # Quotes and fills are events; a position card is a state a stack may repaint freely.
        events = o.quote is not None or bool(o.trade_ids)
        if not (t_from <= o.t_wall <= t_to) or not o.digest or not events:
            continue
        n += 1
        prev = seen.get(o.digest)
        if prev is not None and o.t_wall - prev <= DUPLICATE_WINDOW_S:
            dups.append(o)
        seen[o.digest] = o.t_wall
    if n == 0:
        return _r(drill, name, ep.name, None, None, Verdict.FAIL,
                  "no message with a quote or a fill during the drill")  # fmt: skip
    if dups:
        first = dups[0]
        when = first.t_wall - t_from
        return _r(drill, name, ep.name, None, when, Verdict.FAIL,
                  f"{len(dups)} of {n} messages shown twice, first {when:.1f} s into the drill: "
                  f"{first.raw[:80]}")  # fmt: skip
    return _r(drill, name, ep.name, None, None, Verdict.PASS, f"{n} messages, none twice")


def _position_timeline(obs: Sequence[Observation]) -> list[tuple[float, float | None]]:
    return [(o.t_wall, o.position.quantity) for o in obs if o.position is not None]


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) < 1e-9


def judge_position(
    drill: str,
    ep: Endpoint,
    obs: Sequence[Observation],
    broker_qty: float,
    t_recover: float,
    deadline: float,
    t_end: float,
) -> ReactionResult:
    """The shown position equals the broker's within the deadline of recovery, and still does
    at the end of the drill."""
    name = "position_matches"
    if ep.position is None:
        return _r(drill, name, ep.name, deadline, None, Verdict.SKIPPED, "no position declared")
    tl = [(t, q) for t, q in _position_timeline(obs) if t <= t_end]
    if not tl:
        return _r(drill, name, ep.name, deadline, None, Verdict.FAIL,
                  "showed no position at all")  # fmt: skip
    before = [q for t, q in tl if t <= t_recover]
    lat: float | None = None
    if before and _same(before[-1], broker_qty):
        lat = 0.0
    else:
        lat = next((t - t_recover for t, q in tl if t > t_recover and _same(q, broker_qty)), None)
    final = tl[-1][1]
    if lat is None or lat > deadline:
        return _r(drill, name, ep.name, deadline, lat, Verdict.FAIL,
                  f"showed {final} where the broker holds {broker_qty:g}")  # fmt: skip
    if not _same(final, broker_qty):
        return _r(drill, name, ep.name, deadline, lat, Verdict.FAIL,
                  f"matched, then showed {final}; the broker holds {broker_qty:g}")  # fmt: skip
    return _r(drill, name, ep.name, deadline, lat, Verdict.PASS,
              f"{broker_qty:g}, as the broker, {lat * 1000:.0f} ms after recovery")  # fmt: skip


def judge_no_position(
    drill: str,
    ep: Endpoint,
    obs: Sequence[Observation],
    qty_before: float,
    t_from: float,
    t_end: float,
) -> ReactionResult:
    """A rejected order never moves the shown position away from what it was."""
    name = "no_position_from_reject"
    if ep.position is None:
        return _r(drill, name, ep.name, None, None, Verdict.SKIPPED, "no position declared")
    moved = [
        (t, q)
        for t, q in _position_timeline(obs)
        if t_from <= t <= t_end and not _same(q, qty_before)
    ]
    if moved:
        t, q = moved[0]
        return _r(drill, name, ep.name, None, t - t_from, Verdict.FAIL,
                  f"showed {q} for a rejected order (was {qty_before:g})")  # fmt: skip
    return _r(drill, name, ep.name, None, None, Verdict.PASS,
              f"stayed at {qty_before:g} through the rejection")  # fmt: skip


def judge_latency(
    drill: str, name: str, latency: float | None, deadline: float, what: str
) -> ReactionResult:
    """A reaction the simulator itself saw (a reconnect, a resubscription)."""
    if latency is None or latency > deadline:
        return _r(drill, name, "gateway", deadline, latency, Verdict.FAIL,
                  f"no {what} within {deadline:g} s")  # fmt: skip
    return _r(drill, name, "gateway", deadline, latency, Verdict.PASS,
              f"{what} after {latency * 1000:.0f} ms")  # fmt: skip
