"""One live feed per process for notebooks: a background thread, its own event loop, one
IB connection, and thread-safe snapshots for cells to draw.

Why a thread of its own:

* marimo re-runs cells, and a re-run connect cell would leave its old connection open.
  The feed owns the connection; :meth:`LiveFeed.connect` closes the previous one first,
  so re-running a cell (or opening a second ``marimo run`` viewer) never leaks sockets
  or clientIds.
* A cell that blocks (heavy pandas, ``time.sleep``) stops marimo's loop, and with it any
  ib_async socket reading on that loop. On the feed's own loop ticks keep arriving.
* Script mode (``python notebook.py``) has no event loop for sync cells at all; the
  feed's loop works the same in every mode. No nest_asyncio: only ib_async's async API.

The data comes from the harness itself: a session runs the :func:`health` and
:func:`ticks` phases on a :class:`RunContext` and the :class:`Recorder` collects ticks,
checkpoints and IB messages, so a notebook shows exactly what ``harness run`` judges::

    feed = get_feed()
    feed.start_sim("healthy")                  # embedded simulator on the feed loop
    feed.connect(contract="AAPL")              # health + ticks, then keeps streaming
    snap = feed.snapshot()                     # a Snapshot: verdict, quote, ticks ...
    report = feed.run(lambda: run_harness(cfg, gateway=feed.sim)).result()

With a stack declared (``cfg.stack``), the session also runs the harness's own
:class:`~harness_lib.stack.monitor.StackMonitor` once the contract is qualified, exactly
as ``harness run`` does: the same watchers, observations through the same Recorder, and
the same ``stream`` and ``quotes`` checks, judged on the feed loop. Each snapshot then
carries every endpoint's latest quote beside the broker's (:attr:`Snapshot.stack`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ib_async import Ticker

from harness_lib.config import HarnessConfig
from harness_lib.connection import BAD_FARM_CODES, GOOD_FARM_CODES, kind_of
from harness_lib.live import LIVE_CLIENT_ID
from harness_lib.live.snapshot import (
    Account,
    FarmNotice,
    HealthPanel,
    SessionPhases,
    Snapshot,
    StackQuote,
    checkpoints_frame,
    live_verdict,
    messages_frame,
    ticks_frame,
    with_stack,
)
from harness_lib.models import IBMessage, RunReport, Verdict, worst
from harness_lib.phases import RunContext, health, ticks
from harness_lib.quotes import QUOTE_FIELDS, market_data_name, note_first_real
from harness_lib.safety import is_paper_account, mask_account
from harness_lib.sim import PaperGateway, Scenario, parse_scenario

if TYPE_CHECKING:
    from harness_lib.stack.checks import CheckResult
    from harness_lib.stack.monitor import StackMonitor

__all__ = ["LiveFeed", "get_feed"]

log = logging.getLogger("harness_lib.live")

T = TypeVar("T")

RECENT_TICKS = 2_000
"""Ticks a snapshot carries for charts; live charts re-send their data on every refresh."""

LOG_SIZE = 500
"""IB messages and feed events kept for the log (oldest dropped first)."""

_STOP_TIMEOUT = 10.0

STACK_JUDGE_S = 0.25
"""How often the feed loop judges the stack's checks (a snapshot only reads the results)."""
STACK_KEEP = 200
"""Observations per endpoint kept once its quotes check is decided (a session runs for hours)."""


# ---------------------------------------------------------------------------- sessions


