"""One client connection of the simulated gateway: framing, handshake, dispatch, sending.

A ``Session`` is an asyncio Protocol. It reads frames, decodes each request with its
declared layout (``requests.LAYOUTS``) at the negotiated server version and hands the
named fields to the request's handler; a request the simulator does not serve is answered
at once with the error in ``requests.UNSERVED``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import messages as m
from .market import Instrument
from .requests import LAYOUTS, UNSERVED, FieldReader, Request, unserved_req_id
from .truth import SentTick
from .wire import (
    MIN_CLIENT_VERSION,
    SERVER_VERSION,
    FrameReader,
    ProtocolError,
    frame,
    handshake_reply,
    parse_version_range,
)

if TYPE_CHECKING:
    from .server import PaperGateway

log = logging.getLogger("harness_lib.sim")

# Tick type ids: (live, delayed) per Ticker field.
TICK_IDS = {
    "bid": (1, 66),
    "ask": (2, 67),
    "last": (4, 68),
    "bidSize": (0, 69),
    "askSize": (3, 70),
    "lastSize": (5, 71),
    "volume": (8, 74),
    "close": (9, 75),
    "high": (6, 72),
    "low": (7, 73),
    "open": (14, 76),
    "shortableShares": (89, 89),
}
LAST_TIMESTAMP = (45, 88)
"""tickString: time of the last trade in epoch seconds (live, delayed)."""
HALTED = (49, 90)
"""tickGeneric: 0 not halted, 1 halted (live, delayed)."""
RT_VOLUME = 48
"""tickString for generic tick 233: 'price;size;ms;dayVolume;vwap;singleMM'."""
SHORTABLE = 46
"""tickGeneric for generic tick 236: > 2.5 means at least 1000 shares are available."""
SHORTABLE_SHARES = 89
"""tickSize for generic tick 236: shares available to short."""

Handler = Callable[["Session", Request], None]
HANDLERS: dict[int, Handler] = {}
"""Request handlers by message id, registered by ``handlers.py``."""


@dataclass(slots=True)
class Subscription:
    """One reqMktData stream of one session."""

    req_id: int
    inst: Instrument
    snapshot: bool
    delayed: bool
    frozen: bool
    generic: frozenset[str] = frozenset()
    """Generic tick ids the client asked for (e.g. '233', '236')."""
    started: float = field(default_factory=time.monotonic)
    last_stamp: int = 0
    """The last-trade time (tick 45, whole seconds) last sent."""
    high: float | None = None
    low: float | None = None
    """The session high and low last sent (ticks 6/7 go out when they change)."""
    first_sent: float | None = None
    task: asyncio.Task[None] | None = None


class Session(asyncio.Protocol):
    """One client connection: parses its frames and answers as a paper gateway would."""

    def __init__(self, gw: PaperGateway) -> None:
        self.gw = gw
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.client_id: int | None = None
        self.server_version = SERVER_VERSION
        """The version negotiated at the handshake; every layout sent is encoded for it."""
        self.peer = "?"
        self.market_data_type = 1
        self.subs: dict[int, Subscription] = {}
        self.positions_subscribed = False
        self.account_updates: str | None = None
        self.closed = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.feeds: dict[tuple[str, int], asyncio.Task[Any]] = {}
        """Streams other than reqMktData by (kind, reqId): history, pnl, tbt, depth."""

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.gw.sessions.add(self)
        if self.gw.refusing():
            log.info("refusing connection from %s (scenario refuse_connections)", self.peer)
            self.gw.truth.connections.append((time.monotonic(), -1, "refused"))
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            if self.reader.greet():
                self._handshake()
            for fields in self.reader.frames():
                self._dispatch(fields)
        except ProtocolError as exc:
            # A client that does not speak the protocol only loses its own connection.
            log.warning("closing %s: %s", self.peer, exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw.sessions.discard(self)
        if self.client_id is not None and self.gw.clients.get(self.client_id) is self:
            del self.gw.clients[self.client_id]
            self.gw.truth.connections.append((time.monotonic(), self.client_id, "closed"))
        for sub in self.subs.values():
            if sub.task:
                sub.task.cancel()
        for task in self._tasks:
            task.cancel()
        self.subs.clear()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- sending -----------------------------------------------------------------------------
    def send(self, fields: list[Any]) -> None:
        """Write one message and count it in the ground truth."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(frame(fields))
        self.gw.truth.sent(self.client_id or 0, int(fields[0]))

    def send_tick(
        self, sub: Subscription, fld: str, price: float | None, size: float | None
    ) -> None:
        """Send one tickPrice/tickSize and record it as ground truth."""
        if self.closed:
            return
        live_id, delayed_id = TICK_IDS[fld]
        tick_type = delayed_id if sub.delayed else live_id
        if price is not None:
            fields: list[Any] = [
                m.TICK_PRICE,
                6,
                sub.req_id,
                tick_type,
                price,
                m._qty(size or 0),
                0,
            ]
        else:
            fields = [m.TICK_SIZE, 6, sub.req_id, tick_type, m._qty(size or 0)]
        t_mono = time.monotonic()
        t_wall = time.time()
        self.send(fields)
        if self.gw.truth.record_ticks:
            self.gw.truth.ticks.append(
                SentTick(
                    t_mono,
                    t_wall,
                    self.client_id or 0,
                    sub.req_id,
                    sub.inst.con_id,
                    tick_type,
                    fld,
                    price,
                    size,
                )
            )

    def send_extra(
        self, sub: Subscription, kind: tuple[int, int] | int, msg: int, value: Any
    ) -> None:
        """Send a tickString (46) or tickGeneric (45) of a subscription; ``kind`` is a tick
        id or a (live, delayed) pair."""
        tick_type = kind if isinstance(kind, int) else kind[1 if sub.delayed else 0]
        self.send([msg, 6, sub.req_id, tick_type, value])

    def error(self, req_id: int, code: int, text: str) -> None:
        """Send an error/notice message."""
        self.send(m.error(req_id, code, text, self.server_version))

    async def drain(self) -> None:
        """Wait while the socket's write buffer is over the high-water mark."""
        await self._can_write.wait()

    def close(self) -> None:
        """Drop this connection (the client sees the peer close)."""
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def start_feed(self, kind: str, req_id: int, coro: Any) -> None:
        """Run a stream for (kind, reqId), replacing one with the same id."""
        self.stop_feed(kind, req_id)
        self.feeds[(kind, req_id)] = self.spawn(coro)

    def stop_feed(self, kind: str, req_id: int) -> bool:
        """Cancel a stream; False when no such stream runs."""
        task = self.feeds.pop((kind, req_id), None)
        if task is None:
            return False
        task.cancel()
        return True

    def feed_count(self, kind: str) -> int:
        """Streams of one kind still running."""
        return sum(1 for (k, _), t in self.feeds.items() if k == kind and not t.done())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine tied to this session's lifetime."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except ValueError:
            log.warning("%s sent a non-numeric message id %r; ignored", self.peer, fields[0][:20])
            return
        self.gw.truth.requests[(self.client_id or 0, msg_id)] += 1
        if msg_id != 71 and self.client_id is None:
            log.warning("%s sent message %d before startApi; ignored", self.peer, msg_id)
            return
        layout = LAYOUTS.get(msg_id)
        handler = HANDLERS.get(msg_id)
        if layout is None or handler is None:
            spec = UNSERVED.get(msg_id)
            if spec is None:
                log.warning("%s sent unknown message id %d; ignored", self.peer, msg_id)
                return
            # Never silence: the client gets the gateway's error for it at once.
            self.error(unserved_req_id(fields, spec), spec.code, spec.text)
            return
        try:
            req = layout.decode(FieldReader(fields), self.server_version)
            handler(self, req)
        except (ValueError, IndexError) as exc:
            # Malformed fields in one request: log it, tell the client, keep serving.
            log.warning("%s sent a malformed message %d: %s", self.peer, msg_id, exc)
            self.error(-1, 320, f"Error reading request: malformed message {msg_id}")

    def _handshake(self) -> None:
        """Answer the version range with the server version and connection time."""
        text = self.reader.version_text or ""
        _low, high, _ = parse_version_range(text)
        if high < MIN_CLIENT_VERSION:
            raise ProtocolError(f"client versions {text!r} are older than {MIN_CLIENT_VERSION}")
        self.server_version = min(SERVER_VERSION, high)
        now = datetime.now(UTC) + self.gw.clock_offset_td
        assert self.transport is not None
        self.transport.write(
            handshake_reply(self.server_version, now.strftime("%Y%m%d %H:%M:%S") + " UTC")
        )
