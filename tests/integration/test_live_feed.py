"""The notebooks' live feed against the embedded simulator: real sockets, real ib_async."""

from __future__ import annotations

import dataclasses
import math
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness_lib import charts
from harness_lib.config import HarnessConfig
from harness_lib.live import LIVE_CLIENT_ID
from harness_lib.live.decisions import check_target
from harness_lib.live.feed import LiveFeed, get_feed
from harness_lib.live.snapshot import TICK_COLUMNS, Account, Snapshot
from harness_lib.live.views import format_findings, quote_html, quote_table, stack_html, stack_table
from harness_lib.models import Verdict
from harness_lib.runner import run_harness
from harness_lib.stack.spec import Endpoint, parse_stack
from tests.loopback import stop_process
from tests.stack_app import start_stack_process

FAST = HarnessConfig(client_id=LIVE_CLIENT_ID, tick_deadline=1.0, observe_seconds=0.1)


def established_to(port: int) -> int:
    """ESTABLISHED TCP sockets whose remote end is ``port`` (the clients of a local server),
    read from /proc like ``ss`` would: independent of what the simulator believes."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                n += 1
    return n


def wait(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def both_real(snap: Snapshot) -> bool:
    return math.isfinite(snap.quote["bid"]) and math.isfinite(snap.quote["ask"])


@pytest.fixture
def feed() -> Iterator[LiveFeed]:
    f = get_feed()
    try:
        yield f
    finally:
        f.stop()


def test_quotes_turn_real_with_first_value_times(feed: LiveFeed) -> None:
    feed.start_sim("healthy")
    before = feed.snapshot()
    assert before.verdict == Verdict.SKIPPED and not before.connected
    result = feed.connect(contract="AAPL", cfg=FAST).result(10)
    assert result.health.verdict == Verdict.PASS
    assert result.ticks is not None and result.ticks.verdict == Verdict.PASS

    snap = feed.wait_for(lambda s: s.tick_count >= 10, 5)
    assert both_real(snap)
    assert snap.verdict == Verdict.PASS, snap.reason
    # Times are measured from the subscription, as the ticks phase measures them.
    assert 0 < snap.first_seconds["bid"] < 1.0
    assert snap.first_at["ask"] is not None
    assert snap.market_data == "live"
    assert snap.health.server_version == 178
    assert snap.health.accounts == (Account("DU****567", paper=True),)
    assert {f.code for f in snap.health.farms} >= {2104, 2106}

    table = quote_table(snap)
    assert list(table["field"]) == ["bid", "ask", "last", "bidSize", "askSize"]
    assert table["first real after (ms)"].notna().all()
    page = quote_html(snap)
    assert 'class="livefire-quote"' in page
    assert f">{snap.quote['bid']:g}</td>" in page  # the real bid, not nan

    ticks = snap.ticks
    assert list(ticks.columns) == list(TICK_COLUMNS)
    assert set(ticks["field"]) >= {"bid", "ask"}
    # The snapshot's frame is what the live charts draw.
    charts.price_spread_chart(ticks, last_seconds=60).to_dict()
    charts.interarrival_chart(ticks).to_dict()


def test_three_reconnects_keep_exactly_one_connection(feed: LiveFeed) -> None:
    port = feed.start_sim("healthy")
    feed.connect(cfg=FAST).result(10)
    assert established_to(port) == 1
    for _ in range(3):
        feed.connect(cfg=FAST, reuse=False).result(10)
        wait(lambda: established_to(port) == 1 and len(feed.sim.sessions) == 1)  # type: ignore[union-attr]
    events = [e for _, cid, e in feed.sim.truth.connections if cid == LIVE_CLIENT_ID]  # type: ignore[union-attr]
    assert events.count("connected") == 4
    assert events.count("closed") == 3
    assert "refused" not in events  # never "client id already in use" (326)
    assert feed.connections() == 1


def test_rerunning_with_the_same_settings_keeps_the_session(feed: LiveFeed) -> None:
    port = feed.start_sim("healthy")
    first = feed.connect(cfg=FAST)
    first.result(10)
    # What a re-run cell or a second marimo viewer does: the same call again.
    assert feed.connect(cfg=FAST) is first
    assert established_to(port) == 1
    # A different contract is a different session (and still one connection).
    feed.connect(contract="EUR.USD", cfg=FAST).result(10)
    wait(lambda: established_to(port) == 1)
    assert feed.snapshot().contract == "EUR.USD"


def test_switching_to_never_ticks_says_so(feed: LiveFeed) -> None:
    feed.start_sim("healthy")
    feed.connect(cfg=FAST).result(10)
    assert feed.wait_for(both_real, 3).verdict == Verdict.PASS

    switched = feed.set_scenario("never_ticks")
    assert switched is not None
    waiting = feed.snapshot()
    assert waiting.scenario == "never_ticks"
    assert waiting.verdict == Verdict.STALLED
    assert math.isnan(waiting.quote["bid"])

    result = switched.result(10)
    assert result.ticks.verdict == Verdict.STALLED
    snap = feed.snapshot()
    assert snap.verdict == Verdict.STALLED
    assert "no tick" in snap.reason
    assert snap.tick_count == 0


def test_a_stream_that_stops_is_reported_stale(feed: LiveFeed) -> None:
    feed.start_sim("stale_stream", stale_after=0.6)
    cfg = HarnessConfig(client_id=LIVE_CLIENT_ID, tick_deadline=1.0, stale_after=0.5)
    feed.connect(cfg=cfg).result(10)
    snap = feed.wait_for(lambda s: s.verdict != Verdict.PASS, 4)
    assert snap.verdict == Verdict.FAIL
    assert "stale" in snap.reason


@pytest.mark.ib_errors(354)
def test_ib_errors_are_logged_with_their_codes(feed: LiveFeed) -> None:
    feed.start_sim("not_subscribed")
    result = feed.connect(cfg=FAST).result(10)
    assert result.ticks.verdict == Verdict.FAIL
    snap = feed.snapshot()
    log = snap.messages
    hit = log[log["code"] == 354]
    assert len(hit) == 1 and hit["kind"].iloc[0] == "error"
    assert "not subscribed" in hit["message"].iloc[0]
    assert snap.verdict == Verdict.FAIL
    assert "354" in snap.reason


def test_a_live_account_is_refused_and_not_kept_connected(feed: LiveFeed) -> None:
    port = feed.start_sim("live_account")
    result = feed.connect(cfg=FAST).result(10)
    assert result.health.verdict == Verdict.REFUSED
    assert result.ticks is None
    wait(lambda: established_to(port) == 0)
    snap = feed.snapshot()
    assert snap.verdict == Verdict.REFUSED
    assert "non-paper" in snap.reason
    assert snap.health.accounts == (Account("U****321", paper=False),)


@pytest.mark.allow_peer_close
def test_a_dropped_connection_is_reported(feed: LiveFeed) -> None:
    feed.start_sim("healthy")
    feed.connect(cfg=FAST).result(10)
    assert feed.sim is not None
    feed.run(lambda: _drop(feed)).result(5)
    snap = feed.wait_for(lambda s: s.state == "disconnected", 5)
    assert snap.verdict == Verdict.FAIL
    assert "lost" in snap.reason
    assert not snap.connected
    # Re-running the connect cell reconnects (a dead session is never reused).
    feed.connect(cfg=FAST).result(10)
    assert feed.wait_for(both_real, 3).verdict == Verdict.PASS


async def _drop(feed: LiveFeed) -> int:
    assert feed.sim is not None
    return feed.sim.drop_all("test")


def test_a_blocked_caller_does_not_stop_the_feed(feed: LiveFeed) -> None:
    feed.start_sim("healthy", tick_interval=0.05)
    feed.connect(cfg=FAST).result(10)
    before = feed.snapshot().tick_count
    time.sleep(1.0)  # a slow cell: blocking, no await
    after = feed.snapshot()
    assert after.tick_count - before >= 20
    assert after.last_tick_age_s is not None and after.last_tick_age_s < 0.5


def test_runs_phases_and_the_harness_on_the_feed_loop(feed: LiveFeed, tmp_path: Path) -> None:
    feed.start_sim("healthy")
    feed.connect(cfg=FAST).result(10)  # the live view stays connected meanwhile
    cfg = HarnessConfig(
        sim=True, trade=True, store=tmp_path / "h.sqlite", reports_dir=tmp_path / "reports"
    )
    port = feed.sim_port
    assert port is not None
    check = feed.run(lambda: check_target(cfg, host="127.0.0.1", port=port, simulated=True))
    assert check.result(10).paper
    report = feed.run(lambda: run_harness(cfg, gateway=feed.sim)).result(30)
    assert report.verdict == Verdict.PASS, report.reason
    assert report.metric("total_cost") > 0
    # Client 917 came and went; the live view (919) never noticed.
    assert feed.snapshot().verdict == Verdict.PASS
    assert established_to(port) == 1


def test_the_paper_guard_refuses_a_live_account(feed: LiveFeed) -> None:
    port = feed.start_sim("live_account")
    check = feed.run(
        lambda: check_target(HarnessConfig(sim=True), host="127.0.0.1", port=port, simulated=True)
    ).result(10)
    assert not check.paper
    assert check.result.verdict == Verdict.REFUSED
    assert check.accounts == [("U****321", False)]


def test_stop_disconnects_and_the_next_get_feed_starts_afresh() -> None:
    feed = get_feed()
    assert get_feed() is feed
    port = feed.start_sim("healthy")
    feed.connect(cfg=FAST).result(10)
    assert established_to(port) == 1
    feed.stop()
    assert not feed.alive
    assert established_to(port) == 0
    with pytest.raises(RuntimeError, match="stopped"):
        feed.connect(cfg=FAST)
    feed.stop()  # idempotent
    fresh = get_feed()
    try:
        assert fresh is not feed and fresh.alive
        assert fresh.snapshot().verdict == Verdict.SKIPPED
    finally:
        fresh.stop()


# ----------------------------------------------------------------- with the user's stack


def stack_endpoint(port: int, *, kind: str = "sse", name: str | None = None) -> Endpoint:
    """One endpoint of tests/stack_app.py with its quote facts (as a user declares it)."""
    path = {"sse": "/events", "websocket": "/ws", "http": "/api/state"}[kind]
    scheme = "ws" if kind == "websocket" else "http"
    (ep,) = parse_stack(
        [
            {
                "name": name or f"tiny-{kind}",
                "kind": kind,
                "url": f"{scheme}://127.0.0.1:{port}{path}",
                "quote": {
                    "select": 'quotes."{symbol}"',
                    "bid": "bid",
                    "ask": "ask",
                    "last": "last",
                    "mode": "mode",
                    "live": ["live"],
                },
            }
        ],
        "test",
    )
    return ep


@pytest.fixture
def stack_procs() -> Iterator[Callable[..., int]]:
    """Start tests/stack_app.py against a gateway port: ``http_port = start(ib_port)``."""
    procs: list[subprocess.Popen[str]] = []

    def start(ib_port: int, **kw: Any) -> int:
        proc, port = start_stack_process(ib_port, **kw)
        procs.append(proc)
        return port

    try:
        yield start
    finally:
        for p in procs:
            stop_process(p)


def stack_decided(snap: Snapshot) -> bool:
    return bool(snap.stack) and all(s.verdict is not None for s in snap.stack)


def test_stack_quote_beside_the_broker_quote(
    feed: LiveFeed, stack_procs: Callable[..., int]
) -> None:
    sim_port = feed.start_sim("healthy")
    http_port = stack_procs(sim_port)
    cfg = dataclasses.replace(FAST, tick_deadline=5.0, stack=(stack_endpoint(http_port),))
    feed.connect(contract="AAPL", cfg=cfg).result(15)

    snap = feed.wait_for(lambda s: stack_decided(s) and s.stack[0].matches is True, 10)
    (dash,) = snap.stack
    assert dash.endpoint == "tiny-sse" and dash.kind == "sse" and dash.connected
    assert dash.verdict == Verdict.PASS, dash.reason
    assert "showed AAPL bid" in dash.reason
    # The stack echoes the gateway: its numbers are the broker's, within the tolerance.
    assert dash.bid is not None and dash.ask is not None and dash.bid <= dash.ask
    assert dash.bid == pytest.approx(snap.quote["bid"], rel=0.01)
    assert dash.mode == "live" and dash.mode_live is True
    assert dash.latency_s is not None and -1.0 < dash.latency_s < 1.0
    assert dash.at is not None and dash.age_s is not None and dash.messages > 0
    assert snap.verdict == Verdict.PASS, snap.reason
    assert "stack shows it" in snap.reason

    # Side by side: the broker's row first, then the endpoint's, with its data mode.
    table = stack_table(snap)
    assert list(table["source"]) == ["broker", "tiny-sse"]
    assert table["data mode"].tolist() == ["live", "live"]
    assert table["matches broker"].tolist()[1] == "yes"
    page = stack_html(snap)
    assert 'class="livefire-stack"' in page and "tiny-sse" in page
    # Observations went through the Recorder, as in a run.
    assert any(o.endpoint == "tiny-sse" for o in feed._session.ctx.rec.stack_seen)  # type: ignore[union-attr]

    # Stopping the feed closes the watcher's connection to the stack too.
    feed.stop()
    wait(lambda: established_to(http_port) == 0)


def test_a_stack_showing_null_fails_the_live_verdict(
    feed: LiveFeed, stack_procs: Callable[..., int]
) -> None:
    sim_port = feed.start_sim("healthy")
    http_port = stack_procs(sim_port, null_quotes=True)
    ep = stack_endpoint(http_port, kind="websocket")
    cfg = dataclasses.replace(FAST, tick_deadline=1.5, stack=(ep,))
    feed.connect(contract="AAPL", cfg=cfg).result(15)

    # While the deadline runs the stack part is undecided: never PASS before it is judged.
    early = feed.wait_for(lambda s: bool(s.stack) and s.stack[0].shown != "", 5)
    assert early.stack[0].matches is False
    assert early.stack[0].bid is None and "bid null" in early.stack[0].shown
    assert early.verdict != Verdict.PASS

    snap = feed.wait_for(stack_decided, 5)
    (dash,) = snap.stack
    assert dash.verdict == Verdict.FAIL
    assert "quotes check failed" in dash.reason and "null" in dash.reason
    assert dash.mode == "live" and dash.mode_live is True  # the flag alone is no proof
    assert snap.verdict == Verdict.FAIL
    assert snap.reason.startswith("stack: tiny-websocket quotes check failed")
    assert "tiny-websocket" in format_findings(snap) and "null" in format_findings(snap)


def test_a_stack_that_is_down_is_named_with_its_cause(feed: LiveFeed) -> None:
    feed.start_sim("healthy")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = dataclasses.replace(FAST, tick_deadline=1.0, stack=(stack_endpoint(dead, kind="http"),))
    feed.connect(contract="AAPL", cfg=cfg).result(15)
    snap = feed.wait_for(stack_decided, 5)
    (dash,) = snap.stack
    assert not dash.connected and dash.error == "connection refused"
    assert dash.verdict == Verdict.FAIL
    assert "unreachable" in dash.reason and "connection refused" in dash.reason
    assert snap.verdict == Verdict.FAIL
    # The broker part is still shown and still real.
    assert both_real(snap)
