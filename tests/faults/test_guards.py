"""Money-safety guards: each refuses (exit 3) before any placeOrder reaches the gateway.

The simulator's own record (``truth.orders``) is the referee: a guard that only *said*
REFUSED but let an order through would still fail here. The foreign state placed by
another client is checked untouched as in every fault cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness_lib.models import Phase, Verdict
from harness_lib.runner import run_harness
from harness_lib.store import Store
from tests.faults.conftest import (
    HARNESS_CLIENT,
    StagedGateway,
    assert_clean,
    cli,
    foreign_gateway,
    harness_cfg,
)

R = Verdict.REFUSED


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _need_free(port: int) -> None:
    # Something already listening on a live default port may be a real live gateway:
    # never run a --trade test that could reach it, even through a guard we are testing.
    if not _port_free(port):
        pytest.skip(f"127.0.0.1:{port} is in use (maybe a real gateway); not testing near it")


@contextlib.asynccontextmanager
async def counting_listener(port: int) -> AsyncIterator[list[str]]:
    """A plain TCP listener on ``port`` that records every connection it accepts."""
    accepted: list[str] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(str(writer.get_extra_info("peername")))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", port)
    try:
        yield accepted
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("overrides", "guard", "phase"),
    [
        pytest.param({"quantity": 2, "max_quantity": 1}, "max_quantity", Phase.ROUND_TRIP,
                     id="quantity_over_max"),
        pytest.param({"max_notional": 10.0}, "max_notional", Phase.ROUND_TRIP,
                     id="notional_over_max"),
    ],
)  # fmt: skip
async def test_order_limits_refuse_before_any_order(
    gw: StagedGateway, tmp_path: Path, overrides: dict[str, object], guard: str, phase: Phase
) -> None:
    rep = await run_harness(harness_cfg(tmp_path, **overrides), gateway=gw)
    assert rep.verdict == R and rep.exit_code == 3, rep.reason
    refused = rep.phase(phase)
    assert refused is not None and refused.verdict == R
    assert guard in refused.reason, refused.reason
    assert gw.truth.orders_from(HARNESS_CLIENT) == [], "a placeOrder reached the gateway"
    assert_clean(gw, rep, tmp_path / "h.sqlite", traded=False)


async def test_live_account_is_refused_before_any_order(gw: StagedGateway, tmp_path: Path) -> None:
    gw.set_scenario("live_account")
    rep = await run_harness(harness_cfg(tmp_path), gateway=gw)
    assert rep.verdict == R and rep.exit_code == 3, rep.reason
    health = rep.phase(Phase.HEALTH)
    assert health is not None and health.verdict == R and "non-paper" in health.reason
    assert rep.phase(Phase.ROUND_TRIP) is None, "nothing runs after the refusal"
    assert gw.truth.orders_from(HARNESS_CLIENT) == []
    assert gw.truth.tick_count(HARNESS_CLIENT) == 0, "not even a subscription"
    assert_clean(gw, rep, tmp_path / "h.sqlite", traded=False)


async def test_live_default_port_is_refused_before_connecting(tmp_path: Path) -> None:
    """Port 4001 without --allow-live-port: REFUSED before a socket is even opened (a
    listener on 4001 counts the connections it accepts: none)."""
    _need_free(4001)
    async with counting_listener(4001) as accepted:
        cfg = harness_cfg(tmp_path, sim=False, host="127.0.0.1", port=4001)
        rep = await run_harness(cfg)
    assert rep.verdict == R and rep.exit_code == 3, rep.reason
    assert "4001" in rep.reason and "--allow-live-port" in rep.reason
    assert accepted == [], f"the harness connected to the live port: {accepted}"
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        run = st.run(rep.run_id)
    assert run is not None and run["verdict"] == "REFUSED" and run["exit_code"] == 3


async def test_live_default_port_refused_by_the_cli(tmp_path: Path) -> None:
    """The same guard through the real CLI: exit 3, the reason on the console."""
    _need_free(7496)
    async with counting_listener(7496) as accepted:
        code, out, err = await cli(
            "run", "--host", "127.0.0.1", "--port", "7496", "--trade",
            "--store", str(tmp_path / "h.sqlite"), cwd=tmp_path,
        )  # fmt: skip
    assert code == 3, out + err
    assert "7496" in out + err and "Traceback" not in out + err
    assert accepted == []


@pytest.mark.parametrize(
    ("scenario", "verdict"),
    [pytest.param("healthy", Verdict.PASS, id="paper_account"),
     pytest.param("live_account", R, id="live_account")],
)  # fmt: skip
async def test_live_port_override_is_logged_and_never_skips_the_paper_check(
    tmp_path: Path, scenario: str, verdict: Verdict
) -> None:
    """--allow-live-port with a simulator bound to 4001: the override is logged in the run's
    events, and a live account is still REFUSED with no order at the gateway."""
    _need_free(4001)
    async with foreign_gateway(4001) as gateway:
        gateway.set_scenario(scenario)
        cfg = harness_cfg(tmp_path, sim=False, host="127.0.0.1", port=4001,
                          allow_live_port=True)  # fmt: skip
        # Not passing the gateway object: the harness finds it by host and port like any
        # real one (and identifies it as the simulator from its farm notices).
        rep = await run_harness(cfg)
        assert rep.verdict == verdict, rep.reason
        assert rep.target.port == 4001 and rep.target.simulated
        with Store(tmp_path / "h.sqlite", readonly=True) as st:
            events = st.events(rep.run_id)
        warnings = [m for m in events["message"] if "allowed by --allow-live-port" in m]
        assert warnings and "paper-account check still applies" in warnings[0], list(events)
        if verdict == R:
            assert "non-paper" in rep.reason
            assert gateway.truth.orders_from(HARNESS_CLIENT) == []
        assert_clean(gateway, rep, tmp_path / "h.sqlite", traded=verdict == Verdict.PASS)
