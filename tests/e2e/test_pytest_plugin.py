"""The pytest plugin from a user's side: their test file run by a real pytest subprocess,
once against a simulator per test and once with ``--livefire-gateway`` pointed at a
simulator listening on a port (which must then still be labelled SIMULATOR).

Everything is checked from outside: the inner run's outcomes, its terminal summary, its
JUnit file, and the simulator's own ground truth (orders, executions, positions).
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from ib_async import IB

from harness_lib.sim import ThreadedGateway
from tests.faults.conftest import (
    FOREIGN_CLIENT,
    HARNESS_PREFIX,
    foreign_touches,
    harness_net,
    place_foreign_state,
)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""

# What a user's test files put beside their tests: wait for an ib_async condition.
WAIT = """
import asyncio


async def wait(pred, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")
"""

# The user's test file: it must run unchanged in both worlds.
USER_TESTS = """
import pytest
from ib_async import Stock
from waiting import wait

from harness_lib.safety import GuardRefusal


async def test_round_trip_one_share(livefire):
    ib = await livefire.connect()
    aapl = Stock("AAPL", "SMART", "USD")
    buy = await livefire.place(ib, aapl, "BUY", 1)
    await wait(buy.isDone)
    sell = await livefire.place(ib, aapl, "SELL", 1)
    await wait(sell.isDone)
    assert (buy.orderStatus.status, sell.orderStatus.status) == ("Filled", "Filled")
    assert buy.order.orderRef == livefire.order_ref
    assert livefire.order_ref.startswith("harness:pytest-")


async def test_two_shares_are_refused(livefire):
    ib = await livefire.connect()
    with pytest.raises(GuardRefusal, match="above max_quantity 1"):
        await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 2)
    assert ib.openTrades() == []


@pytest.mark.sim(scenario="never_ticks")
async def test_needs_a_scenario(livefire):
    assert livefire.sim is not None and livefire.sim.scenario == "never_ticks"


async def test_uses_the_simulator_fixture(paper_gateway):
    assert paper_gateway.port > 0


@pytest.mark.sim(scenario="live_account")
async def test_no_order_on_a_live_account(livefire):
    ib = await livefire.connect()
    with pytest.raises(GuardRefusal, match="non-paper account"):
        await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 1)
    assert livefire.sim.truth.orders == []


@pytest.mark.livefire_gateway
async def test_only_against_a_gateway(livefire):
    assert livefire.sim is None
"""

CRASHING_TEST = """
from ib_async import Stock
from waiting import wait


async def test_crashes_mid_trade(livefire):
    ib = await livefire.connect()
    aapl = Stock("AAPL", "SMART", "USD")
    buy = await livefire.place(ib, aapl, "BUY", 1)
    await wait(buy.isDone)
    assert buy.orderStatus.status == "Filled"
    exit_order = await livefire.place(ib, aapl, "SELL", 1, limit_price=999.0)
    await wait(lambda: exit_order.orderStatus.status == "Submitted")
    raise RuntimeError("the strategy crashed mid-trade")
"""


@pytest.fixture
def user_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: an ini for pytest-asyncio and their test file."""
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TESTS, waiting=WAIT)
    return pytester


@pytest.fixture
def sim_on_a_port() -> Iterator[ThreadedGateway]:
    """A simulator listening on a TCP port, standing in for a paper gateway."""
    with ThreadedGateway() as gw:
        yield gw


def _junit(path: Path) -> tuple[dict[str, str], dict[str, str | None]]:
    """(suite properties, testcase name -> its livefire_target property or None)."""
    root = ET.parse(path).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None
    props = {p.get("name", ""): p.get("value", "") for p in suite.findall("properties/property")}
    cases: dict[str, str | None] = {}
    for case in suite.iter("testcase"):
        label = case.find("properties/property[@name='livefire_target']")
        cases[case.get("name", "")] = None if label is None else label.get("value")
    return props, cases


def _summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "livefire targets" in line)
    return lines[start + 1 :]


