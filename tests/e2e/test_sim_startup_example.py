"""examples/typical_startup.py - a dashboard's start-up - against `harness sim`, both as
subprocesses, as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_startup_gets_every_panel_from_harness_sim() -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        port = next(int(m.group(1)) for line in sim.stdout if (m := re.match(r"PORT=(\d+)", line)))
        script = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "typical_startup.py"), "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        out = script.stdout
        assert script.returncode == 0, out + script.stderr
        assert "Traceback" not in script.stderr
        assert "server version 178" in out
        assert re.search(r"qualified: AAPL=265598, EUR\.USD=\d+, MES\w+=\d+", out)
        assert re.search(r"AAPL trading hours today: \d{8}:(\d{4}-\d{8}:\d{4}|CLOSED)", out)
        bars = int(re.search(r"chart: (\d+) bars", out).group(1))  # type: ignore[union-attr]
        assert bars > 12
        quotes = re.findall(r"quote (\S+): bid ([\d.]+) ask ([\d.]+) last ([\d.]+) high", out)
        assert [q[0][:3] for q in quotes] == ["AAP", "EUR", "MES"]
        assert all(float(b) < float(a) for _, b, a, _ in quotes)
        assert "nan" not in out
        assert re.search(r"account: net liquidation 1000000\.00", out)
        assert re.search(r"P&L: daily 0\.0 unrealized 0\.0", out)
        assert "positions: 0" in out
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=10)
    assert sim.returncode == 0
