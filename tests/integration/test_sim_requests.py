"""The requests a dashboard or engine makes beyond the harness's own, driven with ib_async
over a socket: history, head timestamp, P&L, account updates and summary, tick-by-tick,
depth, what-if, complete default ticks, and trading hours per session."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
from ib_async import IB, Forex, Future, MarketOrder, Stock

from harness_lib.sim import PaperGateway
from harness_lib.sim.broker import SUMMARY_TAGS
from harness_lib.sim.history import HEAD_YEARS
from tests.helpers import connect, wait_until


async def _aapl(ib: IB) -> Stock:
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    return c


def _errors(ib: IB) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, contract: out.append((req_id, code, msg))
    return out


async def test_historical_bars_are_consistent_across_sizes_and_sides(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        five = await ib.reqHistoricalDataAsync(c, "", "2 D", "5 mins", "TRADES", False)
        # The last 2 days' worth of 5-minute bars inside trading hours (gaps skipped).
        assert len(five) == 2 * 24 * 12
        assert all(isinstance(b.date, datetime) for b in five)
        assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in five)
        # Every closed bar traded; the newest may have just opened and traded nothing yet.
        assert all(b.volume > 0 and b.barCount > 0 for b in five[:-1])
        assert all((b.volume > 0) == (b.barCount > 0) for b in five)
        # The newest bar ends at the live walk's price.
        live = paper_gateway.model(paper_gateway._find("AAPL")).quote
        assert live.bid <= five[-1].close <= live.ask
        one = await ib.reqHistoricalDataAsync(c, "", "2 D", "1 min", "TRADES", False)
        by_start = {b.date: b for b in one}
        for bar in five[-30:-1]:
            parts = [
                by_start[d]
                for d in sorted(by_start)
                if bar.date <= d < bar.date + (five[-1].date - five[-2].date)
            ]
            assert len(parts) == 5
            assert parts[0].open == bar.open and parts[-1].close == bar.close
            assert max(p.high for p in parts) == bar.high and min(p.low for p in parts) == bar.low
        bid = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "BID", False)
        ask = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "ASK", False)
        mid = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "MIDPOINT", False)
        assert len(bid) == len(ask) == len(mid) > 0
        for b, m, a in zip(bid[:-1], mid[:-1], ask[:-1], strict=True):
            assert b.close < m.close < a.close
            assert b.volume == -1 and b.barCount == -1
        daily = await ib.reqHistoricalDataAsync(c, "", "1 M", "1 day", "TRADES", True)
        assert 19 <= len(daily) <= 23
        assert all(d.date.weekday() < 5 for d in daily)
        again = await ib.reqHistoricalDataAsync(c, "", "1 M", "1 day", "TRADES", True)
        assert [b.close for b in again[:-1]] == [b.close for b in daily[:-1]], "deterministic"
        weekly = await ib.reqHistoricalDataAsync(c, "", "1 Y", "1 week", "TRADES", False)
        assert 50 <= len(weekly) <= 54
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(162, 366)
async def test_history_errors_are_ibs(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    errors = _errors(ib)
    try:
        c = await _aapl(ib)
        ib.client.reqHistoricalData(901, c, "", "1 D", "7 mins", "TRADES", 0, 1, False, [])
        ib.client.reqHistoricalData(902, c, "", "1 D", "1 hour", "NONSENSE", 0, 1, False, [])
        ib.client.reqHistoricalData(903, c, "", "1 D", "1 hour", "BID_ASK", 0, 1, False, [])
        ib.client.reqHistoricalData(
            904, c, "20250101 10:00:00 UTC", "1 D", "1 hour", "TRADES", 0, 1, True, []
        )
        ib.client.reqHistoricalData(
            905, c, "2025-01-01", "1 D", "1 hour", "TRADES", 0, 1, False, []
        )
        ib.client.cancelHistoricalData(906)
        await wait_until(lambda: {r for r, _, _ in errors} >= {901, 902, 903, 904, 905, 906}, 2)
        got = {r: (code, msg) for r, code, msg in errors}
        assert got[901][0] == 321 and "bar size setting is invalid" in got[901][1]
        assert got[902][0] == 321 and "What to show" in got[902][1]
        assert got[903][0] == 162
        assert got[904][0] == 321 and "live updates" in got[904][1]
        assert got[905][0] == 321 and "end date/time" in got[905][1]
        assert got[906][0] == 366
        illq = Stock("ILLQ", "SMART", "USD")
        await ib.qualifyContractsAsync(illq)
        ib.client.reqHistoricalData(907, illq, "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
        await wait_until(lambda: any(r == 907 for r, _, _ in errors), 2)
        assert got.get(907) is None and next(e for e in errors if e[0] == 907)[1] == 162
    finally:
        ib.disconnect()


async def test_keep_up_to_date_updates_then_stale_stream_stops_them(
    paper_gateway: PaperGateway,
) -> None:
    paper_gateway.set_scenario(
        "stale_stream", stale_after=1.0, history_update_interval=0.05, tick_interval=0.05
    )
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        bars = await ib.reqHistoricalDataAsync(
            c, "", "1800 S", "1 min", "MIDPOINT", False, keepUpToDate=True
        )
        updates: list[float] = []
        bars.updateEvent += lambda b, has_new: updates.append(b[-1].close)
        await wait_until(lambda: len(updates) >= 2, 2)
        await asyncio.sleep(1.2)  # the stream has gone stale by now
        n = len(updates)
        await asyncio.sleep(0.6)
        assert len(updates) == n, "no history update after the stream went stale"
        ib.cancelHistoricalData(bars)
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(162)
@pytest.mark.sim(scenario="never_ticks")
async def test_never_ticks_leaves_history_and_tick_by_tick_empty(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    errors = _errors(ib)
    try:
        c = await _aapl(ib)
        bars = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "TRADES", False, timeout=2)
        assert not bars
        assert 162 in {code for _, code, _ in errors}
        ticker = ib.reqTickByTickData(c, "BidAsk")
        await asyncio.sleep(0.5)
        assert not ticker.tickByTicks
    finally:
        ib.disconnect()


async def test_head_timestamp(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        head = await ib.reqHeadTimeStampAsync(c, "TRADES", True, 2)
        assert isinstance(head, datetime) and head.year == datetime.now(UTC).year - HEAD_YEARS
        first = await ib.reqHistoricalDataAsync(
            c, head + timedelta(days=7), "1 W", "1 day", "TRADES", True
        )
        assert first and first[0].date >= head.date(), "bars start at the head timestamp"
    finally:
        ib.disconnect()


async def test_pnl_and_portfolio_follow_the_fill_and_the_marks(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        acct = ib.managedAccounts()[0]
        trade = ib.placeOrder(c, MarketOrder("BUY", 10, orderRef="harness:pnl"))
        await wait_until(trade.isDone, 5)
        pnl = ib.reqPnL(acct)
        single = ib.reqPnLSingle(acct, "", c.conId)
        await wait_until(lambda: math.isfinite(pnl.unrealizedPnL) and single.position == 10, 3)
        paper_gateway.shift_market("AAPL", 100)  # +1.00 a share
        await wait_until(lambda: single.unrealizedPnL > 5, 3)
        mark = paper_gateway.marks()[c.conId]
        fill = trade.fills[0]
        avg = fill.execution.price + fill.commissionReport.commission / 10
        assert single.unrealizedPnL == pytest.approx(10 * (mark - avg), abs=0.02)
        assert single.value == pytest.approx(10 * mark, abs=0.02)
        await wait_until(
            lambda: pnl.unrealizedPnL == pytest.approx(single.unrealizedPnL, abs=0.02), 3
        )
        assert pnl.dailyPnL == pytest.approx(pnl.unrealizedPnL + pnl.realizedPnL, abs=0.02)
        ib.cancelPnL(acct)
        ib.cancelPnLSingle(acct, "", c.conId)
        items = [p for p in ib.portfolio() if p.contract.conId == c.conId]
        assert items and items[0].position == 10 and items[0].marketPrice > 0
        positions = [p for p in await ib.reqPositionsAsync() if p.contract.conId == c.conId]
        assert positions[0].position == 10
    finally:
        ib.disconnect()


async def test_account_summary_honours_tags(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        everything = await ib.accountSummaryAsync()
        tags = {v.tag for v in everything}
        assert len(tags) >= 30 and set(SUMMARY_TAGS) - {
            "PreviousDayEquityWithLoanValue"
        } <= tags | {"PreviousDayEquityWithLoanValue"}
        assert {v.value for v in everything if v.tag == "AccountType"} == {"INDIVIDUAL"}
        ledger = {(v.tag, v.currency) for v in everything}
        assert ("CashBalance", "BASE") in ledger and ("CashBalance", "USD") in ledger
        other = IB()
        await other.connectAsync("127.0.0.1", paper_gateway.port, clientId=77)
        try:
            other.client.reqAccountSummary(5, "All", "NetLiquidation,Cushion")
            await wait_until(lambda: len(other.wrapper.acctSummary) >= 2, 2)
            await asyncio.sleep(0.2)
            assert {k[1] for k in other.wrapper.acctSummary} == {"NetLiquidation", "Cushion"}
        finally:
            other.disconnect()
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(10190)
async def test_tick_by_tick_types_and_the_subscription_limit(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("healthy", tick_interval=0.05)
    ib = await connect(paper_gateway.port)
    errors = _errors(ib)
    try:
        c = await _aapl(ib)
        eur = Forex("EURUSD")
        await ib.qualifyContractsAsync(eur)
        seen: list[tuple[str, object]] = []

        def on_pending(tickers: set) -> None:
            # ib_async keeps one Ticker per contract and clears its tickByTicks each cycle.
            for t in tickers:
                seen.extend((t.contract.symbol, x) for x in t.tickByTicks)

        ib.pendingTickersEvent += on_pending
        for kind in ("Last", "AllLast", "BidAsk", "MidPoint"):
            ib.reqTickByTickData(c, kind)
        ib.reqTickByTickData(eur, "BidAsk")
        kinds = lambda sym: {type(x).__name__ for s, x in seen if s == sym}  # noqa: E731
        await wait_until(
            lambda: (
                kinds("AAPL") == {"TickByTickAllLast", "TickByTickBidAsk", "TickByTickMidPoint"}
                and "TickByTickBidAsk" in kinds("EUR")
            ),
            3,
        )
        for _, x in seen:
            if type(x).__name__ == "TickByTickBidAsk":
                assert x.bidPrice < x.askPrice
            elif type(x).__name__ == "TickByTickAllLast":
                assert x.price > 0 and x.size > 0 and x.tickType in (1, 2)
            else:
                assert x.midPoint > 0
        ib.reqTickByTickData(eur, "MidPoint")  # the sixth
        await wait_until(lambda: 10190 in {code for _, code, _ in errors}, 2)
        ib.cancelTickByTickData(c, "Last")
    finally:
        ib.disconnect()


async def test_market_depth_book(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        ticker = ib.reqMktDepth(c, numRows=5)
        await wait_until(lambda: len(ticker.domBids) == 5 and len(ticker.domAsks) == 5, 3)
        assert ticker.domBids[0].price < ticker.domAsks[0].price
        assert [b.price for b in ticker.domBids] == sorted(
            (b.price for b in ticker.domBids), reverse=True
        )
        ib.cancelMktDepth(c)
    finally:
        ib.disconnect()


async def test_what_if_answers_margins_and_changes_nothing(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        state = await asyncio.wait_for(ib.whatIfOrderAsync(c, MarketOrder("BUY", 100)), 3)
        assert float(state.initMarginChange) > 0 and float(state.maintMarginChange) > 0
        assert state.commission > 0 and state.commissionCurrency == "USD"
        await asyncio.sleep(0.2)
        assert not paper_gateway.broker.executions and not ib.fills()
        assert paper_gateway.position("AAPL") == 0
        assert not ib.trades() and not paper_gateway.broker.orders
        assert [o.what_if for o in paper_gateway.truth.orders] == [True]
    finally:
        ib.disconnect()


async def test_what_if_on_an_unknown_symbol_is_321(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    errors = _errors(ib)
    try:
        order = MarketOrder("BUY", 1)
        order.whatIf = True
        order.orderId = 4242
        ib.client.placeOrder(4242, Stock("XXXX", "SMART", "USD"), order)
        await wait_until(lambda: any(r == 4242 for r, _, _ in errors), 2)
        assert [code for r, code, _ in errors if r == 4242] == [321]
    finally:
        ib.disconnect()


async def test_default_ticks_are_complete_and_generic_ticks_arrive(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = await _aapl(ib)
        t = ib.reqMktData(c, "233,236")
        await wait_until(
            lambda: (
                all(math.isfinite(x) for x in (t.high, t.low, t.open, t.close, t.last))
                and t.lastTimestamp is not None
                and t.rtTime is not None
            ),
            3,
        )
        assert t.low <= t.last <= t.high
        assert t.halted == 0
        assert t.shortable == 3.0 and t.shortableShares > 0
    finally:
        ib.disconnect()


async def test_trading_hours_per_session(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        [stk] = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
        [fx] = await ib.reqContractDetailsAsync(Forex("EURUSD"))
        fut = (await ib.reqContractDetailsAsync(Future("MES", exchange="CME")))[0]
        for cd, trading, liquid in (
            (stk, "0400-", "0930-"),
            (fx, "1715-", "1715-"),
            (fut, "1700-", "0830-"),
        ):
            days = cd.tradingHours.split(";")
            assert len(days) == 7
            open_days = [d for d in days if not d.endswith("CLOSED")]
            assert len(open_days) == 5 and all(trading in d for d in open_days)
            assert all(liquid in d for d in cd.liquidHours.split(";") if not d.endswith("CLOSED"))
        assert stk.timeZoneId == "US/Eastern" and fut.timeZoneId == "US/Central"
        # Globex and FX sessions open the evening before the day they are keyed by.
        first = next(d for d in fut.tradingHours.split(";") if not d.endswith("CLOSED"))
        start, end = first.split("-")
        assert start[:8] < end[:8]
        paper_gateway.set_scenario("market_closed")
        [closed] = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
        assert closed.tradingHours.split(";")[0].endswith(":CLOSED")
    finally:
        ib.disconnect()
