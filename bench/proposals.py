"""Prototypes of the library changes the benchmarks recommend, measured, never shipped.

Nothing here is imported by ``harness_lib``. Each prototype exists so that a recommended
change comes with a number measured by the same benchmark as the current code:

* ``LeanRecorder``: the Recorder's tick path with O(1) work per ticker on the event loop
  (it keeps a reference to ib_async's per-read ``ticker.ticks`` list instead of building
  a TickRow and a row tuple per tick) and every SQLite write off the loop, in a writer
  thread or a writer process. ib_async gives each socket read a fresh ``ticks`` list
  (``Wrapper.tcpDataArrived`` assigns ``ticker.ticks = []``), so a kept list is never
  mutated afterwards.
* ``cork_sessions``: the simulator writing each loop turn's frames in one
  ``transport.write`` instead of one syscall per tick message.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
from ib_async import Ticker

from harness_lib.recorder import FLUSH_ROWS, TICK_FIELDS, Recorder, TickRow
from harness_lib.store import Store

_SIZE_FIELDS = frozenset(("bidSize", "askSize", "lastSize", "volume"))
_FIELD_OF: dict[int, tuple[str, bool]] = {t: (f, f in _SIZE_FIELDS) for t, f in TICK_FIELDS.items()}
"""tick type -> (field, is a size field), one dict lookup per tick instead of two tests."""

Batch = tuple[int, str, int, float, float, list[tuple[int, float, float]]]
"""(con_id, symbol, market_data_type, t_mono, t_wall, [(tick_type, price, size), ...])."""


def _fin(x: float) -> float | None:
    # Inline form of recorder._finite for floats ib_async already parsed.
    return x if x == x and -1e300 < x < 1e300 else None


def rows_from(run_id: str, batches: list[Batch], seq: int) -> tuple[list[tuple], int]:
    """Store rows for batches, numbering ticks from ``seq + 1``; returns (rows, last seq)."""
    out: list[tuple] = []
    append = out.append
    for con_id, symbol, mdt, t_mono, t_wall, ticks in batches:
        for tick_type, price, size in ticks:
            spec = _FIELD_OF.get(tick_type)
            if spec is None:
                continue
            fld, is_size = spec
            seq += 1
            append((run_id, con_id, symbol, fld, tick_type, None if is_size else _fin(price),
                    _fin(size), t_mono, t_wall, mdt, seq))  # fmt: skip
    return out, seq


def _writer_process(pipe: Any, path: str, run_id: str) -> None:
    """Writer child: owns its own Store connection; writes batches until told to stop or
    the parent disappears (EOF), flushing what it has either way."""
    store = Store(path)
    pipe.send("ready")
    seq = 0
    try:
        while True:
            try:
                msg = pipe.recv()
            except EOFError:
                break
            if msg is None:
                break
            rows, seq = rows_from(run_id, msg, seq)
            store.add_ticks(rows)
    finally:
        store.close()


def _keep_recent(ring: deque[Any], batch: Any, n: int, held: int, limit: int) -> int:
    """Append a batch of n ticks to the live-view ring and drop the oldest batches beyond
    ``limit`` ticks; returns the ticks now held. Bounding by ticks (not batches) matters:
    each kept TickData is a GC-tracked object the collector must scan."""
    ring.append((n, batch))
    held += n
    while held > limit and len(ring) > 1:
        held -= ring.popleft()[0]
    return held


@dataclass
class LeanRecorder(Recorder):
    """Recorder with the proposed tick path; ``writer`` is 'thread' or 'process'."""

    writer: str = "thread"
    _pending: list[Any] = field(default_factory=list)
    _pending_n: int = 0
    _batches: deque[Any] = field(default_factory=deque)
    _held: int = 0
    _q: Any = None
    _thread: threading.Thread | None = None
    _proc: Any = None
    _pipe: Any = None
    _seq: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.store is None:
            return
        if self.writer == "thread":
            self._q = queue.SimpleQueue()
            # A second connection: the loop's own writes (checkpoints, events) never wait
            # behind a tick batch for the Store's lock; WAL serialises the two writers.
            self._thread = threading.Thread(target=self._write_thread, args=(self.store.path,),
                                            daemon=True, name="tick-writer")  # fmt: skip
            self._thread.start()
        elif self.writer == "process":
            ctx = mp.get_context("spawn")
            self._pipe, child = ctx.Pipe()
            self._proc = ctx.Process(target=_writer_process,
                                     args=(child, str(self.store.path), self.run_id),
                                     daemon=True, name="tick-writer")  # fmt: skip
            self._proc.start()
            child.close()
            # Wait until the child has its store open, so early batches never block the
            # loop on a full pipe while the child is still importing.
            if not self._pipe.poll(60) or self._pipe.recv() != "ready":
                raise RuntimeError("tick writer process did not start")
        else:
            raise ValueError(f"writer must be 'thread' or 'process', not {self.writer!r}")

    # --- on the event loop: O(1) per ticker --------------------------------------------
    def record_ticks(self, ticker: Ticker, t_mono: float) -> None:
        """Keep this read's ticks for the writer; no per-tick Python object is built here
        (thread writer), or one small tuple per tick (process writer, which must pickle)."""
        ticks = ticker.ticks
        c = ticker.contract
        con_id = c.conId if c else 0
        symbol = (c.localSymbol or c.symbol) if c else ""
        # Every TickData of one socket read carries the same arrival time.
        t_wall = ticks[0].time.timestamp()
        if self.writer == "process":
            compact: Any = [(td.tickType, td.price, td.size) for td in ticks]
        else:
            compact = ticks
        batch = (con_id, symbol, ticker.marketDataType, t_mono, t_wall, compact)
        self._pending.append(batch)
        self._held = _keep_recent(self._batches, batch, len(ticks), self._held, self.ring_size)
        self._pending_n += len(ticks)
        self.tick_count += len(ticks)
        if self._pending_n >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Hand the pending batches to the writer (never waits for SQLite)."""
        if not self._pending:
            return
        batches, self._pending, self._pending_n = self._pending, [], 0
        self._last_flush = time.monotonic()
        if self.store is None:
            return
        if self._q is not None:
            self._q.put(batches)
        elif self._pipe is not None:
            self._pipe.send(batches)

    def _write_thread(self, path: Path) -> None:
        store = Store(path)
        try:
            while True:
                batches = self._q.get()
                if batches is None:
                    break
                compact = [(b[0], b[1], b[2], b[3], b[4],
                            [(td.tickType, td.price, td.size) for td in b[5]])
                           for b in batches]  # fmt: skip
                rows, self._seq = rows_from(self.run_id, compact, self._seq)
                try:
                    store.add_ticks(rows)
                except Exception:
                    import logging

                    logging.getLogger("bench.proposals").exception("tick batch lost")
        finally:
            store.close()

    def snapshot(self, last_ticks: int = 2_000) -> dict[str, Any]:
        """Live-view copy: the recent batches turned into TickRows only when asked."""
        recent: list[TickRow] = []
        for _, (con_id, symbol, mdt, t_mono, t_wall, ticks) in reversed(self._batches):
            for td in reversed(ticks):
                tick_type, price, size = (td if isinstance(td, tuple)
                                          else (td.tickType, td.price, td.size))  # fmt: skip
                spec = _FIELD_OF.get(tick_type)
                if spec is None:
                    continue
                recent.append(TickRow(0, con_id, symbol, spec[0], tick_type,
                                      None if spec[1] else _fin(price), _fin(size),
                                      t_mono, t_wall, mdt))  # fmt: skip
            if len(recent) >= last_ticks:
                break
        recent.reverse()
        with self.lock:
            cps = list(self.checkpoints)
            msgs = list(self.messages)
        return {"ticks": recent[-last_ticks:], "checkpoints": cps, "messages": msgs,
                "tick_count": self.tick_count}  # fmt: skip

    async def close(self) -> None:
        """Flush, then wait for the writer to commit everything."""
        await super().close()
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(60)
            self._thread = None
        if self._proc is not None:
            self._pipe.send(None)
            self._proc.join(60)
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._proc = None


