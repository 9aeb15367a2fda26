"""Running drills: fault the simulator through its control channel, watch the stack, judge.

One ``DrillSession`` watches the stack's declared endpoints (the same watchers as the stack
checks of ``harness run``) for the whole sequence, and runs the drills one after the other,
clearing every fault between them (and at the end, whatever happened).

Per drill: the stack must show live before the fault (else the drill is STALLED: nothing can be
measured); the fault is injected; the drill waits for the fault-phase reactions (or their
deadlines, holding at least ``MIN_HOLD_S``); it recovers; it waits for the recovery reactions;
it watches ``SETTLE_S`` more for duplicates; then it judges from the recorded observations and
the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness_lib.models import Verdict
from harness_lib.stack.observe import Observation
from harness_lib.stack.spec import Endpoint
from harness_lib.stack.watch import Watcher, make_watcher

from . import judge as j
from .catalog import MIN_HOLD_S, SETTLE_S, Action, Drill, Reaction

log = logging.getLogger("harness_lib.drill")

PRE_LIVE_S = 15.0
"""How long the stack may take to show live before a drill (after start or a previous drill)."""
POLL_S = 0.1
REQ_MKT_DATA = 1
"""The TWS API's reqMktData message id (the simulator counts requests per message id)."""
DRILL_CLIENT_ID = 9901
"""The ib_async client id of the drills' own connection (order drills only)."""

__all__ = ["ControlClient", "ControlUnreachable", "DrillOutcome", "DrillRefused", "DrillSession"]


class ControlUnreachable(Exception):
    """Nothing answered at the control URL (bad input: the URL or the simulator is wrong)."""


class DrillRefused(Exception):
    """The target is not the livefire simulator (or not a paper account): refuse, exit 3."""


class ControlClient:
    """The client side of ``harness_lib.sim.control``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Loopback only: no proxy from the environment may see the control channel.
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, trust_env=False
        )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One request; a non-200 answer raises RuntimeError with the server's reason."""
        import httpx

        try:
            r = await self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ControlUnreachable(
                f"cannot reach the control channel at {self.url} ({type(exc).__name__})"
            ) from None
        try:
            doc = r.json()
        except ValueError:
            doc = {"error": r.text[:120]}
        if r.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {doc.get('error', '')}")
        if not isinstance(doc, dict):
            raise RuntimeError(f"{method} {path}: not a JSON object")
        return doc

    async def identify(self) -> dict[str, Any]:
        """The simulator's identity; DrillRefused when whatever answers is not livefire's."""
        from harness_lib.sim import SIM_MARKER

        try:
            doc = await self.call("GET", "/identity")
        except RuntimeError as exc:
            if "HTTP 401" in str(exc):
                raise ControlUnreachable(
                    f"the control channel at {self.url} wants a token; pass --control-token"
                ) from None
            raise DrillRefused(
                f"{self.url} is not a livefire simulator's control channel ({exc}); "
                "drills run only against `harness sim --control PORT`"
            ) from None
        if doc.get("simulator") != SIM_MARKER:
            raise DrillRefused(
                f"{self.url} does not identify as the livefire simulator; drills run only "
                "against `harness sim --control PORT`"
            )
        return doc

    async def truth(self) -> dict[str, Any]:
        """The simulator's ground truth now."""
        return await self.call("GET", "/truth")

    async def act(self, action: Action, symbol: str) -> dict[str, Any]:
        """Perform one declared action ({symbol} in its body becomes the stack's symbol)."""
        body = _subst(action.body, symbol) if action.body is not None else None
        return await self.call(action.method, action.path, body)


def _subst(v: Any, symbol: str) -> Any:
    if isinstance(v, str):
        return v.replace("{symbol}", symbol)
    if isinstance(v, dict):
        return {k: _subst(x, symbol) for k, x in v.items()}
    return v


