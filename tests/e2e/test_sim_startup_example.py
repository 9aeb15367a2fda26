"""examples/typical_startup.py - a dashboard's start-up - against `harness sim`, both as
subprocesses, as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.loopback import stop_process
from tests.stack_app import start_sim_process

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_startup_gets_every_panel_from_harness_sim() -> None:
    sim, port = start_sim_process()
    try:
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
        stop_process(sim)
    assert sim.returncode == 0
