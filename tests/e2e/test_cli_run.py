"""`harness run` as a user runs it: a subprocess, the embedded simulator, a real store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness_lib.store import Store
from tests.loopback import free_port

HARNESS = [sys.executable, "-m", "harness_lib.cli"]
ROOT = Path(__file__).resolve().parents[2]


def harness(*args: str, tmp: Path, env: dict[str, str] | None = None, timeout: float = 60):
    """Run the CLI in a subprocess with its store and reports under ``tmp``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    full_env["COLUMNS"] = "200"  # rich wraps tables at 80 columns when not on a terminal
    full_env.update(env or {})
    cmd = [*HARNESS, *args]
    if args and args[0] in ("run", "runs", "costs", "cleanup", "report") and "--store" not in args:
        cmd += ["--store", str(tmp / "h.sqlite")]
    return subprocess.run(
        cmd, cwd=tmp, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr


def test_healthy_run_passes_with_a_complete_record(tmp_path: Path) -> None:
    proc = harness("run", "--sim", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SIMULATOR" in proc.stdout
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        runs = st.runs()
        assert len(runs) == 1
        run = runs.iloc[0]
        assert run.verdict == "PASS" and run.exit_code == 0 and bool(run.simulated)
        assert 0 < run.first_bid_s < 1.0
        cps = set(st.checkpoints(run.run_id)["name"])
        assert {"connected", "accounts_verified", "contract_qualified", "subscribed",
                "first_tick", "bid_ask_live", "disconnected"} <= cps  # fmt: skip
        assert len(st.ticks(run.run_id)) > 0
        assert set(st.phases(run.run_id)["phase"]) == {"health", "ticks", "cleanup"}
    assert (tmp_path / "data" / "reports" / f"{run.run_id}.json").exists()
    listed = harness("runs", tmp=tmp_path)
    assert listed.returncode == 0 and run.run_id in listed.stdout


def test_never_ticks_is_stalled(tmp_path: Path) -> None:
    proc = harness("run", "--sim", "--scenario", "never_ticks", "--deadline", "1", tmp=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "STALLED" in proc.stdout


@pytest.mark.parametrize(
    ("scenario", "code"), [("not_subscribed", "354"), ("delayed_only", "10167")]
)
def test_unusable_data_fails_naming_the_ib_code(tmp_path: Path, scenario: str, code: str) -> None:
    proc = harness("run", "--sim", "--scenario", scenario, tmp=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"IB {code}" in " ".join((proc.stdout + proc.stderr).split())


def test_delayed_data_passes_when_allowed_and_says_so(tmp_path: Path) -> None:
    proc = harness("run", "--sim", "--scenario", "delayed_only", "--allow-delayed", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DELAYED" in proc.stdout + proc.stderr


def test_live_account_is_refused(tmp_path: Path) -> None:
    proc = harness("run", "--sim", "--scenario", "live_account", "--trade", tmp=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "REFUSED" in proc.stdout


def test_unknown_contract_fails_naming_error_200(tmp_path: Path) -> None:
    proc = harness("run", "--sim", "--contract", "ZZZZ", tmp=tmp_path)
    assert proc.returncode == 1
    assert "IB 200" in " ".join(proc.stdout.split())


def test_trade_round_trip_costs_money_and_ends_flat(tmp_path: Path) -> None:
    proc = harness("run", "--sim", "--trade", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        run = st.runs().iloc[0]
        assert run.total_cost > 0
        trades = st.trades(run.run_id)
        assert list(trades["side"]) == ["BOT", "SLD"]
        assert trades["commission"].notna().all() and (trades["commission"] > 0).all()
        ledger = st.costs()
        assert len(ledger) == 1 and ledger.iloc[0].net_position == 0
    costs = harness("costs", tmp=tmp_path)
    assert costs.returncode == 0 and "1 test trade" in costs.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--port", "abc"], "--port"),
        (["run", "--sim", "--contract", "FUT:XX:1"], "contract"),
        (["run", "--sim", "--scenario", "nope"], "scenario"),
        (["run", "--deadline", "-1"], "deadline"),
        (["run", "--bogus"], "--bogus"),
        (["nocommand"], "nocommand"),
        (["costs", "--since", "forever"], "--since"),
    ],
)
def test_bad_flags_exit_4_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = harness(*args, tmp=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    no_traceback(proc)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_bad_config_file_and_env_exit_4(tmp_path: Path) -> None:
    (tmp_path / "harness.toml").write_text('contract = "AAPL"\nport = "x"\n')
    proc = harness("run", tmp=tmp_path)
    assert proc.returncode == 4 and "port" in proc.stderr and "harness.toml" in proc.stderr
    no_traceback(proc)
    (tmp_path / "harness.toml").write_text("tick_dedline = 3\n")
    proc = harness("run", tmp=tmp_path)
    assert proc.returncode == 4 and "tick_deadline" in proc.stderr
    (tmp_path / "harness.toml").unlink()
    proc = harness("run", "--sim", tmp=tmp_path, env={"HARNESS_MARKET_DATA_TYPE": "9"})
    assert proc.returncode == 4 and "HARNESS_MARKET_DATA_TYPE" in proc.stderr


def test_no_gateway_listening_exits_4_quickly_and_suggests_sim(tmp_path: Path) -> None:
    port = free_port()
    t0 = time.monotonic()
    proc = harness("run", "--port", str(port), tmp=tmp_path, env={"HARNESS_CONNECT_TIMEOUT": "4"})
    elapsed = time.monotonic() - t0
    assert proc.returncode == 4
    assert f"127.0.0.1:{port}" in proc.stderr and "--sim" in proc.stderr
    # The whole process (interpreter start included) ends well inside the connect timeout.
    assert elapsed < 4 + 3
    no_traceback(proc)


def test_default_ports_are_tried_and_never_fall_back_to_the_simulator(tmp_path: Path) -> None:
    proc = harness("run", tmp=tmp_path, env={"HARNESS_HOST": "127.0.0.2"})
    assert proc.returncode == 4
    assert "127.0.0.2:4002" in proc.stderr and "127.0.0.2:7497" in proc.stderr
    assert "SIMULATOR" not in proc.stdout
