"""The dashboard's mocked unit tests, written the way the team in seed 000 wrote theirs.

A MagicMock ``IB`` hands back tickers whose bid/ask are already set. These tests pass for the
correct dashboard AND for every ``--bug`` mode (``DASHBOARD_BUG=no-wait pytest ...``): a mock
programmed with what the author believes IB does cannot catch a mistake in that belief. They
are kept as they are on purpose; the real checks are in tests/e2e/test_dashboard_example.py.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from unittest.mock import MagicMock

import pytest

from examples.dashboard.broker import Supervisor, quote_values
from examples.dashboard.hub import Hub, encode, number

from .conftest import aapl, fill, position


@pytest.fixture
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """The supervisor connected (to the mock) and subscribed."""
    task = asyncio.create_task(supervisor.run())
    for _ in range(100):
        if supervisor.feed._handler is not None or supervisor.feed.mode != "waiting":
            break
        await asyncio.sleep(0.01)
    yield supervisor
    supervisor.stop()
    task.cancel()


async def tick(ib: MagicMock) -> None:
    """Fire ib_async's pendingTickersEvent for the mocked ticker."""
    ib.pendingTickersEvent.emit({ib.reqMktData.return_value})
    await asyncio.sleep(0.01)


async def test_quotes_go_live_with_real_numbers(
    running: Supervisor, ib: MagicMock, hub: Hub
) -> None:
    await tick(ib)
    quote = hub.state["quotes"]["AAPL"]
    assert quote["bid"] == 189.5
    assert quote["ask"] == 189.52
    assert quote["mode"] == "live"
    assert hub.state["status"] == {"connected": True, "mode": "live"}


async def test_nan_is_sanitised_to_null_in_json() -> None:
    from ib_async import Ticker

    values = quote_values(Ticker(contract=aapl()))
    assert values == {"bid": None, "ask": None, "last": None}
    assert number(math.nan) is None and number(math.inf) is None and number(1.5) == 1.5
    doc = json.loads(encode({"quotes": {"AAPL": values}}))
    assert doc["quotes"]["AAPL"]["bid"] is None


async def test_state_document_is_valid_json(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    await tick(ib)
    text = encode(hub.snapshot())
    assert "NaN" not in text
    assert set(json.loads(text)) == {"quotes", "positions", "last_trade", "status"}


async def test_position_card_opens_and_clears(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    ib.positionEvent.emit(position(1))
    await asyncio.sleep(0.01)
    assert [(p["symbol"], p["qty"]) for p in hub.state["positions"]] == [("AAPL", 1)]
    await tick(ib)  # a quote marks the open card
    ib.positionEvent.emit(position(0))
    await asyncio.sleep(0.01)
    assert hub.state["positions"] == []


async def test_last_trade_shows_the_fills_ids(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    ib.reqExecutionsAsync.return_value = [fill("0000e0d5.6571a1b2.01.01", 1001)]
    ib.positionEvent.emit(position(1))
    await asyncio.sleep(0.01)
    trade = hub.state["last_trade"]["AAPL"]
    assert (trade["execId"], trade["permId"]) == ("0000e0d5.6571a1b2.01.01", 1001)
    assert trade["side"] == "BOT"


async def test_live_exec_details_update_the_last_trade(
    running: Supervisor, ib: MagicMock, hub: Hub
) -> None:
    ib.execDetailsEvent.emit(MagicMock(), fill("0000e0d5.6571a1b3.01.01", 1002, side="SLD"))
    await asyncio.sleep(0.01)
    trade = hub.state["last_trade"]["AAPL"]
    assert (trade["execId"], trade["permId"], trade["side"]) == (
        "0000e0d5.6571a1b3.01.01",
        1002,
        "SLD",
    )


async def test_degraded_on_1100_and_live_again_on_1102(
    running: Supervisor, ib: MagicMock, hub: Hub
) -> None:
    await tick(ib)
    ib.errorEvent.emit(
        -1, 1100, "Connectivity between IB and Trader Workstation has been lost.", None
    )
    assert hub.state["quotes"]["AAPL"]["mode"] == "degraded"
    assert hub.state["status"]["mode"] == "degraded"
    ib.errorEvent.emit(-1, 1102, "Connectivity ... restored - data maintained.", None)
    assert hub.state["quotes"]["AAPL"]["mode"] == "live"


async def test_farm_down_degrades_until_it_is_back(
    running: Supervisor, ib: MagicMock, hub: Hub
) -> None:
    await tick(ib)
    ib.errorEvent.emit(-1, 2103, "Market data farm connection is broken:usfarm", None)
    assert hub.state["quotes"]["AAPL"]["mode"] == "degraded"
    ib.errorEvent.emit(-1, 2104, "Market data farm connection is OK:usfarm", None)
    assert hub.state["quotes"]["AAPL"]["mode"] == "live"


async def test_1101_resubscribes(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    await tick(ib)
    ib.errorEvent.emit(-1, 1101, "Connectivity ... restored - data lost.", None)
    await asyncio.sleep(0.01)
    assert ib.reqMktData.call_count == 2
    await tick(ib)
    assert hub.state["quotes"]["AAPL"]["mode"] == "live"


async def test_disconnect_shows_degraded(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    await tick(ib)
    ib.isConnected.return_value = False
    ib.disconnectedEvent.emit()
    assert hub.state["status"] == {"connected": False, "mode": "degraded"}


async def test_snapshot_fallback_when_no_tick_comes(
    supervisor: Supervisor, ib: MagicMock, hub: Hub
) -> None:
    from ib_async import Ticker

    ib.reqMktData.return_value = Ticker(contract=aapl())  # a contract that never ticks
    supervisor.feed.first_tick_timeout = 0.05
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.2)
    assert hub.state["quotes"]["AAPL"]["mode"] == "snapshot_fallback"
    supervisor.stop()
    task.cancel()


async def test_hub_fans_updates_out_to_subscribers() -> None:
    hub = Hub()
    with hub.subscribe() as sub:
        hub.publish({"positions": [{"symbol": "AAPL", "qty": 1}]})
        assert await sub.next(1) == {"positions": [{"symbol": "AAPL", "qty": 1}]}
    assert hub.subscribers == 0


async def test_silent_stream_is_shown_stale(running: Supervisor, ib: MagicMock, hub: Hub) -> None:
    running.feed.stale_after = 0.05
    await tick(ib)
    ib.reqMktData.return_value.bid = 189.51  # the market moves on while the stream is silent
    await asyncio.sleep(0.8)  # the watchdog looks twice a second
    assert hub.state["quotes"]["AAPL"]["mode"] == "degraded"
    assert ib.reqMktData.call_count == 2  # the heartbeat resubscribed, once for this silence
    await tick(ib)
    assert hub.state["quotes"]["AAPL"]["mode"] == "live"
