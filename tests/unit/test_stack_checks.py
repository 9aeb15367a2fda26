"""Stack checks as pure logic: observations vs the broker moments the harness saw.

Each of the four failures the issue names (a snapshot fallback, NaN sanitised to null, a
repainted closed card, the previous trade's id) must fail the right check, and a correct
stack must pass with a latency measured from the broker moment.
"""

from __future__ import annotations

import math

import pytest

from harness_lib.models import Verdict
from harness_lib.stack.checks import (
    BrokerFill,
    BrokerTick,
    CheckResult,
    check_position,
    check_quotes,
    check_stream,
    check_trade_id,
)
from harness_lib.stack.observe import Observation, PositionSeen, QuoteSeen
from harness_lib.stack.spec import Endpoint, parse_stack

T0 = 1_764_600_000.0
INF = math.inf


@pytest.fixture
def ep() -> Endpoint:
    (e,) = parse_stack(
        [
            {
                "name": "dash",
                "kind": "sse",
                "url": "http://127.0.0.1:1/e",
                "quote": {"select": "q", "bid": "bid", "ask": "ask", "mode": "mode"},
                "position": {"select": "p", "quantity": "qty"},
                "trades": {"ids": "ids"},
            }
        ],
        "t",
    )
    return e


def q(at: float, bid: float | None, ask: float | None, mode: str | None = "live") -> Observation:
    shown = (("bid", bid), ("ask", ask), ("mode", mode))
    return Observation("dash", at, T0 + at, quote=QuoteSeen(bid, ask, None, mode, shown))


def pos(at: float, qty: float | None) -> Observation:
    return Observation("dash", at, T0 + at, position=PositionSeen(qty, qty))


def ids(at: float, *shown: str) -> Observation:
    return Observation("dash", at, T0 + at, trade_ids=tuple(shown))


TICKS = [
    BrokerTick("bid", 189.50, T0 + 0.10),
    BrokerTick("ask", 189.52, T0 + 0.10),
    BrokerTick("bid", 189.51, T0 + 0.60),
    BrokerTick("ask", 189.53, T0 + 0.60),
]


def quotes(ep: Endpoint, obs: list[Observation], now: float = INF):
    return check_quotes(ep, obs, TICKS, start=T0, deadline_s=5, now=now, symbol="AAPL")


def test_quotes_pass_with_latency_from_the_matching_broker_tick(ep: Endpoint) -> None:
    # Connected at 0.05 (nothing yet), the standing quote at 0.40, its change at 0.94.
    obs = [q(0.05, None, None), q(0.40, 189.50, 189.52), q(0.94, 189.51, 189.53)]
    r = quotes(ep, obs)
    assert r is not None and r.verdict == Verdict.PASS
    assert r.latency_s == pytest.approx(0.34)
    assert r.at_wall == pytest.approx(T0 + 0.40), "passes from the first good quote"
    assert "a quote change 340 ms after the gateway sent it" in r.reason
    assert r.key == "dash.quotes"


def test_quotes_latency_is_not_the_age_of_the_quote_shown_at_connect(ep: Endpoint) -> None:
    """The state a stack sends when we connect (at 0.90) shows the quote the broker sent at
    0.60: 300 ms is our connect time, not the stack's latency. It is measured on the next
    change: the broker's 1.00 tick shown at 1.01."""
    ticks = [*TICKS, BrokerTick("bid", 189.52, T0 + 1.00), BrokerTick("ask", 189.54, T0 + 1.00)]

    def judge(obs: list[Observation], now: float) -> CheckResult | None:
        return check_quotes(ep, obs, ticks, start=T0, deadline_s=5, now=now, symbol="AAPL")

    at_connect = [q(0.90, 189.51, 189.53)]
    assert judge(at_connect, T0 + 0.95) is None, "passing, but waits for a change"
    same = q(0.95, 189.51, 189.53)  # re-sent unchanged (a size or last tick): not a change
    r = judge([*at_connect, same, q(1.01, 189.52, 189.54)], INF)
    assert r is not None and r.verdict == Verdict.PASS
    assert r.latency_s == pytest.approx(0.01, abs=1e-6)
    assert r.at_wall == pytest.approx(T0 + 0.90)
    never = judge([*at_connect, same], T0 + 5.1)
    assert never is not None and never.verdict == Verdict.PASS and never.latency_s is None
    assert "latency not measured (the quote did not change within 5 s)" in never.reason


