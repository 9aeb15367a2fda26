"""The stack monitor: runs the watchers during a run and turns observations into a phase.

The runner starts it once the contract is qualified (the expressions need its symbol and
conId) and asks it for the ``stack`` phase before cleanup. In between it only listens:
to the endpoints, and to the harness's own connection for this run's executions (to stamp
when the gateway reported each fill). ``round_trip`` calls :meth:`StackMonitor.settle`
after the entry fill, so the stack gets its deadline to show the open position before the
exit order goes out, and :meth:`StackMonitor.ready` before the entry, so the watchers'
own start-up is never counted as the stack's latency; nothing is placed, cancelled or
changed here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from harness_lib.models import Checkpoint, Phase, PhaseResult, Verdict, utcnow, worst
from harness_lib.positions import side_sign

from .checks import (
    BrokerFill,
    BrokerTick,
    CheckResult,
    StackEvidence,
    check_position,
    check_quotes,
    check_stream,
    check_trade_id,
)
from .observe import Observation
from .spec import Endpoint
from .watch import CONNECT_TIMEOUT, Watcher, make_watcher

if TYPE_CHECKING:
    from ib_async import Contract, Fill, Trade

    from harness_lib.phases.base import RunContext

__all__ = ["ENTRY_CHECKS", "StackMonitor"]

log = logging.getLogger("harness_lib.stack")
POLL_S = 0.02
ENTRY_CHECKS = ("position_opened", "trade_id")
"""What ``round_trip`` waits for between the entry fill and the exit order."""


class StackMonitor:
    """Watches every declared endpoint for one run and judges the stack checks."""

    def __init__(self, ctx: RunContext, endpoints: Sequence[Endpoint]) -> None:
        contract = ctx.contract
        assert contract is not None, "start the stack monitor after the contract is qualified"
        self.ctx = ctx
        self.contract: Contract = contract
        self.symbol = contract.localSymbol or contract.symbol
        self.endpoints = [
            ep.bind(
                symbol=contract.symbol,
                con_id=contract.conId,
                local_symbol=contract.localSymbol or contract.symbol,
            )
            for ep in endpoints
        ]
        self.observations: dict[str, list[Observation]] = {ep.name: [] for ep in self.endpoints}
        self.watchers: dict[str, Watcher] = {}
        self.exec_arrivals: dict[str, float] = {}
        """execId -> wall time the harness's own connection received its execDetails."""
        self.position_before = 0.0
        self.started_wall = 0.0
        self.started_mono = 0.0
        self.results: list[CheckResult] = []
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Record the position before any trade, listen for fills, start every watcher."""
        ib = self.ctx.conn.ib
        self.position_before = sum(
            float(p.position)
            for p in ib.positions()
            if p.contract.conId == self.contract.conId
            and (not self.ctx.account or p.account == self.ctx.account)
        )
        ib.execDetailsEvent += self._on_exec
        # The checks compare the stack with the broker's ticks as they arrive: the
        # Recorder keeps them in its live ring only when someone asks.
        self.ctx.rec.keep_live_ticks()
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        for ep in self.endpoints:
            w = make_watcher(ep, self._sink)
            self.watchers[ep.name] = w
            w.start()
        self.ctx.rec.note(
            "info",
            f"stack: watching {', '.join(f'{e.name} ({e.kind})' for e in self.endpoints)}; "
            f"{self.symbol} position before the run {self.position_before:+g}",
        )

    def watching(self) -> list[str]:
        """Endpoints not yet watching: neither connected with a first message read, nor
        failed (a failure is the stream check's to report, not a reason to wait)."""
        return [
            name
            for name, w in self.watchers.items()
            if not (w.connected_at is not None and self.observations[name]) and w.last_error is None
        ]

    async def ready(self, timeout: float | None = None) -> list[str]:
        """Wait until every endpoint is watching (or failed), at most ``timeout`` seconds
        (default: the tick deadline plus the watchers' connect timeout, which covers
        chromium's start-up); the endpoints still not watching.

        ``round_trip`` calls this before the entry order: a fill that happens while a
        watcher is still connecting (or chromium still loading the page) would be shown
        "late" by the harness's own start-up, not by the stack."""
        if timeout is None:
            timeout = self.ctx.cfg.tick_deadline + CONNECT_TIMEOUT
        limit = time.monotonic() + timeout
        while (pending := self.watching()) and time.monotonic() < limit:
            await asyncio.sleep(POLL_S)
        return pending

    async def stop(self) -> None:
        """Stop every watcher (idempotent; safe after a failure or an interrupt)."""
        if self._stopped:
            return
        self._stopped = True
        self.ctx.conn.ib.execDetailsEvent -= self._on_exec
        await asyncio.gather(*(w.stop() for w in self.watchers.values()), return_exceptions=True)

    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        # Runs inside ib_async's event dispatch: stamp only, never raise.
        if fill.execution.orderRef == self.ctx.rec.order_ref:
            self.exec_arrivals.setdefault(fill.execution.execId, time.time())
            for w in self.watchers.values():
                w.nudge()  # a poller looks now, not up to one interval later

    def _sink(self, obs: Observation) -> None:
        self.observations[obs.endpoint].append(obs)
        try:
            self.ctx.rec.stack_observation(obs)
        except Exception:  # the store must not stop the watcher; the check still sees it
            log.exception("could not record a stack observation")

    # --- broker-side moments -----------------------------------------------------------------
    def broker_ticks(self) -> list[BrokerTick]:
        """The contract's bid/ask ticks the Recorder received, with their arrival stamps."""
        cid = self.contract.conId
        with self.ctx.rec.lock:
            rows = list(self.ctx.rec.ticks)
        # Row layout: (run_id, con_id, symbol, field, tick_type, price, size, t_mono, t_wall, ...)
        return [
            BrokerTick(r[3], r[5], r[8])
            for r in rows
            if r[1] == cid and r[3] in ("bid", "ask") and r[5] is not None
        ]

    def fills(self) -> list[BrokerFill]:
        """This run's legs that filled, in order, with the moments the harness saw them."""
        out: list[BrokerFill] = []
        for i, trade in enumerate(self.ctx.trades):
            fills = [f for f in trade.fills if f.execution.execId in self.exec_arrivals]
            if not fills:
                continue
            sign = float(side_sign(trade.order.action))
            perm = trade.order.permId or fills[0].execution.permId
            submitted = trade.log[0].time.timestamp() if trade.log else self.started_wall
            out.append(
                BrokerFill(
                    leg="entry" if i == 0 else "exit",
                    exec_ids=frozenset(f.execution.execId for f in fills),
                    perm_id=str(perm) if perm else None,
                    quantity=sign * sum(float(f.execution.shares) for f in fills),
                    t_wall=min(self.exec_arrivals[f.execution.execId] for f in fills),
                    submitted_wall=submitted,
                )
            )
        return out

    # --- judging -----------------------------------------------------------------------------
    def evaluate(self, now: float, *, trade_checks: bool = True) -> list[CheckResult | None]:
        """Every check of every endpoint as of ``now`` (None: still undecided)."""
        return [r for _, r in self._evaluate(now, trade_checks=trade_checks)]

    def stream_check(self, ep: Endpoint) -> CheckResult:
        """The ``stream`` check of ``ep`` on what it emitted so far."""
        w = self.watchers.get(ep.name)
        connected = w is not None and w.connected_at is not None
        last_error = w.last_error if w else None
        return check_stream(
            ep, self.observations[ep.name], connected=connected, last_error=last_error
        )

    def quotes_check(
        self, ep: Endpoint, now: float, ticks: Sequence[BrokerTick] | None = None
    ) -> CheckResult | None:
        """The ``quotes`` check of ``ep`` as of ``now`` (None: its deadline is still open).

        The deadline runs from the endpoint's first connection (the stack cannot show a
        quote before we listen), else from the monitor's start.
        """
        w = self.watchers.get(ep.name)
        start = w.connected_at if w and w.connected_at else self.started_wall
        return check_quotes(
            ep,
            self.observations[ep.name],
            self.broker_ticks() if ticks is None else ticks,
            start=start,
            deadline_s=self.ctx.cfg.tick_deadline,
            now=now,
            symbol=self.symbol,
        )

    def forget(self, endpoint: str, keep: int) -> None:
        """Drop all but the last ``keep`` observations of ``endpoint``, except invalid
        ones (the stream check must still see them). For a live view that runs for hours,
        once the checks that read the old ones are decided; call it on the monitor's loop."""
        obs = self.observations[endpoint]
        if len(obs) > 2 * keep:
            old, recent = obs[:-keep], obs[-keep:]
            obs[:] = [o for o in old if o.error][:keep] + recent

    def _evaluate(
        self, now: float, *, trade_checks: bool = True
    ) -> list[tuple[str, CheckResult | None]]:
        out: list[tuple[str, CheckResult | None]] = []
        ticks = self.broker_ticks()
        fills = self.fills()
        entry = next((f for f in fills if f.leg == "entry"), None)
        exit_ = next((f for f in fills if f.leg == "exit"), None)
        sym = self.symbol
        for ep in self.endpoints:
            obs = self.observations[ep.name]
            if now == math.inf:
                out.append(("stream", self.stream_check(ep)))
            if ep.quote is not None:
                out.append(("quotes", self.quotes_check(ep, now, ticks)))
            if not trade_checks or entry is None:
                continue
            if ep.position is not None:
                opened = self.position_before + entry.quantity
                out.append(
                    (
                        "position_opened",
                        check_position(ep, obs, entry, expected=opened, now=now, symbol=sym),
                    )
                )
            if ep.trades is not None:
                out.append(("trade_id", check_trade_id(ep, obs, fills, now=now, symbol=sym)))
            if ep.position is not None and exit_ is not None:
                after = self.position_before + entry.quantity + exit_.quantity
                out.append(
                    (
                        "position_cleared",
                        check_position(
                            ep,
                            obs,
                            exit_,
                            expected=after,
                            now=now,
                            symbol=sym,
                            name="position_cleared",
                            hold=ep.hold,
                        ),
                    )
                )
        return out

    async def settle(
        self, only: Collection[str] | None = None, timeout: float | None = None
    ) -> None:
        """Wait until every check (or those named in ``only``) that can be judged now is
        decided, or ``timeout`` passes.

        ``round_trip`` calls this after the entry fill for ``position_opened`` and
        ``trade_id``: the stack gets its full deadline to show the open position and the
        entry's ids before the exit order changes them.
        """
        limit = time.monotonic() + (timeout if timeout is not None else self._longest_wait())
        while time.monotonic() < limit:
            pending = [n for n, r in self._evaluate(time.time()) if r is None]
            if not any(only is None or n in only for n in pending):
                return
            await asyncio.sleep(POLL_S)

    def _longest_wait(self) -> float:
        longest = max((ep.position_deadline + ep.hold for ep in self.endpoints), default=0.0)
        return self.ctx.cfg.tick_deadline + longest + 1.0

    async def finish(self, *, trade_checks: bool) -> PhaseResult:
        """Wait for the checks to be decidable, stop the watchers, and judge: the stack phase."""
        t0 = time.monotonic()
        started_at = utcnow()
        await self.settle()
        await self.stop()
        results = [r for r in self.evaluate(math.inf, trade_checks=trade_checks) if r is not None]
        self.results = results
        checkpoints: list[Checkpoint] = []
        for r in results:
            try:
                self.ctx.rec.stack_check(r)
            except Exception:
                log.exception("could not record a stack check")
            if r.verdict == Verdict.PASS and r.at_wall is not None:
                # Stamped when the stack showed it, so the timeline puts it beside the fills.
                cp = self.ctx.rec.checkpoint(
                    str(Phase.STACK), r.key, r.reason,
                    t_mono=r.at_wall + (time.monotonic() - time.time()),
                    t_wall=datetime.fromtimestamp(r.at_wall, UTC),
                )  # fmt: skip
                checkpoints.append(cp)
        verdict = worst([r.verdict for r in results])
        failing = next((r for r in results if r.verdict == verdict and not _ok(r.verdict)), None)
        if failing is not None:
            reason = failing.reason
        else:
            lat = [r for r in results if r.latency_s is not None]
            reason = f"{len(results)} check(s) on {len(self.endpoints)} endpoint(s) passed" + (
                "; " + "; ".join(f"{r.key} {r.latency_s * 1000:.0f} ms" for r in lat) if lat else ""
            )
        metrics: dict[str, Any] = {
            f"{r.key}_latency_s": round(r.latency_s, 6) for r in results if r.latency_s is not None
        }
        metrics["observations"] = sum(len(v) for v in self.observations.values())
        evidence = StackEvidence(
            checks=results,
            endpoints=[ep.public() for ep in self.endpoints],
            position_before=self.position_before,
        ).to_dict()
        result = PhaseResult(
            phase=Phase.STACK,
            verdict=verdict,
            reason=reason,
            started_at=started_at,
            duration_s=round(time.monotonic() - t0, 6),
            checkpoints=checkpoints,
            metrics=metrics,
            evidence=evidence,
        )
        self.ctx.rec.phase(result)
        return result


def _ok(v: Verdict) -> bool:
    return v in (Verdict.PASS, Verdict.SKIPPED)
