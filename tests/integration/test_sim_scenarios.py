"""Each simulator scenario, observed through the real ib_async client."""

from __future__ import annotations

import asyncio
import math

import pytest
from ib_async import IB, MarketOrder, Stock, Ticker

from harness_lib.sim import PaperGateway, Scenario
from harness_lib.sim.scenarios import describe, parse_scenario
from tests.helpers import connect, wait_until


async def _subscribe(ib: IB, symbol: str = "AAPL", mdt: int = 1) -> Ticker:
    c = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    ib.reqMarketDataType(mdt)
    return ib.reqMktData(c)


def _errors(ib: IB) -> list[int]:
    codes: list[int] = []
    ib.errorEvent += lambda r, code, m, c: codes.append(code)
    return codes


def test_every_scenario_has_a_one_line_description() -> None:
    described = dict(describe())
    assert set(described) == {s.value for s in Scenario}
    assert all(text and "\n" not in text for text in described.values())
    with pytest.raises(ValueError, match="choose one of"):
        parse_scenario("nope")


@pytest.mark.sim(scenario="slow_first_tick", first_tick_delay=0.8)
async def test_slow_first_tick(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib)
        waited = await wait_until(lambda: math.isfinite(ticker.bid), 3)
        assert 0.7 < waited < 1.3
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="never_ticks")
async def test_never_ticks(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib)
        await asyncio.sleep(1.0)
        assert math.isnan(ticker.bid) and math.isnan(ticker.ask)
        assert paper_gateway.truth.tick_count() == 0
    finally:
        ib.disconnect()


async def test_illiquid_contract_never_ticks_even_when_healthy(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib, "ILLQ")
        await asyncio.sleep(0.6)
        assert math.isnan(ticker.bid)
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="delayed_only")
async def test_delayed_only(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        codes = _errors(ib)
        ticker = await _subscribe(ib)
        await wait_until(lambda: math.isfinite(ticker.bid))
        assert 10167 in codes
        assert ticker.marketDataType == 3
        assert {t.tick_type for t in paper_gateway.truth.ticks} <= set(range(66, 77))
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(354)
@pytest.mark.sim(scenario="not_subscribed")
async def test_not_subscribed(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        codes = _errors(ib)
        ticker = await _subscribe(ib)
        await wait_until(lambda: 354 in codes)
        await asyncio.sleep(0.3)
        assert math.isnan(ticker.bid)
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="market_closed", tick_interval=0.05)
async def test_market_closed_sends_one_frozen_quote(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib)
        await wait_until(lambda: math.isfinite(ticker.bid))
        assert ticker.marketDataType == 2
        n = paper_gateway.truth.tick_count()
        await asyncio.sleep(0.4)
        assert paper_gateway.truth.tick_count() == n, "a closed market does not move"
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="stale_stream", stale_after=0.4, tick_interval=0.05)
async def test_stale_stream_stops_after_its_first_ticks(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib)
        await wait_until(lambda: math.isfinite(ticker.bid))
        await asyncio.sleep(0.6)
        n = paper_gateway.truth.tick_count()
        assert n > 10
        await asyncio.sleep(0.4)
        assert paper_gateway.truth.tick_count() == n
    finally:
        ib.disconnect()


@pytest.mark.allow_peer_close
@pytest.mark.sim(scenario="disconnect", disconnect_after=0.3)
async def test_disconnect_drops_every_client(paper_gateway: PaperGateway) -> None:
    a = await connect(paper_gateway.port, 1)
    b = await connect(paper_gateway.port, 2)
    await wait_until(lambda: not a.isConnected() and not b.isConnected(), 3)
    # One-shot: a reconnect afterwards works.
    c = await connect(paper_gateway.port, 1)
    await asyncio.sleep(0.5)
    assert c.isConnected()
    c.disconnect()


