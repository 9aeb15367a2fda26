"""Faults compose at run time: two active at once, added and cleared while clients trade,
without subclassing the gateway."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from ib_async import MarketOrder, Stock

from harness_lib.sim import PaperGateway, Scenario
from harness_lib.sim.faults import FaultEngine
from tests.helpers import connect, wait_until


@pytest.mark.ib_errors(201)
async def test_two_faults_at_once_then_cleared(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("commission_late", commission_delay=0.4)
    paper_gateway.add_fault("order_reject", nth=2)
    assert set(paper_gateway.faults.active) == {Scenario.COMMISSION_LATE, Scenario.ORDER_REJECT}
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        first = ib.placeOrder(c, MarketOrder("BUY", 1))
        await wait_until(first.isDone, 3)
        t_fill = time.monotonic()
        assert first.orderStatus.status == "Filled"
        assert not first.fills[0].commissionReport.execId, "commission held back"
        await wait_until(lambda: bool(first.fills[0].commissionReport.execId), 2)
        assert time.monotonic() - t_fill >= 0.3
        second = ib.placeOrder(c, MarketOrder("SELL", 1))
        await wait_until(second.isDone, 3)
        assert second.orderStatus.status == "Cancelled"
        assert any(e.errorCode == 201 for e in second.log)
        paper_gateway.clear_fault("order_reject")
        paper_gateway.clear_fault(Scenario.COMMISSION_LATE)
        assert not paper_gateway.faults.active
        third = ib.placeOrder(c, MarketOrder("SELL", 1))
        await wait_until(lambda: third.isDone() and bool(third.fills[0].commissionReport.execId), 2)
        assert paper_gateway.position("AAPL") == 0
    finally:
        ib.disconnect()


async def test_a_fault_added_while_streaming_stops_the_stream(paper_gateway: PaperGateway) -> None:
    paper_gateway.set_scenario("healthy", tick_interval=0.02)
    ib = await connect(paper_gateway.port)
    try:
        c = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        ticker = ib.reqMktData(c)
        await wait_until(lambda: math.isfinite(ticker.bid), 2)
        paper_gateway.add_fault("never_ticks")
        await asyncio.sleep(0.1)
        n = paper_gateway.truth.tick_count()
        await asyncio.sleep(0.3)
        assert paper_gateway.truth.tick_count() == n
        paper_gateway.clear_fault("never_ticks")
        await wait_until(lambda: paper_gateway.truth.tick_count() > n, 2)
    finally:
        ib.disconnect()


def test_engine_predicates_combine() -> None:
    engine = FaultEngine()
    engine.add("no_fill", nth=1)
    engine.add("partial_fill", nth=2, partial_ratio=0.25)
    assert engine.new_order() == {Scenario.NO_FILL}
    assert engine.new_order() == {Scenario.PARTIAL_FILL}
    assert engine.new_order() == frozenset()
    assert engine.partial_ratio() == 0.25

    class Stream:
        first_sent = time.monotonic() - 5

    assert not engine.stream_silent(Stream())
    engine.add("stale_stream", stale_after=1.0)
    assert engine.stream_silent(Stream())
    engine.clear("stale_stream")
    assert not engine.stream_silent(Stream())
    engine.add("healthy")
    assert set(engine.active) == {Scenario.NO_FILL, Scenario.PARTIAL_FILL}
