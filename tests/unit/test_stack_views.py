"""What the notebooks draw from the user's stack, on real objects: the live verdict with the
stack, the broker/stack table, findings, and the post-mortem's stack frames.

Nothing here crosses a boundary (the live feed and the notebooks are tested against the
simulator and the tiny stack in tests/integration and tests/e2e).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pandas as pd

from harness_lib.live.feed import _endpoint_verdict
from harness_lib.live.snapshot import Snapshot, StackQuote, with_stack
from harness_lib.live.views import STACK_COLUMNS, format_findings, stack_html, stack_table
from harness_lib.models import Verdict
from harness_lib.postmortem import failed_stack_checks, stack_check_table
from harness_lib.stack.checks import CheckResult

QUOTE = {"bid": 100.0, "ask": 100.5, "last": math.nan, "bidSize": 3.0, "askSize": 4.0}


def good(name: str = "dash", **kw: object) -> StackQuote:
    fields: dict[str, object] = {
        "endpoint": name, "kind": "sse", "bid": 100.0, "ask": 100.5, "last": None,
        "mode": "live", "mode_live": True, "shown": "bid 100, ask 100.5, mode 'live'",
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "age_s": 0.12, "matches": True,
        "latency_s": 0.052, "connected": True, "messages": 7, "verdict": Verdict.PASS,
        "reason": f"{name} showed AAPL bid 100 / ask 100.5 (live) 52 ms after the gateway sent it",
    }  # fmt: skip
    fields.update(kw)
    return StackQuote(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- live verdict


def test_without_a_stack_the_broker_verdict_stands() -> None:
    assert with_stack(Verdict.PASS, "bid 100", (), "AAPL") == (Verdict.PASS, "bid 100")


def test_a_broker_problem_comes_first() -> None:
    bad = good(verdict=Verdict.FAIL, reason="dash quotes check failed")
    assert with_stack(Verdict.STALLED, "no tick", (bad,), "AAPL") == (Verdict.STALLED, "no tick")


def test_the_worst_endpoint_verdict_wins_and_names_it() -> None:
    stalled = good("a", verdict=Verdict.STALLED, reason="a emitted nothing within 5 s")
    failed = good("b", verdict=Verdict.FAIL, reason="b quotes check failed: showed bid null")
    verdict, reason = with_stack(Verdict.PASS, "bid 100", (stalled, failed, good("c")), "AAPL")
    assert verdict == Verdict.FAIL
    assert reason == "stack: b quotes check failed: showed bid null"


def test_an_undecided_endpoint_is_never_a_pass() -> None:
    waiting = good("slow", verdict=None, reason="waiting for quotes")
    verdict, reason = with_stack(Verdict.PASS, "bid 100", (good(), waiting), "AAPL")
    assert verdict == Verdict.STALLED
    assert reason == "waiting for slow to show AAPL bid/ask"


def test_a_pass_says_the_stack_shows_it_with_each_latency() -> None:
    verdict, reason = with_stack(Verdict.PASS, "bid 100", (good("a"), good("b")), "AAPL")
    assert verdict == Verdict.PASS
    assert reason == "bid 100; stack shows it (a 52 ms, b 52 ms)"


def check(name: str, verdict: Verdict, reason: str = "") -> CheckResult:
    return CheckResult(name, "dash", verdict, reason or f"{name} {verdict}")


def test_an_endpoint_verdict_is_its_worst_decided_check() -> None:
    assert _endpoint_verdict({}) == (None, "waiting for the stack")
    assert _endpoint_verdict({"stream": None, "quotes": None}) == (
        None,
        "waiting for stream and quotes",
    )
    # A stream that already failed decides, even while quotes are undecided.
    down = check("stream", Verdict.FAIL, "dash unreachable at http://x/: connection refused")
    assert _endpoint_verdict({"stream": down, "quotes": None}) == (Verdict.FAIL, down.reason)
    ok, quotes = check("stream", Verdict.PASS), check("quotes", Verdict.PASS, "dash showed it")
    assert _endpoint_verdict({"stream": ok, "quotes": None}) == (None, "waiting for quotes")
    assert _endpoint_verdict({"stream": ok, "quotes": quotes}) == (Verdict.PASS, "dash showed it")
    stalled = check("quotes", Verdict.STALLED, "dash emitted nothing")
    assert _endpoint_verdict({"stream": ok, "quotes": stalled}) == (
        Verdict.STALLED,
        "dash emitted nothing",
    )


# ------------------------------------------------------------------------------ views


def snapshot(*stack: StackQuote) -> Snapshot:
    return Snapshot(verdict=Verdict.PASS, reason="ok", quote=QUOTE, market_data="live",
                    last_tick_age_s=0.05, stack=stack)  # fmt: skip


def test_stack_table_puts_the_broker_first_then_each_endpoint() -> None:
    null = good(
        "null-dash",
        bid=None,
        ask=None,
        shown="bid null, ask 'NaN', mode 'live'",
        matches=False,
        why="showed bid null, ask 'NaN' (expected real numbers)",
        latency_s=None,
        verdict=Verdict.FAIL,
        reason="null-dash quotes check failed",
    )
    table = stack_table(snapshot(good(), null))
    assert list(table.columns) == list(STACK_COLUMNS)
    assert list(table["source"]) == ["broker", "dash", "null-dash"]
    broker, dash, bad = (table.iloc[i] for i in range(3))
    assert (broker["bid"], broker["ask"], broker["data mode"], broker["live"]) == (
        100.0, 100.5, "live", "yes",
    )  # fmt: skip
    assert broker["age (ms)"] == 50.0 and broker["check"] == "ticks: waiting"
    assert (dash["bid"], dash["data mode"], dash["live"], dash["matches broker"]) == (
        100.0, "live", "yes", "yes",
    )  # fmt: skip
    assert dash["age (ms)"] == 120.0 and dash["check"].startswith("PASS: dash showed AAPL")
    assert math.isnan(bad["bid"]) and math.isnan(bad["ask"])
    assert bad["matches broker"].startswith("no (showed bid null")
    assert bad["check"] == "FAIL: null-dash quotes check failed"


def test_stack_table_before_anything_was_shown_says_why() -> None:
    down = StackQuote("dash", "http", error="connection refused", reason="waiting for stream")
    row = stack_table(snapshot(down)).iloc[1]
    assert row["matches broker"] == "— (connection refused)"
    assert row["live"] == "—" and row["check"] == "waiting for stream"


def test_no_stack_is_an_empty_table() -> None:
    table = stack_table(snapshot())
    assert table.empty and list(table.columns) == list(STACK_COLUMNS)


def test_stack_html_shows_no_number_as_a_dash_and_escapes() -> None:
    evil = good("<b>x</b>", bid=None, matches=False, why="showed bid null")
    page = stack_html(snapshot(evil))
    assert 'class="livefire-stack"' in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert ">—</td>" in page  # the bid it did not show as a number
    assert ">100.5</td>" in page
    assert "7 message(s)" in page


def test_findings_list_each_endpoint_with_its_latest_quote() -> None:
    text = format_findings(snapshot(good(), StackQuote("late", "websocket")))
    assert "stack:    dash (sse) PASS — dash showed AAPL bid 100" in text
    assert "latest quote: bid 100, ask 100.5, mode 'live'" in text
    assert "stack:    late (websocket) undecided — waiting for the stack; latest quote: none" in (
        text
    )


# ------------------------------------------------------------------------ post-mortem


def stored_checks() -> pd.DataFrame:
    """Rows as ``Store.stack_checks()`` returns them (two runs)."""
    at = pd.to_datetime([1_700_000_000.25, 1_700_000_001.5, None, 1_700_003_600.0],
                        unit="s", utc=True)  # fmt: skip
    return pd.DataFrame(
        {
            "run_id": ["20260101T000000Z-aaaa"] * 3 + ["20260102T000000Z-bbbb"],
            "endpoint": ["dash", "dash", "page", "dash"],
            "name": ["quotes", "trade_id", "quotes", "position_cleared"],
            "verdict": ["PASS", "FAIL", "STALLED", "FAIL"],
            "reason": [
                "ok",
                "showed the previous trade's id",
                "page emitted nothing",
                "repainted 1 s after clearing",
            ],
            "latency_s": [0.0523, None, None, None],
            "at_wall": at,
            "expected": ["", "execId X", "quotes", "flat for 3 s"],
            "observed": ["", "execId W", "nothing", "+1"],
        }
    )


def test_stack_check_table_is_readable() -> None:
    table = stack_check_table(stored_checks())
    assert list(table.columns) == ["check", "verdict", "latency (ms)", "shown at (UTC)", "reason"]
    assert list(table["check"])[:3] == ["dash.quotes", "dash.trade_id", "page.quotes"]
    assert table["latency (ms)"].iloc[0] == 52.3
    assert table["shown at (UTC)"].iloc[0] == "22:13:20.250"
    assert pd.isna(table["latency (ms)"].iloc[1])
    assert stack_check_table(stored_checks().iloc[:0]).empty


def test_failed_stack_checks_newest_run_first_and_filtered() -> None:
    failed = failed_stack_checks(stored_checks())
    assert list(failed.columns) == ["run_id", "check", "verdict", "reason", "expected", "observed"]
    assert list(failed["check"]) == ["dash.position_cleared", "dash.trade_id", "page.quotes"]
    assert list(failed["verdict"]) == ["FAIL", "FAIL", "STALLED"]
    assert failed["observed"].iloc[1] == "execId W"
    only = failed_stack_checks(stored_checks(), ["20260101T000000Z-aaaa"])
    assert list(only["check"]) == ["dash.trade_id", "page.quotes"]
    assert failed_stack_checks(stored_checks(), []).empty
    assert failed_stack_checks(pd.DataFrame()).empty
