"""The single writer of the store during a run: the run record itself (start, phases,
verdict, notifications) and every tick, IB message, order, fill and checkpoint.

Ticks are not handled on the event loop at all when the run has a store: the wire tap
(``harness_lib/wire``) records every byte of the connection with its receive stamps to
``data/wire/<run_id>.lfwire.gz``, and a background worker derives the store's ticks rows
from those bytes with ib_async's own decoder. Live views that want ticks in real time
set ``live_ring`` and get them in a bounded ring buffer. Everything else (IB messages,
orders, fills, checkpoints) is stamped with a monotonic and a wall-clock receive time
and written to the store as it arrives.

One policy for a store write that fails (disk full, file gone, a read-only store, a
locked database): the failure is kept in :attr:`Recorder.losses`, recorded as an
``error`` event in the store when the store still takes that, and
:meth:`Recorder.account_for_losses` turns the phase it happened in into FAIL: a run that
lost data must not say PASS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from ib_async import IB, CommissionReport, Fill, Ticker, Trade

from harness_lib.connection import Connection, kind_of
from harness_lib.models import (
    Checkpoint,
    IBMessage,
    PhaseResult,
    RunReport,
    Target,
    Verdict,
    finite,
    severity,
    utcnow,
)
from harness_lib.positions import net_position
from harness_lib.store import Store, StoreError

log = logging.getLogger("harness_lib.recorder")

TICK_FIELDS: dict[int, str] = {
    0: "bidSize", 1: "bid", 2: "ask", 3: "askSize", 4: "last", 5: "lastSize", 6: "high",
    7: "low", 8: "volume", 9: "close", 14: "open",
    66: "bid", 67: "ask", 68: "last", 69: "bidSize", 70: "askSize", 71: "lastSize",
    72: "high", 73: "low", 74: "volume", 75: "close", 76: "open",
}  # fmt: skip
"""Tick type id → Ticker field, live and delayed ids alike (ib_async's own mapping)."""

FLUSH_ROWS = 5_000
"""Ticks per store transaction at most; the periodic flush bounds the delay instead."""
FLUSH_SECONDS = 0.1


class TickRow(NamedTuple):
    """One recorded tick, as live views see it."""

    seq: int
    con_id: int
    symbol: str
    field: str
    tick_type: int
    price: float | None
    size: float | None
    t_mono: float
    t_wall: float
    market_data_type: int


SIZE_FIELDS = frozenset({"bidSize", "askSize", "lastSize", "volume"})


@dataclass
class Recorder:
    """Records what one run observes; the only writer of the store during a run."""

    run_id: str
    store: Store | None = None
    ring_size: int = 20_000
    order_ref: str = ""
    live_ring: bool = False
    """Keep ticks in the ring buffer as they arrive (live views); costs the loop per tick."""
    wire_path: Path | None = None
    """Where to record the connection; by default ``wire/<run_id>.lfwire.gz`` beside the
    store. Without a store and without a path nothing is recorded (ticks go to the ring)."""
    wire_meta: dict[str, Any] = field(default_factory=dict)
    wire: Any = None
    """The run's RunRecording once attached."""
    ticks: deque[tuple] = field(init=False)
    """Recent store rows (run_id, con_id, ..., seq); ``snapshot`` turns them into TickRows."""
    checkpoints: list[tuple[str, Checkpoint]] = field(default_factory=list)
    messages: deque[IBMessage] = field(init=False)
    stack_seen: deque[Any] = field(init=False)
    """Recent stack observations for live views (broker and stack quote side by side)."""
    executions: dict[str, Fill] = field(default_factory=dict)
    commissions: dict[str, CommissionReport] = field(default_factory=dict)
    tick_count: int = 0
    duplicate_executions: int = 0
    losses: list[tuple[str, str]] = field(default_factory=list)
    """Store writes that failed, as (phase running then, what was lost and why)."""
    current_phase: str = ""
    _phase_starts: list[tuple[float, str]] = field(default_factory=list)
    _accounted: int = 0
    _buf: list[tuple] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None
    _ib: IB | None = None
    _orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.ticks = deque(maxlen=self.ring_size)
        self.messages = deque(maxlen=2_000)
        self.stack_seen = deque(maxlen=2_000)
        if not self.order_ref:
            self.order_ref = f"harness:{self.run_id}"

    # --- wiring ------------------------------------------------------------------------------
    def attach(self, conn: Connection) -> None:
        """Listen to a connection's IB messages, ticks, orders and fills."""
        ib = conn.ib
        self._ib = ib
        conn.listeners.append(self.ib_message)
        if self.wire is None:
            self._start_wire(ib)
        if self.live_ring or self.wire is None:
            self.keep_live_ticks()
        ib.execDetailsEvent += self._on_exec
        ib.commissionReportEvent += self._on_commission
        ib.orderStatusEvent += self._on_status
        if self._flusher is None:
            with contextlib.suppress(RuntimeError):
                self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def keep_live_ticks(self) -> None:
        """Keep ticks in the ring buffer as they arrive, from now on (live views, the stack
        checks). Costs the event loop per tick, which is why it is not the default."""
        self.live_ring = True
        ib = self._ib
        if ib is not None and self._on_pending_tickers not in ib.pendingTickersEvent:
            ib.pendingTickersEvent += self._on_pending_tickers

    def _start_wire(self, ib: IB) -> None:
        from harness_lib.wire.format import recording_path
        from harness_lib.wire.run import RunRecording

        path = self.wire_path
        if path is None and self.store is not None and not getattr(self.store, "readonly", 0):
            path = recording_path(Path(self.store.path), self.run_id)
        if path is None:
            return
        meta = {"tool": "harness run", **self.wire_meta}
        self.wire = RunRecording(
            path, self.run_id, store=self.store, meta=meta,
            on_lost=lambda what, exc, t_mono: self._lost(what, exc, self.phase_at(t_mono)),
        ).start(ib)  # fmt: skip

    @property
    def recorded_ticks(self) -> int:
        """Ticks recorded so far: derived from the wire (they lag a little during a fast
        stream) or, without a recording, counted as they arrived."""
        return self.wire.tick_count if self.wire is not None else self.tick_count

    def detach(self, conn: Connection) -> None:
        """Stop listening (before the connection object is thrown away)."""
        if self.wire is not None:
            self.wire.detach()
        ib = conn.ib
        with contextlib.suppress(ValueError):
            conn.listeners.remove(self.ib_message)
        ib.pendingTickersEvent -= self._on_pending_tickers
        ib.execDetailsEvent -= self._on_exec
        ib.commissionReportEvent -= self._on_commission
        ib.orderStatusEvent -= self._on_status

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    # --- ticks -------------------------------------------------------------------------------
    def _on_pending_tickers(self, tickers: Iterable[Ticker]) -> None:
        t_mono = time.monotonic()
        for ticker in tickers:
            if ticker.ticks:
                self.record_ticks(ticker, t_mono)

    def record_ticks(self, ticker: Ticker, t_mono: float) -> None:
        """Record the ticks ib_async collected for this ticker in the latest socket read.

        ``TickData.time`` is when the bytes arrived (ib_async stamps it on read), so it is
        the arrival time used for latency; ``t_mono`` is when we processed them. This runs
        for every tick on the event loop, so it builds one tuple per tick and nothing else:
        the same tuple goes to the store buffer and to the live ring.
        """
        c = ticker.contract
        con_id = c.conId if c else 0
        symbol = (c.localSymbol or c.symbol) if c else ""
        mdt = ticker.marketDataType
        run_id = self.run_id
        buf_append = self._buf.append
        ring_append = self.ticks.append
        to_store = self.wire is None  # with a recording, the store's ticks are derived
        fields = TICK_FIELDS
        n = self.tick_count
        last_time = None
        t_wall = 0.0
        for td in ticker.ticks:
            tick_type = td.tickType
            fld = fields.get(tick_type)
            if fld is None:
                continue
            n += 1
            if td.time is not last_time:
                # Every tick of one socket read shares one arrival datetime.
                last_time = td.time
                t_wall = last_time.timestamp()
            price = None if fld in SIZE_FIELDS else finite(td.price)
            row = (run_id, con_id, symbol, fld, tick_type, price, finite(td.size), t_mono,
                   t_wall, mdt, n)  # fmt: skip
            if to_store:
                buf_append(row)
            ring_append(row)
        self.tick_count = n
        if len(self._buf) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write buffered ticks in one transaction."""
        if not self._buf:
            return
        rows, self._buf = self._buf, []
        self._write(f"{len(rows)} tick(s)", self.store.add_ticks if self.store else None, rows)

    # --- the store, and what happens when it fails ------------------------------------------
    def _write(self, what: str, write: Any, *args: Any, **kwargs: Any) -> Any:
        """Call one store write; on failure record the loss (see the module docstring)
        and return None instead of raising, so the run goes on and cleanup still runs."""
        if write is None:
            return None
        try:
            return write(*args, **kwargs)
        except StoreError as exc:
            self._lost(what, exc)
            return None

    def _lost(self, what: str, exc: Exception, phase: str | None = None) -> None:
        text = f"{what} not stored ({exc})"
        log.error("store write failed, data lost: %s", text)
        with self.lock:
            self.losses.append((self.current_phase if phase is None else phase, text))
        if self.store is None:
            return
        # Said in the store too if it still takes a small write; if not, it stays in
        # memory and the verdict carries it.
        with contextlib.suppress(StoreError):
            self.store.add_event(
                self.run_id, kind="error", code=None, req_id=None, t_wall=utcnow(),
                message=f"store write failed, data lost: {text}", t_mono=time.monotonic(),
            )  # fmt: skip

    def account_for_losses(self, phases: list[PhaseResult]) -> None:
        """Make each phase during which a store write failed (the last phase for failures
        outside any phase) at least FAIL, with the loss in its reason and evidence, and
        store it again. Only losses not yet accounted for are applied."""
        with self.lock:
            new = self.losses[self._accounted :]
            self._accounted = len(self.losses)
        if not new or not phases:
            return
        names = {str(p.phase) for p in phases}
        by_phase: dict[str, list[str]] = {}
        for phase, text in new:
            key = phase if phase in names else str(phases[-1].phase)
            by_phase.setdefault(key, []).append(text)
        for result in phases:
            texts = by_phase.get(str(result.phase))
            if not texts:
                continue
            note = f"store write failed, data lost: {texts[0]}"
            if len(texts) > 1:
                note += f" (and {len(texts) - 1} more)"
            lost = result.evidence.setdefault("store_writes_lost", [])
            lost.extend(texts)
            if severity(result.verdict) < severity(Verdict.FAIL):
                was = f"was {result.verdict}: {result.reason}" if result.reason else ""
                result.verdict = Verdict.FAIL
                result.reason = f"{note}; {was}" if was else note
            else:
                result.reason = f"{result.reason}; {note}"
            self.phase(result)
        with self.lock:
            # Re-storing the phases may itself fail; that is reported, not re-applied.
            self._accounted = len(self.losses)

    # --- the run record ----------------------------------------------------------------------
    def start_run(
        self, target: Target, *, contract: str, phases: list[str], config: dict[str, Any],
        started_at: datetime | None = None,
    ) -> None:  # fmt: skip
        """Record the run as started (``config`` already redacted)."""
        self._write(
            "the run record", self.store.start_run if self.store else None, self.run_id,
            target=target, contract=contract, phases=phases, config=config,
            started_at=started_at,
        )  # fmt: skip

    def finish_run(self, rep: RunReport) -> None:
        """Account for lost writes, then store the run's verdict and summary. If that
        write fails too, the report (and the exit code) still say FAIL."""
        self.account_for_losses(rep.phases)
        summary = {
            "first_bid_s": rep.metric("first_bid_s"),
            "first_ask_s": rep.metric("first_ask_s"),
            "total_cost": rep.metric("total_cost"),
            "target": rep.target.to_dict(),
        }
        self._write(
            "the run's verdict", self.store.finish_run if self.store else None, rep.run_id,
            verdict=str(rep.verdict), reason=rep.reason, exit_code=rep.exit_code,
            summary=summary, finished_at=rep.finished_at,
        )  # fmt: skip
        self.account_for_losses(rep.phases)

    def notification(self, channel: str, *, ok: bool, detail: str) -> None:
        """Record a notification or heartbeat attempt (``channel`` already redacted)."""
        self._write(
            f"notification record for {channel}",
            self.store.add_notification if self.store else None, self.run_id,
            channel=channel, ok=ok, detail=detail,
        )  # fmt: skip

    # --- checkpoints and messages ------------------------------------------------------------
    def checkpoint(
        self,
        phase: str,
        name: str,
        detail: str = "",
        *,
        t_mono: float | None = None,
        t_wall: datetime | None = None,
    ) -> Checkpoint:
        """Record a named moment: now, or when something was observed (both stamps given)."""
        cp = Checkpoint(
            name=name,
            t_mono=time.monotonic() if t_mono is None else t_mono,
            t_wall=utcnow() if t_wall is None else t_wall,
            detail=detail,
        )
        with self.lock:
            self.checkpoints.append((phase, cp))
        self._write(f"checkpoint {name}", self.store.add_checkpoint if self.store else None,
                    self.run_id, phase, cp)  # fmt: skip
        return cp

    def ib_message(self, msg: IBMessage) -> None:
        """Record an IB error, warning or notice."""
        with self.lock:
            self.messages.append(msg)
        self._write(
            f"IB message {msg.code}", self.store.add_event if self.store else None, self.run_id,
            kind=kind_of(msg.code), code=msg.code, message=msg.message, req_id=msg.req_id,
            t_wall=msg.t_wall, t_mono=time.monotonic(),
        )  # fmt: skip

    def note(self, kind: str, message: str) -> None:
        """Record something the harness itself concluded or did (e.g. a guard's warning)."""
        msg = IBMessage(code=0, message=message, req_id=-1, t_wall=utcnow())
        with self.lock:
            self.messages.append(msg)
        self._write(
            f"{kind} note", self.store.add_event if self.store else None, self.run_id, kind=kind,
            code=None, message=message, req_id=None, t_wall=msg.t_wall,
            t_mono=time.monotonic(),
        )  # fmt: skip

    def phase_started(self, phase: str) -> None:
        """Note which phase runs now, so a failed store write is charged to it."""
        self.current_phase = str(phase)
        with self.lock:
            self._phase_starts.append((time.monotonic(), str(phase)))

    def phase_at(self, t_mono: float) -> str:
        """The phase that was running at ``t_mono`` (ticks derived later are charged to the
        phase in which they arrived, not to the one running when they were written)."""
        with self.lock:
            starts = list(self._phase_starts)
        name = ""
        for t, phase in starts:
            if t > t_mono:
                break
            name = phase
        return name

    def phase(self, result: PhaseResult) -> None:
        """Store a finished phase."""
        self._write(f"{result.phase} result", self.store.record_phase if self.store else None,
                    self.run_id, result)  # fmt: skip

    # --- the user's stack ---------------------------------------------------------------------
    def stack_observation(self, obs: Any) -> None:
        """Record what a stack endpoint showed (a ``harness_lib.stack`` Observation)."""
        with self.lock:
            self.stack_seen.append(obs)
        self._write(
            f"stack observation of {obs.endpoint}",
            self.store.add_stack_observation if self.store else None, self.run_id, obs.to_dict(),
        )  # fmt: skip

    def stack_check(self, result: Any) -> None:
        """Record one judged stack check (a ``harness_lib.stack`` CheckResult)."""
        self._write(
            f"stack check {result.key}", self.store.add_stack_check if self.store else None,
            self.run_id, result.to_dict(),
        )  # fmt: skip

    # --- drills ------------------------------------------------------------------------------
    def drill_result(self, row: dict[str, Any]) -> None:
        """Record one judged drill reaction (see ``Store.add_drill_result``)."""
        self._write(
            f"drill result {row['drill']}/{row['reaction']}/{row['endpoint']}",
            self.store.add_drill_result if self.store else None, self.run_id, row,
        )  # fmt: skip

    def finish_drills(self, *, verdict: str, reason: str, exit_code: int) -> None:
        """Conclude a `harness drill` run (it has no phases, so no RunReport)."""
        self._write(
            "the drills' verdict", self.store.finish_run if self.store else None, self.run_id,
            verdict=verdict, reason=reason, exit_code=exit_code, summary={"drills": True},
        )  # fmt: skip

    # --- orders, fills, commissions ----------------------------------------------------------
    def order_placed(
        self,
        trade: Trade,
        *,
        leg: str,
        account: str | None,
        decision_bid: float | None = None,
        decision_ask: float | None = None,
    ) -> None:
        """Record an order the harness placed, with the quote it decided on."""
        mid = (
            (decision_bid + decision_ask) / 2
            if decision_bid is not None and decision_ask is not None
            else None
        )
        c, o = trade.contract, trade.order
        info = {
            "leg": leg,
            "account": account,
            "decision_bid": finite(decision_bid),
            "decision_ask": finite(decision_ask),
            "decision_mid": finite(mid),
            "multiplier": float(c.multiplier) if c.multiplier else 1.0,
        }
        self._orders[o.orderId] = info
        self._write_order(trade)

    def _write_order(self, trade: Trade) -> None:
        if self.store is None:
            return
        o, c = trade.order, trade.contract
        info = self._orders.get(o.orderId)
        if info is None:
            return
        lmt = o.lmtPrice if o.orderType == "LMT" else None
        self._write(
            f"order {o.orderId}", self.store.upsert_order, self.run_id, order_id=o.orderId,
            perm_id=o.permId or None,
            client_id=o.clientId or trade.orderStatus.clientId, account=info["account"],
            con_id=c.conId, symbol=c.localSymbol or c.symbol, sec_type=c.secType,
            multiplier=info["multiplier"], action=o.action, quantity=float(o.totalQuantity),
            order_type=o.orderType, lmt_price=finite(lmt), order_ref=o.orderRef or self.order_ref,
            leg=info["leg"], status=trade.orderStatus.status,
            decision_bid=info["decision_bid"], decision_ask=info["decision_ask"],
            decision_mid=info["decision_mid"],
        )  # fmt: skip

    def _ours(self, order_ref: str) -> bool:
        return order_ref == self.order_ref

    def _on_status(self, trade: Trade) -> None:
        if trade.order.orderId in self._orders:
            self._write_order(trade)

    def _on_exec(self, trade: Trade, fill: Fill) -> None:
        if not self._ours(fill.execution.orderRef):
            return
        self.record_execution(fill)

    def record_execution(self, fill: Fill) -> bool:
        """Record a fill once (by execId); False when it was already recorded."""
        ex = fill.execution
        if ex.execId in self.executions:
            self.duplicate_executions += 1
            return False
        self.executions[ex.execId] = fill
        if self.store is not None:
            self._write(
                f"execution {ex.execId}", self.store.add_execution, self.run_id,
                exec_id=ex.execId, order_id=ex.orderId, perm_id=ex.permId or None,
                order_ref=ex.orderRef, con_id=fill.contract.conId,
                symbol=fill.contract.localSymbol or fill.contract.symbol, side=ex.side,
                shares=float(ex.shares), price=float(ex.price), account=ex.acctNumber,
                t_wall=fill.time if isinstance(fill.time, datetime) else utcnow(),
                t_mono=time.monotonic(),
            )  # fmt: skip
        return True

    def _on_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        if not self._ours(fill.execution.orderRef):
            return
        self.record_commission(fill, report)

    def record_commission(self, fill: Fill, report: CommissionReport) -> bool:
        """Record a commission report once (by execId)."""
        if report.execId in self.commissions:
            return False
        if fill.execution.execId not in self.executions:
            self.record_execution(fill)
        self.commissions[report.execId] = report
        if self.store is not None:
            pnl = report.realizedPNL
            self._write(
                f"commission {report.execId}", self.store.add_commission, self.run_id,
                exec_id=report.execId, commission=float(report.commission),
                currency=report.currency, realized_pnl=pnl if pnl else None, t_wall=utcnow(),
            )  # fmt: skip
        return True

    def net_position(self, con_id: int | None = None) -> dict[int, float]:
        """Net quantity per conId created by this run's own executions."""
        return net_position(
            (f.contract.conId, f.execution.side, f.execution.shares)
            for f in self.executions.values()
            if con_id is None or f.contract.conId == con_id
        )

    # --- live snapshots ------------------------------------------------------------------------
    def snapshot(self, last_ticks: int = 2_000) -> dict[str, Any]:
        """A thread-safe copy of recent observations for live views."""
        with self.lock:
            rows = list(self.ticks)[-last_ticks:]
            cps = list(self.checkpoints)
            msgs = list(self.messages)
            stack = list(self.stack_seen)
        ticks = [TickRow(r[10], *r[1:10]) for r in rows]
        return {"ticks": ticks, "checkpoints": cps, "messages": msgs,
                "tick_count": self.tick_count, "stack": stack}  # fmt: skip

    async def close(self) -> None:
        """Flush and stop the periodic flusher."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
            self._flusher = None
        self.flush()
        if self.wire is not None:
            # Finishing the file and deriving the last ticks is blocking work: off the loop.
            await asyncio.to_thread(self.wire.close)
