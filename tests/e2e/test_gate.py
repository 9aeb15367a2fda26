"""The daily trust gate end to end: `harness run` notifying real loopback servers."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema

from harness_lib.report import SCHEMA
from harness_lib.store import Store
from tests.e2e.test_cli_run import harness, no_traceback
from tests.loopback import Server

SECRET = "Zx9kQ2mW7vB4nR8tY3pLq"


def _payloads(server: Server, prefix: str) -> list[dict]:
    return [json.loads(r.body) for r in server.requests if r.path.startswith(prefix)]


def test_passing_gate_pings_heartbeat_and_notifies_with_secret_redacted(
    tmp_path: Path, http_server: Server
) -> None:
    hook = f"json://127.0.0.1:{http_server.port}/hook?token={SECRET}"
    beat = f"http://127.0.0.1:{http_server.port}/ping/abc-123"
    proc = harness(
        "run", "--sim", "--trade", "--notify", hook, "--notify-on", "always",
        "--heartbeat", beat, "--junit", str(tmp_path / "gate.xml"),
        "--json", str(tmp_path / "gate.json"), tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paths = [r.path for r in http_server.requests if r.path.startswith("/ping")]
    assert paths == ["/ping/abc-123/start", "/ping/abc-123"]
    [msg] = _payloads(http_server, "/hook")
    text = msg["title"] + "\n" + msg["message"]
    assert "PASSED" in text and "SIMULATOR" in text
    assert "cost" in text.lower()
    report = json.loads((tmp_path / "gate.json").read_text())
    jsonschema.validate(report, SCHEMA)
    latest = json.loads((tmp_path / "data" / "reports" / "latest.json").read_text())
    assert latest["run_id"] == report["run_id"] and latest["verdict"] == "PASS"
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    assert suite.find("failure") is None and len(suite.findall(".//testcase")) == 4
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        sent = st.notifications(report["run_id"])
        stored = json.dumps(st.run(report["run_id"]), default=str)
    assert sent["ok"].all() and len(sent) == 2  # heartbeat success + notification
    for text in (proc.stdout, proc.stderr, stored, " ".join(sent["channel"])):
        assert SECRET not in text
    assert SECRET not in (tmp_path / "gate.json").read_text()


def test_failing_gate_says_do_not_trust_and_pings_fail(tmp_path: Path, http_server: Server) -> None:
    hook = f"json://127.0.0.1:{http_server.port}/hook"
    beat = f"http://127.0.0.1:{http_server.port}/ping/abc-123"
    proc = harness(
        "run", "--sim", "--scenario", "not_subscribed", "--notify", hook, "--heartbeat", beat,
        "--junit", str(tmp_path / "gate.xml"), tmp=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    paths = [r.path for r in http_server.requests if r.path.startswith("/ping")]
    assert paths == ["/ping/abc-123/start", "/ping/abc-123/fail"]
    [msg] = _payloads(http_server, "/hook")
    text = msg["title"] + "\n" + msg["message"]
    assert "DO NOT TRUST THE DASHBOARD" in text and "IB 354" in text
    failures = ET.parse(tmp_path / "gate.xml").getroot().findall(".//testcase/failure")
    assert len(failures) == 1 and "354" in (failures[0].get("message") or "")


def test_undeliverable_notification_changes_nothing_but_is_reported(
    tmp_path: Path, dead_port: int
) -> None:
    hook = f"json://user:{SECRET}@127.0.0.1:{dead_port}/hook"
    proc = harness("run", "--sim", "--notify", hook, "--notify-on", "always", tmp=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not delivered" in proc.stderr and SECRET not in proc.stderr
    no_traceback(proc)
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        run = st.runs().iloc[0]
        sent = st.notifications(run.run_id)
    assert run.verdict == "PASS" and len(sent) == 1 and not sent.iloc[0].ok
    assert SECRET not in sent.iloc[0].channel + sent.iloc[0].detail


def test_notify_on_change_only_sends_when_the_verdict_changes(
    tmp_path: Path, http_server: Server
) -> None:
    hook = f"json://127.0.0.1:{http_server.port}/hook"
    common = ("--notify", hook, "--notify-on", "change")
    assert harness("run", "--sim", *common, tmp=tmp_path).returncode == 0
    assert harness("run", "--sim", *common, tmp=tmp_path).returncode == 0
    failed = harness("run", "--sim", "--scenario", "never_ticks", "--deadline", "0.5", *common,
                     tmp=tmp_path)  # fmt: skip
    assert failed.returncode == 2
    titles = [p["title"] for p in _payloads(http_server, "/hook")]
    assert len(titles) == 2, titles
    assert "PASSED" in titles[0] and "STALLED" in titles[1]
