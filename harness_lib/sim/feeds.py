"""Streams besides top-of-book: history updates, P&L, tick-by-tick and market depth.

Each is a task tied to its session and request id (``Session.feeds``), cancelled by its
cancel request or when the connection ends. They follow the same faults as quote streams:
nothing moves while connectivity is lost, under never_ticks, on an illiquid contract, or
once a stale_stream has gone stale; a closed market (market_closed) does not move either.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import messages as m
from .broker import pnl, pnl_single
from .history import History, format_bar_date
from .market import Instrument, Quote

if TYPE_CHECKING:
    from .server import PaperGateway
    from .session import Session

PNL_INTERVAL = 1.0
"""Seconds between pnl / pnlSingle updates (IB sends about one a second)."""
TICK_BY_TICK_LIMIT = 5
"""Simultaneous tick-by-tick subscriptions IB allows with the default 100 market data
lines; the next one gets 10190."""
DEPTH_LIMIT = 3
"""Simultaneous market depth subscriptions IB allows by default; the next one gets 309."""
TICK_BY_TICK_TYPES = {"Last": 1, "AllLast": 2, "BidAsk": 3, "MidPoint": 4}


@dataclass(slots=True)
class Feed:
    """What the fault predicates look at for a stream: when it first sent."""

    first_sent: float | None = None


def still(gw: PaperGateway, inst: Instrument, feed: Feed) -> bool:
    """True while a fault or the instrument keeps this stream from moving."""
    return (
        not inst.liquid or gw.outage or gw.faults.market_closed() or gw.faults.stream_silent(feed)
    )


def bar_fields(bar: Any, bar_s: int, format_date: int, zone: str) -> list[Any]:
    """historicalData bar fields: date, open, high, low, close, volume, wap, barCount."""
    return [
        format_bar_date(bar, bar_s, format_date, zone),
        bar.open, bar.high, bar.low, bar.close, bar.volume, bar.wap, bar.count,
    ]  # fmt: skip


async def history_updates(
    gw: PaperGateway,
    s: Session,
    req_id: int,
    inst: Instrument,
    bar_s: int,
    what: str,
    format_date: int,
) -> None:
    """keepUpToDate: the open bar again every ``history_update_interval`` seconds (IB: 4-6 s)
    until cancelHistoricalData, while the market moves."""
    feed = Feed()
    while not s.closed:
        await asyncio.sleep(gw.params.history_update_interval)
        if still(gw, inst, feed):
            continue
        gw.advance(inst)
        now = time.time()
        start = now // bar_s * bar_s
        bar = History(gw.model(inst), gw.price_path(inst)).bar(start, now, what)
        if bar is None:
            continue
        fields = bar_fields(bar, bar_s, format_date, inst.time_zone)
        s.send(m.historical_data_update(req_id, fields))
        if feed.first_sent is None:
            feed.first_sent = time.monotonic()


async def pnl_updates(gw: PaperGateway, s: Session, req_id: int, account: str) -> None:
    """reqPnL: daily, unrealized and realized P&L of the account, about once a second."""
    while not s.closed:
        if not gw.outage:
            daily, unreal, realized = pnl(gw.broker, account, gw.marks())
            s.send(m.pnl(req_id, daily, unreal, realized))
        await asyncio.sleep(PNL_INTERVAL)


async def pnl_single_updates(
    gw: PaperGateway, s: Session, req_id: int, account: str, inst: Instrument
) -> None:
    """reqPnLSingle: position, P&L and value of one contract, about once a second."""
    while not s.closed:
        if not gw.outage:
            row = pnl_single(gw.broker, account, inst, gw.marks())
            s.send(m.pnl_single(req_id, *row))
        await asyncio.sleep(PNL_INTERVAL)


def _tbt_values(kind: int, inst: Instrument, q: Quote) -> list[Any]:
    if kind in (1, 2):
        exchange = inst.primary_exchange or inst.exchange
        return [q.last, m._qty(q.last_size), 0, exchange, ""]
    if kind == 3:
        return [q.bid, q.ask, m._qty(q.bid_size), m._qty(q.ask_size), 0]
    return [round(q.mid, inst.decimals + 1)]


async def tick_by_tick(
    gw: PaperGateway, s: Session, req_id: int, inst: Instrument, kind: int
) -> None:
    """reqTickByTickData: one message per change of the traded price (Last/AllLast), of the
    bid/ask (BidAsk) or of the midpoint (MidPoint)."""
    feed = Feed()
    last: list[Any] | None = None
    await asyncio.sleep(gw.params.first_tick_delay)
    while not s.closed:
        if not still(gw, inst, feed):
            q = gw.advance(inst)
            values = _tbt_values(kind, inst, q)
            if values != last:
                last = values
                s.send(m.tick_by_tick(req_id, kind, int(time.time()), values))
                if feed.first_sent is None:
                    feed.first_sent = time.monotonic()
        await asyncio.sleep(gw.params.tick_interval or 0.05)


def _depth_rows(inst: Instrument, q: Quote, rows: int) -> list[tuple[int, int, float, int]]:
    """(position, side, price, size) of a book around the quote (side 1 bid, 0 ask)."""
    out = []
    for i in range(rows):
        size = inst.size_lot * (i + 1 + (q.bid_size // inst.size_lot) % 3)
        out.append((i, 1, round(q.bid - i * inst.min_tick, inst.decimals), size))
        out.append((i, 0, round(q.ask + i * inst.min_tick, inst.decimals), size))
    return out


async def market_depth(
    gw: PaperGateway, s: Session, req_id: int, inst: Instrument, rows: int, smart: bool
) -> None:
    """reqMktDepth: insert each level once, then update the levels that change."""
    feed = Feed()
    book: dict[tuple[int, int], tuple[float, int]] = {}
    maker = inst.primary_exchange or inst.exchange
    await asyncio.sleep(gw.params.first_tick_delay)
    while not s.closed:
        live = inst.liquid and not gw.outage and not gw.faults.stream_silent(feed)
        # A closed market still shows its (frozen) book once; it just does not move.
        if live and (not book or not gw.faults.market_closed()):
            q = gw.advance(inst) if book else gw.model(inst).quote
            for pos, side, price, size in _depth_rows(inst, q, rows):
                key = (pos, side)
                op = 1 if key in book else 0
                if book.get(key) == (price, size):
                    continue
                book[key] = (price, size)
                if smart:
                    s.send([m.MARKET_DEPTH_L2, 1, req_id, pos, maker, op, side, price,
                            size, 1])  # fmt: skip
                else:
                    s.send([m.MARKET_DEPTH, 1, req_id, pos, op, side, price, size])
            if feed.first_sent is None:
                feed.first_sent = time.monotonic()
        await asyncio.sleep(gw.params.tick_interval or 0.05)
