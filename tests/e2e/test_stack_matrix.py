"""Issue 10's matrix: every endpoint kind × the reference dashboard fixed and with each bug.

All real processes: ``harness sim``, the dashboard under uvicorn (``python -m
examples.dashboard --bug MODE``) and ``harness run --port P --trade --stack-file F`` as in
the README, where F is ``examples/dashboard/harness.toml`` pointed at the dashboard's port.
One run per mode watches all four kinds at once (sse, websocket, http, and the page in
chromium); each (mode, kind) test then asserts that kind's own checks, from the JSON report,
the JUnit file, the console and the notification a loopback HTTP server received.

The fixed dashboard passes every check on every kind; each bug fails the check named for
it, and only that one, on every kind. The fixed run also pins how latency is measured: each
endpoint was watched before the entry order went out, so the harness's own start-up is
never reported as the stack's latency (stamps compared, no stopwatch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness_lib.report import SCHEMA
from harness_lib.stack.watch import CHROMIUM
from harness_lib.store import Store
from tests.e2e.test_cli_run import harness, no_traceback
from tests.loopback import Server, free_port, serve_http, stop_process
from tests.stack_app import start_sim_process

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
DECLARATION = ROOT / "examples" / "dashboard" / "harness.toml"
DOCUMENTED = "127.0.0.1:8765"
"""The dashboard address the example declaration names (README: Example)."""
KINDS = {"sse": "dash-sse", "websocket": "dash-ws", "http": "dash-http", "browser": "dash-page"}
MODES = ["fixed", "no-wait", "nan-to-null", "stale-card", "stale-trade-id"]
CAUGHT_BY = {
    "no-wait": "quotes",
    "nan-to-null": "quotes",
    "stale-card": "position_cleared",
    "stale-trade-id": "trade_id",
}
"""The check each bug must fail (issue 10: failures 1-4)."""
ALL_CHECKS = {"stream", "quotes", "position_opened", "trade_id", "position_cleared"}
START_TIMEOUT = 30.0


def _chromium_usable() -> bool:
    """Whether the browser kind can run here; in CI a missing chromium is a failure."""
    if CHROMIUM.exists():
        return True
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {CHROMIUM} is missing: apt-get install chromium")
    return False


def _start_dashboard(ib_port: int, mode: str) -> tuple[subprocess.Popen[str], int]:
    """``python -m examples.dashboard`` as the README runs it; waits until it serves."""
    port = free_port()
    cmd = [sys.executable, "-m", "examples.dashboard", "--ib-port", str(ib_port),
           "--port", str(port)]  # fmt: skip
    if mode != "fixed":
        cmd += ["--bug", mode]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"dashboard --bug {mode} exited {proc.returncode}: {out[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2):
                return proc, port
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    stop_process(proc)
    pytest.fail(f"dashboard --bug {mode} did not serve within {START_TIMEOUT:g} s")


def declaration_for(port: int, dest: Path, *, browser: bool) -> Path:
    """The example declaration, unchanged but for the dashboard's port (and without the
    page endpoint when chromium is missing outside CI)."""
    text = DECLARATION.read_text()
    assert text.count(DOCUMENTED) == 4, "the example declares four endpoints on :8765"
    text = text.replace(DOCUMENTED, f"127.0.0.1:{port}")
    if not browser:
        text = text[: text.index('[[stack]]\nname = "dash-page"')]
    dest.write_text(text)
    return dest


@dataclass
class MatrixRun:
    """One ``harness run`` against one dashboard mode, and everything it wrote or sent."""

    mode: str
    proc: subprocess.CompletedProcess[str]
    report: dict[str, Any]
    junit: ET.Element
    store: Path
    notification: dict[str, Any]
    browser: bool

    @property
    def checks(self) -> dict[str, dict[str, dict[str, Any]]]:
        """endpoint -> check name -> the check as in the JSON report."""
        [stack] = [p for p in self.report["phases"] if p["phase"] == "stack"]
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for c in stack["evidence"]["checks"]:
            out.setdefault(c["endpoint"], {})[c["name"]] = c
        return out

    @property
    def summary_line(self) -> str:
        """The console summary's final line: ``Run <id>: <reason>``."""
        lines = [ln for ln in self.proc.stdout.splitlines() if ln.startswith("Run ")]
        assert lines, self.proc.stdout
        return lines[-1]

    def console_fact(self, prefix: str) -> str:
        """A line of the console summary, by its label."""
        found = [ln for ln in self.proc.stdout.splitlines() if ln.startswith(prefix)]
        assert found, f"no {prefix!r} line in: {self.proc.stdout}"
        return found[-1]


