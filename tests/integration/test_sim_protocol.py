"""The simulator as ib_async sees it: connect sequence, contracts, market data, orders."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest
from ib_async import IB, Forex, Future, LimitOrder, MarketOrder, Stock

from harness_lib.sim import SIM_MARKER, PaperGateway
from tests.helpers import connect, wait_until


async def test_connect_sequence_completes_without_timeouts(
    paper_gateway: PaperGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ib_async")
    notices: list[tuple[int, str]] = []
    ib = IB()
    ib.errorEvent += lambda req_id, code, msg, contract: notices.append((code, msg))
    await ib.connectAsync("127.0.0.1", paper_gateway.port, clientId=11, timeout=3)
    try:
        assert ib.isConnected()
        assert ib.client.serverVersion() == 178
        assert ib.managedAccounts() == ["DU1234567"]
        assert ib.client._reqIdSeq >= 1  # nextValidId arrived
        assert ib.wrapper.accountValues, "account updates answered"
        assert not [r for r in caplog.records if "timed out" in r.getMessage()]
        codes = {code for code, _ in notices}
        assert {2104, 2106, 2158} <= codes
        assert any(SIM_MARKER in msg for _, msg in notices), "the simulator identifies itself"
        t = await ib.reqCurrentTimeAsync()
        assert t.year >= 2025
    finally:
        ib.disconnect()
    assert not ib.isConnected()


@pytest.mark.ib_errors(326)
@pytest.mark.allow_peer_close
async def test_two_clients_at_once_and_a_clientid_clash(paper_gateway: PaperGateway) -> None:
    a = await connect(paper_gateway.port, 1)
    b = await connect(paper_gateway.port, 2)
    try:
        assert a.isConnected() and b.isConnected()
        clash = IB()
        errors: list[int] = []
        clash.errorEvent += lambda r, code, m, c: errors.append(code)
        with pytest.raises((TimeoutError, ConnectionError)):
            await clash.connectAsync("127.0.0.1", paper_gateway.port, clientId=1, timeout=1)
        assert 326 in errors
        assert not clash.isConnected()
        # The existing client with that id is unaffected.
        assert (await a.reqCurrentTimeAsync()) is not None
    finally:
        a.disconnect()
        b.disconnect()


@pytest.mark.ib_errors(200)
async def test_qualification_single_ambiguous_and_unknown(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        aapl, eur = Stock("AAPL", "SMART", "USD"), Forex("EURUSD")
        assert await ib.qualifyContractsAsync(aapl, eur) == [aapl, eur]
        assert aapl.conId == 265598 and aapl.primaryExchange == "NASDAQ"
        assert eur.conId > 0 and eur.exchange == "IDEALPRO"
        details = await ib.reqContractDetailsAsync(Future("MES", exchange="CME"))
        expiries = sorted(d.contract.lastTradeDateOrContractMonth for d in details)
        assert len(expiries) >= 3
        one = Future("MES", expiries[1][:6], "CME")
        assert (await ib.qualifyContractsAsync(one)) == [one]
        assert one.multiplier == "5" and one.lastTradeDateOrContractMonth == expiries[1]
        ambiguous = await ib.qualifyContractsAsync(Future("MES", exchange="CME"))
        assert ambiguous == [None]
        errors: list[int] = []
        ib.errorEvent += lambda r, code, m, c: errors.append(code)
        assert await ib.qualifyContractsAsync(Stock("NOPE", "SMART", "USD")) == [None]
        assert errors == [200]
    finally:
        ib.disconnect()


async def test_ticker_is_all_nan_until_the_first_tick(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("healthy", first_tick_delay=0.3)
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        ticker = ib.reqMktData(c)
        bids: list[float] = []
        ticker.updateEvent += lambda t: bids.append(t.bid)
        assert math.isnan(ticker.bid) and math.isnan(ticker.ask) and math.isnan(ticker.last)
        await asyncio.sleep(0.15)
        assert math.isnan(ticker.bid), "no tick before the configured delay"
        waited = await wait_until(lambda: not math.isnan(ticker.bid), 2)
        assert 0.05 < waited < 1.0
        await wait_until(lambda: math.isfinite(ticker.ask))
        assert ticker.ask > ticker.bid > 0
        assert ticker.marketDataType == 1
        assert ticker.minTick == 0.01
        sent = paper_gateway.truth.first_tick(1, "bid")
        assert sent is not None and bids[0] == sent.price, "the first bid seen is the first sent"
    finally:
        ib.disconnect()


async def test_quotes_update_on_a_cadence_and_cancel_stops_them(
    paper_gateway: PaperGateway,
) -> None:
    paper_gateway.set_scenario("healthy", tick_interval=0.05)
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        updates = 0

        def on_update(_t: object) -> None:
            nonlocal updates
            updates += 1

        ticker = ib.reqMktData(c)
        ticker.updateEvent += on_update
        await wait_until(lambda: updates >= 5, 3)
        spread = ticker.ask - ticker.bid
        assert spread > 0 and round(spread / 0.01) >= 1
        ib.cancelMktData(c)
        await asyncio.sleep(0.2)
        before = updates
        await asyncio.sleep(0.3)
        assert updates == before, "no ticks after cancelMktData"
    finally:
        ib.disconnect()


async def test_snapshot_request_ends_with_tick_snapshot_end(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        [ticker] = await asyncio.wait_for(ib.reqTickersAsync(c), 3)
        assert math.isfinite(ticker.bid) and math.isfinite(ticker.ask)
        assert paper_gateway.truth.counts[(1, 57)] == 1
    finally:
        ib.disconnect()


async def test_market_round_trip_fills_reports_commissions_and_ends_flat(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    other = await connect(paper_gateway.port, 2)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        events: list[str] = []
        ib.execDetailsEvent += lambda t, f: events.append("exec")
        ib.commissionReportEvent += lambda t, f, r: events.append("commission")
        buy = ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="harness:test"))
        await wait_until(lambda: buy.isDone() and len(events) >= 2)
        assert buy.orderStatus.status == "Filled"
        assert buy.order.permId > 0
        ask_at_order = paper_gateway.model(paper_gateway._find("AAPL")).quote.ask
        assert buy.fills[0].execution.price == ask_at_order, "a market buy fills at the ask"
        assert buy.fills[0].execution.orderRef == "harness:test"
        assert buy.fills[0].commissionReport.commission == 1.0
        await wait_until(lambda: any(p.position == 1 for p in other.positions()))
        sell = ib.placeOrder(c, MarketOrder("SELL", 1, orderRef="harness:test"))
        await wait_until(lambda: sell.isDone() and events.count("commission") >= 2)
        assert events == ["exec", "commission", "exec", "commission"]
        report = sell.fills[0].commissionReport
        assert report.realizedPNL < 0  # two commissions and the spread
        assert paper_gateway.position("AAPL") == 0
        await wait_until(lambda: not [p for p in other.positions() if p.position])
        fills = await other.reqExecutionsAsync()
        assert {f.execution.orderRef for f in fills} == {"harness:test"}
        assert len(fills) == 2
    finally:
        ib.disconnect()
        other.disconnect()


async def test_resting_limit_order_waits_for_the_quote_then_cancels(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        far = ib.placeOrder(c, LimitOrder("BUY", 1, 100.00, orderRef="harness:lmt"))
        await wait_until(lambda: far.orderStatus.status == "Submitted")
        await asyncio.sleep(0.2)
        assert far.orderStatus.status == "Submitted" and not far.fills
        open_trades = await ib.reqAllOpenOrdersAsync()
        assert any(t.order.orderRef == "harness:lmt" for t in open_trades)
        ib.cancelOrder(far.order)
        await wait_until(lambda: far.orderStatus.status == "Cancelled")
        assert paper_gateway.position("AAPL") == 0

        near_price = paper_gateway.model(paper_gateway._find("AAPL")).quote.bid
        near = ib.placeOrder(c, LimitOrder("BUY", 1, near_price))
        await wait_until(lambda: near.orderStatus.status == "Submitted")
        paper_gateway.shift_market("AAPL", -3)  # the ask drops through the limit
        await wait_until(lambda: near.orderStatus.status == "Filled")
        assert near.fills[0].execution.price == near_price
    finally:
        ib.disconnect()


async def test_global_cancel_cancels_every_clients_orders(paper_gateway: PaperGateway) -> None:
    a = await connect(paper_gateway.port, 1)
    b = await connect(paper_gateway.port, 2)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await a.qualifyContractsAsync(c)
        ta = a.placeOrder(c, LimitOrder("BUY", 1, 10.0))
        tb = b.placeOrder(c, LimitOrder("BUY", 1, 11.0))
        await wait_until(lambda: ta.orderStatus.status == tb.orderStatus.status == "Submitted")
        a.reqGlobalCancel()
        await wait_until(
            lambda: ta.orderStatus.status == "Cancelled" and tb.orderStatus.status == "Cancelled"
        )
    finally:
        a.disconnect()
        b.disconnect()


async def test_futures_commission_follows_the_schedule(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        details = await ib.reqContractDetailsAsync(Future("MES", exchange="CME"))
        front = sorted(details, key=lambda d: d.contract.lastTradeDateOrContractMonth)[0].contract
        trade = ib.placeOrder(front, MarketOrder("BUY", 1))
        await wait_until(lambda: trade.fills and trade.fills[0].commissionReport.commission > 0)
        assert trade.fills[0].commissionReport.commission == pytest.approx(0.62)
        flat = ib.placeOrder(front, MarketOrder("SELL", 1))
        await wait_until(lambda: flat.isDone())
        assert paper_gateway.position(front.conId) == 0
    finally:
        ib.disconnect()


async def test_ground_truth_records_ticks_and_orders(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("healthy", tick_interval=0.02)
    ib = await connect(paper_gateway.port, 5)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        received: list[tuple[int, float]] = []

        def on_pending(tickers: set) -> None:
            for t in tickers:
                received.extend((td.tickType, td.price) for td in t.ticks)

        ib.pendingTickersEvent += on_pending
        ib.reqMktData(c)
        await asyncio.sleep(0.5)
        ib.cancelMktData(c)
        await asyncio.sleep(0.1)
        sent = paper_gateway.truth.ticks_for(5)
        assert len(sent) > 20
        sent_prices = [(t.tick_type, t.price) for t in sent if t.price is not None]
        got_prices = [(tt, p) for tt, p in received if tt in (1, 2, 4, 6, 7, 9, 14)]
        assert got_prices == sent_prices, "every price tick sent was received, in order"
        ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, orderRef="harness:gt"))
        await wait_until(lambda: len(paper_gateway.truth.orders_from(5)) == 1)
        order = paper_gateway.truth.orders_from(5)[0]
        assert (order.order_ref, order.quantity, order.lmt_price) == ("harness:gt", 1, 1.0)
    finally:
        ib.disconnect()
