"""pytest fixtures for testing a trading stack against the paper-gateway simulator.

Installed with the package (entry point ``pytest11``), so a user's own suite can write::

    async def test_my_engine_sees_quotes(paper_gateway):
        ib = IB()
        await ib.connectAsync("127.0.0.1", paper_gateway.port, clientId=5)

Choose the scenario and its knobs with a marker::

    @pytest.mark.sim(scenario="slow_first_tick", first_tick_delay=1.5)

``paper_gateway`` is async (it needs pytest-asyncio); ``threaded_gateway`` runs the
simulator on its own thread for synchronous tests and subprocesses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from harness_lib.sim import PaperGateway, ThreadedGateway


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``sim`` marker."""
    config.addinivalue_line(
        "markers", "sim(scenario=..., **params): configure the paper_gateway fixture"
    )


def _sim_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("sim")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        kwargs.setdefault("scenario", marker.args[0])
    return kwargs


@pytest.fixture
def threaded_gateway(request: pytest.FixtureRequest) -> Iterator[ThreadedGateway]:
    """A simulator on its own thread and loop, stopped after the test."""
    gw = ThreadedGateway(**_sim_kwargs(request)).start()
    try:
        yield gw
    finally:
        gw.stop()


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only users without pytest-asyncio get here
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def paper_gateway(request: pytest.FixtureRequest) -> AsyncIterator[PaperGateway]:
        """A simulator on the test's own event loop, stopped after the test."""
        async with PaperGateway(**_sim_kwargs(request)) as gw:
            yield gw
