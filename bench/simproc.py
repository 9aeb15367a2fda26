"""A PaperGateway in its own process, for benchmarks.

Throughput and timing benchmarks must not run the simulator on the client's interpreter:
both would share one GIL and the client's figures would include the server's work. This
module starts ``PaperGateway`` in a ``spawn``-ed child with the scenario knobs a benchmark
needs (``tick_interval``, ``burst``, extra synthetic stocks) and talks to it over a pipe:
the parent asks for ground-truth counts or the full list of sent ticks while the child's
event loop keeps serving clients.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

SYNTH_BASE_CON_ID = 9_000_000
"""conIds of the synthetic stocks the child adds: SYNTH_BASE_CON_ID + i."""


def synth_symbol(i: int) -> str:
    """Symbol of the i-th synthetic stock: SYNAAA, SYNAAB, ... (letters only, because the
    harness's contract spec accepts 1-6 letter stock symbols)."""
    a, rest = divmod(i, 26 * 26)
    b, c = divmod(rest, 26)
    return "SYN" + "".join(chr(ord("A") + x) for x in (a, b, c))


def synth_instrument(i: int) -> Any:
    """The i-th synthetic stock as the simulator's catalogue holds it (a liquid US stock)."""
    from harness_lib.sim.market import Instrument

    sym = synth_symbol(i)
    return Instrument(
        con_id=SYNTH_BASE_CON_ID + i, symbol=sym, sec_type="STK", exchange="SMART",
        primary_exchange="NASDAQ", currency="USD", local_symbol=sym, trading_class="NMS",
        min_tick=0.01, price=20.0 + i, long_name=f"SYNTHETIC {i}",
    )  # fmt: skip


SentRow = tuple[float, float, int, int, int, int, str, float | None, float | None]
"""A SentTick as a plain tuple (t_mono, t_wall, client_id, req_id, con_id, tick_type, field,
price, size): cheaper to pickle across the pipe than the dataclass."""


def _child(pipe: Pipe, scenario: str, seed: int, params: dict[str, Any], n_synth: int,
           record_ticks: bool, cork: bool) -> None:  # fmt: skip
    """Child entry point (must be module-level so ``spawn`` can import it)."""
    # Keep the child's logging quiet: benchmarks print tables, not simulator chatter.
    import logging

    logging.basicConfig(level=logging.WARNING)
    if cork:
        from proposals import cork_sessions

        cork_sessions()
    asyncio.run(_serve(pipe, scenario, seed, params, n_synth, record_ticks))


async def _serve(pipe: Pipe, scenario: str, seed: int, params: dict[str, Any], n_synth: int,
                 record_ticks: bool) -> None:  # fmt: skip
    from harness_lib.sim import PaperGateway

    gw = PaperGateway(port=0, scenario=scenario, seed=seed, **params)
    gw.truth.record_ticks = record_ticks
    for i in range(n_synth):
        gw.catalogue.add(synth_instrument(i))
    await gw.start()
    pipe.send(("port", gw.port, os.getpid()))
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    # The pipe is serviced by the same loop that serves clients, so a query never races
    # with a tick being recorded (everything in the child runs on one thread).
    loop.add_reader(pipe.fileno(), lambda: inbox.put_nowait(pipe.recv()))
    try:
        while True:
            cmd, arg = await inbox.get()
            if cmd == "count":
                pipe.send(gw.truth.tick_count(arg))
            elif cmd == "ticks":
                pipe.send(
                    [
                        (t.t_mono, t.t_wall, t.client_id, t.req_id, t.con_id, t.tick_type,
                         t.field, t.price, t.size)
                        for t in gw.truth.ticks
                        if arg is None or t.client_id == arg
                    ]
                )  # fmt: skip
            elif cmd == "clear":
                gw.truth.ticks.clear()
                pipe.send(True)
            elif cmd == "stop":
                break
    finally:
        loop.remove_reader(pipe.fileno())
        await gw.stop()
        pipe.send(("stopped", None, 0))


class SimProcess:
    """A simulator child process. Use as a context manager::

    with SimProcess(tick_interval=0, burst=8, n_synth=50) as sim:
        ... connect ib_async to sim.port ...
        sent = sim.tick_count(client_id)
    """

    def __init__(self, scenario: str = "healthy", *, seed: int = 7, n_synth: int = 0,
                 record_ticks: bool = False, cork: bool = False,
                 **params: Any) -> None:  # fmt: skip
        """``cork`` applies the proposed one-write-per-loop-turn patch (proposals.py)."""
        self.cork = cork
        self.scenario = scenario
        self.seed = seed
        self.n_synth = n_synth
        self.record_ticks = record_ticks
        self.params = params
        self.port = 0
        self.pid = 0
        self._proc: Any = None
        self._pipe: Pipe | None = None

    def start(self, timeout: float = 30.0) -> SimProcess:
        """Start the child and wait until it listens."""
        # spawn, not fork: the parent may already run an event loop and ib_async state.
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child,
            args=(
                child,
                self.scenario,
                self.seed,
                self.params,
                self.n_synth,
                self.record_ticks,
                self.cork,
            ),
            daemon=True,
            name="livefire-bench-sim",
        )
        self._proc.start()
        child.close()
        self._pipe = parent
        if not parent.poll(timeout):
            self.stop()
            raise RuntimeError("simulator child did not start")
        _, self.port, self.pid = parent.recv()
        return self

    def _ask(self, cmd: str, arg: Any = None, timeout: float = 60.0) -> Any:
        assert self._pipe is not None
        self._pipe.send((cmd, arg))
        if not self._pipe.poll(timeout):
            raise TimeoutError(f"simulator child did not answer {cmd!r}")
        return self._pipe.recv()

    def tick_count(self, client_id: int | None = None) -> int:
        """Tick messages the child has sent (to one client, or to all)."""
        return int(self._ask("count", client_id))

    def sent_ticks(self, client_id: int | None = None) -> list[SentRow]:
        """Every tick the child recorded (needs ``record_ticks=True``), in send order."""
        return list(self._ask("ticks", client_id))

    def clear_ticks(self) -> None:
        """Forget recorded ticks (between measurements on one child)."""
        self._ask("clear")

    def stop(self) -> None:
        """Stop the child (idempotent)."""
        if self._proc is None:
            return
        if self._proc.is_alive() and self._pipe is not None:
            try:
                self._pipe.send(("stop", None))
                deadline = time.monotonic() + 5
                while self._pipe.poll(max(0.0, deadline - time.monotonic())):
                    if self._pipe.recv()[0] == "stopped":
                        break
            except (OSError, EOFError):
                pass
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        self._proc = None

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
