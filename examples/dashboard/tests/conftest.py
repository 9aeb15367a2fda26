"""Fixtures for the dashboard's mocked unit tests, in the style the team wrote them.

``DASHBOARD_BUG`` selects the mode the dashboard is built in (``fixed`` when unset), so the
same suite runs against the correct dashboard and against each planted mistake. It passes in
every mode: that is the point. ``tests/e2e/test_dashboard_example.py`` runs it six times, then
runs the real thing against ``harness sim`` and watches each bug show.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from unittest.mock import AsyncMock, MagicMock

import pytest
from eventkit import Event
from ib_async import Contract, Execution, Fill, Position, Stock, Ticker
from ib_async.objects import CommissionReport

from examples.dashboard.broker import Supervisor
from examples.dashboard.bugs import MODES, Build, build
from examples.dashboard.hub import Hub

MODE = os.environ.get("DASHBOARD_BUG", "fixed")
if MODE not in MODES:
    raise pytest.UsageError(f"DASHBOARD_BUG={MODE!r}; choose one of: {', '.join(MODES)}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which dashboard the suite ran against, so a green run names its mode."""
    terminalreporter.write_line(f"dashboard mode: {MODE}")


def aapl() -> Contract:
    """AAPL, qualified (as the gateway would return it)."""
    c = Stock("AAPL", "SMART", "USD")
    c.conId = 265598
    return c


def populated_ticker(contract: Contract, bid: float = 189.5, ask: float = 189.52) -> Ticker:
    """A ticker with bid/ask/last already set, as the team's mocks return it. (Ticker's
    constructor resets every price to nan, so the fields are set afterwards.)"""
    ticker = Ticker(contract=contract)
    ticker.bid, ticker.ask, ticker.last = bid, ask, 189.51
    ticker.time = datetime.now(UTC)
    return ticker


def fill(exec_id: str, perm_id: int, side: str = "BOT", price: float = 189.52) -> Fill:
    """An execution of one AAPL share."""
    execution = Execution(
        execId=exec_id, time=datetime.now(UTC), side=side, shares=1, price=price, permId=perm_id
    )
    return Fill(
        aapl(), execution, CommissionReport(execId=exec_id, commission=1.0), datetime.now(UTC)
    )


def position(qty: float, avg_cost: float = 189.52) -> Position:
    """An AAPL position row."""
    return Position("DU1234567", aapl(), qty, avg_cost)


@pytest.fixture
def parts() -> Build:
    """The dashboard's parts for the selected mode."""
    return build(MODE)


@pytest.fixture
def ib() -> MagicMock:
    """A mocked IB: reqMktData returns a populated ticker; events are real eventkit Events so
    handlers can be fired from the test."""
    mock = MagicMock()
    contract = aapl()
    ticker = populated_ticker(contract)
    mock.reqMktData.return_value = ticker
    mock.ticker.return_value = ticker
    mock.reqTickersAsync = AsyncMock(return_value=[ticker])
    mock.connectAsync = AsyncMock()
    mock.qualifyContractsAsync = AsyncMock(return_value=[contract])
    mock.reqExecutionsAsync = AsyncMock(return_value=[])
    mock.isConnected.return_value = True
    mock.positions.return_value = []
    mock.fills.return_value = []
    for name in (
        "pendingTickersEvent",
        "positionEvent",
        "execDetailsEvent",
        "commissionReportEvent",
        "errorEvent",
        "disconnectedEvent",
    ):
        setattr(mock, name, Event(name))
    return mock


@pytest.fixture
def hub() -> Hub:
    """An empty state hub."""
    return Hub()


@pytest.fixture
def supervisor(ib: MagicMock, hub: Hub, parts: Build) -> Supervisor:
    """The dashboard's IB side, wired to the mocked IB."""
    return Supervisor(
        hub,
        aapl(),
        "127.0.0.1",
        7599,
        77,
        feed_factory=parts.feed,
        tracker_factory=parts.tracker,
        ib=ib,
    )
