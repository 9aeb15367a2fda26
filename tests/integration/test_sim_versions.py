"""The simulator encodes at the version it negotiated: clients capped below 178 (ib_async
with ``MaxClientVersion``, and IB's official ``ibapi`` client, which offers at most 157)
complete connect -> contract details -> order -> fills and commissions -> positions ->
completed orders with no decoder error (the conftest fixture fails on any ib_async ERROR)."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from typing import Any

import pytest
from ib_async import IB, MarketOrder, Stock

from harness_lib.sim import PaperGateway, ThreadedGateway
from harness_lib.sim.wire import MIN_CLIENT_VERSION, SERVER_VERSION
from tests.helpers import wait_until

# connect -> contract details -> history -> live quotes -> what-if -> order -> fills and
# commissions -> P&L, account summary, positions -> completed orders, at each version.
# Each version is on one side of a layout threshold the simulator branches on:
# 157 lowest accepted (no duration, no advancedOrderRejectJson, contractDetails with its
# version and mdSizeMultiplier), 158 duration, 163 the lone size field, 165 (before the
# error json), 170 PEG fields, 176 (last with faProfile), 177, 178 pendingPriceRevision.
VERSIONS = [MIN_CLIENT_VERSION, 158, 163, 165, 170, 176, 177, SERVER_VERSION]


@pytest.mark.parametrize("version", VERSIONS)
async def test_ib_async_capped_at_version_trades_cleanly(
    paper_gateway: PaperGateway, version: int
) -> None:
    ib = IB()
    ib.client.MaxClientVersion = version
    await ib.connectAsync("127.0.0.1", paper_gateway.port, clientId=30, timeout=4)
    try:
        assert ib.client.serverVersion() == version
        [cd] = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
        assert cd.contract.conId == 265598 and cd.minTick == 0.01
        assert cd.tradingHours and cd.liquidHours and cd.timeZoneId == "US/Eastern"
        aapl = cd.contract
        bars = await ib.reqHistoricalDataAsync(aapl, "", "1 D", "5 mins", "TRADES", False)
        assert len(bars) > 12
        ticker = ib.reqMktData(aapl)
        await wait_until(lambda: math.isfinite(ticker.bid) and math.isfinite(ticker.high), 3)
        state = await asyncio.wait_for(ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 2)), 3)
        assert float(state.initMarginChange) > 0 and state.commission > 0
        ref = f"harness:v{version}"
        buy = ib.placeOrder(aapl, MarketOrder("BUY", 2, orderRef=ref))
        await wait_until(
            lambda: buy.isDone() and all(f.commissionReport.commission for f in buy.fills), 5
        )
        sell = ib.placeOrder(aapl, MarketOrder("SELL", 2, orderRef=ref))
        await wait_until(
            lambda: sell.isDone() and all(f.commissionReport.commission for f in sell.fills), 5
        )
        for trade in (buy, sell):
            assert trade.orderStatus.status == "Filled"
            assert trade.order.permId > 0
            [fill] = trade.fills
            assert fill.execution.permId == trade.order.permId
            assert fill.execution.shares == 2 and fill.execution.orderRef == ref
            assert fill.commissionReport.execId == fill.execution.execId
            assert fill.commissionReport.commission > 0
        acct = ib.managedAccounts()[0]
        pnl = ib.reqPnL(acct)
        await wait_until(lambda: math.isfinite(pnl.realizedPnL), 3)
        assert pnl.realizedPnL < 0, "two commissions and a spread were paid"
        summary = {v.tag: v.value for v in await ib.accountSummaryAsync(acct)}
        assert float(summary["NetLiquidation"]) < 1_000_000
        positions = await ib.reqPositionsAsync()
        assert [p.position for p in positions if p.contract.conId == aapl.conId] == [0]
        done = await ib.reqCompletedOrdersAsync(apiOnly=True)
        ours = [t for t in done if t.order.orderRef == ref]
        assert len(ours) == 2
        assert {t.orderStatus.status for t in ours} == {"Filled"}
        assert {t.order.filledQuantity for t in ours} == {2}
        assert {t.order.permId for t in ours} == {buy.order.permId, sell.order.permId}
    finally:
        ib.disconnect()


def test_version_below_the_lowest_accepted_is_refused(threaded_gateway: ThreadedGateway) -> None:
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", threaded_gateway.port), timeout=2) as sock:
        text = f"v100..{MIN_CLIENT_VERSION - 1}".encode()
        sock.sendall(b"API\0" + struct.pack(">I", len(text)) + text)
        assert sock.recv(100) == b"", "the server closes the connection"


# --- IB's official client ----------------------------------------------------------------


def _official_app() -> Any:
    from ibapi.client import EClient
    from ibapi.wrapper import EWrapper

    class App(EWrapper, EClient):  # type: ignore[misc]
        def __init__(self) -> None:
            EWrapper.__init__(self)
            EClient.__init__(self, self)
            self.next_id = 0
            self.errors: list[tuple[int, int, str]] = []
            self.details: list[Any] = []
            self.details_end = threading.Event()
            self.execs: list[Any] = []
            self.commissions: list[Any] = []
            self.statuses: dict[int, str] = {}
            self.perm_ids: dict[int, int] = {}
            self.positions: dict[int, float] = {}
            self.positions_end = threading.Event()
            self.completed: list[tuple[Any, Any, Any]] = []
            self.completed_end = threading.Event()
            self.bars: list[Any] = []
            self.bars_end = threading.Event()
            self.prices: dict[int, float] = {}
            self.what_if: list[Any] = []

        def historicalData(self, reqId: int, bar: Any) -> None:
            self.bars.append(bar)

        def historicalDataEnd(self, reqId: int, start: str, end: str) -> None:
            self.bars_end.set()

        def tickPrice(self, reqId: int, tickType: int, price: float, attrib: Any) -> None:
            self.prices[tickType] = price

        def nextValidId(self, orderId: int) -> None:
            self.next_id = orderId

        def error(self, reqId: int, errorCode: int, errorString: str) -> None:
            self.errors.append((reqId, errorCode, errorString))

        def contractDetails(self, reqId: int, contractDetails: Any) -> None:
            self.details.append(contractDetails)

        def contractDetailsEnd(self, reqId: int) -> None:
            self.details_end.set()

        def orderStatus(self, orderId: int, status: str, *args: Any) -> None:
            self.statuses[orderId] = status

        def openOrder(self, orderId: int, contract: Any, order: Any, orderState: Any) -> None:
            if order.whatIf:
                self.what_if.append(orderState)
            else:
                self.perm_ids[orderId] = order.permId

        def execDetails(self, reqId: int, contract: Any, execution: Any) -> None:
            self.execs.append(execution)

        def commissionReport(self, commissionReport: Any) -> None:
            self.commissions.append(commissionReport)

        def position(self, account: str, contract: Any, position: Any, avgCost: float) -> None:
            self.positions[contract.conId] = float(position)

        def positionEnd(self) -> None:
            self.positions_end.set()

        def completedOrder(self, contract: Any, order: Any, orderState: Any) -> None:
            self.completed.append((contract, order, orderState))

        def completedOrdersEnd(self) -> None:
            self.completed_end.set()

    return App()


def _wait(pred: Any, timeout: float = 5.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "condition not met in time"
        time.sleep(0.01)


def test_official_ibapi_client_trades_cleanly(
    threaded_gateway: ThreadedGateway, caplog: pytest.LogCaptureFixture
) -> None:
    from ibapi.contract import Contract
    from ibapi.order import Order
    from ibapi.server_versions import MAX_CLIENT_VER

    caplog.set_level(logging.ERROR, logger="ibapi")
    app = _official_app()
    app.connect("127.0.0.1", threaded_gateway.port, clientId=31)
    reader = threading.Thread(target=app.run, daemon=True)
    reader.start()
    try:
        _wait(lambda: app.next_id > 0)
        assert app.serverVersion() == MAX_CLIENT_VER == MIN_CLIENT_VERSION
        c = Contract()
        c.symbol, c.secType, c.exchange, c.currency = "AAPL", "STK", "SMART", "USD"
        app.reqContractDetails(1, c)
        assert app.details_end.wait(5)
        [cd] = app.details
        assert cd.contract.conId == 265598 and cd.tradingHours
        app.reqHistoricalData(2, cd.contract, "", "1 D", "1 hour", "TRADES", 0, 1, False, [])
        assert app.bars_end.wait(5) and len(app.bars) > 3
        assert all(b.low <= b.close <= b.high for b in app.bars)
        app.reqMktData(3, cd.contract, "", False, False, [])
        _wait(lambda: {1, 2, 4, 6, 7, 9, 14} <= set(app.prices))
        app.cancelMktData(3)
        probe = Order()
        probe.action, probe.orderType, probe.totalQuantity, probe.whatIf = "BUY", "MKT", 5, True
        app.placeOrder(app.next_id, cd.contract, probe)
        app.next_id += 1
        _wait(lambda: bool(app.what_if))
        assert float(app.what_if[0].initMarginChange) > 0 and app.what_if[0].commission > 0
        ids = []
        for action in ("BUY", "SELL"):
            o = Order()
            o.action, o.orderType, o.totalQuantity, o.orderRef = action, "MKT", 1, "harness:ibapi"
            oid = app.next_id
            app.next_id += 1
            ids.append(oid)
            app.placeOrder(oid, cd.contract, o)
            _wait(lambda oid=oid: app.statuses.get(oid) == "Filled")
        _wait(lambda: len(app.commissions) == 2)
        assert [e.side for e in app.execs] == ["BOT", "SLD"]
        assert {e.permId for e in app.execs} == {app.perm_ids[i] for i in ids}
        assert {r.execId for r in app.commissions} == {e.execId for e in app.execs}
        assert all(r.commission > 0 for r in app.commissions)
        app.reqPositions()
        assert app.positions_end.wait(5)
        assert app.positions[265598] == 0
        app.reqCompletedOrders(True)
        assert app.completed_end.wait(5)
        refs = [o.orderRef for _, o, _ in app.completed]
        assert refs.count("harness:ibapi") == 2
        assert {st.completedStatus for _, _, st in app.completed} == {"Filled"}
        # Client-side codes 5xx mean the official decoder could not read a message.
        assert not [e for e in app.errors if 500 <= e[1] < 600], app.errors
        notices = {code for _, code, _ in app.errors}
        assert notices <= {2104, 2106, 2158}, app.errors
        assert not [r for r in caplog.records if r.name.startswith("ibapi")]
    finally:
        app.disconnect()
        reader.join(5)
