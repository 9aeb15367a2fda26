"""Ticks rows for the store, derived from a recording by ib_async's own decoder.

The recording holds what arrived and when; this turns it into exactly what the live
Recorder used to write: one row per ``TickData`` that ib_async would have produced,
because it *is* ib_async producing them (``Decoder.interpret`` → ``Wrapper``), fed the
recorded messages read by read, with ``lastTime`` set to each read's recorded stamp
instead of "now". ib_async's own rules (a size tick equal to the current size is not a
tick, a price without size still is, ...) therefore hold unchanged. It runs after the
run (or on any recording), never on the event loop of a live connection.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ib_async import IB, Contract

from harness_lib.wire.format import Frame, Recording

log = logging.getLogger("harness_lib.wire.derive")

TICK_MESSAGES = frozenset({1, 2, 45, 46, 58, 81})
"""Only these are decoded: they are all that makes TickData (and market data type).
Order and account messages are left alone, so nothing is logged twice."""


def _contract(fields: list[str], at: int) -> Contract:
    f = fields[at : at + 12]
    f += [""] * (12 - len(f))
    return Contract(
        conId=int(f[0] or 0), symbol=f[1], secType=f[2], lastTradeDateOrContractMonth=f[3],
        strike=float(f[4] or 0.0), right=f[5], multiplier=f[6], exchange=f[7],
        primaryExchange=f[8], currency=f[9], localSymbol=f[10], tradingClass=f[11],
    )  # fmt: skip


def derive_ticks(recording: Recording, run_id: str) -> list[tuple]:
    """Store rows ``(run_id, con_id, symbol, field, tick_type, price, size, t_mono, t_wall,
    market_data_type, seq)`` for every tick the recording's sessions received."""
    from harness_lib.models import finite
    from harness_lib.recorder import SIZE_FIELDS, TICK_FIELDS

    rows: list[tuple] = []
    seq = 0
    for session in recording.sessions():
        seq = _session_ticks(recording.frames(session), run_id, rows, seq, TICK_FIELDS,
                             SIZE_FIELDS, finite)  # fmt: skip
    return rows


def _session_ticks(
    frames: list[Frame],
    run_id: str,
    rows: list[tuple],
    seq: int,
    fields: dict[int, str],
    size_fields: frozenset[str],
    finite: Any,
) -> int:
    ib = IB()  # never connected: only its wrapper and decoder are used
    wrapper = ib.wrapper
    decoder = ib.client.decoder
    decoder.logger = log  # a message ib_async rejected was already logged live, by ib_async
    current_read = None
    append = rows.append

    def flush() -> None:
        nonlocal seq
        for ticker in wrapper.pendingTickers:
            c = ticker.contract
            con_id = c.conId if c else 0
            symbol = (c.localSymbol or c.symbol) if c else ""
            mdt = ticker.marketDataType
            for td in ticker.ticks:
                fld = fields.get(td.tickType)
                if fld is None:
                    continue
                seq += 1
                price = None if fld in size_fields else finite(td.price)
                append((run_id, con_id, symbol, fld, td.tickType, price, finite(td.size),
                        t_mono, td.time.timestamp(), mdt, seq))  # fmt: skip

    t_mono = 0.0
    for f in frames:
        if f.to_server:
            if f.greeting:
                continue
            mid = f.msg_id
            if mid == 1 and len(f.fields) > 14:
                wrapper.startTicker(int(f.fields[2]), _contract(f.fields, 3), "mktData")
            elif mid == 2 and len(f.fields) > 2:
                ticker = wrapper.reqId2Ticker.get(int(f.fields[2]))
                if ticker is not None:
                    wrapper.endTicker(ticker, "mktData")
            continue
        if f.read != current_read:
            flush()
            # One socket read = one batch, stamped when it arrived (as tcpDataArrived does).
            wrapper.tcpDataArrived()
            wrapper.lastTime = datetime.fromtimestamp(f.t_wall, UTC)
            wrapper.time = f.t_wall
            current_read, t_mono = f.read, f.t_mono
        if len(f.fields) == 2 and decoder.serverVersion == 0:
            decoder.serverVersion = int(f.fields[0])  # the handshake reply
            continue
        if f.msg_id in TICK_MESSAGES:
            decoder.interpret(f.fields)
    flush()
    return seq
