"""Replay: a recorded ib_async session served back to a fresh ib_async client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ib_async import IB, Forex, Stock

from harness_lib.sim import PaperGateway
from harness_lib.wire.format import RecordingWriter, read_recording
from harness_lib.wire.mask import AccountMasker
from harness_lib.wire.replay import UNMATCHED, ReplayServer
from harness_lib.wire.tap import WireTap


async def _stream(port: int, seconds: float, tap: WireTap | None = None) -> tuple[list, IB]:
    ib = IB()
    if tap is not None:
        tap.attach(ib)
    errors: list[tuple[int, int]] = []
    ib.errorEvent += lambda rid, code, msg, c: errors.append((rid, code))
    await ib.connectAsync("127.0.0.1", port, clientId=31, timeout=5)
    (c,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    t = ib.reqMktData(c)
    prices: list[float] = []
    t.updateEvent += lambda tk: prices.extend(td.price for td in tk.ticks if td.tickType == 1)
    await asyncio.sleep(seconds)
    ib.cancelMktData(c)
    return [c.conId, prices, errors], ib


async def test_replay_serves_the_recorded_session(tmp_path: Path) -> None:
    path = tmp_path / "s.lfwire.gz"
    writer = RecordingWriter(path, {}, transform=AccountMasker(b"k" * 32)).start()
    tap = WireTap(writer)
    async with PaperGateway(tick_interval=0.05) as gw:
        (con_id, prices, _), ib = await _stream(gw.port, 0.6, tap)
        ib.disconnect()
        await asyncio.sleep(0.05)
    tap.detach()
    writer.close()
    assert prices

    async with ReplayServer(path, speed=2.0) as replay:
        (con_id2, prices2, errors2), ib2 = await _stream(replay.port, 0.6)
        accounts = ib2.managedAccounts()
        ib2.disconnect()
    assert con_id2 == con_id
    assert prices2 == prices, "the recorded bids, in order, at twice the speed"
    assert accounts and accounts[0].startswith("DU") and accounts[0] != "DU1234567"
    assert {code for _, code in errors2} == {2104, 2106, 2158}, "the farm notices, no error"
    assert replay.report.unmatched == [] and replay.report.matched > 5
    assert replay.report.sessions_served == 1


@pytest.mark.ib_errors(UNMATCHED)
async def test_a_request_the_recording_lacks_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.lfwire.gz"
    writer = RecordingWriter(path, {}).start()
    tap = WireTap(writer)
    async with PaperGateway() as gw:
        _, ib = await _stream(gw.port, 0.2, tap)
        ib.disconnect()
        await asyncio.sleep(0.05)
    tap.detach()
    writer.close()
    assert read_recording(path).sessions() == [1]

    async with ReplayServer(path, speed=10.0) as replay:
        ib = IB()
        errors: list[tuple[int, str]] = []
        ib.errorEvent += lambda rid, code, msg, c: errors.append((code, msg))
        await ib.connectAsync("127.0.0.1", replay.port, clientId=31, timeout=5)
        details = await asyncio.wait_for(ib.reqContractDetailsAsync(Forex("EURUSD")), 2.0)
        ib.disconnect()
    assert details == [], "ib_async ends the request on the error instead of waiting"
    assert any(code == UNMATCHED and "reqContractDetails EUR" in msg for code, msg in errors)
    assert [u["request"] for u in replay.report.unmatched] == [
        "reqContractDetails EUR CASH IDEALPRO"
    ]