@pytest.fixture(scope="module")
def hook() -> Iterator[Server]:
    """A real loopback HTTP server that receives every run's notification."""
    yield from serve_http()


@pytest.fixture(scope="module")
def matrix(
    tmp_path_factory: pytest.TempPathFactory, hook: Server
) -> Iterator[Callable[[str], MatrixRun]]:
    """``matrix(mode)``: the run for that mode, made once (all four kinds at once)."""
    done: dict[str, MatrixRun] = {}
    browser = _chromium_usable()

    def get(mode: str) -> MatrixRun:
        if mode in done:
            return done[mode]
        tmp = tmp_path_factory.mktemp(mode)
        sim, sim_port = start_sim_process()
        try:
            dash, dash_port = _start_dashboard(sim_port, mode)
            try:
                sfile = declaration_for(dash_port, tmp / "stack.toml", browser=browser)
                before = len(hook.requests)
                proc = harness(
                    "run", "--port", str(sim_port), "--trade", "--stack-file", str(sfile),
                    "--json", str(tmp / "r.json"), "--junit", str(tmp / "r.xml"),
                    "--notify", f"json://127.0.0.1:{hook.port}/hook", "--notify-on", "always",
                    tmp=tmp, timeout=150,
                )  # fmt: skip
            finally:
                stop_process(dash)
        finally:
            stop_process(sim)
        no_traceback(proc)
        report = json.loads((tmp / "r.json").read_text())
        jsonschema.validate(report, SCHEMA)
        msgs = [json.loads(r.body) for r in hook.requests[before:] if r.path == "/hook"]
        assert len(msgs) == 1, f"one notification per run, got {len(msgs)}"
        done[mode] = MatrixRun(mode, proc, report, ET.parse(tmp / "r.xml").getroot(),
                               tmp / "h.sqlite", msgs[0], browser)  # fmt: skip
        return done[mode]

    yield get


def _endpoint(run: MatrixRun, kind: str) -> str:
    if kind == "browser" and not run.browser:
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium); CI=1 makes this a failure")
    return KINDS[kind]


def _junit_cases(root: ET.Element, endpoint: str) -> dict[str, ET.Element]:
    prefix = f"stack.{endpoint}."
    return {
        c.get("name", "")[len(prefix) :]: c
        for c in root.iter("testcase")
        if c.get("name", "").startswith(prefix)
    }


def _simulator_labelled(run: MatrixRun) -> None:
    """A simulator reached on a plain --port is still SIMULATOR, everywhere."""
    assert run.report["target"]["simulated"] is True
    assert run.report["target"]["label"].startswith("SIMULATOR")
    assert "SIMULATOR" in run.proc.stdout.splitlines()[0]
    assert "SIMULATOR" in json.dumps(run.notification)


@pytest.mark.parametrize("kind", list(KINDS))
def test_fixed_dashboard_passes_every_check(matrix: Callable[[str], MatrixRun], kind: str) -> None:
    run = matrix("fixed")
    ep = _endpoint(run, kind)
    assert run.proc.returncode == 0, run.proc.stdout + run.proc.stderr
    checks = run.checks[ep]
    assert set(checks) == ALL_CHECKS
    assert {n: c["verdict"] for n, c in checks.items()} == dict.fromkeys(ALL_CHECKS, "PASS")
    for name in ALL_CHECKS - {"stream"}:
        assert checks[name]["latency_s"] is not None, name
    assert "after the gateway reported the entry fill" in checks["position_opened"]["reason"]
    assert "kept it for 3 s" in checks["position_cleared"]["reason"]
    # Every kind in every output: JUnit one passing case per check, the console's verdict.
    cases = _junit_cases(run.junit, ep)
    assert set(cases) == ALL_CHECKS
    bad = [
        n for n, c in cases.items() if c.find("failure") is not None or c.find("error") is not None
    ]
    assert not bad, "no failure/error element"
    assert run.summary_line == f"Run {run.report['run_id']}: all requested phases passed"
    stack_row = run.console_fact("  ✅ PASS      stack")
    assert f"{ep}.position_opened" in stack_row
    title, message = run.notification["title"], run.notification["message"]
    assert title.startswith("✅ livefire PASSED") and "Failed stack" not in message
    n = 5 * (4 if run.browser else 3)
    assert f"Stack: {n} check(s) on {n // 5} endpoint(s) passed" in message
    assert f"{ep}.position_opened " in message, "each check's latency is in the message"
    _simulator_labelled(run)