def test_quotes_null_is_fail_naming_endpoint_and_expectation(ep: Endpoint) -> None:
    r = quotes(ep, [q(0.2, None, None), q(0.5, None, None)])
    assert r is not None and r.verdict == Verdict.FAIL
    assert r.reason.startswith("dash quotes check failed")
    assert "bid null" in r.reason and "expected real numbers" in r.reason


def test_quotes_snapshot_fallback_mode_fails(ep: Endpoint) -> None:
    r = quotes(ep, [q(0.2, 189.5, 189.52, "snapshot_fallback")])
    assert r is not None and r.verdict == Verdict.FAIL
    assert "'snapshot_fallback'" in r.reason and "expected 'live'" in r.reason


def test_quotes_wrong_price_fails_and_tolerance_admits_one_tick(ep: Endpoint) -> None:
    r = quotes(ep, [q(0.7, 150.0, 189.53)])
    assert r is not None and r.verdict == Verdict.FAIL and "matches no broker bid" in r.reason
    # 189.52 was never a broker bid, but one tick from 189.51 is within 0.1%.
    ok = quotes(ep, [q(0.7, 189.52, 189.53)])
    assert ok is not None and ok.verdict == Verdict.PASS


def test_quotes_undecided_until_the_deadline_then_stalled(ep: Endpoint) -> None:
    assert quotes(ep, [], now=T0 + 1) is None
    r = quotes(ep, [], now=T0 + 5.1)
    assert r is not None and r.verdict == Verdict.STALLED and "emitted nothing" in r.reason
    silent = quotes(ep, [pos(0.1, 0)])
    assert silent is not None and silent.verdict == Verdict.STALLED


def test_quotes_only_garbage_is_fail(ep: Endpoint) -> None:
    junk = Observation("dash", 0.1, T0 + 0.1, error="not JSON (Expecting value)")
    r = quotes(ep, [junk])
    assert r is not None and r.verdict == Verdict.FAIL and "invalid" in r.reason


def test_quote_after_the_deadline_does_not_count(ep: Endpoint) -> None:
    r = quotes(ep, [q(6.0, 189.51, 189.53)])
    assert r is not None and r.verdict != Verdict.PASS


def test_stream_check_names_cause_and_garbage(ep: Endpoint) -> None:
    down = check_stream(ep, [], connected=False, last_error="connection refused")
    assert down.verdict == Verdict.FAIL
    assert down.reason == "dash unreachable at http://127.0.0.1:1/e: connection refused"
    junk = Observation("dash", 0.1, T0, error="not JSON (Expecting value)", raw="garbage!")
    bad = check_stream(ep, [q(0.1, 1, 2), junk], connected=True, last_error=None)
    assert bad.verdict == Verdict.FAIL and "1 invalid message(s) of 2" in bad.reason
    assert check_stream(ep, [q(0.1, 1, 2)], connected=True, last_error=None).verdict == "PASS"


ENTRY = BrokerFill("entry", frozenset({"e1"}), "101", 1.0, T0 + 10.0, T0 + 9.9)
EXIT = BrokerFill("exit", frozenset({"e2"}), "102", -1.0, T0 + 12.0, T0 + 11.9)


def test_position_opened_latency_and_deadline(ep: Endpoint) -> None:
    obs = [pos(1, 0), pos(10.84, 1)]
    r = check_position(ep, obs, ENTRY, expected=1, now=INF, symbol="AAPL")
    assert r is not None and r.verdict == Verdict.PASS
    assert "showed the AAPL position +1 840 ms after the gateway reported the entry fill" in (
        r.reason
    )
    assert check_position(ep, [pos(1, 0)], ENTRY, expected=1, now=T0 + 11, symbol="A") is None
    late = check_position(ep, [pos(1, 0), pos(16, 1)], ENTRY, expected=1, now=INF, symbol="A")
    assert late is not None and late.verdict == Verdict.FAIL and "showed: flat" in late.reason


