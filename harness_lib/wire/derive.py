"""Ticks rows for the store, derived from recorded bytes by ib_async's own decoder.

The recording holds what arrived and when; this turns it into exactly what the live
Recorder used to write: one row per ``TickData`` that ib_async would have produced,
because it *is* ib_async producing them (``Decoder.interpret`` → ``Wrapper``), fed the
recorded messages read by read, with ``lastTime`` set to each read's recorded stamp
instead of "now". ib_async's own rules (a size tick equal to the current size is not a
tick, a price without size still is, ...) therefore hold unchanged.

``TickDeriver`` is incremental: it takes recorded events (or records) as they come, so
a background worker can keep the store current during a run; ``derive_ticks`` runs it
over a whole recording. Neither ever runs on a live connection's event loop.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from ib_async import IB, Contract

from harness_lib.wire.format import Kind, Recording

log = logging.getLogger("harness_lib.wire.derive")

TICK_MESSAGES = frozenset({1, 2, 45, 46, 58, 81})
"""Only these are decoded: they are all that makes TickData (and market data type).
Order and account messages are left alone, so nothing is logged twice."""

_LEN = struct.Struct(">I")


def _contract(f: list[str], at: int) -> Contract:
    f = f[at : at + 12]
    f += [""] * (12 - len(f))
    return Contract(
        conId=int(f[0] or 0), symbol=f[1], secType=f[2], lastTradeDateOrContractMonth=f[3],
        strike=float(f[4] or 0.0), right=f[5], multiplier=f[6], exchange=f[7],
        primaryExchange=f[8], currency=f[9], localSymbol=f[10], tradingClass=f[11],
    )  # fmt: skip


class _Session:
    """One TCP session's decoding state: an unconnected ib_async IB and byte buffers."""

    def __init__(self) -> None:
        ib = IB()  # never connected: only its wrapper and decoder are used
        self.wrapper = ib.wrapper
        self.decoder = ib.client.decoder
        # A message ib_async rejected was already logged live, by ib_async itself.
        self.decoder.logger = log
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.greeted = False


