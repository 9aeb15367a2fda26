"""The notebooks, run headless against the simulator: in-process through ``app.run`` (to
assert on their definitions and outputs) and as scripts (to assert on exit codes)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from harness_lib import charts
from harness_lib.config import HarnessConfig, load_config
from harness_lib.live import LIVE_CLIENT_ID
from harness_lib.live.feed import get_feed
from harness_lib.models import RunReport, Verdict
from harness_lib.notebook import notebook_args, postmortem_args, script_argv
from harness_lib.postmortem import (
    PostmortemError,
    cost_totals,
    export_html,
    filter_runs,
    open_store,
    session_errors,
)
from harness_lib.runner import run_harness
from tests.loopback import stop_process
from tests.stack_app import start_sim_process, start_stack_process

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SCRIPT_TIMEOUT = 120


def load(name: str) -> ModuleType:
    """Import a notebook file as a module (its ``app`` and setup imports)."""
    spec = importlib.util.spec_from_file_location(f"nb_{name}", NOTEBOOKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_app(name: str, args: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``app.run`` with the args cell overridden (no sys.exit at the end)."""
    args.exit_at_end = False
    outputs, defs = load(name).app.run(defs={"args": args})
    return outputs, dict(defs)


def html_of(outputs: tuple[Any, ...]) -> str:
    return "\n".join(str(getattr(o, "text", "")) for o in outputs if o is not None)


def start_script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python notebooks/<name>.py -- ARGS``, as a user or a scheduler would run it."""
    return subprocess.Popen(
        [sys.executable, str(NOTEBOOKS / f"{name}.py"), "--", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(autouse=True)
def stop_feed() -> Iterator[None]:
    """Notebooks run in-process share the process-wide feed; stop it after each test."""
    yield
    get_feed().stop()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No harness.toml from the checkout, reports under tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with three real simulator runs: a pass, a stall and a round trip."""
    tmp = tmp_path_factory.mktemp("history")
    store = tmp / "harness.sqlite"

    async def record() -> dict[str, RunReport]:
        runs = {}
        for label, scenario, trade in (
            ("pass", "healthy", False),
            ("stalled", "never_ticks", False),
            ("trade", "healthy", True),
        ):
            cfg = HarnessConfig(sim=True, scenario=scenario, trade=trade, store=store,
                                reports_dir=tmp / "reports", tick_deadline=0.5,
                                observe_seconds=0.2)  # fmt: skip
            runs[label] = await run_harness(cfg)
        return runs

    reports = asyncio.run(record())
    assert [r.verdict for r in reports.values()] == [Verdict.PASS, Verdict.STALLED, Verdict.PASS]
    return {"store": store, **{k: r.run_id for k, r in reports.items()}}


