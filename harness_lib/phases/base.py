"""What every phase shares: the run context and a small helper to build its result."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ib_async import Contract, Ticker, Trade

from harness_lib.config import HarnessConfig
from harness_lib.connection import Connection
from harness_lib.models import Checkpoint, Phase, PhaseResult, Target, Verdict, utcnow
from harness_lib.recorder import Recorder
from harness_lib.store import Store

if TYPE_CHECKING:
    from harness_lib.stack.monitor import StackMonitor


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121T053900Z-3f2a``."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:4]


@dataclass
class RunContext:
    """The state one run carries from phase to phase.

    Build one with ``RunContext.create(cfg, host=..., port=...)`` to call a phase on its
    own from a notebook, a script or your own test::

        ctx = RunContext.create(HarnessConfig(contract="AAPL"), host="127.0.0.1", port=7599)
        print(await health(ctx)); print(await ticks(ctx)); print(await cleanup(ctx))
    """

    cfg: HarnessConfig
    run_id: str
    conn: Connection
    rec: Recorder
    target: Target
    contract: Contract | None = None
    ticker: Ticker | None = None
    tickers: list[Ticker] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    account: str | None = None
    health_passed: bool = False
    ticks_live: bool = False
    on_checkpoint: Callable[[str, Checkpoint], None] | None = None
    resubscriptions: int = 0
    stack: StackMonitor | None = None
    """Watches the user's stack during the run (only when one is declared)."""

    def __post_init__(self) -> None:
        self.conn.listeners.append(self._on_ib_message)

    def _on_ib_message(self, msg: Any) -> None:
        # 1101: connectivity restored but market data lost; IB will not resume the streams.
        if msg.code == 1101 and self.tickers:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(self.resubscribe)

    def resubscribe(self) -> None:
        """Request market data again for every subscription of this run (after 1101)."""
        ib = self.conn.ib
        if not ib.isConnected():
            return
        for t in self.tickers:
            ib.cancelMktData(t.contract)
            ib.reqMktData(t.contract, "", False, False)
        self.resubscriptions += 1
        self.rec.note("info", f"resubscribed {len(self.tickers)} stream(s) after IB 1101")

    @classmethod
    def create(
        cls,
        cfg: HarnessConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        store: Store | None = None,
        run_id: str | None = None,
        simulated: bool = False,
    ) -> RunContext:
        """A context for one run against ``host:port`` (defaults from the config)."""
        rid = run_id or new_run_id()
        h = host or cfg.host
        p = port if port is not None else (cfg.port or cfg.candidate_ports[0])
        conn = Connection(h, p, cfg.client_id, timeout=cfg.connect_timeout)
        target = Target(
            host=h,
            port=p,
            client_id=cfg.client_id,
            simulated=simulated,
            scenario=cfg.scenario if simulated else None,
        )
        meta = {"target": f"{h}:{p}", "simulated": simulated, "contract": cfg.contract}
        if simulated:
            meta["scenario"] = str(cfg.scenario)
        rec = Recorder(rid, store, wire_meta=meta)
        return cls(cfg=cfg, run_id=rid, conn=conn, rec=rec, target=target)


class PhaseRun:
    """Times one phase, records its checkpoints and builds its PhaseResult."""

    def __init__(self, ctx: RunContext, phase: Phase) -> None:
        self.ctx = ctx
        self.phase = phase
        self.t0 = time.monotonic()
        self.started_at = utcnow()
        self.checkpoints: list[Checkpoint] = []
        self.mark = ctx.conn.mark()
        ctx.rec.phase_started(str(phase))

    def cp(self, name: str, detail: str = "") -> Checkpoint:
        """Record a checkpoint of this phase now."""
        cp = self.ctx.rec.checkpoint(str(self.phase), name, detail)
        self.checkpoints.append(cp)
        if self.ctx.on_checkpoint is not None:
            self.ctx.on_checkpoint(str(self.phase), cp)
        return cp

    def elapsed(self) -> float:
        """Seconds since the phase started."""
        return time.monotonic() - self.t0

    def result(
        self,
        verdict: Verdict,
        reason: str,
        metrics: dict[str, Any] | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> PhaseResult:
        """The phase's result, with every IB message that arrived while it ran."""
        res = PhaseResult(
            phase=self.phase,
            verdict=verdict,
            reason=reason,
            started_at=self.started_at,
            duration_s=round(self.elapsed(), 6),
            checkpoints=list(self.checkpoints),
            metrics=metrics or {},
            evidence=evidence or {},
            errors=self.ctx.conn.since(self.mark),
        )
        self.ctx.rec.phase(res)
        return res


async def wait_for(
    pred: Callable[[], bool],
    deadline: float,
    *,
    step: float = 0.01,
    abort: Callable[[], bool] | None = None,
) -> bool:
    """Await until ``pred()`` is true or the monotonic ``deadline`` passes (or ``abort()``)."""
    while not pred():
        if time.monotonic() >= deadline or (abort is not None and abort()):
            return pred()
        await asyncio.sleep(step)
    return True
