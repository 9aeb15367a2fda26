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
    snap = feed.snapshot()                     # dict: quote, first-value times, ticks ...
    report = feed.run(lambda: run_harness(cfg, gateway=feed.sim)).result()
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import contextlib
import dataclasses
import html
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pandas as pd
from ib_async import Ticker

from harness_lib.config import HarnessConfig, load_config
from harness_lib.connection import BAD_FARM_CODES, GOOD_FARM_CODES, kind_of
from harness_lib.models import IBMessage, PhaseResult, Target, Verdict
from harness_lib.phases import RunContext, health, ticks
from harness_lib.quotes import QUOTE_FIELDS, is_real, market_data_name, note_first_real
from harness_lib.safety import is_paper_account, mask_account
from harness_lib.sim import PaperGateway, Scenario, parse_scenario

__all__ = [
    "CONTRACT_CHOICES",
    "LIVE_CLIENT_ID",
    "QUOTE_FIELDS",
    "TICK_COLUMNS",
    "HealthCheck",
    "LiveFeed",
    "ScriptArgumentParser",
    "callout_kind",
    "check_target",
    "format_findings",
    "get_feed",
    "messages_html",
    "notebook_args",
    "quote_html",
    "quote_table",
    "round_trip_config",
    "script_argv",
]

log = logging.getLogger("harness_lib.live")

T = TypeVar("T")

LIVE_CLIENT_ID = 919
"""The live view's default clientId: not the runner's 917, so a notebook that also starts
a run (round trip, health probe) never collides with its own live connection (IB 326)."""

"""Ticker fields the live table shows, in display order."""

CONTRACT_CHOICES: tuple[str, ...] = ("AAPL", "EUR.USD", "MES", "ILLQ", "NOSUB")
"""Contracts offered by the notebooks' pickers: the simulator's catalogue (ILLQ never
ticks, NOSUB is not subscribed), which are also ordinary specs for a real gateway."""


def connection_form(args: argparse.Namespace, *, client_id: int) -> tuple[Any, ...]:
    """The connection widgets both live notebooks show, from their parsed arguments:
    ``(source, scenario, host, port, client_id, contract)`` as marimo UI elements.

    Returned as a tuple so each notebook can bind them to globals (marimo only reacts to
    UI elements held in global names).
    """
    import marimo as mo

    from harness_lib.sim.scenarios import Scenario

    source = mo.ui.radio(
        options=["simulator", "gateway"],
        value="gateway" if args.gateway else "simulator",
        label="connect to",
        inline=True,
    )
    scenario = mo.ui.dropdown(
        options=[s.value for s in Scenario], value=args.scenario, label="scenario"
    )
    host = mo.ui.text(value=args.host, label="host")
    port = mo.ui.number(start=1, stop=65535, value=args.port or 4002, label="port")
    cid = mo.ui.number(start=0, stop=2**31 - 1, value=client_id, label="clientId")
    contract = mo.ui.dropdown(
        options=list(dict.fromkeys([args.contract.upper(), *CONTRACT_CHOICES])),
        value=args.contract.upper(),
        label="contract",
    )
    return source, scenario, host, port, cid, contract


TICK_COLUMNS: tuple[str, ...] = (
    "run_id", "seq", "con_id", "symbol", "field", "tick_type", "price", "size",
    "t_mono", "t_wall", "t_wall_epoch", "market_data_type",
)  # fmt: skip
"""Columns of ``snapshot()["ticks"]``: the store's ticks columns, so charts take either."""

RECENT_TICKS = 2_000
"""Ticks a snapshot carries for charts; live charts re-send their data on every refresh."""

LOG_SIZE = 500
"""IB messages and feed events kept for the log (oldest dropped first)."""

_STOP_TIMEOUT = 10.0