@pytest.fixture(scope="module")
def scripts(history: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each notebook run as a script, all three at once: most of their time is importing
    marimo, pandas and altair, which overlaps well."""
    tmp = tmp_path_factory.mktemp("scripts")
    procs = {
        "live_ticks": start_script("live_ticks", "--sim", "--scenario", "never_ticks",
                                   "--seconds", "0.5"),
        "round_trip": start_script("round_trip", "--sim", "--yes", "--store",
                                   str(tmp / "h.sqlite"),
                                   env={"HARNESS_REPORTS_DIR": str(tmp / "reports")}),
        "postmortem": start_script("postmortem", "--run", history["stalled"], "--store",
                                   str(history["store"])),
    }  # fmt: skip
    done = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
            done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


# ------------------------------------------------------------------------- live_ticks


def test_live_ticks_fills_in_bid_and_ask() -> None:
    args = notebook_args("live_ticks", ["--sim", "--seconds", "1.5"])
    outputs, defs = run_app("live_ticks", args)
    snap = defs["snap"]
    assert math.isfinite(snap.quote["bid"]) and math.isfinite(snap.quote["ask"])
    assert snap.first_seconds["bid"] is not None and snap.first_seconds["bid"] < 1.0
    assert snap.first_seconds["ask"] is not None
    assert snap.tick_count > 5
    assert defs["exit_code"] == 0
    page = html_of(outputs)
    row = re.search(r"<td[^>]*>bid</td>\s*<td[^>]*>([^<]+)</td>", page)
    assert row is not None and float(row.group(1)) > 0
    assert "Farm notices" in page and "2104" in page
    # No cell shows a stray return value (such as connect()'s future).
    assert not [o for o in outputs if o is not None and not hasattr(o, "text")]


def test_live_ticks_says_when_nothing_ticks() -> None:
    args = notebook_args("live_ticks", ["--scenario", "never_ticks", "--seconds", "0.5"])
    _, defs = run_app("live_ticks", args)
    assert defs["snap"].verdict == Verdict.STALLED
    assert "first tick" in defs["snap"].reason
    assert math.isnan(defs["snap"].quote["bid"])
    assert defs["exit_code"] == Verdict.STALLED.exit_code


def test_live_ticks_script_exits_with_the_verdict_code(scripts: dict[str, Any]) -> None:
    proc = scripts["live_ticks"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "verdict:  STALLED" in proc.stdout
    assert "bid      nan" in proc.stdout


# ------------------------------------------------------------------------- round_trip


def test_round_trip_places_confirms_and_reads_back_the_run(isolated: Path) -> None:
    store = isolated / "h.sqlite"
    args = notebook_args("round_trip", ["--sim", "--yes", "--store", str(store)])
    outputs, defs = run_app("round_trip", args)
    assert not [o for o in outputs if o is not None and not hasattr(o, "text")]
    report = defs["report"]
    assert report is not None and report.verdict == Verdict.PASS, report and report.reason
    assert defs["exit_code"] == 0
    steps = list(defs["lifecycle"]["name"])
    for step in ("entry_submitted", "entry_filled", "entry_execution", "entry_commission",
                 "exit_submitted", "exit_filled", "exit_execution", "exit_commission", "flat",
                 "verified"):  # fmt: skip
        assert step in steps
    assert steps.index("entry_submitted") < steps.index("exit_submitted") < steps.index("flat")
    fills = defs["fills"]
    assert list(fills["side"]) == ["BOT", "SLD"]
    costs = defs["costs"].set_index("item")["amount"]
    assert costs["commission"] > 0
    assert costs["total cost"] == pytest.approx(costs["commission"] + costs["slippage"])


def test_round_trip_without_confirmation_sends_nothing(isolated: Path) -> None:
    args = notebook_args("round_trip", ["--sim", "--store", str(isolated / "h.sqlite")])
    _, defs = run_app("round_trip", args)
    assert defs["check"].paper and defs["allowed"]
    assert defs["report"] is None
    assert defs["exit_code"] == Verdict.REFUSED.exit_code
    sim = get_feed().sim
    assert sim is not None and sim.truth.orders == []


def test_round_trip_is_disabled_on_a_live_account(isolated: Path) -> None:
    store = isolated / "h.sqlite"
    args = notebook_args("round_trip", ["--sim", "--scenario", "live_account", "--yes",
                                        "--store", str(store)])  # fmt: skip
    _, defs = run_app("round_trip", args)
    assert not defs["allowed"]
    assert "data-disabled='true'" in defs["run_button"].text
    assert defs["report"] is None
    assert defs["exit_code"] == Verdict.REFUSED.exit_code
    sim = get_feed().sim
    assert sim is not None and sim.truth.orders == []


def test_round_trip_script_trades_with_yes(scripts: dict[str, Any]) -> None:
    proc = scripts["round_trip"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round_trip PASS" in proc.stdout
    assert "total cost:" in proc.stdout


# ------------------------------------------------------------------------- postmortem


def test_postmortem_shows_history_and_drills_into_a_run(history: dict[str, Any]) -> None:
    args = postmortem_args(["--run", history["trade"], "--store", str(history["store"])])
    outputs, defs = run_app("postmortem", args)
    assert len(defs["filtered"]) == 3
    assert defs["run"]["verdict"] == "PASS"
    assert defs["exit_code"] == 0
    assert set(defs["costs"]["run_id"]) == {history["trade"]}
    assert {"subscribed", "entry_filled", "verified"} <= set(defs["checkpoints"]["name"])
    page = html_of(outputs)
    assert history["trade"] in page


def test_postmortem_reports_a_stalled_run_with_its_code(history: dict[str, Any]) -> None:
    args = postmortem_args(["--run", history["stalled"], "--store", str(history["store"])])
    _, defs = run_app("postmortem", args)
    assert defs["run"]["verdict"] == "STALLED"
    assert defs["exit_code"] == Verdict.STALLED.exit_code


def test_history_filters_by_date_target_contract_and_verdict(history: dict[str, Any]) -> None:
    store, _ = open_store(history["store"])
    assert store is not None
    try:
        runs = store.runs()
        today = runs["started_at"].iloc[0].date()
        assert len(filter_runs(runs, start=today, end=today)) == 3
        assert filter_runs(runs, end=today - timedelta(days=1)).empty
        assert set(filter_runs(runs, verdicts=["stalled"])["run_id"]) == {history["stalled"]}
        assert len(filter_runs(runs, contracts=["AAPL"], verdicts=["PASS"])) == 2
        assert filter_runs(runs, targets=["gateway 127.0.0.1:4002"]).empty
        totals = cost_totals(store.costs())
        assert list(totals["currency"]) == ["USD"] and int(totals["trades"].iloc[0]) == 1
    finally:
        store.close()


def test_postmortem_says_so_when_there_is_no_store(tmp_path: Path) -> None:
    args = postmortem_args(["--store", str(tmp_path / "missing.sqlite")])
    outputs, defs = run_app("postmortem", args)
    assert defs["store"] is None and defs["runs"].empty
    assert "No harness store" in html_of(outputs)
    assert defs["exit_code"] == Verdict.BAD_INPUT.exit_code


def test_postmortem_script_prints_the_run(history: dict[str, Any], scripts: dict[str, Any]) -> None:
    proc = scripts["postmortem"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"run:      {history['stalled']}" in proc.stdout
    assert "ticks      STALLED" in proc.stdout


def test_postmortem_exports_to_html_without_cell_errors(
    history: dict[str, Any], tmp_path: Path
) -> None:
    out = export_html(history["trade"], tmp_path / "report.html", history["store"])
    page = out.read_text(encoding="utf-8")
    assert session_errors(page) == []
    assert history["trade"] in page
    assert "application/vnd.vegalite" in page  # the charts were rendered into the page


def test_exporting_an_unknown_run_fails_in_one_line(
    history: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(PostmortemError, match="no run 'nope'") as err:
        export_html("nope", tmp_path / "r.html", history["store"])
    assert "\n" not in str(err.value)
    with pytest.raises(PostmortemError, match="no harness store"):
        export_html(None, tmp_path / "r.html", tmp_path / "missing.sqlite")


def test_session_errors_finds_cell_errors_and_chart_tracebacks() -> None:
    page = (
        '<script>window.x = {"session": {"cells": ['
        '{"id": "ok", "outputs": [{"type": "data", "data": {"text/plain": ""}}], "console": []},'
        '{"id": "boom", "outputs": [{"type": "error", "ename": "exception", '
        '"evalue": "division by zero"}], "console": []},'
        '{"id": "chart", "outputs": [], "console": [{"mimetype": '
        '"application/vnd.marimo+traceback", "text": "<pre>MaxRowsError: too many</pre>"}]}'
        "]}}</script>"
    )
    assert session_errors(page) == [
        "cell boom: division by zero",
        "cell chart: traceback: MaxRowsError: too many",
    ]
    with pytest.raises(PostmortemError, match="no embedded marimo session"):
        session_errors("<html></html>")


# ------------------------------------------------------------------------- all notebooks


def test_marimo_check_is_clean() -> None:
    notebooks = sorted(str(p) for p in NOTEBOOKS.glob("*.py"))
    assert len(notebooks) >= 3
    proc = subprocess.run(
        [sys.executable, "-m", "marimo", "check", *notebooks],
        capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "issue" not in (proc.stdout + proc.stderr).lower()


def test_notebook_arguments() -> None:
    assert script_argv(["--", "--sim"]) == ["--sim"]
    assert script_argv(["--sim"]) == ["--sim"]
    args = notebook_args("live_ticks", [])
    assert not args.gateway and args.cfg.scenario == "healthy" and args.exit_at_end
    assert notebook_args("round_trip", ["--port", "4002"]).gateway
    # Bad input is exit 4, never argparse's 2 (which would read as STALLED).
    # The setting flags are the ones `harness run` has, checked by the same declaration.
    args = notebook_args("round_trip", ["--port", "4002", "--deadline", "2.5", "--client-id", "7"])
    assert (args.cfg.port, args.cfg.tick_deadline, args.cfg.client_id) == (4002, 2.5, 7)
    assert notebook_args("live_ticks", []).cfg.client_id == LIVE_CLIENT_ID
    for bad in (["--nope"], ["--sim", "--port", "4002"], ["--scenario", "nope"],
                ["--port", "abc"], ["--deadline", "-1"], ["--contract", "FUT:"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            notebook_args("live_ticks", bad)
        assert exc.value.code == 4


# ----------------------------------------------------------------- with the user's stack


def _stack_toml(name: str, kind: str, port: int, *, trade_facts: bool) -> str:
    path = {"sse": "/events", "http": "/api/state"}[kind]
    text = f"""[[stack]]
name = "{name}"
kind = "{kind}"
url = "http://127.0.0.1:{port}{path}"
position_deadline = 3.0
hold = 1.0

[stack.quote]
select = 'quotes."{{symbol}}"'
bid = "bid"
ask = "ask"
last = "last"
mode = "mode"
"""
    if trade_facts:
        text += """
[stack.position]
scope = "positions"
select = "[?symbol == '{symbol}'] | [0]"
quantity = "qty"

[stack.trades]
ids = 'last_trade."{symbol}".[execId, permId]'
"""
    return text


@pytest.fixture(scope="module")
def stack_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``harness sim`` and two tiny stacks on it (tests/stack_app.py, real processes): one
    echoing the gateway, one showing null quotes. ``good`` declares the first with every
    fact; ``both`` declares both."""
    tmp = tmp_path_factory.mktemp("stack")
    sim, sim_port = start_sim_process()
    procs = [sim]
    try:
        good, good_port = start_stack_process(sim_port, client_id=41)
        procs.append(good)
        null, null_port = start_stack_process(sim_port, null_quotes=True, client_id=42)
        procs.append(null)
        good_toml = _stack_toml("tiny-sse", "sse", good_port, trade_facts=True)
        (tmp / "good.toml").write_text(good_toml)
        (tmp / "both.toml").write_text(
            good_toml + "\n" + _stack_toml("tiny-null", "http", null_port, trade_facts=False)
        )
        yield {"sim_port": sim_port, "good": tmp / "good.toml", "both": tmp / "both.toml",
               "tmp": tmp}  # fmt: skip
    finally:
        for p in procs:
            stop_process(p)


@pytest.fixture(scope="module")
def stack_history(stack_target: dict[str, Any]) -> dict[str, Any]:
    """A store with one real ``--trade`` run watching both stacks: the null one fails."""
    store = stack_target["tmp"] / "stack-history.sqlite"
    cfg = load_config(
        {"port": stack_target["sim_port"], "trade": True, "stack": stack_target["both"],
         "store": store, "tick_deadline": 3.0},
        env={"HARNESS_REPORTS_DIR": str(stack_target["tmp"] / "reports")},
        config_path=None,
    )  # fmt: skip
    report = asyncio.run(run_harness(cfg))
    assert report.verdict == Verdict.FAIL, report.reason
    return {"store": store, "run": report.run_id}


def test_live_ticks_script_shows_each_stack_endpoint_and_fails_on_null(
    stack_target: dict[str, Any],
) -> None:
    proc = start_script("live_ticks", "--port", str(stack_target["sim_port"]), "--seconds", "5",
                        "--deadline", "3", "--stack-file", str(stack_target["both"]))  # fmt: skip
    out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == Verdict.FAIL.exit_code, out + err
    assert "verdict:  FAIL — stack: tiny-null quotes check failed" in out
    assert "stack:    tiny-sse (sse) PASS — tiny-sse showed AAPL bid" in out
    assert "stack:    tiny-null (http) FAIL" in out and "bid null" in out


def test_live_ticks_with_a_bad_stack_file_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "stack.toml"
    bad.write_text('[[stack]]\nname = "x"\nkind = "sse"\nurl = "http://127.0.0.1:1/"\n'
                   '[stack.quote]\nselect = "q"\nbid = "bid["\nask = "ask"\n')  # fmt: skip
    proc = start_script("live_ticks", "--sim", "--seconds", "0.1", "--stack-file", str(bad))
    out, err = proc.communicate(timeout=SCRIPT_TIMEOUT)
    assert proc.returncode == Verdict.BAD_INPUT.exit_code, out + err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"bad input: invalid stack[0].quote.bid from --stack-file {bad}: 'bid['")
    )
    assert "Traceback" not in err


