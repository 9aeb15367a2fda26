"""Shared test setup: fail any test in which ib_async logged an unexpected ERROR.

A decoder error means the simulator spoke the protocol wrong; aeventkit swallows
exceptions inside event handlers, so the log is where such failures surface.
IB error messages a test provokes on purpose are allowed with
``@pytest.mark.ib_errors(354, ...)``; 202 (order cancelled) always is, because
IB confirms every cancel with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.loopback import Server, free_port, serve_http

ALWAYS_ALLOWED_CODES = {202}
_IB_ERROR = re.compile(r"Error (\d+), reqId")
# What ib_async logs when the peer drops the socket or a connect attempt fails.
_CONNECTION_LOSS_TEXTS = ("Peer closed connection", "API connection failed", "Socket error")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ib_errors(*codes): IB error codes this test expects")
    config.addinivalue_line(
        "markers",
        "allow_peer_close: the test expects ib_async to log a dropped or failed connection",
    )


@pytest.fixture(autouse=True)
def ib_async_errors_fail_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect ERROR records from the ib_async loggers and fail on unexpected ones."""
    collector = _Collector()
    logger = logging.getLogger("ib_async")
    logger.addHandler(collector)
    try:
        yield
    finally:
        logger.removeHandler(collector)
    allowed = set(ALWAYS_ALLOWED_CODES)
    marker = request.node.get_closest_marker("ib_errors")
    if marker:
        allowed.update(int(c) for c in marker.args)
    peer_close_ok = request.node.get_closest_marker("allow_peer_close") is not None
    unexpected = []
    for rec in collector.records:
        text = rec.getMessage()
        m = _IB_ERROR.search(text)
        if m and int(m.group(1)) in allowed:
            continue
        if peer_close_ok and any(t in text for t in _CONNECTION_LOSS_TEXTS):
            continue
        unexpected.append(f"{rec.name}: {text}")
    if unexpected:
        pytest.fail("ib_async logged errors:\n" + "\n".join(unexpected), pytrace=False)


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 (ephemeral port) recording every request."""
    yield from serve_http()


@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    return free_port()


# --- the fault matrix's summary line ------------------------------------------------------------
# It lives here, not in tests/faults/conftest.py: with pytest-xdist the controller process
# never loads a sub-directory's conftest, so a hook there would print nothing in a full run.

FAULT_FIGURES = "fault_cell_figures"
"""User property on a fault cell's call report: its CellFigures (tests/faults/conftest.py)."""


def _in_faults(nodeid: str) -> bool:
    return nodeid.replace("\\", "/").startswith("tests/faults/") or "/faults/" in nodeid


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print ``faults: N scenarios, N passed, P positions left open, F foreign orders
    touched`` for the fault-matrix tests that ran (skipped cells are not counted)."""
    stats = terminalreporter.stats
    outcome: dict[str, str] = {}
    for key in ("passed", "failed", "error", "xfailed", "xpassed"):
        for rep in stats.get(key, []):
            nodeid = getattr(rep, "nodeid", "")
            if not _in_faults(nodeid):
                continue
            if key == "passed" and getattr(rep, "when", "call") != "call":
                continue
            # A failure in any phase wins over a pass of another phase.
            if outcome.get(nodeid) in ("failed", "error"):
                continue
            outcome[nodeid] = key
    if not outcome:
        return
    passed = sum(1 for v in outcome.values() if v == "passed")
    # Summed from the reports' properties, not REGISTRY: with pytest-xdist the cells run in
    # worker processes and only their reports reach this one.
    figures: dict[str, dict[str, Any]] = {}
    for reports in stats.values():
        for rep in reports:
            props = dict(getattr(rep, "user_properties", ()))
            if FAULT_FIGURES in props and _in_faults(getattr(rep, "nodeid", "")):
                figures[rep.nodeid] = props[FAULT_FIGURES]
    open_positions = sum(f["positions_left_open"] for f in figures.values())
    touched = sum(f["foreign_orders_touched"] for f in figures.values())
    terminalreporter.write_line(
        f"faults: {len(outcome)} scenarios, {passed} passed, "
        f"{open_positions} positions left open, {touched} foreign orders touched"
    )