# ------------------------------------------------------------------------- health probe


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """The health phase's verdict on a target, without subscribing or ordering anything.

    ``paper`` is True only when the health phase passed, which includes the paper guard
    (every managed account is a paper account) and the port guard.
    """

    result: PhaseResult
    target: Target

    @property
    def paper(self) -> bool:
        """True when the target passed health and every managed account is paper."""
        return self.result.verdict == Verdict.PASS and all(
            is_paper_account(a) for a in self.target.accounts
        )

    @property
    def accounts(self) -> list[tuple[str, bool]]:
        """(masked account, is paper) for each managed account."""
        return [(mask_account(a), is_paper_account(a)) for a in self.target.accounts]


async def check_target(
    cfg: HarnessConfig, *, host: str, port: int, simulated: bool = False
) -> HealthCheck:
    """Run the health phase (connect, accounts, paper guard, clock, farms) and disconnect.

    Used by the round-trip notebook to decide whether its run button may be enabled.
    """
    ctx = RunContext.create(cfg, host=host, port=port, simulated=simulated)
    ctx.rec.attach(ctx.conn)
    try:
        result = await health(ctx)
    finally:
        await ctx.rec.close()
        ctx.rec.detach(ctx.conn)
        ctx.conn.disconnect()
    return HealthCheck(result=result, target=ctx.target)


# ---------------------------------------------------------------------------- sessions


