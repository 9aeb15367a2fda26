"""What `harness run` imports on its way to the verdict (issue 13, start-up).

Not a timed test: the time is measured by bench/time_to_verdict.py. This guards the
structure that keeps it short: the heavy libraries load only where they are used (pandas
for store queries, altair for charts, marimo for notebooks), and pydantic, which typer
would load for option parsing, not at all; nor typer itself (the `harness` script runs
`run` through harness_lib.runcli). Without a declared stack, nothing of the stack checks
loads either: the ``stack`` setting imports its parser only for a non-empty value.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HEAVY = ("pandas", "altair", "marimo", "pydantic", "pydantic_core", "typer")
STACK_ONLY = ("jmespath", "httpx", "httpx_sse", "websockets", "playwright")


def test_a_healthy_run_never_imports_the_heavy_libraries(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "harness_lib.runcli",
            "run",
            "--sim",
            "--store",
            str(tmp_path / "h.sqlite"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+([\w.]+)$", proc.stderr, re.M))
    assert "ib_async" in imported and "harness_lib.runner" in imported  # the log is read
    loaded = sorted(m for m in imported if m.split(".")[0] in HEAVY + STACK_ONLY)
    assert loaded == [], loaded
    assert not any(m.startswith("harness_lib.stack") for m in imported)
