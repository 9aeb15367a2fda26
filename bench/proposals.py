"""Prototypes of the library changes the benchmarks recommend, measured, never shipped.

Nothing here is imported by ``harness_lib``. Each prototype exists so that a recommended
change comes with a number measured by the same benchmark as the current code:

* ``cork_sessions``: the simulator writing each loop turn's frames in one
  ``transport.write`` instead of one syscall per tick message.

The Recorder prototypes that used to live here (``LeanRecorder`` with a writer thread or
process, ``BlobRecorder`` with columnar batches) are superseded by the wire recordings
(``harness_lib/wire``): the event loop now appends one tuple per socket read and the
store's ticks are derived off the loop, so they were deleted.
"""

from __future__ import annotations

from typing import Any

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
