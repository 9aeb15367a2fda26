"""The recording proxy between a real ib_async client and the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ib_async import IB, Stock, Ticker

from harness_lib.recorder import TICK_FIELDS
from harness_lib.sim import PaperGateway
from harness_lib.wire.derive import derive_ticks
from harness_lib.wire.format import read_recording
from harness_lib.wire.mask import AccountMasker, pseudonym
from harness_lib.wire.proxy import RecordingProxy

KEY = b"p" * 32


async def test_the_proxy_records_an_ib_async_session_transparently(tmp_path: Path) -> None:
    path = tmp_path / "proxy.lfwire.gz"
    async with PaperGateway(tick_interval=0.03) as gw:
        proxy = await RecordingProxy("127.0.0.1", gw.port, path, masker=AccountMasker(KEY)).start()
        try:
            ib = IB()
            got: list[tuple[int, float]] = []

            def on_pending(tickers: set[Ticker]) -> None:
                got.extend((td.tickType, td.size) for t in tickers for td in t.ticks
                           if td.tickType in TICK_FIELDS)  # fmt: skip

            ib.pendingTickersEvent += on_pending
            await ib.connectAsync("127.0.0.1", proxy.port, clientId=51, timeout=5)
            accounts = ib.managedAccounts()
            (c,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
            ib.reqMktData(c)
            await asyncio.sleep(0.5)
            ib.cancelMktData(c)
            await ib.reqCurrentTimeAsync()
            ib.disconnect()
            await asyncio.sleep(0.05)
        finally:
            await proxy.stop()
        sent = [t for t in gw.truth.ticks if t.client_id == 51]
    # Transparent: the client saw the real account and every tick the simulator sent.
    assert accounts == ["DU1234567"]
    assert c.conId == 265598 and got
    rec = read_recording(path)
    assert rec.meta["tool"] == "harness record" and rec.meta["masked"] is True
    raw = b"".join(r.payload for r in rec.records)
    assert b"DU1234567" not in raw and pseudonym("DU1234567", KEY).encode() in raw
    rows = derive_ticks(rec, "proxy")
    assert [(r[4], r[6]) for r in rows] == got
    # Every bid the simulator wrote is in the recording (ib_async never drops price ticks).
    assert [t.price for t in sent if t.tick_type == 1] == [r[5] for r in rows if r[4] == 1]