@dataclasses.dataclass
class _Session:
    """One connection of the feed: its run context and what the live table needs."""

    key: tuple[Any, ...]
    ctx: RunContext
    sim_generation: int
    started_mono: float = dataclasses.field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    ready: concurrent.futures.Future[SessionPhases] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )
    phases: SessionPhases = dataclasses.field(default_factory=SessionPhases)
    state: str = "connecting"
    """connecting → subscribing → streaming, or failed / disconnected / closed."""
    problem: str = ""
    ticker: Ticker | None = None
    quote: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(QUOTE_FIELDS, math.nan)
    )
    market_data_type: int | None = None
    first_mono: dict[str, float] = dataclasses.field(default_factory=dict)
    first_wall: dict[str, datetime] = dataclasses.field(default_factory=dict)
    last_tick_mono: float | None = None
    subscribed_mono: float | None = None
    stack: StackMonitor | None = None
    """The stack monitor, when a stack is declared and the contract was qualified."""
    stack_checks: dict[str, dict[str, CheckResult | None]] = dataclasses.field(default_factory=dict)
    """endpoint -> {"stream": ..., "quotes": ...} as last judged on the feed loop."""

    @property
    def label(self) -> str:
        return self.ctx.target.label


def _default_config(**overrides: Any) -> HarnessConfig:
    return HarnessConfig(**{"client_id": LIVE_CLIENT_ID, **overrides})


# --------------------------------------------------------------------------- the feed


