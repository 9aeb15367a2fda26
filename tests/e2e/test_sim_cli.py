"""`harness sim` as a standalone gateway for someone else's plain ib_async script."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plain_ib_async_script_against_harness_sim() -> None:
    sim = subprocess.Popen(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        port = None
        for line in sim.stdout:
            if m := re.match(r"PORT=(\d+)", line):
                port = int(m.group(1))
                break
        assert port, "harness sim printed its port"
        assert port not in (4001, 4002, 7496, 7497)
        script = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "plain_ib_async.py"), "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert script.returncode == 0, script.stdout + script.stderr
        assert "qualified AAPL conId=265598" in script.stdout
        assert "commissions [1.0, 1.0]" in script.stdout
        assert "position 0" in script.stdout
    finally:
        sim.send_signal(signal.SIGINT)
        out, _ = sim.communicate(timeout=10)
    assert sim.returncode == 0 and "simulator stopped" in out