class TickDeriver:
    """Turns recorded traffic into store tick rows, read by read."""

    def __init__(self, run_id: str) -> None:
        from harness_lib.models import finite
        from harness_lib.recorder import SIZE_FIELDS, TICK_FIELDS

        self.run_id = run_id
        self.seq = 0
        self._fields = TICK_FIELDS
        self._sizes = SIZE_FIELDS
        self._finite = finite
        self._sessions: dict[int, _Session] = {}
        self._reading: tuple[_Session, float] | None = None

    @property
    def busy(self) -> bool:
        """True while a read is half decoded (``feed`` ran out of time): ``resume`` it."""
        return self._reading is not None

    def feed(self, kind: int, session: int, t_mono: float, t_wall: float, data: bytes,
             out: list[tuple], deadline: float | None = None) -> bool:  # fmt: skip
        """Take one recorded event; append the rows it completes to ``out``. With a
        ``deadline`` (``time.perf_counter()``), a long read stops when it passes and
        returns False; call ``resume`` later (ib_async's batch state waits meanwhile)."""
        assert self._reading is None, "resume() the half-decoded read first"
        if kind == Kind.OPEN:
            self._sessions[session] = _Session()
            return True
        s = self._sessions.get(session)
        if s is None:
            if kind not in (Kind.TO_SERVER, Kind.TO_CLIENT):
                return True
            s = self._sessions[session] = _Session()
        if kind == Kind.TO_SERVER:
            self._client_bytes(s, data)
        elif kind == Kind.TO_CLIENT:
            return self._server_read(s, t_mono, t_wall, data, out, deadline)
        elif kind == Kind.CLOSE:
            del self._sessions[session]
        return True

    def resume(self, out: list[tuple], deadline: float | None = None) -> bool:
        """Go on decoding the read ``feed`` left half done; True when it is finished."""
        assert self._reading is not None
        s, t_mono = self._reading
        self._reading = None
        return self._decode(s, t_mono, out, deadline)

    def _client_bytes(self, s: _Session, data: bytes) -> None:
        buf = s.to_server
        buf += data
        if not s.greeted:
            if len(buf) < 8:
                return
            if bytes(buf[:4]) == b"API\0":
                (n,) = _LEN.unpack_from(buf, 4)
                if len(buf) < 8 + n:
                    return
                del buf[: 8 + n]
            s.greeted = True
        w = s.wrapper
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf, 0)
            if len(buf) < 4 + n:
                return
            f = bytes(buf[4 : 4 + n]).decode("utf-8", "backslashreplace").split("\0")
            del buf[: 4 + n]
            # reqMktData starts a ticker as IB.reqMktData does; cancel ends it the same way.
            if f[0] == "1" and len(f) > 14:
                w.startTicker(int(f[2]), _contract(f, 3), "mktData")
            elif f[0] == "2" and len(f) > 2:
                ticker = w.reqId2Ticker.get(int(f[2]))
                if ticker is not None:
                    w.endTicker(ticker, "mktData")

    def _server_read(self, s: _Session, t_mono: float, t_wall: float, data: bytes,
                     out: list[tuple], deadline: float | None) -> bool:  # fmt: skip
        s.to_client += data
        w = s.wrapper
        # One socket read = one batch, stamped when it arrived (as tcpDataArrived does).
        w.tcpDataArrived()
        w.lastTime = datetime.fromtimestamp(t_wall, UTC)
        w.time = t_wall
        return self._decode(s, t_mono, out, deadline)

    def _decode(self, s: _Session, t_mono: float, out: list[tuple],
                deadline: float | None) -> bool:  # fmt: skip
        buf, w, decoder = s.to_client, s.wrapper, s.decoder
        tick_msgs = TICK_MESSAGES
        clock = time.perf_counter
        n = 0
        while len(buf) >= 4:
            n += 1
            if deadline is not None and n & 31 == 0 and clock() > deadline:
                self._reading = (s, t_mono)
                return False
            (n,) = _LEN.unpack_from(buf, 0)
            if len(buf) < 4 + n:
                break
            f = bytes(buf[4 : 4 + n]).decode("utf-8", "backslashreplace").split("\0")
            del buf[: 4 + n]
            f.pop()
            if decoder.serverVersion == 0 and len(f) == 2:
                decoder.serverVersion = int(f[0])  # the handshake reply
                continue
            try:
                mid = int(f[0])
            except ValueError:
                continue
            if mid in tick_msgs:
                decoder.interpret(f)
        if w.pendingTickers:
            self._rows(w, t_mono, out)
        return True

    def _rows(self, w: object, t_mono: float, out: list[tuple]) -> None:
        fields, sizes, finite, run_id = self._fields, self._sizes, self._finite, self.run_id
        append = out.append
        seq = self.seq
        for ticker in w.pendingTickers:  # type: ignore[attr-defined]
            c = ticker.contract
            con_id = c.conId if c else 0
            symbol = (c.localSymbol or c.symbol) if c else ""
            mdt = ticker.marketDataType
            for td in ticker.ticks:
                fld = fields.get(td.tickType)
                if fld is None:
                    continue
                seq += 1
                price = None if fld in sizes else finite(td.price)
                append((run_id, con_id, symbol, fld, td.tickType, price, finite(td.size),
                        t_mono, td.time.timestamp(), mdt, seq))  # fmt: skip
        self.seq = seq

    def feed_records(self, records: Iterable, out: list[tuple]) -> None:
        """Feed whole records (from a file) in order."""
        for r in records:
            self.feed(r.kind, r.session, r.t_mono, r.t_wall, r.payload, out)


def derive_ticks(recording: Recording, run_id: str) -> list[tuple]:
    """Store rows ``(run_id, con_id, symbol, field, tick_type, price, size, t_mono, t_wall,
    market_data_type, seq)`` for every tick the recording's sessions received."""
    rows: list[tuple] = []
    TickDeriver(run_id).feed_records(recording.records, rows)
    return rows