class LiveFeed:
    """A daemon thread running an asyncio loop that owns at most one IB connection (and
    optionally an embedded simulator). Every public method is safe to call from any thread.

    Use :func:`get_feed` rather than constructing one, so that every cell, notebook
    session and re-run in the process shares the same connection.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="livefire-feed", daemon=True)
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._sim: PaperGateway | None = None
        self._sim_key: tuple[Any, ...] | None = None
        self._sim_generation = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_SIZE)
        self._sessions_opened = 0
        self._stopped = False
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(_STOP_TIMEOUT)

    # --- loop plumbing ------------------------------------------------------------------
    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            self.loop.run_forever()
        finally:
            # Whatever is still pending (a phase run by run()) is cancelled, not leaked.
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    @property
    def alive(self) -> bool:
        """True while the feed thread runs and :meth:`stop` has not been called."""
        return not self._stopped and self._thread.is_alive()

    def _check_alive(self) -> None:
        if not self.alive:
            raise RuntimeError("the live feed is stopped; call get_feed() for a new one")

    def _submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        if not self.alive:
            if asyncio.iscoroutine(coro):
                coro.close()
            self._check_alive()
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def _call(self, coro: Awaitable[T], timeout: float = _STOP_TIMEOUT) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking LiveFeed call from the feed's own loop; await instead")
        return self._submit(coro).result(timeout)

    def run(self, coro_factory: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        """Run ``coro_factory()`` on the feed loop and return a concurrent future of its result.

        The coroutine is created on the feed loop, so library code that binds to the
        running loop (ib_async, the simulator, the recorder) binds to the feed's. Typical
        use from a cell: ``feed.run(lambda: run_harness(cfg, gateway=feed.sim)).result()``.
        """

        async def call() -> T:
            return await coro_factory()

        return self._submit(call())

    # --- simulator -------------------------------------------------------------------------
    @property
    def sim(self) -> PaperGateway | None:
        """The embedded simulator (lives on the feed loop), or None."""
        return self._sim

    @property
    def sim_port(self) -> int | None:
        """The embedded simulator's port, or None when it is not running."""
        return self._sim.port if self._sim is not None else None

    @property
    def scenario(self) -> str | None:
        """The embedded simulator's current scenario name, or None."""
        return self._sim.scenario.value if self._sim is not None else None

    def start_sim(self, scenario: str | Scenario = Scenario.HEALTHY, **params: Any) -> int:
        """Start the embedded simulator on the feed loop (port 0) if it is not running, or
        switch it to ``scenario`` if it is; return its port.

        Switching does not reconnect by itself; the next :meth:`connect` does (it sees the
        scenario changed). :meth:`set_scenario` switches and reconnects at once.
        Raises ValueError for an unknown scenario or parameter.
        """
        scen = parse_scenario(str(scenario))
        seed = int(params.pop("seed", 7))
        return self._call(self._start_sim(scen, seed, params))

    async def _start_sim(self, scen: Scenario, seed: int, params: dict[str, Any]) -> int:
        key = (scen, seed, tuple(sorted(params.items())))
        if self._sim is None:
            gw = PaperGateway(port=0, scenario=scen, seed=seed, **params)
            await gw.start()
            self._sim = gw
            self._note(f"simulator started on port {gw.port} (scenario {scen.value})")
        elif key != self._sim_key:
            self._sim.set_scenario(scen, **params)
            self._note(f"simulator scenario now {scen.value}")
        else:
            return self._sim.port
        with self._lock:
            self._sim_key = key
            self._sim_generation += 1
        return self._sim.port

    def set_scenario(
        self, scenario: str | Scenario, **params: Any
    ) -> concurrent.futures.Future[SessionPhases] | None:
        """Switch the embedded simulator's scenario and reconnect the live session if it is
        on the simulator, so subscription-time behaviours (not_subscribed, delayed_only,
        live_account) apply too. Returns the new session's ready future, or None."""
        if self._sim is None:
            raise RuntimeError("the simulator is not running; call start_sim() first")
        self.start_sim(scenario, **params)
        s = self._session
        if s is not None and s.ctx.target.simulated and s.key[1] == self.sim_port:
            host, port, client_id, contract, _ = s.key
            return self.connect(host, port, client_id, contract, cfg=s.ctx.cfg)
        return None

    # --- connection --------------------------------------------------------------------------
    def connect(
        self,
        host: str | None = None,
        port: int | None = None,
        client_id: int = LIVE_CLIENT_ID,
        contract: str = "AAPL",
        *,
        cfg: HarnessConfig | None = None,
        reuse: bool = True,
    ) -> concurrent.futures.Future[SessionPhases]:
        """Connect and subscribe, closing the previous connection first (one per process).

        ``host``/``port`` default to the embedded simulator when it runs. The session runs
        the health phase (paper guard included) and the ticks phase, then keeps streaming
        until the next connect or :meth:`stop`. With ``reuse`` (the default) a call with
        the same target, clientId, contract and simulator scenario as the live session
        keeps that session: re-running a cell, or a second viewer, changes nothing.

        Returns a future resolving to the session's :class:`SessionPhases` (health, and
        ticks or None) when the ticks phase has concluded; the feed keeps streaming after that.
        Raises ValueError when no port is given and no simulator runs, RuntimeError after
        :meth:`stop`.
        """
        self._check_alive()
        if port is None:
            if self._sim is None:
                raise ValueError("no port given and the simulator is not running")
            port = self._sim.port
        host = host or "127.0.0.1"
        simulated = (
            self._sim is not None and port == self._sim.port and host in ("127.0.0.1", "localhost")
        )
        base = cfg or _default_config()
        overrides: dict[str, Any] = {"host": host, "port": int(port), "client_id": int(client_id),
                                     "contract": contract, "trade": False}  # fmt: skip
        if simulated and self._sim is not None:
            overrides.update(sim=True, scenario=self._sim.scenario.value)
        run_cfg = dataclasses.replace(base, **overrides)
        with self._lock:
            generation = self._sim_generation if simulated else 0
            key = (host, int(port), int(client_id), contract, generation)
            current = self._session
            if (
                reuse
                and current is not None
                and current.key == key
                and current.ctx.cfg == run_cfg
                and current.state not in ("closed", "disconnected", "failed")
            ):
                return current.ready
        return self._call(self._open(key, run_cfg, simulated, generation))

    async def _open(
        self, key: tuple[Any, ...], cfg: HarnessConfig, simulated: bool, generation: int
    ) -> concurrent.futures.Future[SessionPhases]:
        old = self._session
        if old is not None:
            await self._close(old)
            # The gateway frees a clientId when it sees the socket close; give it a moment
            # rather than being told 326 "client id already in use".
            if old.key[:3] == key[:3]:
                await asyncio.sleep(0.1)
        ctx = RunContext.create(
            cfg, host=cfg.host, port=cfg.port, simulated=simulated,
            run_id=f"live-{self._next_id()}",
        )  # fmt: skip
        s = _Session(key=key, ctx=ctx, sim_generation=generation)
        with self._lock:
            self._session = s
        s.task = asyncio.get_running_loop().create_task(self._serve(s), name="livefire-session")
        return s.ready

    def _next_id(self) -> int:
        with self._lock:
            self._sessions_opened += 1
            return self._sessions_opened

    async def _serve(self, s: _Session) -> None:
        """Health, ticks, then stream until cancelled; always disconnect at the end."""
        ctx = s.ctx
        ib = ctx.conn.ib
        ctx.rec.attach(ctx.conn)
        ctx.conn.listeners.append(lambda m: self._on_message(s, m))
        ib.pendingTickersEvent += lambda tickers: self._on_tickers(s, tickers)
        ib.disconnectedEvent += lambda: self._on_disconnected(s)
        self._note(f"connecting to {s.label} as clientId {ctx.cfg.client_id} ({ctx.cfg.contract})")
        try:
            h = await health(ctx)
            s.phases = SessionPhases(health=h)
            if not h.ok:
                s.state, s.problem = "failed", h.reason
                # A refused target (live account, live port) keeps no connection open.
                ctx.conn.disconnect()
                self._note(f"health {h.verdict}: {h.reason}", kind="error")
            else:
                s.state = "subscribing"
                t = await ticks(ctx)
                s.phases = SessionPhases(health=h, ticks=t)
                s.ticker = ctx.ticker
                if s.state == "subscribing":
                    s.state = "streaming"
                self._note(f"ticks {t.verdict}: {t.reason}")
                if ctx.cfg.stack and ctx.contract is not None:
                    self._start_stack(s)
            _resolve(s.ready, s.phases)
            # Keep the subscription open: the recorder and the handlers keep collecting.
            if s.stack is not None:
                await self._judge_stack_forever(s)
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _resolve(s.ready, s.phases)
            raise
        except Exception as exc:  # a phase bug must not kill the feed thread
            log.exception("live session failed")
            s.state, s.problem = "failed", f"{exc.__class__.__name__}: {exc}"
            _resolve(s.ready, s.phases)
        finally:
            if s.state not in ("disconnected", "failed"):
                s.state = "closed"
            if s.stack is not None:
                await s.stack.stop()  # the watchers never outlive their session
            await ctx.rec.close()
            ctx.rec.detach(ctx.conn)
            ctx.conn.disconnect()

    # --- the user's stack ---------------------------------------------------------------------
    def _start_stack(self, s: _Session) -> None:
        """Watch the declared stack, as the runner does once the contract is qualified.
        Imported here so a notebook without a stack never loads httpx, websockets..."""
        from harness_lib.stack.monitor import StackMonitor

        monitor = StackMonitor(s.ctx, s.ctx.cfg.stack)
        monitor.start()
        with self._lock:
            s.stack = monitor
            # Only the checks a live view can decide: trade checks need a round trip.
            s.stack_checks = {
                ep.name: {"stream": None, **({"quotes": None} if ep.quote else {})}
                for ep in monitor.endpoints
            }
        self._note(
            "stack: watching " + ", ".join(f"{e.name} ({e.kind})" for e in monitor.endpoints)
        )

    async def _judge_stack_forever(self, s: _Session) -> None:
        """Judge the stack's stream and quotes checks every :data:`STACK_JUDGE_S` on the feed
        loop (where the watchers append), so a snapshot from any thread only reads results."""
        while True:
            self._judge_stack(s, time.time())
            await asyncio.sleep(STACK_JUDGE_S)

    def _judge_stack(self, s: _Session, now: float) -> None:
        monitor = s.stack
        assert monitor is not None
        for ep in monitor.endpoints:
            with self._lock:
                judged = dict(s.stack_checks[ep.name])
            w = monitor.watchers.get(ep.name)
            # Before the first connection or failure there is nothing to judge yet.
            if w is not None and (w.connected_at is not None or w.last_error is not None):
                judged["stream"] = monitor.stream_check(ep)
            if "quotes" in judged and judged["quotes"] is None:
                judged["quotes"] = monitor.quotes_check(ep, now)
            if judged.get("quotes") is not None or "quotes" not in judged:
                monitor.forget(ep.name, STACK_KEEP)
            with self._lock:
                s.stack_checks[ep.name] = judged

    def _stack_quotes(
        self, s: _Session, observations: list[Any], now: float
    ) -> tuple[StackQuote, ...]:
        """Each endpoint's latest quote, judged by the quotes check's own rule, and its checks."""
        from harness_lib.stack.checks import judge_quote

        monitor = s.stack
        if monitor is None:
            return ()
        with self._lock:
            checks = {k: dict(v) for k, v in s.stack_checks.items()}
        ticks = monitor.broker_ticks()
        out = []
        for ep in monitor.endpoints:
            mine = [o for o in observations if o.endpoint == ep.name]
            quoted = next((o for o in reversed(mine) if o.quote is not None), None)
            w = monitor.watchers.get(ep.name)
            error = w.last_error if w is not None and w.connected_at is None else None
            if mine and mine[-1].error:
                error = mine[-1].error
            fields: dict[str, Any] = {}
            if quoted is not None and quoted.quote is not None and ep.quote is not None:
                q = quoted.quote
                why, broker_at = judge_quote(ep, q, quoted.t_wall, ticks)
                fields = {
                    "bid": q.bid, "ask": q.ask, "last": q.last, "mode": q.mode,
                    "mode_live": None if q.mode is None else q.mode in ep.quote.live,
                    "shown": q.describe(),
                    "at": datetime.fromtimestamp(quoted.t_wall, UTC),
                    "age_s": now - quoted.t_wall,
                    "matches": why is None, "why": why or "",
                    "latency_s": None if broker_at is None else quoted.t_wall - broker_at,
                }  # fmt: skip
            verdict, reason = _endpoint_verdict(checks.get(ep.name, {}))
            out.append(
                StackQuote(
                    endpoint=ep.name,
                    kind=ep.kind,
                    connected=bool(w and w.connected_at),
                    error=error,
                    messages=w.messages if w is not None else 0,
                    verdict=verdict,
                    reason=reason,
                    **fields,
                )
            )
        return tuple(out)

    async def _close(self, s: _Session) -> None:
        task = s.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=_STOP_TIMEOUT)
        s.ctx.conn.disconnect()
        with self._lock:
            if self._session is s:
                self._session = None

    def disconnect(self) -> None:
        """Close the live connection (the simulator, if any, keeps running)."""
        if self.alive and self._session is not None:
            self._call(self._disconnect())

    async def _disconnect(self) -> None:
        s = self._session
        if s is not None:
            await self._close(s)
            self._note(f"disconnected from {s.label}")

    # --- event handlers (feed loop) ---------------------------------------------------------
    def _on_tickers(self, s: _Session, tickers: Iterable[Ticker]) -> None:
        now = time.monotonic()
        wall = datetime.now(UTC)
        for t in tickers:
            if s.ctx.ticker is not None and t is not s.ctx.ticker:
                continue
            with self._lock:
                if s.subscribed_mono is None:
                    s.subscribed_mono = _checkpoint_mono(s, "subscribed")
                if t.ticks:
                    s.last_tick_mono = now
                for f in QUOTE_FIELDS:
                    s.quote[f] = float(getattr(t, f))
                for f in note_first_real(s.first_mono, t, now):
                    s.first_wall[f] = wall
                s.market_data_type = t.marketDataType

    def _on_message(self, s: _Session, msg: IBMessage) -> None:
        self._append_log(s.label, kind_of(msg.code), msg.code, msg.req_id, msg.message, msg.t_wall)

    def _on_disconnected(self, s: _Session) -> None:
        # Only a drop we did not ask for: closing or giving up disconnects on purpose.
        if s.state in ("subscribing", "streaming") and self._session is s:
            s.state = "disconnected"
            s.problem = s.problem or f"connection to {s.label} lost"
            self._note(s.problem, kind="error")

    def _note(self, message: str, kind: str = "feed") -> None:
        self._append_log("feed", kind, None, None, message, datetime.now(UTC))

    def _append_log(
        self, source: str, kind: str, code: int | None, req_id: int | None, message: str,
        t_wall: datetime,
    ) -> None:  # fmt: skip
        with self._lock:
            self._log.append({"t_wall": t_wall, "source": source, "kind": kind, "code": code,
                              "req_id": req_id, "message": message})  # fmt: skip

    # --- reading -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the live session's socket is connected."""
        s = self._session
        return s is not None and s.ctx.conn.ib.isConnected()

    def connections(self) -> int:
        """How many IB connections the feed holds open (0 or 1; for tests and the UI)."""
        return int(self.connected)

    def snapshot(self, recent_ticks: int = RECENT_TICKS) -> Snapshot:
        """A consistent, thread-safe copy of what the live view shows (see :class:`Snapshot`),
        judged by :func:`~harness_lib.live.snapshot.live_verdict`; ``recent_ticks`` bounds
        the tick frame the charts draw."""
        now = time.monotonic()
        with self._lock:
            s = self._session
            log_rows = list(self._log)
            scenario = self.scenario
            live = None
            if s is not None:
                live = (dict(s.quote), dict(s.first_mono), dict(s.first_wall),
                        s.market_data_type, s.last_tick_mono, s.subscribed_mono)  # fmt: skip
        messages = messages_frame(log_rows)
        if s is None or live is None:
            return Snapshot(scenario=scenario, messages=messages)
        quote, first_mono, first_wall, mdt, last_tick, t0 = live
        if mdt is None and s.ctx.ticker is not None:
            # IB announces the data type before the first tick (never_ticks shows it too).
            mdt = s.ctx.ticker.marketDataType
        rec = s.ctx.rec.snapshot(last_ticks=recent_ticks)
        stack = self._stack_quotes(s, rec["stack"], time.time())
        if t0 is None:
            t0 = _checkpoint_mono(s, "subscribed")
        market_data = market_data_name(mdt)
        phases = s.phases
        concluded = [p for p in (phases.health, phases.ticks) if p is not None]
        report = RunReport(run_id=s.ctx.run_id, target=s.ctx.target, contract=s.ctx.cfg.contract,
                           phases=concluded)  # fmt: skip
        quiet_from = last_tick if last_tick is not None else t0
        verdict, reason = live_verdict(
            report,
            state=s.state,
            problem=s.problem,
            waited_s=now - s.started_mono,
            tick_count=rec["tick_count"],
            quiet_s=None if quiet_from is None else now - quiet_from,
            stale_after=s.ctx.cfg.stale_after,
            quote=quote,
            market_data=market_data,
        )
        verdict, reason = with_stack(verdict, reason, stack, s.ctx.cfg.contract)
        return Snapshot(
            verdict=verdict,
            reason=reason,
            connected=s.ctx.conn.ib.isConnected(),
            state=s.state,
            target=s.label,
            contract=s.ctx.cfg.contract,
            scenario=scenario,
            quote=quote,
            market_data_type=mdt,
            market_data=market_data,
            first_seconds={f: _since(first_mono.get(f), t0) for f in QUOTE_FIELDS},
            first_at={f: first_wall.get(f) for f in QUOTE_FIELDS},
            tick_count=rec["tick_count"],
            last_tick_age_s=None if last_tick is None else now - last_tick,
            ticks=ticks_frame(rec["ticks"]),
            messages=messages,
            checkpoints=checkpoints_frame(rec["checkpoints"]),
            health=_health_panel(s),
            phases=phases,
            stale_after=s.ctx.cfg.stale_after,
            stack=stack,
        )

    def wait_for(
        self, pred: Callable[[Snapshot], bool], timeout: float, step: float = 0.1
    ) -> Snapshot:
        """Poll :meth:`snapshot` until ``pred(snapshot)`` holds or ``timeout`` passes; return
        the last snapshot (blocking; for scripts and tests, not for UI cells)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if pred(snap) or time.monotonic() >= deadline:
                return snap
            time.sleep(step)

    # --- shutdown ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Disconnect, stop the simulator, stop the loop and join the thread (idempotent)."""
        if self._stopped:
            return
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            with contextlib.suppress(Exception):
                self._submit(self._shutdown()).result(_STOP_TIMEOUT)
        self._stopped = True
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join(_STOP_TIMEOUT)
        _forget(self)

    async def _shutdown(self) -> None:
        s = self._session
        if s is not None:
            await self._close(s)
        if self._sim is not None:
            await self._sim.stop()
            self._sim = None


