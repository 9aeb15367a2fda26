"""Notifications and heartbeats against real loopback HTTP servers (no mocks)."""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime

import pytest

from harness_lib.models import IBMessage, Phase, PhaseResult, RunReport, Target, Verdict
from harness_lib.notify import (
    Delivery,
    format_message,
    heartbeat,
    send,
    should_notify,
)
from harness_lib.redact import redact_url
from tests.loopback import Server  # http_server/dead_port fixtures: tests/conftest.py

T0 = datetime(2026, 3, 2, 14, 5, tzinfo=UTC)
PASSWORD = "S3cr3tP4ss"
QUERY_TOKEN = "abcdef0123456789abcdef"
PATH_TOKEN = "Zx9kQ2mW7vB4nR8tY3pL"


def fail_report(simulated: bool = False) -> RunReport:
    target = Target(
        host="127.0.0.1",
        port=4002,
        client_id=917,
        simulated=simulated,
        scenario="no_subscription" if simulated else None,
        account="DU7654321",
    )
    return RunReport(
        run_id="20260303T140500Z-fail",
        target=target,
        contract="ES 202603 CME",
        phases=[
            PhaseResult(Phase.HEALTH, Verdict.PASS, started_at=T0, duration_s=0.4),
            PhaseResult(
                Phase.TICKS,
                Verdict.FAIL,
                reason="no real-time data after 5 s",
                started_at=T0,
                duration_s=5.0,
                metrics={"first_bid_s": None, "first_ask_s": None, "market_data_type": 3},
                errors=[
                    IBMessage(2104, "Market data farm connection is OK:usfarm", -1, T0),
                    IBMessage(354, "Requested market data is not subscribed", 7, T0),
                ],
            ),
            PhaseResult(Phase.CLEANUP, Verdict.PASS, started_at=T0, duration_s=0.1),
        ],
        started_at=T0,
        finished_at=T0,
    )


def pass_report(simulated: bool = False) -> RunReport:
    target = Target(
        host="127.0.0.1",
        port=4002,
        client_id=917,
        simulated=simulated,
        scenario="happy" if simulated else None,
        account="DU1234567",
    )
    return RunReport(
        run_id="20260302T140500Z-pass",
        target=target,
        contract="MES 202603 CME",
        phases=[
            PhaseResult(Phase.HEALTH, Verdict.PASS, started_at=T0, duration_s=0.4),
            PhaseResult(
                Phase.TICKS,
                Verdict.PASS,
                started_at=T0,
                duration_s=1.2,
                metrics={"first_bid_s": 0.31, "first_ask_s": 0.334, "market_data_type": 1},
            ),
            PhaseResult(
                Phase.ROUND_TRIP,
                Verdict.PASS,
                started_at=T0,
                duration_s=2.0,
                metrics={
                    "total_cost": 2.87,
                    "commission": 2.5,
                    "slippage": 0.37,
                    "realized_pnl": -2.87,
                    "currency": "USD",
                },
            ),
        ],
        started_at=T0,
    )


def _secrets_absent(text: str) -> None:
    for secret in (PASSWORD, QUERY_TOKEN, PATH_TOKEN):
        assert secret not in text


# ------------------------------------------------------------------- message format


def test_format_fail_message_names_reason_and_ib_code() -> None:
    title, body = format_message(fail_report(), report_location="/srv/reports/latest.json")
    assert title == "🚨 livefire FAIL — DO NOT TRUST THE DASHBOARD"
    assert "gateway 127.0.0.1:4002 account DU7654321" in body
    assert "Failed phase: ticks — no real-time data after 5 s" in body
    assert "IB 354: Requested market data is not subscribed" in body
    assert "IB 2104" not in body  # farm notices are noise next to the real error
    assert "First bid: never, first ask: never (market data type 3 = delayed)" in body
    assert "Report: /srv/reports/latest.json" in body
    assert "SIMULATOR" not in title + body


