"""The live notebooks' pure decisions: the live verdict (the phases' rules, not a copy),
the round-trip notebook's trade gate and outcome, and the views drawn from a snapshot.

Real objects throughout (PhaseResult, Target, RunReport, HarnessConfig, frames); nothing
here crosses a boundary, so nothing needs the simulator.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from harness_lib.config import HarnessConfig
from harness_lib.live.decisions import HealthCheck, round_trip_outcome, trade_gate
from harness_lib.live.snapshot import (
    Account,
    FarmNotice,
    HealthPanel,
    Snapshot,
    live_verdict,
    messages_frame,
)
from harness_lib.live.views import (
    callout_kind,
    format_findings,
    health_markdown,
    messages_html,
    messages_table,
    quote_html,
    quote_table,
)
from harness_lib.models import Phase, PhaseResult, RunReport, Target, Verdict
from harness_lib.phases.ticks import FIELDS, stale_reason

PAPER = "DU1234567"
LIVE = "U7654321"
CFG = HarnessConfig(contract="AAPL")


def target(*accounts: str) -> Target:
    acct = accounts[0] if accounts else None
    return Target("127.0.0.1", 4002, 919, account=acct, accounts=list(accounts))


def result(phase: Phase, verdict: Verdict, reason: str = "") -> PhaseResult:
    return PhaseResult(phase=phase, verdict=verdict, reason=reason or f"{phase} {verdict}")


def report(*phases: PhaseResult) -> RunReport:
    return RunReport(run_id="live-1", target=target(PAPER), contract="AAPL", phases=list(phases))


QUOTE = {"bid": 100.0, "ask": 100.5, "last": math.nan, "bidSize": 3.0, "askSize": 4.0}


def judge(rep: RunReport, **kw: object) -> tuple[Verdict, str]:
    args: dict[str, object] = {
        "state": "streaming",
        "problem": "",
        "waited_s": 1.0,
        "tick_count": 12,
        "quiet_s": 0.1,
        "stale_after": 2.0,
        "quote": QUOTE,
        "market_data": "live",
    }
    args.update(kw)
    return live_verdict(rep, **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the staleness rule


def test_stale_reason_is_the_one_staleness_rule() -> None:
    assert stale_reason(1.99, 2.0, 5) is None
    assert stale_reason(2.0, 2.0, 5) == "stream went stale: no tick for 2.0s after 5 updates"


# ------------------------------------------------------------------ the live verdict

HEALTH_OK = result(Phase.HEALTH, Verdict.PASS, "paper account, server 178")
TICKS_OK = result(Phase.TICKS, Verdict.PASS, "bid/ask live after 40/41 ms on AAPL")


def test_connecting_is_stalled_until_health_concludes() -> None:
    verdict, reason = judge(report(), state="connecting", tick_count=0, quiet_s=None)
    assert verdict == Verdict.STALLED
    assert reason.startswith("connecting to gateway 127.0.0.1:4002")


def test_a_failed_health_phase_is_the_verdict_as_the_run_states_it() -> None:
    refused = result(Phase.HEALTH, Verdict.REFUSED, "non-paper account U****321")
    rep = report(refused)
    assert judge(rep, state="failed", problem="x") == (rep.verdict, rep.reason)
    assert rep.reason == "health: non-paper account U****321"


def test_a_failed_ticks_phase_is_the_verdict_even_if_quotes_look_real() -> None:
    frozen = result(Phase.TICKS, Verdict.FAIL, "market closed: frozen data")
    assert judge(report(HEALTH_OK, frozen)) == (
        Verdict.FAIL,
        "ticks: market closed: frozen data",
    )


def test_real_quotes_are_not_a_pass_until_the_ticks_phase_says_so() -> None:
    # Bid and ask are real (they could be frozen or delayed): only the phase judges that.
    verdict, reason = judge(report(HEALTH_OK), state="subscribing")
    assert verdict == Verdict.STALLED
    assert "waiting for the ticks phase" in reason
    verdict, reason = judge(report(HEALTH_OK), state="subscribing", tick_count=0)
    assert verdict == Verdict.STALLED and reason.startswith("waiting for the first tick")


def test_a_lost_connection_fails() -> None:
    lost = judge(report(HEALTH_OK, TICKS_OK), state="disconnected", problem="connection lost")
    assert lost == (Verdict.FAIL, "connection lost")
    assert judge(report(HEALTH_OK), state="failed", problem="")[0] == Verdict.FAIL


def test_after_the_phase_passed_the_phase_staleness_rule_applies() -> None:
    verdict, reason = judge(report(HEALTH_OK, TICKS_OK), quiet_s=0.25)
    assert verdict == Verdict.PASS
    assert reason == "bid 100 / ask 100.5 live; last tick 250 ms ago"
    verdict, reason = judge(report(HEALTH_OK, TICKS_OK), quiet_s=2.5)
    assert verdict == Verdict.FAIL
    assert reason.startswith(stale_reason(2.5, 2.0, 12) or "?")


def test_a_skipped_ticks_phase_is_not_a_pass() -> None:
    skipped = result(Phase.TICKS, Verdict.SKIPPED, "not connected")
    assert judge(report(HEALTH_OK, skipped)) == (Verdict.SKIPPED, "ticks: not connected")


# ------------------------------------------------------------------ the trade gate


def check(verdict: Verdict, *accounts: str) -> HealthCheck:
    return HealthCheck(result(Phase.HEALTH, verdict, "health said so"), target(*accounts))


def test_the_gate_opens_only_for_a_paper_target_that_passed_health() -> None:
    gate = trade_gate(CFG, check(Verdict.PASS, PAPER))
    assert gate.allowed
    assert gate.plan == f"BUY then SELL 1 AAPL on paper account {PAPER}"
    for closed in (
        trade_gate(None, check(Verdict.PASS, PAPER)),
        trade_gate(CFG, None),
        trade_gate(CFG, check(Verdict.PASS, PAPER, LIVE)),  # one live account is enough
        trade_gate(CFG, check(Verdict.STALLED, PAPER)),
        trade_gate(CFG, check(Verdict.REFUSED, LIVE)),
    ):
        assert not closed.allowed
        assert closed.plan.startswith("nothing")


@pytest.mark.parametrize(
    ("script", "yes", "clicked", "confirmed", "wanted"),
    [
        (False, False, True, True, True),  # UI: click and confirmation
        (False, False, True, False, False),  # a click alone never trades
        (False, False, False, True, False),  # a ticked box alone neither
        (False, True, False, False, False),  # --yes means nothing in the UI
        (True, True, False, False, True),  # script: --yes
        (True, False, True, True, False),  # script without --yes
    ],
)
def test_only_a_confirmed_request_is_a_request(
    script: bool, yes: bool, clicked: bool, confirmed: bool, wanted: bool
) -> None:
    asked = {"script": script, "yes": yes, "clicked": clicked, "confirmed": confirmed}
    open_gate = trade_gate(CFG, check(Verdict.PASS, PAPER))
    assert open_gate.wants(**asked) is wanted
    assert open_gate.permits(**asked) is wanted
    # A target that is not provably paper is never traded on, however it is asked.
    assert not trade_gate(CFG, check(Verdict.PASS, LIVE)).permits(**asked)


def test_the_prompt_says_what_is_missing() -> None:
    gate = trade_gate(CFG, check(Verdict.PASS, PAPER))
    assert gate.prompt(clicked=True, confirmed=False).startswith("Tick the confirmation box")
    assert gate.prompt(clicked=False, confirmed=False) == "No round trip placed yet."
    closed = trade_gate(CFG, check(Verdict.REFUSED, LIVE))
    assert closed.prompt(clicked=True, confirmed=False) == "No round trip placed yet."


# --------------------------------------------------------------- the outcome (exit code)


def test_outcome_without_a_configuration_is_bad_input() -> None:
    out = round_trip_outcome(None, "max_quantity: 500 is not an integer 1-100", None, None,
                             script=True)  # fmt: skip
    assert out.verdict == Verdict.BAD_INPUT and out.exit_code == 4
    assert out.findings == "bad input: max_quantity: 500 is not an integer 1-100"


def test_outcome_of_a_target_that_failed_health_is_health_verdict() -> None:
    out = round_trip_outcome(CFG, "", check(Verdict.REFUSED, LIVE), None, script=True)
    assert (out.verdict, out.exit_code) == (Verdict.REFUSED, 3)
    assert out.findings == "REFUSED: health said so"
    stalled = round_trip_outcome(CFG, "", check(Verdict.STALLED), None, script=True)
    assert stalled.exit_code == 2


def test_outcome_of_a_passed_but_not_paper_target_is_refused() -> None:
    out = round_trip_outcome(CFG, "", check(Verdict.PASS, PAPER, LIVE), None, script=False)
    assert (out.verdict, out.exit_code) == (Verdict.REFUSED, 3)


def test_outcome_when_not_confirmed_says_what_would_have_been_placed() -> None:
    ok = check(Verdict.PASS, PAPER)
    out = round_trip_outcome(CFG, "", ok, None, script=True)
    assert (out.verdict, out.exit_code) == (Verdict.REFUSED, 3)
    assert out.findings.startswith(f"would place: BUY then SELL 1 AAPL on paper account {PAPER}")
    assert "(pass --yes)" in out.findings and "nothing was sent" in out.findings
    assert "(tick the box)" in round_trip_outcome(CFG, "", ok, None, script=False).findings


def test_outcome_of_a_run_is_the_run_verdict() -> None:
    ok = check(Verdict.PASS, PAPER)
    stalled = report(HEALTH_OK, result(Phase.ROUND_TRIP, Verdict.STALLED, "no fill in 10s"))
    out = round_trip_outcome(CFG, "", ok, stalled, script=True)
    assert (out.verdict, out.exit_code) == (Verdict.STALLED, 2)
    assert out.findings == "round_trip: no fill in 10s"
    passed = round_trip_outcome(CFG, "", ok, report(HEALTH_OK), script=True, run_findings="ok!")
    assert (passed.exit_code, passed.findings) == (0, "ok!")


# ------------------------------------------------------------------------- views

AT = datetime(2026, 12, 1, 9, 30, 1, 234000, tzinfo=UTC)
LOG_NOTICE = {"t_wall": AT, "source": "x", "kind": "notice", "code": 2104, "req_id": -1,
              "message": "farm OK"}  # fmt: skip
LOG_ERROR = {"t_wall": AT, "source": "x", "kind": "error", "code": 354, "req_id": 1,
             "message": "not <subscribed> & more"}  # fmt: skip
LOG_FEED = {"t_wall": AT, "source": "feed", "kind": "feed", "code": None, "req_id": None,
            "message": "connecting"}  # fmt: skip


def streaming_snapshot() -> Snapshot:
    return Snapshot(
        verdict=Verdict.PASS,
        reason="bid 100 / ask 100.5 live",
        connected=True,
        state="streaming",
        target="SIMULATOR at 127.0.0.1:7000",
        contract="AAPL",
        quote=QUOTE,
        market_data_type=1,
        market_data="live",
        first_seconds={f: (0.0425 if f in ("bid", "ask") else None) for f in FIELDS},
        first_at={f: (AT if f == "bid" else None) for f in FIELDS},
        tick_count=42,
        messages=messages_frame([LOG_NOTICE, LOG_ERROR, LOG_FEED]),
        health=HealthPanel(
            target="SIMULATOR at 127.0.0.1:7000",
            server_version=178,
            accounts=(Account("DU****567", paper=True), Account("U****321", paper=False)),
            farms=(FarmNotice(2104, ok=True, message="farm OK"),),
            verdict=Verdict.PASS,
            reason="paper account",
        ),
    )


def test_an_empty_snapshot_is_not_connected_and_all_nan() -> None:
    snap = Snapshot()
    assert snap.verdict == Verdict.SKIPPED and snap.exit_code == 0
    assert all(math.isnan(snap.quote[f]) for f in FIELDS)
    assert snap.ticks.empty and snap.messages.empty
    with pytest.raises(AttributeError):
        snap.verdict = Verdict.PASS  # type: ignore[misc]


def test_quote_table_has_one_row_per_field_with_first_value_times() -> None:
    table = quote_table(streaming_snapshot())
    assert list(table["field"]) == list(FIELDS)
    bid = table.set_index("field").loc["bid"]
    assert bid["value"] == 100.0
    assert bid["first real after (ms)"] == 42.5
    assert bid["first real at (UTC)"] == "09:30:01.234"
    assert math.isnan(table.set_index("field").loc["last", "first real after (ms)"])


def test_quote_html_shows_nan_until_real_and_the_tick_count_first_in_the_caption() -> None:
    page = quote_html(streaming_snapshot())
    assert 'class="livefire-quote"' in page
    assert "<caption>42 ticks · market data live</caption>" in page
    assert ">100.5</td>" in page and ">42.5</td>" in page
    assert ">nan</td>" in page  # last never became real
    empty = quote_html(Snapshot())
    assert empty.count(">nan</td>") == len(FIELDS)
    assert "<caption>0 ticks · market data —</caption>" in empty


def test_messages_are_newest_first_and_escaped() -> None:
    snap = streaming_snapshot()
    table = messages_table(snap)
    assert list(table["kind"]) == ["feed", "error", "notice"]
    page = messages_html(snap)
    assert 'class="livefire-log"' in page
    assert "not &lt;subscribed&gt; &amp; more" in page and "<subscribed>" not in page
    assert ">354</td>" in page and ">09:30:01.234</td>" in page
    assert len(messages_table(snap, limit=1)) == 1


def test_health_markdown_flags_live_accounts_and_farms() -> None:
    text = health_markdown(streaming_snapshot().health)
    assert "DU****567 (paper), U****321 (**LIVE**)" in text
    assert "- ✅ 2104: farm OK" in text
    assert "- none yet" in health_markdown(HealthPanel())


def test_findings_for_scripts_list_verdict_quote_and_errors() -> None:
    text = format_findings(streaming_snapshot())
    assert "verdict:  PASS — bid 100 / ask 100.5 live" in text
    assert "first real after 42 ms" in text and "first real after never" in text
    assert "error: IB 354: not <subscribed> & more" in text
    assert "farm OK" not in text  # notices are not errors


def test_callout_kinds() -> None:
    assert callout_kind(Verdict.PASS) == "success"
    assert callout_kind("STALLED") == "warn"
    assert callout_kind(Verdict.REFUSED) == "danger"
    assert callout_kind(None) == "neutral"