@pytest.mark.allow_peer_close
@pytest.mark.sim(scenario="disconnect", disconnect_on="order_submitted")
async def test_disconnect_mid_order(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    ib.placeOrder(c, MarketOrder("BUY", 1, orderRef="harness:mid"))
    await wait_until(lambda: not ib.isConnected(), 3)
    # The gateway kept the order and filled it while the client was gone.
    await wait_until(lambda: paper_gateway.position("AAPL") == 1)
    again = await connect(paper_gateway.port)
    try:
        fills = await again.reqExecutionsAsync()
        assert [f.execution.orderRef for f in fills] == ["harness:mid"]
    finally:
        again.disconnect()


@pytest.mark.ib_errors(1100, 1102)
@pytest.mark.sim(
    scenario="connectivity_lost", disconnect_after=0.3, outage_seconds=0.5, tick_interval=0.05
)
async def test_connectivity_lost_then_restored(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        codes = _errors(ib)
        ticker = await _subscribe(ib)
        await wait_until(lambda: 1100 in codes, 2)
        await asyncio.sleep(0.1)
        n = paper_gateway.truth.tick_count()
        await asyncio.sleep(0.2)
        assert paper_gateway.truth.tick_count() == n, "no ticks during the outage"
        await wait_until(lambda: 1102 in codes, 2)
        await wait_until(lambda: paper_gateway.truth.tick_count() > n, 2)
        assert math.isfinite(ticker.bid)
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(1100, 1101)
@pytest.mark.sim(
    scenario="connectivity_lost",
    disconnect_after=0.2,
    outage_seconds=0.3,
    data_lost=True,
    tick_interval=0.05,
)
async def test_connectivity_restored_with_data_lost_needs_resubscribe(
    paper_gateway: PaperGateway,
) -> None:
    ib = await connect(paper_gateway.port)
    try:
        codes = _errors(ib)
        await _subscribe(ib)
        await wait_until(lambda: 1101 in codes, 2)
        n = paper_gateway.truth.tick_count()
        await asyncio.sleep(0.3)
        assert paper_gateway.truth.tick_count() == n, "data lost: the stream is gone"
    finally:
        ib.disconnect()


@pytest.mark.ib_errors(201)
@pytest.mark.sim(scenario="order_reject")
async def test_order_reject(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        trade = ib.placeOrder(c, MarketOrder("BUY", 1))
        await wait_until(lambda: trade.orderStatus.status == "Cancelled")
        assert any(e.errorCode == 201 for e in trade.log)
        assert paper_gateway.position("AAPL") == 0
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="partial_fill")
async def test_partial_fill(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        trade = ib.placeOrder(c, MarketOrder("BUY", 4))
        await wait_until(lambda: trade.orderStatus.filled == 2)
        await asyncio.sleep(0.2)
        assert trade.orderStatus.status == "Submitted" and trade.orderStatus.remaining == 2
        ib.cancelOrder(trade.order)
        await wait_until(lambda: trade.orderStatus.status == "Cancelled")
        assert paper_gateway.position("AAPL") == 2
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="no_fill")
async def test_no_fill(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        trade = ib.placeOrder(c, MarketOrder("BUY", 1))
        await wait_until(lambda: trade.orderStatus.status == "Submitted")
        await asyncio.sleep(0.4)
        assert trade.orderStatus.status == "Submitted" and not trade.fills
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="commission_late", commission_delay=0.5)
async def test_commission_late(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        reports: list[float] = []
        ib.commissionReportEvent += lambda t, f, r: reports.append(r.commission)
        trade = ib.placeOrder(c, MarketOrder("BUY", 1))
        await wait_until(lambda: trade.isDone())
        await asyncio.sleep(0.2)
        assert reports == []
        await wait_until(lambda: reports == [1.0], 2)
    finally:
        ib.disconnect()


@pytest.mark.sim(scenario="live_account")
async def test_live_account(paper_gateway: PaperGateway) -> None:
    ib = await connect(paper_gateway.port)
    try:
        assert ib.managedAccounts() == ["U7654321"]
    finally:
        ib.disconnect()


@pytest.mark.allow_peer_close
@pytest.mark.sim(scenario="refuse_connections", outage_seconds=0.6)
async def test_refuse_connections_for_a_while(paper_gateway: PaperGateway) -> None:
    ib = IB()
    with pytest.raises((ConnectionError, TimeoutError, OSError)):
        await ib.connectAsync("127.0.0.1", paper_gateway.port, clientId=1, timeout=0.5)
    await asyncio.sleep(0.4)
    ok = await connect(paper_gateway.port)
    assert ok.isConnected()
    ok.disconnect()


async def test_scenario_switches_while_running(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("healthy", tick_interval=0.05)
    ib = await connect(paper_gateway.port)
    try:
        ticker = await _subscribe(ib)
        await wait_until(lambda: math.isfinite(ticker.bid))
        paper_gateway.set_scenario("never_ticks")
        await asyncio.sleep(0.1)
        n = paper_gateway.truth.tick_count()
        await asyncio.sleep(0.3)
        assert paper_gateway.truth.tick_count() == n
        paper_gateway.set_scenario("healthy", tick_interval=0.05)
        await wait_until(lambda: paper_gateway.truth.tick_count() > n)
    finally:
        ib.disconnect()
