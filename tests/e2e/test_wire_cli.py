"""`harness replay`, `harness drift` and `harness record` as processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ib_async import IB, Stock

from harness_lib.sim import PaperGateway
from harness_lib.wire.format import frame_records, read_recording, write_records
from tests.integration.test_wire_drift import REAL_GATEWAY

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "COLUMNS": "200"}


def harness(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness_lib.cli", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "harness_lib.cli", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.match(r"PORT=(\d+)", line):
            return proc, int(m.group(1))
    raise AssertionError(proc.stderr.read() if proc.stderr else "no PORT line")


def test_drift_exits_1_names_the_drift_and_writes_json(tmp_path: Path) -> None:
    # The documented real gateway session with one planted difference: no halted flag.
    frames = [f for f in REAL_GATEWAY if f.msg_id != 45]
    rec = write_records(tmp_path / "real.lfwire.gz", {}, frame_records(frames, 1))
    r = harness("drift", str(rec), "--json", str(tmp_path / "d.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DRIFT=1" in r.stdout and "extra message tickGeneric" in r.stdout
    data = json.loads((tmp_path / "d.json").read_text())
    assert data["drift"] == 1
    assert [(d["kind"], d["message"]) for d in data["differences"]] == [
        ("extra message", "tickGeneric")
    ]


def test_drift_exits_0_on_the_documented_real_gateway_session(tmp_path: Path) -> None:
    rec = write_records(tmp_path / "real.lfwire.gz", {}, frame_records(REAL_GATEWAY, 1))
    r = harness("drift", str(rec))
    assert r.returncode == 0 and "DRIFT=0" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["drift", "nope.lfwire.gz"], "no recording at nope.lfwire.gz"),
        (["replay", "README.md"], "is not a wire recording"),
        (["replay", "README.md", "--speed", "0"], "--speed 0.0 must be above 0"),
        (["record", "--upstream", "localhost"], "must be HOST:PORT"),
    ],
)
def test_bad_input_is_one_line_and_exit_4(args: list[str], needle: str) -> None:
    r = harness(*args)
    assert r.returncode == 4, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


async def _session(port: int) -> float:
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=61, timeout=5)
    (c,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    t = ib.reqMktData(c)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if t.bid == t.bid:  # not nan
            break
    bid = t.bid
    ib.cancelMktData(c)
    await ib.reqCurrentTimeAsync()
    ib.disconnect()
    await asyncio.sleep(0.1)
    return bid


async def test_record_then_replay_as_processes(tmp_path: Path) -> None:
    out = tmp_path / "rec.lfwire.gz"
    async with PaperGateway() as gw:
        proxy, port = start("record", "--upstream", f"127.0.0.1:{gw.port}", "-o", str(out))
        try:
            bid = await _session(port)
        finally:
            proxy.send_signal(signal.SIGINT)
            stdout, _ = proxy.communicate(timeout=10)
    assert proxy.returncode == 0 and "recorded 1 session(s)" in stdout
    assert read_recording(out).sessions() == [1]

    replay, port = start("replay", str(out), "--speed", "5", "--json", str(tmp_path / "r.json"))
    try:
        bid2 = await _session(port)
    finally:
        replay.send_signal(signal.SIGINT)
        stdout, _ = replay.communicate(timeout=10)
    assert bid2 == bid
    assert replay.returncode == 0, stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["requests_unmatched"] == [] and report["sessions_served"] == 1


def test_every_run_leaves_a_recording_with_no_drift(tmp_path: Path) -> None:
    store = tmp_path / "h.sqlite"
    r = harness("run", "--sim", "--store", str(store), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = json.loads((tmp_path / "r.json").read_text())["run_id"]
    path = tmp_path / "wire" / f"{run_id}.lfwire.gz"
    rec = read_recording(path)
    assert rec.meta["run_id"] == run_id and rec.meta["masked"] is True
    assert b"DU1234567" not in b"".join(x.payload for x in rec.records)
    d = harness("drift", str(path), "--json", str(tmp_path / "d.json"))
    assert d.returncode == 0 and "DRIFT=0" in d.stdout, d.stdout + d.stderr
