"""`harness drill` against the example dashboard's real process, as a user runs it.

Three real processes per mode: ``harness sim --control 0``, ``python -m examples.dashboard``
(fixed, or ``--bug double-subscribe``), and ``harness drill`` watching the dashboard's SSE,
WebSocket and HTTP endpoints (the browser endpoint is left out: chromium is covered by the
stack-check tests, and it would double these tests' time on 2 cores). One simulator and one
dashboard serve every drill of a mode in sequence; the drill runner clears the faults between
drills.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness_lib.drill import DRILLS
from tests.loopback import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
ORDER = ["farm_down", "lost_1102", "order_rejected", "partial_fill"]
"""Drills that make no correct stack resubscribe: a double subscription stays dormant."""
RESUBSCRIBING = ["lost_1101", "stale_stream", "no_ticks"]
"""Drills after which a correct stack resubscribes on the same connection (1101; its heartbeat
on a silent stream): each catches a double subscription by the duplicate rule."""

pytestmark = pytest.mark.slow


@contextmanager
def sim(*extra: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, str]]:
    """``harness sim --port 0 --control 0``: (gateway port, control URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0", "--control", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:
            if m := re.match(r"PORT=(\d+)", line):
                port = int(m.group(1))
            if m := re.match(r"CONTROL=(\S+)", line):
                assert port is not None
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                yield port, m.group(1)
                break
        else:
            pytest.fail(f"harness sim exited ({proc.wait()}) without its ports")
    finally:
        stop_process(proc)


@contextmanager
def dashboard(ib_port: int, bug: str | None = None) -> Iterator[int]:
    """The example dashboard as documented, with a short heartbeat; its HTTP port."""
    port = free_port()
    cmd = [sys.executable, "-m", "examples.dashboard", "--ib-port", str(ib_port),
           "--port", str(port), "--contract", "AAPL", "--stale-after", "1.5"]  # fmt: skip
    if bug:
        cmd += ["--bug", bug]
    proc = subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(proc.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"dashboard exited {proc.returncode}: {''.join(log)}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=2):
                    break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dashboard did not serve: {''.join(log)}")
                time.sleep(0.1)
        yield port
    finally:
        stop_process(proc)


def stack_file(tmp: Path, port: int) -> Path:
    """The example's own declaration without the browser endpoint, on the test's port."""
    text = (ROOT / "examples/dashboard/harness.toml").read_text()
    text = text.split('[[stack]]\nname = "dash-page"')[0].replace("8765", str(port))
    path = tmp / f"stack-{port}.toml"
    path.write_text(text)
    return path


def drill(
    control: str, stack: Path, tmp: Path, *names: str, extra: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``harness drill NAMES`` as a subprocess; its result and JSON report."""
    report = tmp / f"drill-{time.monotonic_ns()}.json"
    run = subprocess.run(
        [sys.executable, "-m", "harness_lib.cli", "drill", *names, "--control", control,
         "--stack-file", str(stack), "--json", str(report), "--store", str(tmp / "h.sqlite"),
         *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    doc = json.loads(report.read_text()) if report.exists() else {}
    return run, doc


def _by(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["drill"]: d for d in doc["drills"]}


def _verdicts(d: dict[str, Any], reaction: str) -> dict[str, str]:
    return {r["endpoint"]: r["verdict"] for r in d["reactions"] if r["reaction"] == reaction}


def test_fixed_dashboard_passes_every_drill(tmp_path: Path) -> None:
    """Every drill, in one session, against the correct dashboard: every reaction observed
    within its deadline, on the streaming endpoints and the polled one."""
    with sim() as (ib_port, control), dashboard(ib_port) as port:
        run, doc = drill(control, stack_file(tmp_path, port), tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert doc["verdict"] == "PASS" and doc["simulator"]["simulator"] == "livefire-sim"
    by = _by(doc)
    assert list(by) == list(DRILLS)
    for name, d in by.items():
        assert d["verdict"] == "PASS", (name, d)
        declared = {r.name for r in DRILLS[name].reactions}
        assert {r["reaction"] for r in d["reactions"]} == declared
        for r in d["reactions"]:
            assert r["verdict"] in ("PASS", "SKIPPED"), (name, r)
            if r["verdict"] == "PASS" and r["deadline_s"] is not None:
                assert 0 <= r["latency_s"] <= r["deadline_s"], (name, r)
        # The streaming endpoints judge every reaction that concerns them.
        for reaction in declared - {"reconnected", "resubscribed"}:
            assert _verdicts(d, reaction)["dash-sse"] == "PASS", (name, reaction)
    for name in RESUBSCRIBING:
        assert _verdicts(by[name], "resubscribed") == {"gateway": "PASS"}, name
    assert _verdicts(by["disconnect"], "reconnected") == {"gateway": "PASS"}
    # The heartbeat (--stale-after 1.5) is what notices a silent stream.
    stale = [r for r in by["stale_stream"]["reactions"] if r["reaction"] == "leaves_live"]
    assert all(1.0 <= r["latency_s"] <= 8 for r in stale), stale
    # ...and recovers by resubscribing, which it can only do once the silence is long enough.
    for name in ("stale_stream", "no_ticks"):
        resub = next(r for r in by[name]["reactions"] if r["reaction"] == "resubscribed")
        assert 1.0 <= resub["latency_s"] <= 8, resub
    assert "PASS" in run.stdout and "stored in" in run.stdout


def test_double_subscribe_is_caught_by_the_failover_drills(tmp_path: Path) -> None:
    """``--bug double-subscribe`` resubscribes without cancelling. Drills that make a correct
    stack resubscribe (1101, a silent stream its heartbeat recovers, a dropped connection)
    catch it by the duplicate rule; the others leave it dormant and pass, which the report
    says honestly. The dormant drills run first: once doubled, every later tick is too."""
    with sim() as (ib_port, control):
        with dashboard(ib_port, "double-subscribe") as port:
            run, doc = drill(control, stack_file(tmp_path, port), tmp_path, *ORDER)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        by = _by(doc)
        for name in ORDER:
            assert by[name]["verdict"] == "PASS", (name, by[name])
        # A fresh dashboard per resubscribing drill: each must catch the bug on its own.
        for name in RESUBSCRIBING:
            with dashboard(ib_port, "double-subscribe") as port:
                run, doc = drill(control, stack_file(tmp_path, port), tmp_path, name)
            assert run.returncode == 1, (name, run.stdout[-4000:] + run.stderr[-2000:])
            d = _by(doc)[name]
            assert d["verdict"] == "FAIL", d
            failed = {
                (r["reaction"], r["endpoint"]) for r in d["reactions"] if r["verdict"] == "FAIL"
            }
            assert failed == {("no_duplicates", "dash-sse"), ("no_duplicates", "dash-ws")}, d
            dup = next(r for r in d["reactions"] if r["reaction"] == "no_duplicates")
            assert "shown twice" in dup["detail"]
            # The bug resubscribes too (that is the mistake's trigger): seen at the gateway.
            assert _verdicts(d, "resubscribed") == {"gateway": "PASS"}, d
        # And the drop:
        with dashboard(ib_port, "double-subscribe") as port:
            run, doc = drill(control, stack_file(tmp_path, port), tmp_path, "disconnect")
        assert run.returncode == 1, run.stdout[-4000:] + run.stderr[-2000:]
        d = _by(doc)["disconnect"]
        failed = {(r["reaction"], r["endpoint"]) for r in d["reactions"] if r["verdict"] == "FAIL"}
        assert failed == {("no_duplicates", "dash-sse"), ("no_duplicates", "dash-ws")}, d
        assert _verdicts(d, "reconnected") == {"gateway": "PASS"}


class _NotASim(BaseHTTPRequestHandler):
    """Answers like some other HTTP service: JSON, but not the simulator's identity."""

    def do_GET(self) -> None:
        body = json.dumps({"name": "tws", "version": 10}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def test_refuses_a_target_that_is_not_the_simulator(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotASim)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stack = stack_file(tmp_path, free_port())
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run, doc = drill(url, stack, tmp_path, "disconnect")
    finally:
        server.shutdown()
    assert run.returncode == 3, run.stdout + run.stderr
    assert "refused" in run.stderr and "not identify as the livefire simulator" in run.stderr
    assert "Traceback" not in run.stderr and doc == {}


def test_bad_input_and_list(tmp_path: Path) -> None:
    stack = stack_file(tmp_path, free_port())
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    run, _ = drill(url, stack, tmp_path, "disconnect")
    assert run.returncode == 4 and "cannot reach the control channel" in run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    run, _ = drill(url, stack, tmp_path, "no_such_drill")
    assert run.returncode == 4 and "unknown drill 'no_such_drill'" in run.stderr
    run, _ = drill(url, stack, tmp_path, "disconnect", extra=("--deadline", "leaves_live=-1"))
    assert run.returncode == 4 and "positive number of seconds" in run.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "harness_lib.cli", "drill", "--list"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert listing.returncode == 0
    for name, d in DRILLS.items():
        assert name in listing.stdout
        for r in d.reactions:
            assert r.describe() in listing.stdout


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_control_channel_loopback_and_token(tmp_path: Path) -> None:
    """Not loopback without a token is refused at start; with a token, every request needs
    it, and `harness drill` without it is told so in one line."""
    run = subprocess.run(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0", "--control", "0",
         "--control-host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "HARNESS_CONTROL_TOKEN"},
    )  # fmt: skip
    assert run.returncode == 4 and "not loopback" in run.stderr and "--control-token" in run.stderr
    token = "drill-token-0123456789"
    with sim(env={"HARNESS_CONTROL_TOKEN": token}) as (_, control):
        status, body = _get(control + "/identity")
        assert status == 401 and "token" in body["error"]
        status, body = _get(control + "/identity", "wrong")
        assert status == 401
        status, body = _get(control + "/identity", token)
        assert status == 200 and body["simulator"] == "livefire-sim"
        run2, _ = drill(control, stack_file(tmp_path, free_port()), tmp_path, "disconnect")
        assert run2.returncode == 4 and "wants a token" in run2.stderr