def test_round_trip_shows_the_stack_moments_and_verdicts(
    isolated: Path, stack_target: dict[str, Any]
) -> None:
    args = notebook_args("round_trip", ["--port", str(stack_target["sim_port"]), "--yes",
                                        "--deadline", "3", "--store", str(isolated / "h.sqlite"),
                                        "--stack-file", str(stack_target["good"])])  # fmt: skip
    outputs, defs = run_app("round_trip", args)
    report = defs["report"]
    assert report is not None and report.verdict == Verdict.PASS, report and report.reason
    assert defs["exit_code"] == 0
    assert "stack" in {str(p.phase) for p in report.phases}
    # Every stack check's verdict, with the latency it measured.
    checks = defs["stack_checks"].set_index("check")
    names = ["tiny-sse.stream", "tiny-sse.quotes", "tiny-sse.position_opened",
             "tiny-sse.trade_id", "tiny-sse.position_cleared"]  # fmt: skip
    assert sorted(checks.index) == sorted(names)
    assert set(checks["verdict"]) == {"PASS"}
    assert checks.loc[names[1:], "latency (ms)"].notna().all()
    # The stack's moments on the timeline, in their own lane, after the fill they show.
    lifecycle = defs["lifecycle"]
    lane = lifecycle[lifecycle["phase"] == "stack"]
    assert set(lane["name"]) == set(names[1:])
    order = list(lifecycle["name"])
    assert order.index("entry_execution") < order.index("tiny-sse.position_opened")
    assert order.index("exit_execution") < order.index("tiny-sse.position_cleared")
    assert "tiny-sse.position_opened" in html_of(outputs)