def test_fixed_run_watched_every_endpoint_before_the_entry(
    matrix: Callable[[str], MatrixRun],
) -> None:
    """The latency anchor: each endpoint was connected and read before the entry order, so
    position_opened is the stack's time to show the fill, not the harness's start-up
    (chromium's launch alone was reported as ~1 s of "latency"). Stamps, not stopwatches."""
    run = matrix("fixed")
    rid = run.report["run_id"]
    with Store(run.store, readonly=True) as st:
        cps = st.checkpoints(rid).set_index("name")["t_wall"]
        obs = st.stack_observations(rid)
    assert cps["stack_ready"] <= cps["entry_submitted"] < cps["entry_filled"]
    ready = next(r for r in run.report["phases"] if r["phase"] == "round_trip")
    assert any(
        c["name"] == "stack_ready" and c["detail"] == "every stack endpoint watching"
        for c in ready["checkpoints"]
    ), ready["checkpoints"]
    firsts = obs.groupby("endpoint")["t_wall"].min()
    expected = {v for k, v in KINDS.items() if k != "browser" or run.browser}
    assert set(firsts.index) == expected
    for ep, first in firsts.items():
        assert first < cps["entry_submitted"], f"{ep} first read after the entry order"
    # The anchor is the harness's own receipt of the entry fill: the broker moment behind
    # each latency (stack moment − latency) lies between the order going out and the
    # entry_filled checkpoint, and the stack showed the position after it.
    for ep in expected:
        opened = run.checks[ep]["position_opened"]
        broker_moment = opened["at_wall"] - opened["latency_s"]
        assert cps["entry_submitted"].timestamp() <= broker_moment, ep
        assert broker_moment <= cps["entry_filled"].timestamp(), ep
        assert opened["latency_s"] >= 0, f"{ep} showed the fill before the gateway sent it"


@pytest.mark.parametrize("mode", list(CAUGHT_BY))
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_bug_fails_the_check_named_for_it(
    matrix: Callable[[str], MatrixRun], mode: str, kind: str
) -> None:
    run = matrix(mode)
    ep = _endpoint(run, kind)
    check = CAUGHT_BY[mode]
    assert run.proc.returncode == 1, run.proc.stdout + run.proc.stderr
    checks = run.checks[ep]
    failed = {n: c["verdict"] for n, c in checks.items() if c["verdict"] != "PASS"}
    assert failed == {check: "FAIL"}, {n: c["reason"] for n, c in checks.items()}
    reason = checks[check]["reason"]
    assert reason.startswith(f"{ep} {check} check failed: "), reason
    if mode == "no-wait":
        assert "data mode 'snapshot_fallback'" in reason, reason
    elif mode == "nan-to-null":
        # JSON carries the null; the page renders it as its placeholder.
        shown = "bid '—', ask '—'" if kind == "browser" else "bid null, ask null"
        assert shown in reason, reason
    elif mode == "stale-card":
        assert "repainted the closed AAPL position (+1)" in reason, reason
    else:
        assert "— the entry's, the previous trade" in reason, reason
    # The broker path was fine: the dashboard is what failed.
    verdicts = {p["phase"]: p["verdict"] for p in run.report["phases"]}
    assert verdicts["round_trip"] == verdicts["cleanup"] == "PASS"
    assert verdicts["stack"] == "FAIL"
    assert run.report["reason"].startswith(f"stack: dash-sse {check} check failed")
    # Console: the final line names the check; the failed-checks line names this kind's.
    assert run.summary_line.startswith(
        f"Run {run.report['run_id']}: stack: dash-sse {check} check failed"
    ), run.summary_line
    assert f"{ep}.{check} (FAIL)" in run.console_fact("Failed stack check(s): ")
    # JUnit: this kind's case for the check fails, with the reason.
    case = _junit_cases(run.junit, ep)[check]
    failure = case.find("failure")
    assert failure is not None and reason in (failure.get("message") or "")
    # Notification: names the failed check of every kind.
    assert f"{ep}.{check} (FAIL)" in run.notification["message"]
    _simulator_labelled(run)
    assert "DO NOT TRUST THE DASHBOARD (SIMULATOR run)" in run.notification["title"]