@dataclasses.dataclass
class _Session:
    """One connection of the feed: its run context and what the live table needs."""

    key: tuple[Any, ...]
    ctx: RunContext
    sim_generation: int
    started_mono: float = dataclasses.field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    ready: concurrent.futures.Future[dict[str, PhaseResult | None]] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )
    health: PhaseResult | None = None
    ticks: PhaseResult | None = None
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
    ) -> concurrent.futures.Future[dict[str, PhaseResult | None]] | None:
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
    ) -> concurrent.futures.Future[dict[str, PhaseResult | None]]:
        """Connect and subscribe, closing the previous connection first (one per process).

        ``host``/``port`` default to the embedded simulator when it runs. The session runs
        the health phase (paper guard included) and the ticks phase, then keeps streaming
        until the next connect or :meth:`stop`. With ``reuse`` (the default) a call with
        the same target, clientId, contract and simulator scenario as the live session
        keeps that session: re-running a cell, or a second viewer, changes nothing.

        Returns a future resolving to ``{"health": PhaseResult, "ticks": PhaseResult|None}``
        when the ticks phase has concluded; the feed keeps streaming after that.
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
    ) -> concurrent.futures.Future[dict[str, PhaseResult | None]]:
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
            s.health = await health(ctx)
            if not s.health.ok:
                s.state, s.problem = "failed", s.health.reason
                # A refused target (live account, live port) keeps no connection open.
                ctx.conn.disconnect()
                self._note(f"health {s.health.verdict}: {s.health.reason}", kind="error")
            else:
                s.state = "subscribing"
                s.ticks = await ticks(ctx)
                s.ticker = ctx.ticker
                if s.state == "subscribing":
                    s.state = "streaming"
                self._note(f"ticks {s.ticks.verdict}: {s.ticks.reason}")
            _resolve(s.ready, {"health": s.health, "ticks": s.ticks})
            # Keep the subscription open: the recorder and the handlers keep collecting.
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            _resolve(s.ready, {"health": s.health, "ticks": s.ticks})
            raise
        except Exception as exc:  # a phase bug must not kill the feed thread
            log.exception("live session failed")
            s.state, s.problem = "failed", f"{exc.__class__.__name__}: {exc}"
            _resolve(s.ready, {"health": s.health, "ticks": s.ticks})
        finally:
            if s.state not in ("disconnected", "failed"):
                s.state = "closed"
            await ctx.rec.close()
            ctx.rec.detach(ctx.conn)
            ctx.conn.disconnect()

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

    def snapshot(self, recent_ticks: int = RECENT_TICKS) -> dict[str, Any]:
        """A consistent, thread-safe copy of what the live view shows.

        Keys: ``connected``, ``state``, ``target`` (label), ``contract``, ``scenario``,
        ``quote`` ({field: float, nan until known}), ``market_data_type`` and
        ``market_data`` (live/frozen/delayed/...), ``first_seconds`` ({field: seconds
        from subscribing to the first real value, or None}), ``first_at`` ({field: UTC
        datetime or None}), ``tick_count``, ``last_tick_age_s``, ``ticks`` (DataFrame of
        the most recent ticks, :data:`TICK_COLUMNS`), ``messages`` (DataFrame: t_wall,
        source, kind, code, req_id, message; newest last), ``checkpoints`` (DataFrame:
        phase, name, t_mono, t_wall, detail), ``health`` (dict for the health panel),
        ``phases`` ({"health": PhaseResult|None, "ticks": PhaseResult|None}), ``verdict``
        (:class:`Verdict`) and ``reason`` (why, in one line), ``stale_after``, ``taken_at``.
        """
        now = time.monotonic()
        with self._lock:
            s = self._session
            log_rows = list(self._log)
            scenario = self.scenario
            live = None
            if s is not None:
                live = (dict(s.quote), dict(s.first_mono), dict(s.first_wall),
                        s.market_data_type, s.last_tick_mono, s.subscribed_mono)  # fmt: skip
        messages = pd.DataFrame(
            log_rows, columns=["t_wall", "source", "kind", "code", "req_id", "message"]
        )
        messages["code"] = pd.to_numeric(messages["code"]).astype("Int64")
        messages["req_id"] = pd.to_numeric(messages["req_id"]).astype("Int64")
        snap: dict[str, Any] = {
            "connected": False,
            "state": "not connected",
            "target": None,
            "contract": None,
            "scenario": scenario,
            "quote": dict.fromkeys(QUOTE_FIELDS, math.nan),
            "market_data_type": None,
            "market_data": None,
            "first_seconds": dict.fromkeys(QUOTE_FIELDS),
            "first_at": dict.fromkeys(QUOTE_FIELDS),
            "tick_count": 0,
            "last_tick_age_s": None,
            "ticks": _ticks_frame([]),
            "messages": messages,
            "checkpoints": _checkpoints_frame([]),
            "health": {},
            "phases": {"health": None, "ticks": None},
            "stale_after": None,
            "taken_at": datetime.now(UTC),
            "verdict": Verdict.SKIPPED,
            "reason": "not connected",
        }
        if s is None or live is None:
            return snap
        quote, first_mono, first_wall, mdt, last_tick, t0 = live
        if mdt is None and s.ctx.ticker is not None:
            # IB announces the data type before the first tick (never_ticks shows it too).
            mdt = s.ctx.ticker.marketDataType
        rec = s.ctx.rec.snapshot(last_ticks=recent_ticks)
        if t0 is None:
            t0 = _checkpoint_mono(s, "subscribed")
        snap.update(
            connected=s.ctx.conn.ib.isConnected(),
            state=s.state,
            target=s.label,
            contract=s.ctx.cfg.contract,
            quote=quote,
            market_data_type=mdt,
            market_data=market_data_name(mdt),
            first_seconds={f: _since(first_mono.get(f), t0) for f in QUOTE_FIELDS},
            first_at={f: first_wall.get(f) for f in QUOTE_FIELDS},
            tick_count=rec["tick_count"],
            last_tick_age_s=None if last_tick is None else now - last_tick,
            ticks=_ticks_frame(rec["ticks"]),
            checkpoints=_checkpoints_frame(rec["checkpoints"]),
            health=_health_panel(s),
            phases={"health": s.health, "ticks": s.ticks},
            stale_after=s.ctx.cfg.stale_after,
        )
        snap["verdict"], snap["reason"] = _judge(s, snap, now)
        return snap

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float, step: float = 0.1
    ) -> dict[str, Any]:
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


def _ticks_frame(rows: list[Any]) -> pd.DataFrame:
    """Recorder TickRows as a frame with the store's ticks columns (what charts read)."""
    if not rows:
        return pd.DataFrame(columns=list(TICK_COLUMNS))
    cols = {
        "seq": [r.seq for r in rows],
        "con_id": [r.con_id for r in rows],
        "symbol": [r.symbol for r in rows],
        "field": [r.field for r in rows],
        "tick_type": [r.tick_type for r in rows],
        "price": [math.nan if r.price is None else r.price for r in rows],
        "size": [math.nan if r.size is None else r.size for r in rows],
        "t_mono": [r.t_mono for r in rows],
        "t_wall_epoch": [r.t_wall for r in rows],
        "market_data_type": [r.market_data_type for r in rows],
    }
    frame = pd.DataFrame(cols)
    frame.insert(0, "run_id", "live")
    frame["t_wall"] = pd.to_datetime(frame["t_wall_epoch"], unit="s", utc=True)
    return frame[list(TICK_COLUMNS)]