def test_position_wrong_sign_fails(ep: Endpoint) -> None:
    r = check_position(ep, [pos(10.5, -1)], ENTRY, expected=1, now=INF, symbol="AAPL")
    assert r is not None and r.verdict == Verdict.FAIL and "-1" in r.reason


def test_position_cleared_and_held(ep: Endpoint) -> None:
    obs = [pos(10.5, 1), pos(12.3, 0), pos(13.0, 0)]
    kw = {"expected": 0.0, "symbol": "AAPL", "name": "position_cleared", "hold": 3.0}
    assert check_position(ep, obs, EXIT, now=T0 + 14, **kw) is None  # hold still open
    r = check_position(ep, obs, EXIT, now=INF, **kw)
    assert r is not None and r.verdict == Verdict.PASS and "kept it for 3 s" in r.reason
    assert r.latency_s == pytest.approx(0.3)


def test_position_repaint_in_the_hold_window_fails(ep: Endpoint) -> None:
    obs = [pos(10.5, 1), pos(12.3, 0), pos(12.72, 1)]
    r = check_position(
        ep, obs, EXIT, expected=0.0, now=INF, symbol="AAPL", name="position_cleared", hold=3.0
    )
    assert r is not None and r.verdict == Verdict.FAIL
    assert "repainted the closed AAPL position (+1) 420 ms after it cleared" in r.reason
    assert r.reason.startswith("dash position_cleared check failed")


def test_trade_id_each_fill_shows_its_own_ids(ep: Endpoint) -> None:
    obs = [ids(1, "old", "55"), ids(10.2, "e1", "101"), ids(12.25, "e2", "102")]
    r = check_trade_id(ep, obs, [ENTRY, EXIT], now=INF, symbol="AAPL")
    assert r is not None and r.verdict == Verdict.PASS and "entry 200 ms" in r.reason
    assert r.latency_s == pytest.approx(0.25)


def test_trade_id_previous_trade_on_the_new_trade_fails(ep: Endpoint) -> None:
    obs = [ids(10.2, "e1", "101"), ids(12.25, "e1", "101")]
    r = check_trade_id(ep, obs, [ENTRY, EXIT], now=INF, symbol="AAPL")
    assert r is not None and r.verdict == Verdict.FAIL
    assert "the entry's, the previous trade" in r.reason and "permId 102" in r.reason
    mixed = [ids(10.2, "e1", "55")]  # new execId but a cached permId of an older trade
    r2 = check_trade_id(ep, mixed, [ENTRY], now=INF, symbol="AAPL")
    assert r2 is not None and r2.verdict == Verdict.FAIL


def test_trade_id_earlier_run_and_undecided(ep: Endpoint) -> None:
    assert check_trade_id(ep, [ids(1, "old")], [ENTRY], now=T0 + 11, symbol="A") is None
    r = check_trade_id(ep, [ids(1, "old")], [ENTRY], now=INF, symbol="A")
    assert r is not None and r.verdict == Verdict.FAIL and "earlier run" in r.reason
    silent = check_trade_id(ep, [], [ENTRY], now=INF, symbol="A")
    assert silent is not None and silent.verdict == Verdict.STALLED


def test_quotes_ib_no_quote_sentinel_is_not_a_number(ep: Endpoint) -> None:
    r = quotes(ep, [q(0.7, -1.0, 189.53)])
    assert r is not None and r.verdict == Verdict.FAIL and "expected real numbers" in r.reason


def test_position_before_the_run_is_the_baseline(ep: Endpoint) -> None:
    # An account already long 5: after buying one the stack must show 6, after selling 5.
    obs = [pos(1, 5), pos(10.3, 6), pos(12.2, 5)]
    opened = check_position(ep, obs, ENTRY, expected=6, now=INF, symbol="AAPL")
    assert opened is not None and opened.verdict == Verdict.PASS
    back = check_position(
        ep, obs, EXIT, expected=5, now=INF, symbol="AAPL", name="position_cleared", hold=1.0
    )
    assert back is not None and back.verdict == Verdict.PASS
