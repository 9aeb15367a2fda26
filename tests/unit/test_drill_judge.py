"""Drill reactions as pure logic, and the deadline configuration.

Every judge must be able to fail: a stack that stays live, never comes back, shows a tick
twice or shows the wrong position fails; a polled endpoint is not judged on what it cannot see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness_lib.drill.catalog import (
    DRILLS,
    DrillConfigError,
    apply_deadlines,
    load_drill_config,
    parse_deadline_flags,
    select,
)
from harness_lib.drill.judge import (
    judge_duplicates,
    judge_latency,
    judge_leaves_live,
    judge_no_position,
    judge_position,
    judge_returns_live,
    live_at,
)
from harness_lib.models import Verdict
from harness_lib.stack.observe import Observation, PositionSeen, QuoteSeen
from harness_lib.stack.spec import Endpoint, parse_stack

T0 = 1_764_600_000.0


def endpoint(kind: str = "sse") -> Endpoint:
    extra = {"interval": 0.25} if kind == "http" else {}
    (e,) = parse_stack(
        [
            {
                "name": "dash",
                "kind": kind,
                "url": "http://127.0.0.1:1/e",
                "quote": {"select": "q", "bid": "bid", "ask": "ask", "mode": "mode"},
                "position": {"select": "p", "quantity": "qty"},
                **extra,
            }
        ],
        "t",
    )
    return e


def q(at: float, mode: str = "live", bid: float | None = 1.0, digest: str = "") -> Observation:
    shown = (("bid", bid), ("ask", 1.1), ("mode", mode))
    return Observation(
        "dash", at, T0 + at, quote=QuoteSeen(bid, 1.1, None, mode, shown), digest=digest or str(at)
    )


def pos(at: float, qty: float) -> Observation:
    return Observation("dash", at, T0 + at, position=PositionSeen(qty, qty), digest=f"p{at}")


def test_leaves_live_measures_from_the_fault_and_fails_a_stack_that_stays_live() -> None:
    ep = endpoint()
    obs = [q(0.0), q(1.0), q(1.3, "degraded"), q(2.0, "degraded")]
    r = judge_leaves_live("d", ep, obs, T0 + 1.0, 5.0, transient=False)
    assert r.verdict is Verdict.PASS and r.latency == pytest.approx(0.3)
    stays = [q(0.0), q(1.5), q(2.5), q(9.0, "degraded")]
    r = judge_leaves_live("d", ep, stays, T0 + 1.0, 5.0, transient=False)
    assert r.verdict is Verdict.FAIL and "still showed live" in r.detail
    r = judge_leaves_live("d", endpoint("http"), obs, T0 + 1.0, 5.0, transient=True)
    assert r.verdict is Verdict.SKIPPED
    assert live_at(ep, obs, T0 + 1.1) is True and live_at(ep, obs, T0 + 1.4) is False


def test_returns_live_needs_a_real_bid() -> None:
    ep = endpoint()
    obs = [q(2.0, "degraded"), q(3.0, "live", bid=None), q(3.5, "live")]
    r = judge_returns_live("d", ep, obs, T0 + 2.5, 10.0)
    assert r.verdict is Verdict.PASS and r.latency == pytest.approx(1.0)
    r = judge_returns_live("d", ep, obs[:2], T0 + 2.5, 10.0)
    assert r.verdict is Verdict.FAIL and "not live" in r.detail


def test_duplicates_are_the_same_message_within_the_window_on_streams_only() -> None:
    ep = endpoint()
    clean = [q(1.0, digest="a"), q(1.25, digest="b"), q(2.0, digest="a")]  # 1 s apart: a re-send
    assert judge_duplicates("d", ep, clean, T0, T0 + 5).verdict is Verdict.PASS
    doubled = [q(1.0, digest="a"), q(1.003, digest="a"), q(1.25, digest="b")]
    r = judge_duplicates("d", ep, doubled, T0, T0 + 5)
    assert r.verdict is Verdict.FAIL and "1 of 3 messages shown twice" in r.detail
    # Position repaints are states, not events: the same card twice is no duplicate.
    cards = [pos(1.0, 1), pos(1.001, 1), q(1.2)]
    cards[1].digest = cards[0].digest
    assert judge_duplicates("d", ep, cards, T0, T0 + 5).verdict is Verdict.PASS
    assert judge_duplicates("d", ep, [], T0, T0 + 5).verdict is Verdict.FAIL
    assert judge_duplicates("d", endpoint("http"), doubled, T0, T0 + 5).verdict is Verdict.SKIPPED


def test_position_must_match_the_broker_and_keep_matching() -> None:
    ep = endpoint()
    r = judge_position("d", ep, [pos(0.5, 0), pos(3.0, 1)], 1.0, T0 + 2.0, 5.0, T0 + 6)
    assert r.verdict is Verdict.PASS and r.latency == pytest.approx(1.0)
    r = judge_position("d", ep, [pos(0.5, 1), pos(3.0, 0)], 1.0, T0 + 2.0, 5.0, T0 + 6)
    assert r.verdict is Verdict.FAIL and "then showed 0" in r.detail
    r = judge_position("d", ep, [pos(0.5, 0)], 1.0, T0 + 2.0, 5.0, T0 + 6)
    assert r.verdict is Verdict.FAIL
    assert judge_position("d", ep, [], 0.0, T0, 5.0, T0 + 6).verdict is Verdict.FAIL
    r = judge_no_position("d", ep, [pos(0.5, 0), pos(2.0, 1)], 0.0, T0 + 1, T0 + 6)
    assert r.verdict is Verdict.FAIL and "rejected" in r.detail


def test_latency_judged_against_the_deadline() -> None:
    assert judge_latency("d", "reconnected", 0.2, 5.0, "reconnect").verdict is Verdict.PASS
    assert judge_latency("d", "reconnected", 6.0, 5.0, "reconnect").verdict is Verdict.FAIL
    assert judge_latency("d", "reconnected", None, 5.0, "reconnect").verdict is Verdict.FAIL


def test_deadlines_from_config_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "drills.toml"
    cfg.write_text("[deadlines]\nleaves_live = 3\n[drills.stale_stream]\nleaves_live = 12\n")
    loaded = load_drill_config(cfg)
    flags = parse_deadline_flags(["disconnect.returns_live=4"])
    d = apply_deadlines(DRILLS["disconnect"], loaded, flags)
    assert d.reaction("leaves_live").deadline == 3  # type: ignore[union-attr]
    assert d.reaction("returns_live").deadline == 4  # type: ignore[union-attr]
    s = apply_deadlines(DRILLS["stale_stream"], loaded, flags)
    assert s.reaction("leaves_live").deadline == 12  # type: ignore[union-attr]
    assert DRILLS["disconnect"].reaction("leaves_live").deadline == 5  # type: ignore[union-attr]
    with pytest.raises(DrillConfigError, match="unknown reaction"):
        parse_deadline_flags(["leaves=3"])
    with pytest.raises(DrillConfigError, match="positive number"):
        parse_deadline_flags(["leaves_live=0"])
    cfg.write_text("[drills.nope]\nleaves_live = 3\n")
    with pytest.raises(DrillConfigError, match="unknown drill 'nope'"):
        load_drill_config(cfg)
    with pytest.raises(ValueError, match="unknown drill"):
        select(["explode"])
    assert [d.name for d in select(["lost-1101"])] == ["lost_1101"]


def test_report_store_and_postmortem_view(tmp_path: Path) -> None:
    """A drill report round-trips: JSON valid against its generated schema, one run in a
    real SQLite store with its reactions, and the post-mortem table and chart read them."""
    import json

    import jsonschema

    from harness_lib import charts
    from harness_lib.drill.judge import ReactionResult
    from harness_lib.drill.report import drill_report, drill_schema, record, write_json
    from harness_lib.drill.run import DrillOutcome
    from harness_lib.postmortem import drill_table
    from harness_lib.store import Store

    ok = ReactionResult("lost_1101", "leaves_live", "dash-sse", 5.0, 0.004, Verdict.PASS, "ok")
    dup = ReactionResult("lost_1101", "no_duplicates", "dash-sse", None, 1.3, Verdict.FAIL, "2x")
    outcome = DrillOutcome("lost_1101", T0, T0 + 1.5, [ok, dup])
    ident = {"simulator": "livefire-sim", "ib_host": "127.0.0.1", "ib_port": 7599,
             "accounts": ["DU1234567"]}  # fmt: skip
    rep = drill_report([outcome], ident, Verdict.FAIL, started_at=T0 - 1)
    path = write_json(rep, tmp_path / "r.json")
    doc = json.loads(path.read_text())
    jsonschema.validate(doc, drill_schema())
    assert doc["drills"][0]["verdict"] == "FAIL" and doc["exit_code"] == 1
    obs = [Observation("dash-sse", 1.0, T0 + 0.5, quote=QuoteSeen(1.0, 1.1, None, "live"))]
    assert record(rep, tmp_path / "h.sqlite", obs) == []
    with Store(tmp_path / "h.sqlite") as s:
        results = s.drill_results(rep.run_id)
        run = s.run(rep.run_id)
        assert run is not None and run["verdict"] == "FAIL" and run["exit_code"] == 1
        assert len(s.stack_observations(rep.run_id)) == 1
    table = drill_table(results)
    assert list(table["reaction"]) == ["no_duplicates", "leaves_live"]  # failures first
    assert table.iloc[1]["latency (ms)"] == 4.0
    spec = charts.drill_latency_chart(results).to_dict()
    assert spec["layer"][0]["encoding"]["x"]["field"] == "latency_ms"
    assert drill_table(results.iloc[0:0]).empty