def _checkpoints_frame(rows: list[Any]) -> pd.DataFrame:
    cols = ["phase", "name", "t_mono", "t_wall", "detail"]
    frame = pd.DataFrame(
        [(phase, cp.name, cp.t_mono, cp.t_wall, cp.detail) for phase, cp in rows], columns=cols
    )
    frame["t_wall"] = pd.to_datetime(frame["t_wall"], utc=True)
    return frame


def _health_panel(s: _Session) -> dict[str, Any]:
    """What the health panel shows: server, accounts (masked, paper or not), farm notices."""
    target = s.ctx.target
    farms = [
        {"code": m.code, "ok": m.code in GOOD_FARM_CODES, "message": m.message}
        for m in list(s.ctx.conn.messages)
        if m.code in GOOD_FARM_CODES or m.code in BAD_FARM_CODES or 2100 <= m.code < 2200
    ]
    h = s.health
    return {
        "target": target.label,
        "simulated": target.simulated,
        "server_version": target.server_version,
        "accounts": [
            {"account": mask_account(a), "paper": is_paper_account(a)} for a in target.accounts
        ],
        "farms": farms,
        "connect_s": h.metrics.get("connect_s") if h else None,
        "clock_skew_s": h.metrics.get("clock_skew_s") if h else None,
        "verdict": h.verdict if h else None,
        "reason": h.reason if h else "connecting…",
    }


def _judge(s: _Session, snap: dict[str, Any], now: float) -> tuple[Verdict, str]:
    """The live verdict right now, in the harness's terms (see :class:`Verdict`)."""
    waited = now - s.started_mono
    h, t = s.health, s.ticks
    if h is None:
        return Verdict.STALLED, f"connecting to {s.label} ({waited:.1f} s)"
    if not h.ok:
        return h.verdict, f"health: {h.reason}"
    if s.state == "disconnected":
        return Verdict.FAIL, s.problem or "connection lost"
    if s.state == "failed":
        return Verdict.FAIL, s.problem
    quote = snap["quote"]
    both = is_real(quote["bid"]) and is_real(quote["ask"])
    age = snap["last_tick_age_s"]
    if t is None:
        if both:
            return Verdict.PASS, f"bid {quote['bid']:g} / ask {quote['ask']:g} live"
        if snap["tick_count"] == 0:
            return Verdict.STALLED, f"waiting for the first tick ({waited:.1f} s)"
        return Verdict.STALLED, f"waiting for both bid and ask ({waited:.1f} s)"
    if not t.ok:
        return t.verdict, f"ticks: {t.reason}"
    stale_after = s.ctx.cfg.stale_after
    if age is None or age >= stale_after:
        quiet = "no tick yet" if age is None else f"no tick for {age:.1f} s"
        return Verdict.FAIL, f"stream went stale: {quiet} (stale after {stale_after:g} s)"
    kind = snap["market_data"] or "live"
    return (
        Verdict.PASS,
        f"bid {quote['bid']:g} / ask {quote['ask']:g} {kind}; last tick {age * 1000:.0f} ms ago",
    )


def quote_table(snap: dict[str, Any]) -> pd.DataFrame:
    """The live table: one row per ticker field with its value (nan until real), the time
    from subscribing to its first real value, when that was (UTC) and the data type."""
    rows = []
    for f in QUOTE_FIELDS:
        secs = snap["first_seconds"].get(f)
        at = snap["first_at"].get(f)
        rows.append(
            {
                "field": f,
                "value": snap["quote"].get(f, math.nan),
                "first real after (ms)": None if secs is None else round(secs * 1000, 1),
                "first real at (UTC)": None if at is None else at.strftime("%H:%M:%S.%f")[:-3],
                "market data": snap["market_data"] or "—",
            }
        )
    return pd.DataFrame(rows)


