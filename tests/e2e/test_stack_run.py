"""``harness run --trade`` with a stack declared, end to end, all real processes.

``harness sim`` (subprocess), a tiny real stack (tests/stack_app.py under uvicorn,
connected to the simulator with ib_async like a user's dashboard) and ``harness run``
(subprocess). A stack that echoes the gateway passes; one that shows null fails the
quotes check; one that is down fails naming the cause; one that emits garbage fails the
stream check while the run keeps going. The bearer token must appear nowhere: not in
the store file, the JSON report, the console or the notification a loopback server got.

The fixtures (``sim_port``, ``stack``) are meant for the later e2e matrix against
examples/dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from harness_lib.report import SCHEMA
from harness_lib.store import Store
from tests.e2e.test_cli_run import harness, no_traceback
from tests.loopback import Server, stop_process
from tests.stack_app import start_sim_process, start_stack_process

pytestmark = pytest.mark.slow

TOKEN = "not-a-real-token-0123456789"
# Short by design: the correct stack passes at once; the wrong ones wait out these.
FAST = ["--deadline", "3"]


@pytest.fixture
def sim_port() -> Iterator[int]:
    """``harness sim --port 0`` as a subprocess; yields its port."""
    proc, port = start_sim_process()
    try:
        yield port
    finally:
        stop_process(proc)


@pytest.fixture
def stack(sim_port: int) -> Iterator[Callable[..., int]]:
    """Start the tiny stack against the simulator: ``port = stack(null_quotes=True)``."""
    procs: list[subprocess.Popen[str]] = []

    def start(**kw: object) -> int:
        proc, port = start_stack_process(sim_port, **kw)  # type: ignore[arg-type]
        procs.append(proc)
        return port

    try:
        yield start
    finally:
        for p in procs:
            stop_process(p)


BROWSER_FACTS = """
[stack.quote]
select = "#quote-{symbol}"
bid = ".bid"
ask = ".ask"
last = ".last"
mode = ".mode@data-mode"

[stack.position]
select = '.position-card[data-symbol="{symbol}"]'
quantity = ".qty"

[stack.trades]
ids = '.last-trade[data-symbol="{symbol}"] span'
"""


def stack_file(tmp: Path, port: int, *, kind: str = "sse", token: str | None = TOKEN) -> Path:
    """A --stack-file declaring one endpoint of the tiny stack with every fact."""
    if kind == "browser":
        f = tmp / "stack.toml"
        f.write_text(
            f'[[stack]]\nname = "tiny-browser"\nkind = "browser"\n'
            f'url = "http://127.0.0.1:{port}/"\n{BROWSER_FACTS}'
        )
        return f
    path = {"sse": "/events", "websocket": "/ws", "http": "/api/state"}[kind]
    scheme = "ws" if kind == "websocket" else "http"
    headers = f'headers = {{ Authorization = "Bearer {token}" }}\n' if token else ""
    f = tmp / "stack.toml"
    f.write_text(
        f"""[[stack]]
name = "tiny-{kind}"
kind = "{kind}"
url = "{scheme}://127.0.0.1:{port}{path}"
{headers}
[stack.quote]
select = 'quotes."{{symbol}}"'
bid = "bid"
ask = "ask"
last = "last"
mode = "mode"
live = ["live"]

[stack.position]
scope = "positions"
select = "[?symbol == '{{symbol}}'] | [0]"
quantity = "qty"