def test_format_pass_message() -> None:
    title, body = format_message(pass_report(), report_location=None)
    assert (
        title == "✅ livefire PASSED — MES 202603 CME on gateway 127.0.0.1:4002 account DU1234567"
    )
    assert "First bid: 0.31 s, first ask: 0.33 s" in body
    assert "Round-trip cost: 2.87 USD (commission 2.50, slippage 0.37, realized P&L -2.87)" in body


@pytest.mark.parametrize("make", [pass_report, fail_report])
def test_simulator_says_so_in_title_and_body(make) -> None:
    title, body = format_message(make(simulated=True), report_location=None)
    assert "SIMULATOR" in title
    assert body.startswith("SIMULATOR run")


@pytest.mark.parametrize(
    ("policy", "verdict", "previous", "expected"),
    [
        ("always", Verdict.PASS, "PASS", True),
        ("fail", Verdict.PASS, "FAIL", False),
        ("fail", Verdict.FAIL, "FAIL", True),
        ("fail", Verdict.STALLED, None, True),
        ("change", Verdict.PASS, None, True),  # first run ever
        ("change", Verdict.PASS, "PASS", False),
        ("change", Verdict.PASS, "FAIL", True),
        ("change", Verdict.FAIL, "STALLED", True),
        ("CHANGE", Verdict.FAIL, "fail", False),
    ],
)
def test_should_notify(policy: str, verdict: Verdict, previous: str | None, expected: bool) -> None:
    assert should_notify(policy, verdict, previous) is expected


def test_should_notify_rejects_unknown_policy() -> None:
    with pytest.raises(ValueError, match="fail, always, change"):
        should_notify("sometimes", Verdict.PASS, None)


# ------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("url", "visible", "hidden"),
    [
        (
            f"json://user:{PASSWORD}@hooks.example.com:8443/hook?token={QUERY_TOKEN}&method=POST",
            ["json://user:***@", "hooks.example.com:8443", "/hook", "method=POST", "token=***"],
            [PASSWORD, QUERY_TOKEN],
        ),
        (
            "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-100123456",
            ["tgram://***"],
            ["AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "123456789:"],
        ),
        (
            f"discord://1234567890123/{PATH_TOKEN}",
            ["discord://"],
            [PATH_TOKEN],
        ),
        (
            f"https://hc-ping.com/{PATH_TOKEN}-abcd",
            ["https://hc-ping.com/***"],
            [PATH_TOKEN],
        ),
        (
            "mailtos://alice:hunter2hunter2@smtp.example.com?to=ops@example.com&apikey=k-9",
            ["alice:***@smtp.example.com", "to=ops@example.com", "apikey=***"],
            ["hunter2hunter2", "k-9"],
        ),
    ],
)
def test_redact_url(url: str, visible: list[str], hidden: list[str]) -> None:
    shown = redact_url(url)
    for part in visible:
        assert part in shown
    for part in hidden:
        assert part not in shown


# ----------------------------------------------------------------------------- send