_CELL = 'style="text-align:left;padding:2px 14px 2px 0"'


def _html_table(
    css_class: str, columns: list[str], rows: list[tuple[str, list[str]]], caption: str = ""
) -> str:
    """A plain, left-aligned HTML table; each row is (data-key, cell texts)."""
    head = "".join(f"<th {_CELL}>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        f'<tr data-field="{html.escape(key)}">'
        + "".join(f"<td {_CELL}>{html.escape(c)}</td>" for c in cells)
        + "</tr>"
        for key, cells in rows
    )
    cap = f'<caption style="text-align:left">{caption}</caption>' if caption else ""
    return (
        f'<table class="{css_class}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def quote_html(snap: dict[str, Any]) -> str:
    """The live table as a small HTML table (``table.livefire-quote``).

    Values show ``nan`` until they are real, as ib_async's Ticker does; each row carries
    ``data-field`` and the caption the tick count (``.tick-count``), so a browser test can
    read them without depending on marimo's own widgets.
    """
    table = quote_table(snap)
    rows = []
    for row in table.itertuples(index=False):
        value = row[1]
        shown = "nan" if value is None or not math.isfinite(value) else f"{value:g}"
        after = "—" if row[2] is None or pd.isna(row[2]) else f"{row[2]:,.1f}"
        rows.append((row[0], [row[0], shown, after, row[3] or "—", row[4]]))
    caption = (
        f'<span class="tick-count">{int(snap["tick_count"])}</span> ticks · '
        f"market data {html.escape(str(snap['market_data'] or '—'))}"
    )
    return _html_table("livefire-quote", list(table.columns), rows, caption)


def messages_html(snap: dict[str, Any], limit: int = 50) -> str:
    """The newest ``limit`` IB messages and feed events, newest first, as an HTML table
    (``table.livefire-log``): time (UTC), kind (error, warning, notice, feed), code, text."""
    log = snap["messages"].tail(limit).iloc[::-1]
    rows = []
    for r in log.itertuples(index=False):
        code = "" if pd.isna(r.code) else str(int(r.code))
        at = r.t_wall.strftime("%H:%M:%S.%f")[:-3] if isinstance(r.t_wall, datetime) else ""
        rows.append((r.kind, [at, r.kind, code, r.message]))
    return _html_table("livefire-log", ["time (UTC)", "kind", "code", "message"], rows)


def format_findings(snap: dict[str, Any]) -> str:
    """Plain-text findings for script mode: target, verdict, quote, first-value times."""
    lines = [
        f"target:   {snap['target']}",
        f"contract: {snap['contract']}  market data: {snap['market_data'] or 'unknown'}",
        f"verdict:  {snap['verdict']} — {snap['reason']}",
        f"ticks:    {snap['tick_count']} recorded",
    ]
    for f in QUOTE_FIELDS:
        secs = snap["first_seconds"].get(f)
        first = "never" if secs is None else f"{secs * 1000:.0f} ms"
        lines.append(f"  {f:<8} {snap['quote'].get(f, math.nan)!s:<12} first real after {first}")
    errors = snap["messages"]
    errors = errors[errors["kind"].isin(["error", "warning"])]
    for row in errors.tail(10).itertuples():
        code = "" if pd.isna(row.code) else f"IB {row.code}: "
        lines.append(f"  {row.kind}: {code}{row.message}")
    return "\n".join(lines)


# ------------------------------------------------------------------ notebooks as scripts


class ScriptArgumentParser(argparse.ArgumentParser):
    """argparse with the harness's exit code for bad arguments (4), not argparse's 2,
    which would read as STALLED to a scheduler."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print usage and a one-line error, then exit 4 (bad input)."""
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(Verdict.BAD_INPUT.exit_code)


def script_argv(argv: list[str] | None = None) -> list[str]:
    """The notebook's own arguments: ``sys.argv[1:]`` without a leading ``--``.

    ``python nb.py -- --sim`` keeps the ``--``; ``marimo run/edit/export nb.py -- --sim``
    strips it. Both give ``["--sim"]`` here.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return args[1:] if args[:1] == ["--"] else args


def notebook_args(notebook: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the arguments of ``live_ticks`` or ``round_trip`` (both share the connection
    options; see ``--help``). ``argv`` defaults to :func:`script_argv`.

    Without ``--port`` the embedded simulator is used (``--sim`` says so explicitly);
    ``--port`` alone means a real gateway. The result also carries ``gateway`` (bool) and
    ``exit_at_end`` (True: a script run ends with ``sys.exit(verdict code)``; tests that
    call ``app.run`` set it to False to read the notebook's definitions instead).
    """
    if notebook not in ("live_ticks", "round_trip"):
        raise ValueError(f"unknown notebook {notebook!r}")
    scenarios = [s.value for s in Scenario]
    p = ScriptArgumentParser(
        prog=f"notebooks/{notebook}.py",
        description="Exit codes: 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.",
    )
    p.add_argument("--sim", action="store_true", help="use the embedded simulator (default)")
    p.add_argument("--scenario", default="healthy", choices=scenarios, help="simulator scenario")
    p.add_argument("--host", default="127.0.0.1", help="gateway host (with --port)")
    p.add_argument("--port", type=int, default=None, help="gateway port: use a real gateway")
    p.add_argument("--contract", default="AAPL", help="AAPL, EUR.USD, MES, FUT:MES:202612 ...")
    if notebook == "live_ticks":
        p.add_argument("--deadline", type=float, default=5.0, help="seconds to wait for bid/ask")
        p.add_argument("--client-id", type=int, default=LIVE_CLIENT_ID, help="API client id")
        p.add_argument("--seconds", type=float, default=5.0, help="script mode: how long to watch")
    else:
        p.add_argument("--client-id", type=int, default=None, help="API client id")
        p.add_argument("--deadline", type=float, default=None, help="seconds to wait for bid/ask")
        p.add_argument("--yes", action="store_true", help="script mode: really place the trade")
        p.add_argument("--store", default=None, help="run store (default data/harness.sqlite)")
        p.add_argument("--fill-deadline", type=float, default=None, help="seconds per fill")
    args = p.parse_args(script_argv() if argv is None else argv)
    if args.sim and args.port is not None:
        p.error("--sim and --port exclude each other (--port means a real gateway)")
    args.gateway = args.port is not None
    args.exit_at_end = True
    return args


def round_trip_config(
    args: argparse.Namespace,
    *,
    simulated: bool,
    scenario: str = "healthy",
    host: str | None = None,
    port: int | None = None,
    client_id: int | None = None,
    contract: str | None = None,
) -> HarnessConfig:
    """The round-trip notebook's run configuration, loaded like ``harness run --trade``
    (defaults < harness.toml < HARNESS_* < these values), so a notebook run honours the
    same limits (max_quantity, max_notional) as the CLI. Raises ConfigError (one line).
    """
    flags: dict[str, Any] = {
        "sim": True if simulated else None,
        "scenario": scenario if simulated else None,
        "host": None if simulated else host,
        "port": None if simulated else port,
        "client_id": client_id if client_id is not None else args.client_id,
        "contract": contract or args.contract,
        "trade": True,
        "tick_deadline": args.deadline,
        "fill_deadline": args.fill_deadline,
        "store": args.store,
    }
    return load_config(flags)


_CALLOUT = {
    Verdict.PASS: "success",
    Verdict.SKIPPED: "neutral",
    Verdict.STALLED: "warn",
    Verdict.REFUSED: "danger",
    Verdict.FAIL: "danger",
    Verdict.ABORTED: "danger",
    Verdict.BAD_INPUT: "danger",
}


def callout_kind(verdict: Verdict | str | None) -> str:
    """The ``mo.callout`` kind for a verdict (success, warn, danger, neutral)."""
    try:
        return _CALLOUT[Verdict(str(verdict))]
    except ValueError:
        return "neutral"