[stack.trades]
ids = 'last_trade."{{symbol}}".[execId, permId]'
"""
    )
    return f


def run(tmp: Path, sim_port: int, sfile: Path, *extra: str, timeout: float = 90):
    return harness(
        "run", "--port", str(sim_port), "--trade", "--stack-file", str(sfile),
        "--json", str(tmp / "r.json"), "--junit", str(tmp / "r.xml"), *extra,
        tmp=tmp, timeout=timeout,
    )  # fmt: skip


def stack_checks(tmp: Path) -> dict[str, dict]:
    report = json.loads((tmp / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    [phase] = [p for p in report["phases"] if p["phase"] == "stack"]
    return {c["name"]: c for c in phase["evidence"]["checks"]}


def test_correct_stack_passes_and_the_token_leaks_nowhere(
    tmp_path: Path, sim_port: int, stack: Callable[..., int], http_server: Server
) -> None:
    port = stack(token=TOKEN)
    hook = f"json://127.0.0.1:{http_server.port}/hook"
    proc = run(tmp_path, sim_port, stack_file(tmp_path, port), "--notify", hook,
               "--notify-on", "always")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = stack_checks(tmp_path)
    assert set(checks) == {"stream", "quotes", "position_opened", "trade_id", "position_cleared"}
    assert all(c["verdict"] == "PASS" for c in checks.values()), checks
    for name in ("quotes", "position_opened", "trade_id", "position_cleared"):
        assert checks[name]["latency_s"] is not None
        assert -1.0 < checks[name]["latency_s"] < 3.0
    assert "after the gateway reported the entry fill" in checks["position_opened"]["reason"]
    report = json.loads((tmp_path / "r.json").read_text())
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        obs = st.stack_observations(report["run_id"])
        stored_checks = st.stack_checks(report["run_id"])
        cps = set(st.checkpoints(report["run_id"])["name"])
    assert len(obs) > 5 and obs["has_quote"].any() and obs["error"].isna().all()
    assert set(stored_checks["name"]) == set(checks)
    assert "tiny-sse.position_cleared" in cps and "stack_settled" in cps
    cases = [c.get("name") for c in ET.parse(tmp_path / "r.xml").getroot().iter("testcase")]
    assert "stack.tiny-sse.trade_id" in cases
    [msg] = [json.loads(r.body) for r in http_server.requests if r.path == "/hook"]
    # The leak test: the token is in none of what the harness wrote or sent.
    store_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("h.sqlite*"))
    assert store_bytes and TOKEN.encode() not in store_bytes
    for text in (
        (tmp_path / "r.json").read_text(),
        (tmp_path / "r.xml").read_text(),
        json.dumps(msg),
        proc.stdout,
        proc.stderr,
        *(p.read_text() for p in (tmp_path / "data" / "reports").glob("*.json")),
    ):
        assert TOKEN not in text


@pytest.mark.browser
def test_correct_stack_passes_in_the_browser(
    tmp_path: Path, sim_port: int, stack: Callable[..., int]
) -> None:
    if not Path("/usr/bin/chromium").exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set but /usr/bin/chromium is missing: apt-get install chromium")
        pytest.skip("/usr/bin/chromium not found (apt-get install chromium)")
    port = stack()
    proc = run(tmp_path, sim_port, stack_file(tmp_path, port, kind="browser"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = stack_checks(tmp_path)
    assert all(c["verdict"] == "PASS" for c in checks.values()), checks
    assert "showed the AAPL position +1" in checks["position_opened"]["reason"]


def test_null_quotes_fail_the_quotes_check_and_the_notification_names_it(
    tmp_path: Path, sim_port: int, stack: Callable[..., int], http_server: Server
) -> None:
    port = stack(null_quotes=True)
    hook = f"json://127.0.0.1:{http_server.port}/hook"
    proc = run(tmp_path, sim_port, stack_file(tmp_path, port, token=None), *FAST,
               "--notify", hook)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = stack_checks(tmp_path)
    assert checks["quotes"]["verdict"] == "FAIL"
    assert "tiny-sse quotes check failed: showed bid null, ask null" in checks["quotes"]["reason"]
    assert checks["position_opened"]["verdict"] == "PASS"  # the broker path and the rest are fine
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["reason"].startswith("stack: tiny-sse quotes check failed")
    assert {p["phase"]: p["verdict"] for p in report["phases"]}["round_trip"] == "PASS"
    [msg] = [json.loads(r.body) for r in http_server.requests if r.path == "/hook"]
    assert "Failed stack check(s): tiny-sse.quotes (FAIL)" in msg["message"]
    no_traceback(proc)


def test_endpoint_down_is_a_fail_naming_endpoint_and_cause(
    tmp_path: Path, sim_port: int, dead_port: int
) -> None:
    proc = run(tmp_path, sim_port, stack_file(tmp_path, dead_port, kind="websocket"), *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    checks = stack_checks(tmp_path)
    assert checks["stream"]["verdict"] == "FAIL"
    assert checks["stream"]["reason"] == (
        f"tiny-websocket unreachable at ws://127.0.0.1:{dead_port}/ws: connection refused"
    )
    phases = {p["phase"]: p["verdict"] for p in json.loads((tmp_path / "r.json").read_text())[
        "phases"]}  # fmt: skip
    assert phases["cleanup"] == "PASS" and phases["round_trip"] == "PASS"
    no_traceback(proc)


def test_garbage_is_a_clear_fail_and_the_run_keeps_going(
    tmp_path: Path, sim_port: int, stack: Callable[..., int]
) -> None:
    port = stack(garbage_every=3)
    proc = run(tmp_path, sim_port, stack_file(tmp_path, port, token=None), *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    no_traceback(proc)
    checks = stack_checks(tmp_path)
    stream = checks["stream"]
    assert stream["verdict"] == "FAIL"
    assert stream["reason"].startswith("tiny-sse emitted ")
    assert "invalid message(s)" in stream["reason"] and "not JSON" in stream["reason"]
    # The run kept going: the good messages in between still count, the broker path passed.
    assert checks["quotes"]["verdict"] == "PASS"
    assert checks["position_cleared"]["verdict"] == "PASS"
    report = json.loads((tmp_path / "r.json").read_text())
    phases = {p["phase"]: p["verdict"] for p in report["phases"]}
    assert phases["round_trip"] == "PASS" and phases["cleanup"] == "PASS"
    assert report["reason"].startswith("stack: tiny-sse emitted")
