"""The wire tap: records both directions of an ib_async connection's traffic.

What ib_async offers, and what this uses:

- **Received bytes**: ``ib.client.conn.hasData`` is the documented event ("Emits the
  received socket data", ib_async/connection.py) that ib_async's own client listens to.
  The tap listens to it too, and puts its listener *before* the client's, so a read is
  stamped before ib_async decodes it: the stamp is the moment ib_async stamps
  ``TickData.time`` (``Wrapper.tcpDataArrived``), not after every handler of the batch
  has run. Only the public ``Event.connect``/``disconnect`` are used for that.
- **Sent bytes**: ib_async has no event for them. Every byte the client writes (the
  ``API\\0`` greeting included) goes through ``Connection.sendMsg(bytes)``, so the tap
  wraps that method *on this one connection object* (not the class, so other IB
  instances in the process are untouched) and restores it on ``detach``.
- **Close**: the documented ``conn.disconnected`` event.

On the event loop the tap does one thing per socket read: append
``(kind, session, t_mono, t_wall, bytes)`` to the writer's deque. Masking, packing and
compression happen on the writer's thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ib_async import IB

from harness_lib.wire.format import Kind, RecordingWriter

log = logging.getLogger("harness_lib.wire")


class WireTap:
    """Records every connection an ``IB`` makes (reconnects become new sessions)."""

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.session = 0
        self.reads = 0
        self._ib: IB | None = None
        self._orig_send: Any = None

    def attach(self, ib: IB) -> None:
        """Start recording this IB's connection (before ``connectAsync``)."""
        if self._ib is not None:
            raise RuntimeError("this tap is already attached")
        self._ib = ib
        client, conn = ib.client, ib.client.conn
        append = self.writer.queue.append
        mono, wall, to_client = time.monotonic, time.time, Kind.TO_CLIENT

        def on_data(data: bytes) -> None:
            # The hot path: one tuple per socket read, nothing else.
            append((to_client, self.session, mono(), wall(), data))

        self._on_data = on_data
        self._first(conn.hasData, on_data, client._onSocketHasData)
        self._first(conn.disconnected, self._on_disconnected, client._onSocketDisconnected)
        orig = self._orig_send = conn.sendMsg

        def send(msg: bytes) -> None:
            if msg[:4] == b"API\0":  # a new TCP connection starts with the greeting
                info = {"host": client.host, "port": client.port, "via": "ib_async tap"}
                self.session = self.writer.open_session({**info, "client_id": client.clientId})
            append((Kind.TO_SERVER, self.session, mono(), wall(), bytes(msg)))
            orig(msg)

        conn.sendMsg = send  # type: ignore[method-assign]

    @staticmethod
    def _first(event: Any, slot: Any, client_slot: Any) -> None:
        """Connect ``slot`` so it runs before ib_async's own listener of ``event``."""
        if client_slot in event:  # Event.__contains__: public eventkit API
            event.disconnect(client_slot)
            event.connect(slot)
            event.connect(client_slot)
        else:  # ib_async changed how it listens: still record, stamps a little later
            log.warning("ib_async's socket listener not found; wire stamps follow decoding")
            event.connect(slot)

    def _on_disconnected(self, msg: str) -> None:
        ib = self._ib
        # Our listener runs before the client's: if the client is still "connected" the
        # peer closed the socket; if the client already reset itself, it hung up first.
        by = (
            "server"
            if ib is not None and ib.client.connState != ib.client.DISCONNECTED
            else ("client")
        )
        if self.session:
            self.writer.close_session(self.session, by, msg)

    def detach(self) -> None:
        """Stop recording (restores the connection's own ``sendMsg``)."""
        ib, self._ib = self._ib, None
        if ib is None:
            return
        conn = ib.client.conn
        conn.hasData.disconnect(self._on_data)
        conn.disconnected.disconnect(self._on_disconnected)
        if "sendMsg" in vars(conn):
            del conn.sendMsg  # the class's own method is back