def test_postmortem_charts_stack_latency_and_lists_failed_stack_checks(
    stack_history: dict[str, Any], tmp_path: Path
) -> None:
    args = postmortem_args(["--run", stack_history["run"], "--store", str(stack_history["store"])])
    outputs, defs = run_app("postmortem", args)
    assert defs["exit_code"] == Verdict.FAIL.exit_code
    failed = defs["failed_stack"]
    assert list(failed["check"]) == ["tiny-null.quotes"]
    assert failed["verdict"].iloc[0] == "FAIL" and "null" in failed["reason"].iloc[0]
    latency = charts.stack_latency_frame(defs["stack_checks"])
    assert "tiny-sse.quotes" in set(latency["check"]) and "tiny-sse.trade_id" in set(
        latency["check"]
    )
    run_checks = defs["run_stack_checks"].set_index("check")["verdict"]
    assert run_checks["tiny-null.quotes"] == "FAIL" and run_checks["tiny-sse.quotes"] == "PASS"
    assert "tiny-null.quotes" in html_of(outputs)
    # The export renders the new chart and table without a cell error.
    out = export_html(stack_history["run"], tmp_path / "report.html", stack_history["store"])
    page = out.read_text(encoding="utf-8")
    assert session_errors(page) == []
    assert "Broker → stack latency" in page or "Broker \\u2192 stack latency" in page
