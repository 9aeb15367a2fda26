"""One run's recording: the tap, the writer thread, and the worker that derives ticks.

Threads and what each costs the event loop:

- the **event loop** appends one tuple per socket read (the tap);
- the **writer thread** drains those every ``FLUSH_SECONDS``: masks, packs, gzips (zlib
  runs without the GIL), and hands the same events to the deriver's queue;
- the **derive thread** turns them into ticks rows with ib_async's decoder and writes
  them to the store. Python code holds the GIL, and a thread holding it delays the event
  loop's next read (and so its arrival stamps), so the worker runs in slices of at most
  ``SLICE_SECONDS`` and then sleeps for ``1/DUTY - 1`` slices: it never takes more than
  ``DUTY`` of the interpreter and never delays a read by more than one slice. At high
  rates it falls behind during the run (readers see ticks a little later) and catches
  up at full speed in ``close``, after the run's measurements are over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ib_async import IB

from harness_lib.wire.derive import TickDeriver
from harness_lib.wire.format import SLICE_SECONDS, Event, RecordingWriter
from harness_lib.wire.mask import AccountMasker, load_key
from harness_lib.wire.tap import WireTap

log = logging.getLogger("harness_lib.wire")

DUTY = 0.05
BATCH_ROWS = 500
"""Ticks per store transaction at most: binding a batch holds the GIL, so batches are
small and the thread pauses between them while the run goes on."""
WRITE_SECONDS = 0.2
"""Derived ticks reach the store at least this often while the run goes on."""


class RunRecording:
    """Records one run's connection and keeps its store ticks derived from the recording."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        *,
        store: Any = None,
        mask: bool = True,
        meta: dict[str, Any] | None = None,
        on_lost: Callable[[str, Exception, float], None] | None = None,
    ) -> None:
        self.path = path
        self.on_lost = on_lost
        """Called (on the derive thread) with what was lost, why, and when the first lost
        tick arrived, when derived ticks could not be stored: the Recorder's one policy
        for lost writes applies to them too."""
        self.run_id = run_id
        self.store = store
        masker = AccountMasker(load_key(path.parent)) if mask else None
        self.writer = RecordingWriter(
            path, {"run_id": run_id, "masked": mask, **(meta or {})}, transform=masker
        )
        self.writer.derive_queue = deque()
        self.tap = WireTap(self.writer)
        self.deriver = TickDeriver(run_id)
        self.tick_count = 0
        self.derive_seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self, ib: IB) -> RunRecording:
        """Open the file, start both threads, and tap ``ib`` (before it connects)."""
        self.writer.start()
        self.tap.attach(ib)
        self._thread = threading.Thread(target=self._derive_loop, name="wire-derive",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def _derive_loop(self) -> None:
        q: deque[Event] = self.writer.derive_queue  # type: ignore[assignment]
        rows: list[tuple] = []
        last_write = time.monotonic()
        clock = time.perf_counter
        pause = SLICE_SECONDS * (1 / DUTY - 1)
        feed = self.deriver.feed
        deriver = self.deriver
        while True:
            stopping = self._stop.is_set()
            t0 = clock()
            deadline = None if stopping else t0 + SLICE_SECONDS
            while deriver.busy or q:
                # A big read (hundreds of ticks) is decoded across several slices.
                if deriver.busy:
                    done = deriver.resume(rows, deadline)
                else:
                    done = feed(*q.popleft(), rows, deadline)
                if not done or (deadline is not None and clock() > deadline):
                    break
            self.derive_seconds += clock() - t0
            now = time.monotonic()
            due = len(rows) >= 10 * BATCH_ROWS or now - last_write > WRITE_SECONDS
            if rows and (stopping or due):
                self._write(rows)
                rows = []
                last_write = now
            if stopping and not q and not deriver.busy:
                self._write(rows)
                return
            time.sleep(pause if q or deriver.busy else 0.02)

    def _write(self, rows: list[tuple]) -> None:
        pause = 0.0 if self._stop.is_set() else SLICE_SECONDS * (1 / DUTY - 1)
        for i in range(0, len(rows), BATCH_ROWS):
            if i:
                time.sleep(pause)
            self._write_batch(rows[i : i + BATCH_ROWS])

    def _write_batch(self, rows: list[tuple]) -> None:
        t0 = time.perf_counter()
        if self.store is not None:
            try:
                self.store.add_ticks(rows)
            except Exception as exc:  # disk full, file gone, store closed under us
                if self.on_lost is not None:
                    self.on_lost(f"{len(rows)} tick(s)", exc, rows[0][7])
                else:
                    log.exception("could not write %d derived ticks", len(rows))
                return
        self.tick_count += len(rows)
        self.derive_seconds += time.perf_counter() - t0

    def detach(self) -> None:
        """Stop tapping (the connection object may be reused or dropped)."""
        self.tap.detach()

    def close(self) -> Path:
        """Finish the file, derive every remaining tick at full speed, write them."""
        if self._closed:
            return self.path
        self._closed = True
        self.writer.close()  # its last drain feeds the derive queue
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(Exception):
            self.tap.detach()
        return self.path