# ----------------------------------------------------------------------- the singleton

_FEED: LiveFeed | None = None
_FEED_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def get_feed() -> LiveFeed:
    """The process-wide feed, started on first use (and again after :meth:`LiveFeed.stop`).

    marimo imports library modules once per process, so every cell, every re-run and every
    ``marimo run`` viewer in the process gets the same feed and the same connection.
    """
    global _FEED, _ATEXIT_REGISTERED
    with _FEED_LOCK:
        if _FEED is None or not _FEED.alive:
            _FEED = LiveFeed()
        if not _ATEXIT_REGISTERED:
            # Interpreter exit (script mode, server shutdown): disconnect cleanly rather
            # than leaving the gateway to notice a dead socket.
            atexit.register(_stop_at_exit)
            _ATEXIT_REGISTERED = True
        return _FEED


def _forget(feed: LiveFeed) -> None:
    global _FEED
    with _FEED_LOCK:
        if _FEED is feed:
            _FEED = None


def _stop_at_exit() -> None:
    feed = _FEED
    if feed is not None:
        feed.stop()


# ---------------------------------------------------------------------------- helpers


def _resolve(fut: concurrent.futures.Future[T], value: T) -> None:
    if not fut.done():
        fut.set_result(value)


def _since(t: float | None, t0: float | None) -> float | None:
    return None if t is None or t0 is None else t - t0


