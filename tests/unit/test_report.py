"""The JSON, JUnit, HTML and console renderings of hand-built RunReports."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console

from harness_lib.models import (
    Checkpoint,
    IBMessage,
    Phase,
    PhaseResult,
    RunReport,
    Target,
    Verdict,
)
from harness_lib.report import (
    SCHEMA,
    console_summary,
    html_summary,
    junit_xml,
    report_json,
    write_json,
    write_json_report,
    write_junit,
)

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)


def _health(verdict: Verdict = Verdict.PASS) -> PhaseResult:
    return PhaseResult(
        phase=Phase.HEALTH,
        verdict=verdict,
        reason="" if verdict == Verdict.PASS else "refused: live account U1234567",
        started_at=T0,
        duration_s=0.41,
        checkpoints=[Checkpoint("connected", 1.0, T0, "server version 176")],
        metrics={"server_version": 176, "clock_skew_s": 0.02},
        errors=[IBMessage(2104, "Market data farm connection is OK:usfarm", -1, T0)],
    )


def _ticks(ok: bool) -> PhaseResult:
    if ok:
        return PhaseResult(
            phase=Phase.TICKS,
            verdict=Verdict.PASS,
            started_at=T0 + timedelta(seconds=1),
            duration_s=1.25,
            checkpoints=[
                Checkpoint("qualified", 2.0, T0 + timedelta(seconds=1)),
                Checkpoint("first_bid", 2.3, T0 + timedelta(seconds=1.3)),
            ],
            metrics={"first_bid_s": 0.31, "first_ask_s": 0.33, "market_data_type": 1},
        )
    return PhaseResult(
        phase=Phase.TICKS,
        verdict=Verdict.FAIL,
        reason="no real-time data: market data not subscribed",
        started_at=T0 + timedelta(seconds=1),
        duration_s=5.0,
        checkpoints=[Checkpoint("subscribed", 2.0, T0 + timedelta(seconds=1), "reqId 7")],
        metrics={"first_bid_s": None, "first_ask_s": float("nan"), "market_data_type": 3},
        errors=[
            IBMessage(354, "Requested market data is not subscribed", 7, T0),
            IBMessage(10167, "Displaying delayed market data", 7, T0),
        ],
    )


def _round_trip() -> PhaseResult:
    return PhaseResult(
        phase=Phase.ROUND_TRIP,
        verdict=Verdict.PASS,
        started_at=T0 + timedelta(seconds=3),
        duration_s=2.5,
        metrics={
            "total_cost": 2.87,
            "commission": 2.5,
            "slippage": 0.37,
            "realized_pnl": -2.87,
            "currency": "USD",
        },
        evidence={"order_ids": [11, 12], "fills": [{"price": 5012.25}]},
    )


def _cleanup() -> PhaseResult:
    return PhaseResult(phase=Phase.CLEANUP, verdict=Verdict.PASS, started_at=T0, duration_s=0.1)


def make_pass(simulated: bool = False) -> RunReport:
    target = Target(
        host="127.0.0.1",
        port=4002,
        client_id=917,
        simulated=simulated,
        scenario="happy" if simulated else None,
        account="DU1234567",
        accounts=["DU1234567"],
        server_version=176,
    )
    return RunReport(
        run_id="20260302T140500Z-pass",
        target=target,
        contract="MES 202603 CME",
        phases=[_health(), _ticks(True), _round_trip(), _cleanup()],
        started_at=T0,
        finished_at=T0 + timedelta(seconds=6),
        store_path="/tmp/livefire.sqlite",
    )


def make_fail() -> RunReport:
    target = Target(host="10.0.0.5", port=4002, client_id=917, account="DU7654321")
    skipped = PhaseResult(phase=Phase.ROUND_TRIP, verdict=Verdict.SKIPPED, reason="not requested")
    return RunReport(
        run_id="20260303T140500Z-fail",
        target=target,
        contract="ES 202603 CME",
        phases=[_health(), _ticks(False), skipped, _cleanup()],
        started_at=T0,
        finished_at=T0 + timedelta(seconds=7),
    )


def validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    return jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


# ------------------------------------------------------------------------------ JSON


@pytest.mark.parametrize(
    "report", [make_pass(), make_pass(simulated=True), make_fail()], ids=["pass", "sim", "fail"]
)
def test_json_report_validates_against_schema(report: RunReport) -> None:
    data = report_json(report)
    # Round-trip through text: the file is what consumers validate, not the dict.
    data = json.loads(json.dumps(data, allow_nan=False))
    validator().validate(data)
    # jsonschema only checks "date-time" when rfc3339-validator is installed (it is not
    # a dependency), so check the timestamps directly.
    stamps = [data["started_at"], data["finished_at"]]
    stamps += [p["started_at"] for p in data["phases"]]
    stamps += [e["t_wall"] for p in data["phases"] for e in p["errors"] + p["checkpoints"]]
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).tzinfo is not None
    assert data["schema_version"] == 1
    assert data["simulated"] is report.target.simulated
    assert data["verdict"] == str(report.verdict)


def test_schema_rejects_what_it_should() -> None:
    data = report_json(make_fail())
    v = validator()
    for mutate in (
        lambda d: d.update(verdict="GREEN"),
        lambda d: d.update(schema_version=2),
        lambda d: d.pop("simulated"),
        lambda d: d["phases"][1]["errors"][0].update(code="354"),
        lambda d: d["target"].update(port=70000),
    ):
        bad = json.loads(json.dumps(data))
        mutate(bad)
        assert not v.is_valid(bad)


def test_every_schema_property_is_documented() -> None:
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{path}.{name}")
                walk(sub, f"{path}.{name}")
            if isinstance(node.get("items"), dict):
                walk(node["items"], f"{path}[]")

    walk(SCHEMA, "$")
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert missing == []


def test_write_json_report_updates_latest(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first = write_json_report(make_pass(), reports)
    assert first == reports / "20260302T140500Z-pass.json"
    assert json.loads((reports / "latest.json").read_text())["verdict"] == "PASS"

    second = write_json_report(make_fail(), reports)
    latest = json.loads((reports / "latest.json").read_text(encoding="utf-8"))
    assert latest["run_id"] == "20260303T140500Z-fail"
    assert latest == json.loads(second.read_text(encoding="utf-8"))
    assert first.exists()  # the earlier run's own report stays
    # No temp files left behind by the atomic writes.
    assert sorted(p.name for p in reports.iterdir()) == [
        "20260302T140500Z-pass.json",
        "20260303T140500Z-fail.json",
        "latest.json",
    ]
    validator().validate(latest)


def test_run_id_cannot_escape_reports_dir(tmp_path: Path) -> None:
    report = make_pass()
    report.run_id = "../../etc/passwd"
    path = write_json_report(report, tmp_path)
    assert path.parent == tmp_path


def test_write_json(tmp_path: Path) -> None:
    path = write_json(make_fail(), tmp_path / "sub" / "r.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    validator().validate(data)
    ticks = data["phases"][1]
    assert ticks["metrics"]["first_ask_s"] is None  # NaN never reaches the file
    assert ticks["errors"][0]["code"] == 354


# ----------------------------------------------------------------------------- JUnit


def test_junit_failing_run() -> None:
    root = ET.fromstring(junit_xml(make_fail()))
    suites = list(root.iter("testsuite"))
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "livefire"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "0")
    assert suite.get("skipped") == "1"
    assert float(suite.get("time")) == pytest.approx(7.0)
    assert suite.get("timestamp") == "2026-03-02T14:05:00"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["target"] == "gateway 10.0.0.5:4002 account DU7654321"
    assert props["run_id"] == "20260303T140500Z-fail"
    assert props["contract"] == "ES 202603 CME"

    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["health", "ticks", "round_trip", "cleanup"]
    assert all(c.get("classname") == "livefire.gateway" for c in cases.values())
    assert cases["ticks"].get("time") == "5.000"
    failure = cases["ticks"].find("failure")
    assert failure is not None
    assert failure.get("type") == "FAIL"
    assert "market data not subscribed" in failure.get("message")
    assert "IB 354" in failure.get("message")
    assert "IB 354: Requested market data is not subscribed" in failure.text
    assert cases["round_trip"].find("skipped") is not None
    assert cases["health"].find("failure") is None


def test_junit_verdict_mapping_and_simulated_classname(tmp_path: Path) -> None:
    report = make_pass(simulated=True)
    report.phases[0].verdict = Verdict.REFUSED
    report.phases[1].verdict = Verdict.STALLED
    report.phases[2].verdict = Verdict.ABORTED
    path = write_junit(report, tmp_path / "junit.xml")
    suite = next(ET.parse(path).getroot().iter("testsuite"))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["health"].find("error").get("type") == "REFUSED"
    assert cases["ticks"].find("failure").get("type") == "STALLED"
    assert cases["round_trip"].find("failure") is not None
    assert {c.get("classname") for c in cases.values()} == {"livefire.simulated"}
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["target"].startswith("SIMULATOR")


def test_junit_passing_run_has_no_failures() -> None:
    suite = next(ET.fromstring(junit_xml(make_pass())).iter("testsuite"))
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "0")
    assert suite.find(".//failure") is None


# ------------------------------------------------------------------------------ HTML


def test_html_summary_escapes_and_is_self_contained() -> None:
    data = report_json(make_fail())
    run = {k: v for k, v in data.items() if k != "phases"}
    run["reason"] = "<script>alert(1)</script>"
    phases = [
        {k: v for k, v in p.items() if k not in ("checkpoints", "errors")} for p in data["phases"]
    ]
    checkpoints = [dict(c, phase=p["phase"]) for p in data["phases"] for c in p["checkpoints"]]
    events = [dict(e, phase=p["phase"]) for p in data["phases"] for e in p["errors"]]
    page = html_summary(run, phases, checkpoints, events)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "Requested market data is not subscribed" in page
    assert "354" in page
    assert "DU7654321" in page
    assert "subscribed" in page
    # No external assets: nothing to fetch when opened from a phone or an email.
    for needle in ("http://", "https://", "<link", "src="):
        assert needle not in page


def test_html_summary_accepts_store_dataframe_rows() -> None:
    pd = pytest.importorskip("pandas")
    events = pd.DataFrame(
        {
            "run_id": ["r2", "r2"],
            "t_wall": pd.to_datetime([T0, T0], utc=True),
            "kind": ["error", "log"],
            "code": pd.array([354, None], dtype="Int64"),
            "req_id": pd.array([7, None], dtype="Int64"),
            "message": ["Requested market data is not subscribed", "a <b> log line"],
        }
    )
    run = {
        "run_id": "r2",
        "verdict": "FAIL",
        "simulated": False,
        "target_label": "gateway 10.0.0.5:4002 account DU7654321",
        "target": {"account": "DU7654321", "simulated": False},
        "first_bid_s": None,
        "total_cost": float("nan"),
    }
    phases = [{"run_id": "r2", "phase": "ticks", "verdict": "FAIL", "errors": [], "metrics": {}}]
    page = html_summary(run, phases, [], events.to_dict("records"))
    assert "&lt;NA&gt;" not in page and "<NA>" not in page
    assert "a &lt;b&gt; log line" in page
    assert "354" in page and "DU7654321" in page
    assert "nan" not in page.lower().replace("nanoseconds", "")


def test_html_summary_simulator_banner_and_empty_tables() -> None:
    page = html_summary({"run_id": "r1", "verdict": "PASS", "simulated": 1}, [], [], [])
    assert "SIMULATOR" in page
    assert "No phase recorded." in page


# --------------------------------------------------------------------------- console


def _render(report: RunReport) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(console_summary(report))
    return console.export_text()


def test_console_summary_gateway_fail() -> None:
    text = _render(make_fail())
    assert "SIMULATOR" not in text
    assert "FAIL" in text and "ticks" in text
    assert "IB 354" in text
    assert "DU7654321" in text
    assert "First bid: never" in text
    assert "5.00 s" in text


def test_console_summary_simulator_pass() -> None:
    text = _render(make_pass(simulated=True))
    assert text.count("SIMULATOR") >= 2  # title and target line
    assert "First bid: 0.31 s, first ask: 0.33 s" in text
    assert "Round-trip cost: 2.87 USD" in text


# ------------------------------------------------------------------- generated schema


def test_schema_properties_are_exactly_what_the_report_writes() -> None:
    """Generated from the dataclasses to_dict() serialises: the same keys at every level."""
    data = report_json(make_fail())
    assert list(SCHEMA["properties"]) == list(SCHEMA["required"])
    assert set(SCHEMA["properties"]) == set(data)
    assert set(SCHEMA["properties"]["target"]["properties"]) == set(data["target"])
    phase = SCHEMA["properties"]["phases"]["items"]
    assert set(phase["properties"]) == set(data["phases"][0])
    assert set(phase["properties"]["errors"]["items"]["properties"]) == set(
        data["phases"][1]["errors"][0]
    )
    assert "report_path" not in SCHEMA["properties"]  # JSON_EXCLUDED


def test_schema_generator_refuses_an_undocumented_field() -> None:
    from dataclasses import dataclass

    from harness_lib.docschema import object_schema

    @dataclass
    class Doc:
        """A document."""

        documented: int
        """Has a docstring."""
        bare: str

    with pytest.raises(TypeError, match="document bare"):
        object_schema(Doc)


def _with_stack_phase() -> dict[str, Any]:
    """A failing run's JSON with a stack phase whose evidence the stack phase itself built."""
    from harness_lib.stack.checks import CheckResult, StackEvidence

    checks = [
        CheckResult("quotes", "dash-sse", Verdict.PASS, "dash-sse quotes match", 0.052, 1.7e9,
                    "real live bid/ask matching the broker", "bid 1.0 ask 1.1"),
        CheckResult("stream", "dash-sse", Verdict.STALLED, "dash-sse emitted nothing",
                    details={"not": "in the report"}),
    ]  # fmt: skip
    evidence = StackEvidence(
        checks=checks,
        endpoints=[{"name": "dash-sse", "headers": {"Authorization": "***"}}],
        position_before=0.0,
    ).to_dict()
    rep = make_fail()
    rep.phases.insert(-1, PhaseResult(Phase.STACK, Verdict.STALLED, "stack: ...", T0,
                                      evidence=evidence))  # fmt: skip
    return json.loads(json.dumps(report_json(rep), allow_nan=False))


def test_schema_describes_the_stack_phase_evidence() -> None:
    data = _with_stack_phase()
    v = validator()
    v.validate(data)
    checks = SCHEMA["properties"]["phases"]["items"]["properties"]["evidence"]["properties"][
        "checks"
    ]["items"]
    assert checks["required"] == ["name", "endpoint", "verdict", "reason", "latency_s",
                                  "at_wall", "expected", "observed"]  # fmt: skip
    written = next(p for p in data["phases"] if p["phase"] == "stack")["evidence"]["checks"]
    assert set(written[1]) == set(checks["properties"])  # details stay out (JSON_EXCLUDED)
    for mutate in (
        lambda c: c.update(name="latency"),
        lambda c: c.update(verdict="GREEN"),
        lambda c: c.pop("latency_s"),
        lambda c: c.update(extra=1),
    ):
        bad = json.loads(json.dumps(data))
        mutate(next(p for p in bad["phases"] if p["phase"] == "stack")["evidence"]["checks"][0])
        assert not v.is_valid(bad)
