"""The wire tap on a real ib_async connection to the simulator, and ticks derived from it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ib_async import IB, Stock, Ticker

from harness_lib.recorder import TICK_FIELDS
from harness_lib.sim import PaperGateway
from harness_lib.wire.derive import derive_ticks
from harness_lib.wire.format import Kind, RecordingWriter, read_recording
from harness_lib.wire.mask import AccountMasker, pseudonym
from harness_lib.wire.tap import WireTap

KEY = b"k" * 32


async def _session(port: int, path: Path, seconds: float = 1.0) -> list[tuple]:
    """Connect through a tap, stream AAPL, return what ib_async handed out live."""
    writer = RecordingWriter(path, {"run_id": "t1"}, transform=AccountMasker(KEY)).start()
    tap = WireTap(writer)
    ib = IB()
    tap.attach(ib)
    live: list[tuple] = []

    def on_pending(tickers: set[Ticker]) -> None:
        for t in tickers:
            for td in t.ticks:
                if td.tickType in TICK_FIELDS:
                    live.append((td.tickType, td.price, td.size, td.time.timestamp()))

    ib.pendingTickersEvent += on_pending
    await ib.connectAsync("127.0.0.1", port, clientId=21, timeout=5)
    try:
        (c,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        ib.reqMktData(c)
        await asyncio.sleep(seconds)
        ib.cancelMktData(c)
        await ib.reqCurrentTimeAsync()  # everything sent before has arrived
    finally:
        ib.disconnect()
        await asyncio.sleep(0.05)
        tap.detach()
        writer.close()
    assert "sendMsg" not in vars(ib.client.conn), "detach restores ib_async's own sendMsg"
    return live


async def test_derived_ticks_equal_what_ib_async_produced_live(tmp_path: Path) -> None:
    async with PaperGateway(tick_interval=0.02) as gw:
        live = await _session(gw.port, tmp_path / "r.lfwire.gz")
    rec = read_recording(tmp_path / "r.lfwire.gz")
    assert not rec.truncated
    rows = derive_ticks(rec, "t1")
    assert len(live) > 20
    derived = [(r[4], r[5], r[6], r[8]) for r in rows]
    # Prices in the store are None for size fields; compare what both sides carry.
    assert [(d[0], d[2]) for d in derived] == [(x[0], x[2]) for x in live]
    # The tap stamps a read just before ib_async does (its listener runs first), and
    # datetime keeps microseconds: the two stamps of each tick agree within a millisecond.
    gaps = [x[3] - d[3] for d, x in zip(derived, live, strict=True)]
    assert all(-2e-6 <= g < 1e-3 for g in gaps), (min(gaps), max(gaps))
    assert all(r[1] == 265598 and r[2] == "AAPL" for r in rows)
    assert [r[10] for r in rows] == list(range(1, len(rows) + 1))
    # Every frame's stamp is the stamp of a recorded read.
    kinds = [r.kind for r in rec.records]
    assert kinds[0] == Kind.META and Kind.OPEN in kinds and Kind.CLOSE in kinds


async def test_accounts_are_masked_with_a_stable_pseudonym(tmp_path: Path) -> None:
    async with PaperGateway() as gw:
        await _session(gw.port, tmp_path / "a.lfwire.gz", seconds=0.2)
        await _session(gw.port, tmp_path / "b.lfwire.gz", seconds=0.2)
    fake = pseudonym("DU1234567", KEY)
    assert fake.startswith("DU") and len(fake) == 9 and fake != "DU1234567"
    for name in ("a", "b"):
        rec = read_recording(tmp_path / f"{name}.lfwire.gz")
        raw = b"".join(r.payload for r in rec.records)
        assert b"DU1234567" not in raw
        assert fake.encode() in raw
        accts = [f for f in rec.frames() if not f.to_server and f.msg_id == 15]
        assert accts and accts[0].fields[2] == fake


def test_an_account_split_across_two_reads_is_still_masked() -> None:
    m = AccountMasker(KEY, ["DU1234567"])
    fake = pseudonym("DU1234567", KEY).encode()
    out = m(Kind.TO_CLIENT, 1, b"xxxx\0DU123", 1.0, 1.0)
    out += m(Kind.TO_CLIENT, 1, b"4567\0yyyy", 2.0, 2.0)
    out += m.finish()
    joined = b"".join(o[4] for o in out)
    assert joined == b"xxxx\0" + fake + b"\0yyyy"
    assert [o[2] for o in out] == [1.0, 2.0], "each read keeps its own stamp and length"
    assert [len(o[4]) for o in out] == [10, 9]