@dataclass
class DrillOutcome:
    """One drill's results: its reactions' verdicts and the moments measured from."""

    drill: str
    t_fault: float | None
    t_recover: float | None
    results: list[j.ReactionResult] = field(default_factory=list)
    note: str = ""

    @property
    def verdict(self) -> Verdict:
        """FAIL if any reaction failed, STALLED if it could not run, else PASS."""
        vs = {r.verdict for r in self.results}
        if Verdict.FAIL in vs:
            return Verdict.FAIL
        if Verdict.STALLED in vs or not self.results:
            return Verdict.STALLED
        return Verdict.PASS

    @property
    def passed(self) -> bool:
        """True when every reaction passed (or could not apply to an endpoint)."""
        return self.verdict is Verdict.PASS

    def reaction(self, name: str, endpoint: str | None = None) -> list[j.ReactionResult]:
        """The results of one reaction (on every endpoint, or one)."""
        return [r for r in self.results if r.reaction == name and endpoint in (None, r.endpoint)]

    def summary(self) -> str:
        """One line per reaction, for assertion messages."""
        return "\n".join(
            f"{r.verdict.value} {r.reaction} {r.endpoint}: {r.detail}" for r in self.results
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "drill": self.drill,
            "verdict": self.verdict.value,
            "t_fault": self.t_fault,
            "t_recover": self.t_recover,
            "note": self.note,
            "reactions": [r.to_dict() for r in self.results],
        }


def _event_time(truth: dict[str, Any], event: tuple[str, str], after: int) -> float | None:
    for e in truth["faults"][after:]:
        if (e["event"], e["name"]) == event:
            return float(e["t_wall"])
    return None


def _mono_of(truth: dict[str, Any], event: tuple[str, str], after: int) -> float | None:
    for e in truth["faults"][after:]:
        if (e["event"], e["name"]) == event:
            return float(e["t_mono"])
    return None


def _mkt_requests(truth: dict[str, Any], exclude: int | None) -> int:
    return sum(
        r["count"]
        for r in truth["requests"]
        if r["msg_id"] == REQ_MKT_DATA and r["client_id"] != exclude
    )


def _broker_qty(truth: dict[str, Any], symbol: str) -> float:
    return float(sum(p["qty"] for p in truth["positions"] if p["symbol"] == symbol))