def test_without_a_gateway_every_test_gets_a_simulator(user_suite: pytest.Pytester) -> None:
    junit = user_suite.path / "junit.xml"
    result = user_suite.runpytest_subprocess("-rs", f"--junitxml={junit}")
    result.assert_outcomes(passed=5, skipped=1)
    out = result.stdout.str()
    assert "SKIPPED [1] test_user.py:" in out
    assert "needs a real paper gateway: run with --livefire-gateway HOST:PORT" in out
    summary = _summary(out)
    for name in ("round_trip_one_share", "two_shares_are_refused", "uses_the_simulator_fixture"):
        line = next(s for s in summary if f"::test_{name} " in s)
        assert line.startswith("PASSED") and "-> SIMULATOR 127.0.0.1:" in line, line
        assert "account DU****567" in line, line
    assert any("::test_needs_a_scenario -> SIMULATOR" in s and "never_ticks" in s for s in summary)
    assert "livefire: 5 test(s) against SIMULATOR, 0 against GATEWAY" in summary
    assert not any("GATEWAY 127" in s for s in summary)
    props, cases = _junit(junit)
    assert props["livefire_target"] == "SIMULATOR (one in-process simulator per test)"
    assert cases.pop("test_only_against_a_gateway") is None  # skipped: ran against nothing
    assert len(cases) == 5 and all(
        (v or "").startswith("SIMULATOR 127.0.0.1:") for v in cases.values()
    )


def test_gateway_mode_on_a_simulator_port_is_labelled_simulator(
    user_suite: pytest.Pytester, sim_on_a_port: ThreadedGateway
) -> None:
    port = sim_on_a_port.port
    junit = user_suite.path / "junit.xml"
    result = user_suite.runpytest_subprocess(
        "-rs", f"--junitxml={junit}", "--livefire-gateway", f"127.0.0.1:{port}"
    )
    result.assert_outcomes(passed=3, skipped=3)
    out = result.stdout.str()
    label = f"SIMULATOR 127.0.0.1:{port} (account DU****567)"
    assert f"livefire: {label}; orders tagged harness:pytest-" in out  # the header
    assert "needs the simulator scenario 'never_ticks': runs only against the in-process " \
        f"simulator, not against {label}" in out  # fmt: skip
    assert "uses the paper_gateway fixture: runs only against the in-process simulator" in out
    assert "needs the simulator scenario 'live_account'" in out
    summary = _summary(out)
    for name in ("round_trip_one_share", "two_shares_are_refused", "only_against_a_gateway"):
        assert f"PASSED  test_user.py::test_{name} -> {label}" in summary
    assert "livefire: 3 test(s) against SIMULATOR, 0 against GATEWAY" in summary
    props, cases = _junit(junit)
    assert props["livefire_target"] == label
    assert props["livefire_order_ref"].startswith("harness:pytest-")
    ran = {k: v for k, v in cases.items() if v is not None}
    assert set(ran) == {"test_round_trip_one_share", "test_two_shares_are_refused",
                        "test_only_against_a_gateway"}  # fmt: skip
    assert set(ran.values()) == {label}
    # Ground truth: two orders reached the gateway, both tagged; the round trip is flat.
    gw = sim_on_a_port.gw
    assert gw is not None
    refs = {o.order_ref for o in gw.truth.orders}
    assert refs == {props["livefire_order_ref"]}
    assert len(gw.truth.orders) == 2
    assert harness_net(gw) == {}
    cleanup = next(s for s in summary if s.startswith("livefire cleanup ("))
    assert "2 order(s) placed by tests; cancelled 0 working order(s); flattened nothing" in cleanup


def test_a_live_account_stops_the_session_before_any_test(user_suite: pytest.Pytester) -> None:
    with ThreadedGateway(scenario="live_account") as gw:
        result = user_suite.runpytest_subprocess("--livefire-gateway", f"127.0.0.1:{gw.port}")
        assert gw.gw is not None
        received = list(gw.gw.truth.orders)
    assert result.ret == 3
    err = result.stderr.str()
    assert "non-paper account(s) U****321 reported by the gateway" in err
    assert "no test was run" in err
    assert "U7654321" not in err + result.stdout.str()
    assert "Traceback" not in err
    assert received == []
    out = result.stdout.str()
    assert "collected" not in out and " passed" not in out  # stopped before collection


def test_live_default_ports_need_the_explicit_flag(user_suite: pytest.Pytester) -> None:
    refused = user_suite.runpytest_subprocess("--livefire-gateway", "127.0.0.1:4001")
    assert refused.ret == 3
    err = refused.stderr.str()
    assert "refusing port 4001, the IB Gateway live default" in err
    assert "--livefire-allow-live-port" in err
    # With the flag the port guard lets it through; the connect is what fails (nothing on
    # 4001 here), so the session ends as bad input before any test.
    allowed = user_suite.runpytest_subprocess(
        "--livefire-gateway", "127.0.0.1:4001", "--livefire-allow-live-port"
    )
    assert allowed.ret == 4
    assert "nothing is listening on 127.0.0.1:4001" in allowed.stderr.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--livefire-gateway", "localhost"], "invalid --livefire-gateway value 'localhost'"),
        (["--livefire-gateway", "127.0.0.1:99999"], "invalid port from --livefire-gateway"),
        (["--livefire-client-id", "-3"], "invalid client_id from --livefire-client-id: '-3'"),
        (["--livefire-max-quantity", "500"], "invalid max_quantity from --livefire-max-quantity"),
    ],
)
def test_bad_option_values_are_one_line_usage_errors(
    user_suite: pytest.Pytester, args: list[str], message: str
) -> None:
    result = user_suite.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert message in err
    errors = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err


