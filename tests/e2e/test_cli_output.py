"""CLI output a person can read anywhere: an 80-column terminal (a real pseudo-terminal) and a
pipe, as cron and CI capture it. The real CLI runs in a subprocess; nothing may be cut."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from harness_lib.config import SETTINGS

IB_200 = "IB 200: No security definition has been found for the request"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What the `harness` console script runs: `run` without typer, the rest through the typer app.
HARNESS = [sys.executable, "-m", "harness_lib.runcli"]


def _env(columns: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env.pop("FORCE_COLOR", None)
    env["COLUMNS"] = str(columns)
    return env


def piped(args: list[str], cwd: Path, columns: int = 80) -> tuple[int, str]:
    """Run the CLI with stdout and stderr captured by pipes: (exit code, stdout)."""
    proc = subprocess.run(
        [*HARNESS, *args], cwd=cwd, env=_env(columns), capture_output=True, text=True, timeout=90
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def on_tty(args: list[str], cwd: Path, columns: int = 80) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal sized ``columns`` x 24: (exit code, text without
    colour codes). stdout and stderr both go to the terminal, as for a person."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [*HARNESS, *args], cwd=cwd, env=_env(columns), stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=90)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n")
    assert "Traceback" not in text, text
    return code, text


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a passing round trip and a run failing with IB 200."""
    tmp = tmp_path_factory.mktemp("history")
    store = str(tmp / "h.sqlite")
    code, _ = piped(["run", "--sim", "--trade", "--store", store], tmp)
    assert code == 0
    code, _ = piped(["run", "--sim", "--contract", "XYZQ", "--store", store], tmp)
    assert code == 1
    return tmp


def _run_ids(tmp: Path, contract: str | None = None) -> list[str]:
    from harness_lib.store import Store

    with Store(tmp / "h.sqlite", readonly=True) as st:
        runs = st.runs()
    if contract is not None:
        runs = runs[runs["contract"] == contract]
    return list(runs["run_id"])


# --- harness run ------------------------------------------------------------------------


@pytest.mark.parametrize("how", [piped, on_tty], ids=["piped", "tty"])
def test_run_summary_keeps_the_ib_message_whole(
    tmp_path: Path, how: Callable[..., tuple[int, str]]
) -> None:
    code, text = how(["run", "--sim", "--contract", "XYZQ", "--store", "h.sqlite"], tmp_path)
    assert code == 1
    lines = text.splitlines()
    # The phase line and the final "Run <id>: <reason>" line each carry it unbroken.
    assert any("FAIL" in ln and "ticks" in ln and IB_200 in ln for ln in lines), text
    assert any(ln.startswith("Run ") and ln.endswith(IB_200) for ln in lines), text


# --- harness runs / costs ---------------------------------------------------------------


def test_runs_piped_prints_one_full_line_per_run(history: Path) -> None:
    code, text = piped(["runs", "--store", "h.sqlite"], history)
    assert code == 0
    header = next(ln for ln in text.splitlines() if "started (UTC)" in ln)
    for col in ("run", "target", "contract", "verdict", "first bid/ask", "cost", "reason"):
        assert col in header
    for run_id in _run_ids(history):
        [row] = [ln for ln in text.splitlines() if run_id in ln]
        assert "SIMULATOR scenario healthy at 127.0.0.1:" in row
    assert any("FAIL" in ln and ln.rstrip().endswith(IB_200) for ln in text.splitlines())
    assert all(ln == ln.rstrip() for ln in text.splitlines())  # plain lines, no padding


def test_runs_in_80_columns_never_fragments_a_value(history: Path) -> None:
    code, text = on_tty(["runs", "--store", "h.sqlite"], history)
    assert code == 0
    # Only a stacked value longer than the terminal exceeds it: one logical line, which
    # the terminal wraps, never cut or split by the CLI.
    long = [ln.strip() for ln in text.splitlines() if len(ln) > 80]
    assert long and all(ln.startswith("reason: ") for ln in long), text
    for run_id in _run_ids(history):
        assert run_id in text
    # Too wide for a table even without optional columns: stacked, every value whole.
    assert f"reason: ticks: contract STK:XYZQ:SMART:USD: {IB_200}" in text
    assert "SIMULATOR scenario healthy at 127.0.0.1:" in text


def test_costs_piped_and_in_80_columns(history: Path) -> None:
    [traded] = _run_ids(history, contract="AAPL")
    code, text = piped(["costs", "--store", "h.sqlite"], history)
    assert code == 0
    header = next(ln for ln in text.splitlines() if "entry_price" in ln)
    assert header.split() == ["time", "run_id", "symbol", "quantity", "entry_price",
                              "exit_price", "commission", "slippage", "total_cost",
                              "realized_pnl", "currency"]  # fmt: skip
    assert traded in text

    code, text = on_tty(["costs", "--store", "h.sqlite"], history)
    assert code == 0
    lines = text.splitlines()
    # Only the summary sentence and the note may be longer: the terminal wraps them whole.
    table_lines = [ln for ln in lines if not ln.startswith(("1 test trade", "(not shown"))]
    assert max(len(ln) for ln in table_lines) <= 80, text
    assert traded in text and "AAPL" in text
    assert "(not shown for width: entry_price, exit_price" in text


# --- help -------------------------------------------------------------------------------


def test_help_keeps_bracketed_words_and_reflows_paragraphs(tmp_path: Path) -> None:
    code, text = piped(["--help"], tmp_path)
    assert code == 0
    assert "The main job: health, ticks, [round trip], cleanup." in text
    commands = text.split("Commands:")[1].splitlines()
    assert not [ln for ln in commands if ln.endswith("...")]  # no short help cut off

    code, text = piped(["schedule", "--help"], tmp_path)
    assert code == 0
    para = text.split("\n\n")[1].splitlines()
    assert len(para) >= 2
    # Re-flowed to the width, not broken where the docstring's lines were.
    assert all(len(ln) >= 60 for ln in para[:-1]), para
    assert " ".join(ln.strip() for ln in para).startswith(
        "Schedule a daily `harness run`. Arguments after `--` are passed to `harness run`, e.g."
    )


def test_run_help_lists_every_setting_whole(tmp_path: Path) -> None:
    code, text = on_tty(["run", "--help"], tmp_path)
    assert code == 0
    assert max(len(ln) for ln in text.splitlines()) <= 80
    flat = " ".join(text.split())
    for spec in SETTINGS.values():
        assert spec.option in flat and spec.env in flat
        assert " ".join(spec.help.split()) in flat, spec.help