def test_send_delivers_json_and_redacts(
    http_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # root: catches urllib3/requests too
    caplog.set_level(logging.DEBUG, logger="apprise")
    url = (
        f"json://user:{PASSWORD}@127.0.0.1:{http_server.port}/hook/{PATH_TOKEN}?token={QUERY_TOKEN}"
    )
    title, body = format_message(fail_report(), report_location="/srv/reports/latest.json")

    deliveries = send([url], title, body, timeout=5)

    assert deliveries == [Delivery(deliveries[0].channel, True, "delivered")]
    channel = deliveries[0].channel
    assert f"127.0.0.1:{http_server.port}" in channel
    assert "***" in channel
    _secrets_absent(channel + deliveries[0].detail)

    assert len(http_server.requests) == 1
    request = http_server.requests[0]
    assert request.method == "POST"
    assert request.path.startswith(f"/hook/{PATH_TOKEN}")
    payload = json.loads(request.body)
    assert payload["title"] == title
    assert "FAIL" in payload["title"] and "DO NOT TRUST THE DASHBOARD" in payload["title"]
    assert "no real-time data after 5 s" in payload["message"]
    assert "IB 354: Requested market data is not subscribed" in payload["message"]
    # The credentials did reach the server: that is what they are for.
    auth = request.headers.get("Authorization", "")
    assert base64.b64decode(auth.split()[1]).decode() == f"user:{PASSWORD}"

    # apprise and urllib3 logged the URL path at DEBUG; none of it may leak.
    assert caplog.records, "expected apprise/urllib3 debug logs to check"
    _secrets_absent(caplog.text)
    for record in caplog.records:
        _secrets_absent(record.getMessage())


def test_send_to_nothing_listening_never_raises(
    dead_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="apprise")
    url = f"json://user:{PASSWORD}@127.0.0.1:{dead_port}/hook/{PATH_TOKEN}?token={QUERY_TOKEN}"

    deliveries = send([url], "t", "b", timeout=2)

    assert len(deliveries) == 1
    delivery = deliveries[0]
    assert delivery.ok is False
    assert delivery.detail.startswith("not delivered")
    _secrets_absent(delivery.channel + delivery.detail)
    _secrets_absent(caplog.text)


def test_send_mixed_urls_reports_each(
    http_server: Server, dead_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = f"nosuchscheme://user:{PASSWORD}@example.com/{PATH_TOKEN}"
    good = f"json://127.0.0.1:{http_server.port}/ok"
    dead = f"json://127.0.0.1:{dead_port}/{PATH_TOKEN}"

    deliveries = send([bad, good, dead], "title", "body", timeout=2)

    assert [d.ok for d in deliveries] == [False, True, False]
    assert deliveries[0].detail.startswith("unsupported notification URL nosuchscheme://user:***@")
    assert deliveries[1].channel == f"json://127.0.0.1:{http_server.port}/ok"
    assert len(http_server.requests) == 1
    for d in deliveries:
        _secrets_absent(d.channel + d.detail)
    _secrets_absent(caplog.text)


def test_send_http_error_status(http_server: Server) -> None:
    http_server.status = 500
    deliveries = send([f"json://127.0.0.1:{http_server.port}/x"], "t", "b", timeout=5)
    assert deliveries[0].ok is False
    assert "500" in deliveries[0].detail


def test_send_nothing_configured() -> None:
    assert send([], "t", "b") == []


# ------------------------------------------------------------------------ heartbeat


def test_heartbeat_stages_hit_paths_in_order(http_server: Server) -> None:
    base = f"http://127.0.0.1:{http_server.port}/ping/{PATH_TOKEN}/"

    results = [heartbeat(base, stage, timeout=5) for stage in ("start", "success", "fail")]

    assert [r.ok for r in results if r] == [True, True, True]
    assert [r.path for r in http_server.requests] == [
        f"/ping/{PATH_TOKEN}/start",
        f"/ping/{PATH_TOKEN}",
        f"/ping/{PATH_TOKEN}/fail",
    ]
    for r in results:
        assert r is not None
        _secrets_absent(r.channel + r.detail)
        assert "127.0.0.1" in r.channel


def test_heartbeat_without_url_and_with_dead_server(dead_port: int) -> None:
    assert heartbeat(None, "start") is None
    assert heartbeat("", "fail") is None
    result = heartbeat(f"http://127.0.0.1:{dead_port}/{PATH_TOKEN}", "start", timeout=2)
    assert result is not None and result.ok is False
    _secrets_absent(result.channel + result.detail)


def test_heartbeat_rejects_non_http_and_bad_stage(tmp_path) -> None:
    r = heartbeat(f"file://{tmp_path}", "start")
    assert r is not None and not r.ok
    r = heartbeat("http://127.0.0.1:9/x", "finish")
    assert r is not None and not r.ok and "stage" in r.detail