async def test_session_end_cleanup_after_a_crash_mid_trade(
    pytester: pytest.Pytester, sim_on_a_port: ThreadedGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test buys 1, leaves a resting exit order and crashes. The session-end cleanup must
    cancel that order and sell the 1 back, and touch nothing of the foreign strategy."""
    gw = sim_on_a_port.gw
    assert gw is not None
    gw.foreign = await place_foreign_state(gw)  # client 42: 3 AAPL held, SELL 3 @ 999 resting
    foreign_ib: IB = gw.foreign.ib
    pytester.makeini(INI)
    pytester.makepyfile(test_crash=CRASHING_TEST, waiting=WAIT)
    # The environment form of --livefire-gateway, as a CI job would set it.
    monkeypatch.setenv("HARNESS_PYTEST_GATEWAY", f"127.0.0.1:{sim_on_a_port.port}")
    junit = pytester.path / "junit.xml"
    try:
        # In a thread: the foreign client's connection lives on this test's loop.
        result = await asyncio.to_thread(pytester.runpytest_subprocess, f"--junitxml={junit}")
    finally:
        foreign_ib.disconnect()
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    out = result.stdout.str()
    assert "RuntimeError: the strategy crashed mid-trade" in out
    summary = _summary(out)
    cleanup = next(s for s in summary if s.startswith("livefire cleanup ("))
    assert "2 order(s) placed by tests; cancelled 1 working order(s); flattened AAPL -1" in cleanup
    assert not any("NOT CLEAN" in s for s in summary), summary
    label = f"SIMULATOR 127.0.0.1:{sim_on_a_port.port} (account DU****567)"
    assert f"FAILED  test_crash.py::test_crashes_mid_trade -> {label}" in summary
    assert _junit(junit)[1] == {"test_crashes_mid_trade": label}
    # Ground truth, from the simulator: the session is flat and has nothing working ...
    assert harness_net(gw) == {}
    working = [o.view.order_ref for o in gw.broker.open_orders()
               if (o.view.order_ref or "").startswith(HARNESS_PREFIX)]  # fmt: skip
    assert working == []
    ours = [o for o in gw.truth.orders if o.order_ref.startswith("harness:pytest-")]
    assert [(o.action, o.order_type) for o in ours] == [
        ("BUY", "MKT"),
        ("SELL", "LMT"),
        ("SELL", "MKT"),
    ]
    assert all(math.isclose(o.quantity, 1.0) for o in ours)
    # ... and the foreign strategy's position and resting order are exactly as it left them.
    assert foreign_touches(gw) == []
    assert all(c[1] != FOREIGN_CLIENT for c in gw.truth.cancels)


VANISHING_GATEWAY_TEST = """
import os
import signal

from ib_async import Stock
from waiting import wait


async def test_buys_then_the_gateway_dies(livefire):
    ib = await livefire.connect()
    buy = await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 1)
    await wait(buy.isDone)
    assert buy.orderStatus.status == "Filled"
    os.kill(int(os.environ["SIM_PID"]), signal.SIGKILL)
"""


def test_a_cleanup_that_cannot_finish_fails_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness sim` as the gateway; the test passes but the gateway is gone before the
    session-end cleanup: the session must fail and say how to clean up, not pass."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        port = next(int(m[1]) for line in sim.stdout if (m := re.match(r"PORT=(\d+)", line)))
        pytester.makeini(INI)
        pytester.makepyfile(test_vanish=VANISHING_GATEWAY_TEST, waiting=WAIT)
        monkeypatch.setenv("SIM_PID", str(sim.pid))
        result = pytester.runpytest_subprocess("--livefire-gateway", f"127.0.0.1:{port}")
    finally:
        sim.kill()
        sim.wait(10)
    result.assert_outcomes(passed=1)
    assert result.ret == 1
    summary = _summary(result.stdout.str())
    label = f"SIMULATOR 127.0.0.1:{port} (account DU****567)"
    assert f"PASSED  test_vanish.py::test_buys_then_the_gateway_dies -> {label}" in summary
    problems = [s for s in summary if s.startswith("livefire cleanup NOT CLEAN:")]
    assert problems, summary
    assert any(f"run `harness cleanup --host 127.0.0.1 --port {port}`" in p for p in problems)