def _checkpoint_mono(s: _Session, name: str) -> float | None:
    with s.ctx.rec.lock:
        for _phase, cp in s.ctx.rec.checkpoints:
            if cp.name == name:
                return cp.t_mono
    return None


def _endpoint_verdict(checks: dict[str, CheckResult | None]) -> tuple[Verdict | None, str]:
    """An endpoint's live verdict from its judged checks: the worst decided one that did
    not pass, else None while any is undecided, else PASS (with the quotes check's words)."""
    decided = [r for r in checks.values() if r is not None]
    bad = [r for r in decided if r.verdict not in (Verdict.PASS, Verdict.SKIPPED)]
    if bad:
        v = worst([r.verdict for r in bad])
        return v, next(r.reason for r in bad if r.verdict == v)
    pending = [k for k, r in checks.items() if r is None]
    if pending or not decided:
        return None, f"waiting for {' and '.join(pending) or 'the stack'}"
    main = checks.get("quotes") or decided[0]
    return Verdict.PASS, main.reason


def _health_panel(s: _Session) -> HealthPanel:
    """What the health panel shows: server, accounts (masked, paper or not), farm notices."""
    target = s.ctx.target
    farms = tuple(
        FarmNotice(m.code, m.code in GOOD_FARM_CODES, m.message)
        for m in list(s.ctx.conn.messages)
        if m.code in GOOD_FARM_CODES or m.code in BAD_FARM_CODES or 2100 <= m.code < 2200
    )
    h = s.phases.health
    return HealthPanel(
        target=target.label,
        simulated=target.simulated,
        server_version=target.server_version,
        accounts=tuple(Account(mask_account(a), is_paper_account(a)) for a in target.accounts),
        farms=farms,
        connect_s=h.metrics.get("connect_s") if h else None,
        clock_skew_s=h.metrics.get("clock_skew_s") if h else None,
        verdict=h.verdict if h else None,
        reason=h.reason if h else "connecting…",
    )
