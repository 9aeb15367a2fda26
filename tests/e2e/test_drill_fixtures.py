"""The stack and drill fixtures from a user's side: their test file, run by a real pytest
subprocess, starts the example dashboard as a real process, trades one share and drills a
disconnect; once fixed, once with the planted failover bug, and once against a
``--livefire-gateway`` (where the drill test is skipped with its reason).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness_lib.sim import ThreadedGateway

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

USER_TESTS = """
import os
import sys

from ib_async import Stock

DASH = [sys.executable, "-m", "examples.dashboard", "--ib-port", "{ib_port}",
        "--port", "{port}", "--contract", "AAPL", "--client-id", "77"]
if os.environ.get("DASH_BUG"):
    DASH += ["--bug", os.environ["DASH_BUG"]]
READY = "http://127.0.0.1:{port}/api/state"


async def test_dashboard_shows_the_position_within_2s(livefire, livefire_stack):
    await livefire_stack.spawn(DASH, ready_url=READY)
    await livefire_stack.watch("stack.toml", symbol="AAPL")
    ib = await livefire.connect()
    await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 1)
    assert await livefire_stack.shows_position(1, within=2.0) <= 2.0


async def test_dashboard_reconnects_within_5s_without_duplicates(
    livefire, livefire_stack, livefire_drill
):
    await livefire_stack.spawn(DASH, ready_url=READY)
    await livefire_stack.watch("stack.toml", symbol="AAPL")
    outcome = await livefire_drill("disconnect", reconnected=5)
    assert outcome.passed, outcome.summary()
    (reconnected,) = outcome.reaction("reconnected")
    assert reconnected.latency <= 5
"""

STACK = """
[[stack]]
name = "dash-sse"
kind = "sse"
url = "http://127.0.0.1:{port}/events"
[stack.quote]
select = 'quotes."{symbol}"'
bid = "bid"
ask = "ask"
mode = "mode"
live = ["live"]
[stack.position]
scope = "positions"
select = "[?symbol == '{symbol}'] | [0]"
quantity = "qty"
"""


@pytest.fixture
def user_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A user's project: an ini, a stack declaration with ``{port}``, their test file."""
    pytester.makeini(INI)
    pytester.makefile(".toml", stack=STACK)
    pytester.makepyfile(test_user=USER_TESTS)
    # The example dashboard is importable from the repository root.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return pytester


@pytest.fixture
def sim_on_a_port() -> Iterator[ThreadedGateway]:
    """A simulator listening on a TCP port, standing in for a paper gateway."""
    with ThreadedGateway() as gw:
        yield gw


def test_fixed_dashboard_passes_both(user_suite: pytest.Pytester) -> None:
    result = user_suite.runpytest_subprocess("-rs", timeout=240)
    result.assert_outcomes(passed=2)


def test_double_subscribe_fails_the_drill_and_says_why(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASH_BUG", "double-subscribe")
    result = user_suite.runpytest_subprocess("-rs", timeout=240)
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "FAIL no_duplicates dash-sse" in out and "shown twice" in out


def test_drill_skipped_against_a_gateway_with_the_reason(
    user_suite: pytest.Pytester, sim_on_a_port: ThreadedGateway
) -> None:
    result = user_suite.runpytest_subprocess(
        "-rs", "--livefire-gateway", f"127.0.0.1:{sim_on_a_port.port}", timeout=240
    )
    result.assert_outcomes(passed=1, skipped=1)
    out = result.stdout.str()
    assert "uses the livefire_drill fixture: runs only against the in-process simulator" in out