# --- columnar batches: one SQLite row per flush -------------------------------------------

BLOB_SCHEMA = """CREATE TABLE IF NOT EXISTS tick_batches (
    run_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    con_id BLOB NOT NULL,      -- int64[n]
    tick_type BLOB NOT NULL,   -- int16[n]
    price BLOB NOT NULL,       -- float64[n], NaN = none
    size BLOB NOT NULL,        -- float64[n], NaN = none
    t_mono BLOB NOT NULL,      -- float64[n]
    t_wall BLOB NOT NULL,      -- float64[n]
    mdt BLOB NOT NULL          -- int8[n]
)"""
"""Prototype schema: each flush is one row of packed columns (native byte order). A
post-mortem unpacks a run's rows with ``numpy.frombuffer`` and concatenates them."""


BLOB_FLUSH_ROWS = 5_000
"""A commit costs 0.1-0.3 ms whatever it holds, so a columnar batch may be larger than
today's 500 rows; the 100 ms timer still bounds what a crash can lose."""


@dataclass
class BlobRecorder(Recorder):
    """Recorder that keeps today's synchronous, on-loop flush but writes each flush as ONE
    row of packed arrays instead of one row per tick: the per-tick work is three list
    comprehensions and array appends; SQLite sees one small INSERT per 100 ms."""

    _pending: list[Any] = field(default_factory=list)
    _pending_n: int = 0
    _batches: deque[Any] = field(default_factory=deque)
    _held: int = 0
    _seq: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.store is not None:
            with self.store._write("create tick_batches") as conn:
                conn.execute(BLOB_SCHEMA)

    def record_ticks(self, ticker: Ticker, t_mono: float) -> None:
        """O(1) per ticker: keep ib_async's per-read list of TickData."""
        ticks = ticker.ticks
        batch = (ticker, ticker.marketDataType, t_mono, ticks)
        self._pending.append(batch)
        self._held = _keep_recent(self._batches, batch, len(ticks), self._held, self.ring_size)
        self._pending_n += len(ticks)
        self.tick_count += len(ticks)
        if self._pending_n >= BLOB_FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Pack the pending ticks column-wise and insert them as one row.

        Per tick only C-speed work is left: one list extend and three ``map(attrgetter)``
        passes; per socket read, a few appends (ib_async stamps every tick of one read with
        the same datetime object, so its timestamp is computed once per read).
        """
        if not self._pending:
            return
        batches, self._pending, self._pending_n = self._pending, [], 0
        self._last_flush = time.monotonic()
        ticks: list[Any] = []
        counts: list[int] = []
        cons: list[int] = []
        monos: list[float] = []
        walls: list[float] = []
        mdts: list[int] = []
        last_dt: Any = None
        last_ts = 0.0
        for ticker, md, t_mono, tl in batches:
            ticks += tl
            counts.append(len(tl))
            c = ticker.contract
            cons.append(c.conId if c else 0)
            dt = tl[0].time
            if dt is not last_dt:
                last_dt, last_ts = dt, dt.timestamp()
            walls.append(last_ts)
            monos.append(t_mono)
            mdts.append(md)
        n = len(ticks)
        first = self._seq + 1
        self._seq += n
        if self.store is None:
            return
        rep = np.repeat
        cols = (
            rep(np.asarray(cons, dtype=np.int64), counts).tobytes(),
            array("h", map(_TYPE, ticks)).tobytes(),
            array("d", map(_PRICE, ticks)).tobytes(),
            array("d", map(_SIZE, ticks)).tobytes(),
            rep(np.asarray(monos), counts).tobytes(),
            rep(np.asarray(walls), counts).tobytes(),
            rep(np.asarray(mdts, dtype=np.int8), counts).tobytes(),
        )
        try:
            with self.store._write("add tick batch") as conn:
                conn.execute(
                    "INSERT INTO tick_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.run_id, first, n, *cols),
                )
                conn.execute("UPDATE runs SET tick_count = tick_count + ? WHERE run_id = ?",
                             (n, self.run_id))  # fmt: skip
        except Exception:
            import logging

            logging.getLogger("bench.proposals").exception("tick batch lost")


_TYPE = attrgetter("tickType")
_PRICE = attrgetter("price")
_SIZE = attrgetter("size")


def blob_ticks(path: Path | str, run_id: str) -> dict[str, Any]:
    """Read a BlobRecorder run back as numpy columns (what Store.ticks would do)."""
    import sqlite3

    import numpy as np

    names = ("con_id", "tick_type", "price", "size", "t_mono", "t_wall")
    cols: dict[str, list[Any]] = {k: [] for k in names}
    dtypes = {"con_id": np.int64, "tick_type": np.int16, "price": np.float64,
              "size": np.float64, "t_mono": np.float64, "t_wall": np.float64}  # fmt: skip
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        for row in conn.execute(
            "SELECT con_id, tick_type, price, size, t_mono, t_wall FROM tick_batches "
            "WHERE run_id = ? ORDER BY first_seq", (run_id,)):  # fmt: skip
            for key, blob in zip(cols, row, strict=True):
                cols[key].append(np.frombuffer(blob, dtype=dtypes[key]))
    return {k: (np.concatenate(v) if v else np.array([], dtype=dtypes[k]))
            for k, v in cols.items()}  # fmt: skip


# --- simulator: one write per loop turn --------------------------------------------------


def cork_sessions() -> None:
    """Patch the simulator (in the process that calls it) so each session buffers the
    frames of one loop turn and writes them with one ``transport.write``.

    Today ``Session.send`` calls ``transport.write(frame(...))`` per message; with an
    empty buffer asyncio turns each into its own ``send()`` syscall and TCP segment, so
    the simulator pays a syscall per tick and the client wakes for about two ticks.
    """
    from harness_lib.sim import server
    from harness_lib.sim.wire import frame

    def send(self: Any, fields: list[Any]) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        buf = getattr(self, "_cork", None)
        if buf is None:
            buf = self._cork = []
            asyncio_loop = server.asyncio.get_running_loop()
            asyncio_loop.call_soon(_uncork, self)
        buf.append(frame(fields))
        self.gw.truth.sent(self.client_id or 0, int(fields[0]))

    def _uncork(self: Any) -> None:
        buf, self._cork = self._cork, None
        if buf and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(buf))

    original_close = server.Session.close

    def close(self: Any) -> None:
        # Whatever was queued (an error 326 before a refusal) goes out before the close.
        if getattr(self, "_cork", None):
            _uncork(self)
        original_close(self)

    server.Session.send = send  # type: ignore[method-assign]
    server.Session.close = close  # type: ignore[method-assign]