class DrillSession:
    """Watches the stack and runs drills against one simulator."""

    def __init__(self, control: ControlClient, endpoints: Sequence[Endpoint], symbol: str) -> None:
        self.control = control
        self.endpoints = list(endpoints)
        self.symbol = symbol
        self.obs: dict[str, list[Observation]] = {ep.name: [] for ep in self.endpoints}
        self._watchers: list[Watcher] = []
        self.identity: dict[str, Any] = {}
        self.run_id = uuid.uuid4().hex[:12]
        self._conn: Any = None

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the target is the simulator, clear any leftover fault, start the watchers."""
        self.identity = await self.control.identify()
        await self.control.call("DELETE", "/faults")
        for ep in self.endpoints:
            w = make_watcher(ep, self.obs[ep.name].append)
            w.start()
            self._watchers.append(w)

    async def stop(self) -> None:
        """Clear every fault (always), stop the watchers, close the drills' own connection."""
        with contextlib.suppress(Exception):
            await self.control.call("DELETE", "/faults")
        for w in self._watchers:
            await w.stop()
        if self._conn is not None:
            await self._cleanup_orders()
            self._conn.disconnect()

    # --- the stack's state -------------------------------------------------------------------
    def _mode_endpoints(self) -> list[Endpoint]:
        return [ep for ep in self.endpoints if ep.quote is not None and ep.quote.mode is not None]

    def _all_live(self, t: float) -> bool:
        eps = self._mode_endpoints()
        if not eps:  # nothing declares a mode: wait for any quote instead
            return all(any(o.quote is not None for o in self.obs[ep.name]) for ep in self.endpoints)
        return all(j.live_at(ep, self.obs[ep.name], t) for ep in eps)

    async def _wait(self, pred: Any, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            await asyncio.sleep(POLL_S)
        return bool(pred())

    # --- one drill ---------------------------------------------------------------------------
    async def run(self, drill: Drill) -> DrillOutcome:
        """Run one drill; faults are cleared afterwards whatever happens."""
        try:
            return await self._run(drill)
        finally:
            with contextlib.suppress(Exception):
                await self.control.call("DELETE", "/faults")

    async def _run(self, drill: Drill) -> DrillOutcome:
        out = DrillOutcome(drill.name, None, None)
        if not await self._wait(lambda: self._all_live(time.time()), PRE_LIVE_S):
            out.note = f"the stack showed no live quote within {PRE_LIVE_S:g} s before the fault"
            out.results = [
                j.ReactionResult(
                    drill.name, r.name, "*", r.deadline, None, Verdict.STALLED, out.note
                )
                for r in drill.reactions
            ]
            return out
        before = await self.control.truth()
        mark = len(before["faults"])
        qty_before = _broker_qty(before, self.symbol)
        own = DRILL_CLIENT_ID if self._conn is not None else None
        req_before = _mkt_requests(before, own)
        conn_mark = len(before["connections"])
        resub = drill.reaction("resubscribed")
        # Watched from the fault on: a heartbeat resubscribes while the stream is still silent.
        req_seen: list[float] = []
        req_watch = (
            asyncio.create_task(self._watch_requests(own, req_before, req_seen))
            if resub is not None
            else None
        )
        try:
            return await self._run_watched(
                drill, out, mark, qty_before, own, conn_mark, resub, req_seen
            )
        finally:
            if req_watch is not None:
                req_watch.cancel()
                # A control-channel failure there is reported by the drill's own calls.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await req_watch

    async def _watch_requests(self, own: int | None, before: int, seen: list[float]) -> None:
        """Append the wall time the simulator first counts a new reqMktData from the stack."""
        while True:
            if _mkt_requests(await self.control.truth(), own) > before:
                seen.append(time.time())  # polled: within POLL_S
                return
            await asyncio.sleep(POLL_S)

    async def _run_watched(
        self,
        drill: Drill,
        out: DrillOutcome,
        mark: int,
        qty_before: float,
        own: int | None,
        conn_mark: int,
        resub: Reaction | None,
        req_seen: list[float],
    ) -> DrillOutcome:
        t_start = time.time()
        for a in drill.inject:
            await self.control.act(a, self.symbol)
        truth = await self._truth_until(lambda t: _event_time(t, drill.fault_event, mark), 5.0)
        t_fault = _event_time(truth, drill.fault_event, mark)
        if t_fault is None:
            raise RuntimeError(f"the simulator never recorded {drill.fault_event} for {drill.name}")
        out.t_fault = t_fault
        if drill.order is not None:
            await self._place(drill)
        # Fault phase: wait for the stack to leave live (or the deadline), hold a minimum.
        leave = drill.reaction("leaves_live")
        eps = [ep for ep in self._mode_endpoints() if not (drill.transient and ep.kind == "http")]
        if leave is not None and leave.deadline is not None and eps:
            await self._wait(
                lambda: all(self._left_live(ep, t_fault) for ep in eps),
                max(0.0, t_fault + leave.deadline - time.time()),
            )
        await asyncio.sleep(max(0.0, t_fault + MIN_HOLD_S - time.time()))
        # Recovery.
        mark2 = len(truth["faults"])
        for a in drill.recover:
            await self.control.act(a, self.symbol)
        if drill.recovery_event is None:
            t_recover = t_fault
        else:
            truth = await self._truth_until(
                lambda t: _event_time(t, drill.recovery_event, mark2),
                5.0,  # type: ignore[arg-type]
            )
            rec = _event_time(truth, drill.recovery_event, mark2)
            if rec is None:
                raise RuntimeError(f"the simulator never recorded the recovery of {drill.name}")
            t_recover = rec
        out.t_recover = t_recover
        # Recovery phase: wait for live again, the reconnect and the resubscription.
        ret = drill.reaction("returns_live")
        if ret is not None and ret.deadline is not None:
            await self._wait(
                lambda: all(self._back_live(ep, t_recover) for ep in self._mode_endpoints()),
                max(0.0, t_recover + ret.deadline - time.time()),
            )
        resub_lat: float | None = None
        recon_lat: float | None = None
        recon = drill.reaction("reconnected")
        end_truth = await self.control.truth()
        if resub is not None or recon is not None:
            deadline = max(r.deadline or 0 for r in (resub, recon) if r is not None)
            t_end_wait = time.time() + max(0.0, t_recover + deadline - time.time())
            while True:
                end_truth = await self.control.truth()
                if resub is not None and resub_lat is None and req_seen:
                    t_ref = t_fault if resub.after == "fault" else t_recover
                    # A request already made when recovery came counts from recovery (0).
                    resub_lat = max(0.0, req_seen[0] - t_ref)
                if recon is not None and recon_lat is None:
                    t_drop = _mono_of(end_truth, drill.fault_event, mark)
                    conns = [
                        c["t_mono"]
                        for c in end_truth["connections"][conn_mark:]
                        if c["event"] == "connected" and c["client_id"] != own
                    ]
                    if conns and t_drop is not None:
                        recon_lat = conns[0] - t_drop
                done = (resub is None or resub_lat is not None) and (
                    recon is None or recon_lat is not None
                )
                if done or time.time() > t_end_wait:
                    break
                await asyncio.sleep(POLL_S)
        pos = drill.reaction("position_matches")
        if pos is not None and pos.deadline is not None:
            qty = _broker_qty(end_truth, self.symbol)
            await self._wait(
                lambda: all(
                    self._shows_qty(ep, qty) for ep in self.endpoints if ep.position is not None
                ),
                max(0.0, t_recover + pos.deadline - time.time()),
            )
        await asyncio.sleep(SETTLE_S)
        t_end = time.time()
        end_truth = await self.control.truth()
        broker_qty = _broker_qty(end_truth, self.symbol)
        out.results = self._judge(
            drill, t_start, t_fault, t_recover, t_end, broker_qty, qty_before, resub_lat, recon_lat
        )
        return out

    def _left_live(self, ep: Endpoint, t_fault: float) -> bool:
        assert ep.quote is not None
        return any(
            o.quote is not None and o.t_wall >= t_fault and o.quote.mode not in ep.quote.live
            for o in self.obs[ep.name]
        )

    def _back_live(self, ep: Endpoint, t: float) -> bool:
        assert ep.quote is not None
        return any(
            o.quote is not None
            and o.t_wall >= t
            and o.quote.mode in ep.quote.live
            and o.quote.bid is not None
            for o in self.obs[ep.name]
        )

    def _shows_qty(self, ep: Endpoint, qty: float) -> bool:
        seen = [o.position.quantity for o in self.obs[ep.name] if o.position is not None]
        return bool(seen) and seen[-1] is not None and abs(seen[-1] - qty) < 1e-9

    async def _truth_until(self, pred: Any, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            truth = await self.control.truth()
            if pred(truth) is not None or time.monotonic() > end:
                return truth
            await asyncio.sleep(POLL_S / 2)

    def _judge(
        self,
        drill: Drill,
        t_start: float,
        t_fault: float,
        t_recover: float,
        t_end: float,
        broker_qty: float,
        qty_before: float,
        resub_lat: float | None,
        recon_lat: float | None,
    ) -> list[j.ReactionResult]:
        res: list[j.ReactionResult] = []
        for r in drill.reactions:
            d = r.deadline
            if r.name == "reconnected":
                assert d is not None
                res.append(j.judge_latency(drill.name, r.name, recon_lat, d, "reconnect"))
            elif r.name == "resubscribed":
                assert d is not None
                res.append(j.judge_latency(drill.name, r.name, resub_lat, d, "reqMktData"))
            for ep in self.endpoints:
                obs = self.obs[ep.name]
                if r.name == "leaves_live":
                    assert d is not None
                    res.append(
                        j.judge_leaves_live(
                            drill.name, ep, obs, t_fault, d, transient=drill.transient
                        )
                    )
                elif r.name == "returns_live":
                    assert d is not None
                    res.append(j.judge_returns_live(drill.name, ep, obs, t_recover, d))
                elif r.name == "no_duplicates":
                    res.append(j.judge_duplicates(drill.name, ep, obs, t_start, t_end))
                elif r.name == "position_matches":
                    assert d is not None
                    res.append(
                        j.judge_position(drill.name, ep, obs, broker_qty, t_recover, d, t_end)
                    )
                elif r.name == "no_position_from_reject":
                    res.append(j.judge_no_position(drill.name, ep, obs, qty_before, t_fault, t_end))
        return res

    # --- orders (order_rejected, partial_fill) ------------------------------------------------
    async def _connect(self) -> Any:
        from harness_lib.connection import Connection
        from harness_lib.safety import GuardRefusal, check_accounts

        if self._conn is None:
            conn = Connection(
                str(self.identity.get("ib_host", "127.0.0.1")),
                int(self.identity["ib_port"]),
                DRILL_CLIENT_ID,
            )
            await conn.connect()
            self._conn = conn
            await asyncio.sleep(0.2)  # the farm notices follow the handshake
            if not conn.simulated:
                raise DrillRefused(
                    f"the gateway on port {conn.port} did not identify as the livefire simulator"
                )
            try:
                check_accounts(conn.ib.managedAccounts())
            except GuardRefusal as exc:
                raise DrillRefused(str(exc)) from None
        return self._conn

    async def _place(self, drill: Drill) -> None:
        from ib_async import MarketOrder

        from harness_lib.contracts import parse_spec

        assert drill.order is not None
        conn = await self._connect()
        (contract,) = await conn.ib.qualifyContractsAsync(parse_spec(self.symbol).to_contract())
        order = MarketOrder(drill.order["action"], drill.order["quantity"])
        order.orderRef = f"harness:{self.run_id}"
        order.account = conn.ib.managedAccounts()[0]
        trade = conn.ib.placeOrder(contract, order)
        end = time.monotonic() + 5.0
        while time.monotonic() < end and trade.orderStatus.status not in (
            "Filled",
            "Cancelled",
            "Inactive",
        ):
            if trade.filled() > 0 and trade.remaining() > 0:
                break  # the partial fill holds: the rest rests
            await asyncio.sleep(POLL_S)

    async def _cleanup_orders(self) -> None:
        """Cancel what the drills placed and still rests, and flatten what they bought."""
        from ib_async import MarketOrder

        conn = self._conn
        ref = f"harness:{self.run_id}"
        with contextlib.suppress(Exception):
            await self.control.call("DELETE", "/faults")
            if not await conn.ensure_connected():
                return
            for t in conn.ib.openTrades():
                if t.order.orderRef == ref:
                    conn.ib.cancelOrder(t.order)
            net: dict[int, tuple[Any, float]] = {}
            for f in conn.ib.fills():
                if f.execution.orderRef != ref:
                    continue
                c = f.contract
                signed = f.execution.shares * (1 if f.execution.side == "BOT" else -1)
                prev = net.get(c.conId, (c, 0.0))[1]
                net[c.conId] = (c, prev + signed)
            for c, q in net.values():
                if abs(q) > 1e-9:
                    o = MarketOrder("SELL" if q > 0 else "BUY", abs(q))
                    o.orderRef = ref
                    o.account = conn.ib.managedAccounts()[0]
                    conn.ib.placeOrder(c, o)
            await asyncio.sleep(0.5)
