"""Drift: recordings of the simulator itself, planted differences, and a hand-written
recording of a real gateway built to the documented protocol."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from ib_async import IB, Stock

from harness_lib.sim import PaperGateway
from harness_lib.wire.drift import drift
from harness_lib.wire.format import (
    Frame,
    Recording,
    RecordingWriter,
    frame_records,
    parse,
    read_recording,
    write_records,
)
from harness_lib.wire.tap import WireTap


async def _record(tmp: Path, scenario: str, symbol: str = "AAPL") -> Recording:
    """A real ib_async session against the simulator, recorded by the tap."""
    path = tmp / f"{scenario}.lfwire.gz"
    writer = RecordingWriter(path, {"scenario": scenario}).start()
    tap = WireTap(writer)
    ib = IB()
    tap.attach(ib)
    async with PaperGateway(scenario=scenario) as gw:
        await ib.connectAsync("127.0.0.1", gw.port, clientId=41, timeout=5)
        (c,) = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
        ib.reqMktData(c)
        await asyncio.sleep(1.2)
        ib.cancelMktData(c)
        await ib.reqCurrentTimeAsync()
        ib.disconnect()
        await asyncio.sleep(0.05)
    tap.detach()
    writer.close()
    return read_recording(path)


def _edited(rec: Recording, tmp: Path, edit) -> Recording:  # type: ignore[no-untyped-def]
    """The same recording with its frames changed by ``edit`` (one session)."""
    frames = edit(rec.frames(1))
    path = write_records(tmp / "edited.lfwire.gz", rec.meta, frame_records(frames, 1))
    return read_recording(path)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    return asyncio.run(_record(tmp_path_factory.mktemp("drift"), "healthy"))


async def test_a_recording_of_the_simulator_has_no_drift(healthy: Recording) -> None:
    report = await drift(healthy)
    assert report.requests > 5 and report.messages_recorded > 20
    assert report.differences == [], "\n".join(map(str, report.differences))
    assert report.to_dict()["drift"] == 0


@pytest.mark.ib_errors(354)
async def test_an_error_scenario_has_no_drift_against_the_same_scenario(tmp_path: Path) -> None:
    rec = await _record(tmp_path, "not_subscribed")
    assert any(f.msg_id == 4 and f.fields[3] == "354" for f in rec.frames())
    report = await drift(rec)
    assert report.differences == [], "\n".join(map(str, report.differences))


async def test_a_missing_field_is_found_and_named(healthy: Recording, tmp_path: Path) -> None:
    def drop_field(frames: list[Frame]) -> list[Frame]:
        i = next(i for i, f in enumerate(frames) if not f.to_server and f.msg_id == 81)
        frames[i] = replace(frames[i], fields=frames[i].fields[:-1])
        return frames

    report = await drift(_edited(healthy, tmp_path, drop_field))
    assert [(d.kind, d.message) for d in report.differences] == [("field count", "tickReqParams")]
    assert report.differences[0].request.startswith("reqMktData AAPL")
    assert "gateway [4], simulator [5]" in report.differences[0].detail


async def test_an_extra_message_is_found_and_named(healthy: Recording, tmp_path: Path) -> None:
    def duplicate_end(frames: list[Frame]) -> list[Frame]:
        i = next(i for i, f in enumerate(frames) if not f.to_server and f.msg_id == 52)
        return [*frames[: i + 1], frames[i], *frames[i + 1 :]]

    report = await drift(_edited(healthy, tmp_path, duplicate_end))
    kinds = [(d.kind, d.message) for d in report.differences]
    # The recording has one more contractDetailsEnd than the simulator sends.
    assert kinds == [("missing message", "contractDetailsEnd")]
    assert report.differences[0].request.startswith("reqContractDetails AAPL")


@pytest.mark.ib_errors(354)
async def test_another_error_code_is_found_and_named(tmp_path: Path) -> None:
    rec = await _record(tmp_path, "not_subscribed")

    def other_code(frames: list[Frame]) -> list[Frame]:
        i = next(i for i, f in enumerate(frames) if f.msg_id == 4 and f.fields[3] == "354")
        fields = list(frames[i].fields)
        fields[3] = "10089"
        frames[i] = replace(frames[i], fields=fields)
        return frames

    report = await drift(_edited(rec, tmp_path, other_code))
    assert [(d.kind, d.detail) for d in report.differences] == [
        ("error code", "gateway ['10089'], simulator ['354']")
    ]


def _script(items: list[tuple[float, str, list]]) -> list[Frame]:
    out = []
    for t, who, fields in items:
        greeting = who == "C" and fields[0] == "API"
        out.append(Frame(1, who == "C", t, 1.7e9 + t, [str(x) for x in fields], greeting))
    return out


REAL_GATEWAY = _script([
    # ib-wire-protocol.md §1-2: the greeting, the two-field reply, startApi, then
    # managedAccounts and nextValidId (3 fields each) and the farm notices.
    (0.000, "C", ["API", "v157..178"]),
    (0.002, "S", [178, "20250323 22:21:01 Greenwich Mean Time"]),
    (0.003, "C", [71, 2, 41, ""]),
    (0.010, "S", [15, 1, "DU1234567"]),
    (0.010, "S", [9, 1, 1]),
    (0.011, "S", [4, 2, -1, 2104, "Market data farm connection is OK:usfarm", ""]),
    (0.011, "S", [4, 2, -1, 2106, "HMDS data farm connection is OK:ushmds", ""]),
    (0.011, "S", [4, 2, -1, 2158, "Sec-def data farm connection is OK:secdefnj", ""]),
    # §3.2: reqMktData, 20 fields for a stock; ib-protocol-more.md §3.2: the frames a
    # real gateway sent for it (rust-ibapi#236): 58, 81, ticks with version 6.
    (0.100, "C", [1, 11, 9000, 265598, "AAPL", "STK", "", 0.0, "", "", "SMART", "",
                  "USD", "AAPL", "NMS", 0, "", 0, 0, ""]),
    (0.110, "S", [58, 1, 9000, 1]),
    (0.110, "S", [81, 9000, 0.01, "9c0001", 3]),
    (0.200, "S", [1, 6, 9000, 1, 202.54, 300, 1]),
    (0.200, "S", [2, 6, 9000, 0, 300]),
    (0.200, "S", [1, 6, 9000, 2, 202.55, 200, 1]),
    (0.200, "S", [2, 6, 9000, 3, 200]),
    (0.200, "S", [1, 6, 9000, 4, 202.55, 2, 0]),
    (0.200, "S", [2, 6, 9000, 5, 2]),
    (0.200, "S", [2, 6, 9000, 8, 323886]),
    (0.200, "S", [46, 6, 9000, 45, 1744742857]),
    (0.200, "S", [45, 6, 9000, 49, 0.0]),
    (0.450, "S", [1, 6, 9000, 1, 202.53, 100, 1]),
    (0.450, "S", [1, 6, 9000, 2, 202.56, 100, 1]),
])  # fmt: skip


async def test_a_hand_written_real_gateway_session(tmp_path: Path) -> None:
    path = write_records(tmp_path / "real.lfwire.gz", {"note": "hand-written"},
                         frame_records(REAL_GATEWAY, 1, close_by="client"))  # fmt: skip
    rec = read_recording(path)
    assert [f.msg_id for f in rec.frames()][:4] == [-1, 178, 71, 15]
    report = await drift(rec)
    # The handshake, the connect sequence and a stock's stream (with the last-trade-time
    # string, tick 45, and the halted flag, tick 49, that a real gateway adds) match the
    # documentation: no drift.
    assert report.requests == 3 and report.messages_recorded == 19
    assert report.differences == [], "\n".join(map(str, report.differences))
    assert report.to_dict()["drift"] == 0


def test_a_truncated_recording_reads_up_to_its_last_whole_record(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.lfwire.gz", {}, frame_records(REAL_GATEWAY, 1))
    import gzip

    raw = gzip.decompress(path.read_bytes())
    cut = parse(raw[:-7])
    assert cut.truncated and len(cut.records) == len(read_recording(path).records) - 1
