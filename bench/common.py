"""Shared pieces of the benchmarks: result rows, the pass/short table, machine facts.

Every benchmark reports a list of ``Row``: a figure, its measured value, the goal and a
mark. Figures are ratios or comparisons measured in the same run (never absolute
timings asserted by tests), so a noisy or slower machine shifts both sides together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
"""Scratch output (stores, exports); git-ignored."""

VENV_BIN = Path(sys.executable).parent
"""The venv's bin: ``harness`` and ``marimo`` are called from here rather than through
``uv run``, so uv's own resolve/sync step (tens of ms) is not counted as our time."""

PASS = "✅ pass"
SHORT = "⚠ short"
INFO = "· info"
NA = "n/a"


@dataclass
class Row:
    """One printed figure."""

    section: str
    figure: str
    value: str
    goal: str = ""
    ok: bool | None = None
    """True pass, False short, None informational (no goal) or not measurable."""
    note: str = ""

    @property
    def mark(self) -> str:
        """The pass/short mark shown in the table."""
        if self.ok is None:
            return NA if self.value.startswith("n/a") else INFO
        return PASS if self.ok else SHORT


def print_table(rows: Sequence[Row], title: str = "", *, sections: bool = False) -> None:
    """Print rows as a fixed-width table (plain text so it pastes into Markdown); with
    ``sections`` the first column names each row's benchmark section."""
    if title:
        print(f"\n== {title} ==")
    headers: tuple[str, ...] = ("figure", "value", "goal", "mark")
    cells: list[tuple[str, ...]] = [(r.figure, r.value, r.goal, r.mark) for r in rows]
    if sections:
        headers = ("section", *headers)
        cells = [(r.section, *c) for r, c in zip(rows, cells, strict=True)]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    notes = [r for r in rows if r.note]
    for r in notes:
        print(f"  note ({r.figure}): {r.note}")
    sys.stdout.flush()


def markdown_table(rows: Sequence[Row]) -> str:
    """The same rows as a Markdown table (for RESULTS.md)."""
    out = ["| section | figure | value | goal | mark |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.section} | {r.figure} | {r.value} | {r.goal} | {r.mark} |")
    return "\n".join(out)


def write_json(rows: Sequence[Row], path: Path | None, extra: dict[str, Any] | None = None) -> None:
    """Write rows (and any extra detail) as JSON for run_all to collect."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": [asdict(r) for r in rows], "extra": extra or {}}
    path.write_text(json.dumps(payload, indent=2, default=str))


def read_json(path: Path) -> list[Row]:
    """Rows written by ``write_json``."""
    data = json.loads(path.read_text())
    return [Row(**r) for r in data["rows"]]


def base_parser(description: str, seconds: float | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    if seconds is not None:
        p.add_argument("--seconds", type=float, default=seconds,
                       help=f"measurement window per case (default {seconds:g})")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return p


def pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of values, linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    """Median, nan when empty."""
    return statistics.median(values) if values else float("nan")


def fmt_rate(x: float) -> str:
    """Ticks per second with thousands separators."""
    return f"{x:,.0f}/s"


def fmt_ms(seconds: float) -> str:
    """Seconds as milliseconds with sensible precision."""
    ms = seconds * 1000
    return f"{ms:.3f} ms" if abs(ms) < 10 else f"{ms:.1f} ms"


def load_average() -> str:
    """The 1-minute load average: other work on this shared 2-core box shows up here."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


def machine() -> dict[str, str]:
    """What the figures ran on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    try:
        sqlite_version = __import__("sqlite3").sqlite_version
    except Exception:
        sqlite_version = "?"
    try:
        import ib_async

        ib_version = ib_async.__version__
    except Exception:
        ib_version = "?"
    kernel = platform.release()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": mem,
        "python": platform.python_version(),
        "sqlite": sqlite_version,
        "ib_async": str(ib_version),
        "kernel": kernel,
        "load_1min": load_average(),
    }


def command_exists(args: Sequence[str], timeout: float = 60.0) -> bool:
    """True when ``args`` (typically ``[..., '--help']``) exits 0. Also warms the child
    bytecode cache for the command's imports."""
    try:
        r = subprocess.run(list(args), capture_output=True, timeout=timeout, cwd=ROOT,
                           env=child_env())  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


PYCACHE = OUT_DIR / "pycache"
"""Bytecode cache for child processes. This sandbox sets PYTHONDONTWRITEBYTECODE=1 and its
venv holds no .pyc files, so every new interpreter compiles pandas, marimo, altair, numpy
... from source (seconds). An installed Python normally has that cache, so by default
children get one here (outside the venv, which the benchmarks must not modify)."""


def child_env(warm_bytecode: bool = True) -> dict[str, str]:
    """Environment for a measured child: with a bytecode cache (default, like a normal
    install) or exactly this sandbox's (no cache: every import compiles from source)."""
    env = dict(os.environ)
    if warm_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


@dataclass
class ChildRun:
    """A finished child process: exit code, wall seconds, peak RSS and its output."""

    returncode: int
    wall_s: float
    max_rss_mb: float
    stdout: str
    stderr: str


def run_child(args: Sequence[str], *, timeout: float = 600.0, cwd: Path = ROOT,
              env: dict[str, str] | None = None) -> ChildRun:  # fmt: skip
    """Run a command and measure its wall time and peak resident memory (``env`` defaults
    to ``child_env()``: with a bytecode cache).

    ``os.wait4`` returns the rusage of this one child (its ``ru_maxrss`` covers its own
    descendants it waited for too), unlike ``RUSAGE_CHILDREN``, which is the maximum over
    every child this process ever reaped and so cannot tell two measurements apart.
    """
    if env is None:
        env = child_env()
    out_path = OUT_DIR / f".child-{os.getpid()}.out"
    err_path = OUT_DIR / f".child-{os.getpid()}.err"
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, cwd=cwd, env=env)
        # A blocking wait4 returns the moment the child exits (no polling error in the
        # wall time); a timer kills a child that hangs.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    # Linux reports ru_maxrss in KiB.
    return ChildRun(proc.returncode, wall, usage.ru_maxrss / 1024, stdout, stderr)
