"""The harness phases and runner against the simulator, with its ground truth as referee."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ib_async import LimitOrder, MarketOrder, Stock

from harness_lib.config import HarnessConfig
from harness_lib.models import Phase, Verdict
from harness_lib.phases import RunContext, cleanup, health, sweep, ticks
from harness_lib.runner import run_harness
from harness_lib.sim import PaperGateway
from harness_lib.store import Store
from tests.helpers import connect, wait_until


def cfg(tmp_path: Path, **kw: object) -> HarnessConfig:
    base: dict[str, object] = {
        "sim": True,
        "store": tmp_path / "h.sqlite",
        "reports_dir": tmp_path / "reports",
    }
    base.update(kw)
    return HarnessConfig(**base)  # type: ignore[arg-type]


@pytest.mark.sim(scenario="slow_first_tick", first_tick_delay=1.2)
async def test_slow_first_tick_within_deadline_matches_ground_truth(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    rep = await run_harness(cfg(tmp_path, tick_deadline=3.0), gateway=paper_gateway)
    assert rep.verdict == Verdict.PASS, rep.reason
    measured = rep.metric("first_bid_s")
    assert abs(measured - 1.2) < 0.05, measured
    # The recorded arrival of the first bid against the simulator's own send stamp.
    sent = paper_gateway.truth.first_tick(HarnessConfig().client_id, "bid")
    assert sent is not None
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        recorded = st.ticks(rep.run_id)
    first_bid = recorded[recorded["field"] == "bid"].iloc[0]
    assert abs(first_bid.t_wall_epoch - sent.t_wall) < 0.05
    assert first_bid.price == sent.price


@pytest.mark.sim(scenario="slow_first_tick", first_tick_delay=1.5)
async def test_slow_first_tick_beyond_deadline_is_stalled(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    rep = await run_harness(cfg(tmp_path, tick_deadline=0.8), gateway=paper_gateway)
    assert rep.verdict == Verdict.STALLED and rep.exit_code == 2
    assert rep.phase(Phase.TICKS).duration_s < 0.8 + 0.5


@pytest.mark.sim(scenario="live_account")
async def test_live_account_is_refused_and_no_order_reaches_the_gateway(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    rep = await run_harness(cfg(tmp_path, trade=True), gateway=paper_gateway)
    assert rep.verdict == Verdict.REFUSED and rep.exit_code == 3
    assert rep.phase(Phase.TICKS) is None, "nothing after the refusal"
    assert paper_gateway.truth.orders == []
    assert paper_gateway.truth.tick_count() == 0


@pytest.mark.sim(scenario="stale_stream", stale_after=0.3, tick_interval=0.05)
async def test_stale_stream_is_detected(paper_gateway: PaperGateway, tmp_path: Path) -> None:
    rep = await run_harness(
        cfg(tmp_path, observe_seconds=1.5, stale_after=0.5), gateway=paper_gateway
    )
    assert rep.verdict == Verdict.FAIL
    assert "stale" in rep.phase(Phase.TICKS).reason


async def test_round_trip_never_touches_other_orders_or_positions(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    other = await connect(paper_gateway.port, 42)
    try:
        aapl = Stock("AAPL", "SMART", "USD")
        await other.qualifyContractsAsync(aapl)
        mine = other.placeOrder(aapl, MarketOrder("BUY", 5, orderRef="strategy"))
        await wait_until(lambda: mine.isDone())
        resting = other.placeOrder(aapl, LimitOrder("SELL", 5, 999.0, orderRef="strategy"))
        await wait_until(lambda: resting.orderStatus.status == "Submitted")
        rep = await run_harness(cfg(tmp_path, trade=True), gateway=paper_gateway)
        assert rep.verdict == Verdict.PASS, rep.reason
        assert rep.metric("total_cost") > 0
        assert paper_gateway.position("AAPL") == 5, "the strategy's position is untouched"
        await asyncio.sleep(0.1)
        assert resting.orderStatus.status == "Submitted", "the strategy's order is untouched"
        cancels = [c for c in paper_gateway.truth.cancels if c[1] == 42]
        assert cancels == []
    finally:
        other.disconnect()


async def test_phases_can_be_called_on_their_own(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    c = HarnessConfig(contract="EUR.USD", store=tmp_path / "s.sqlite")
    ctx = RunContext.create(c, host="127.0.0.1", port=paper_gateway.port)
    h = await health(ctx)
    assert h.verdict == Verdict.PASS and ctx.target.simulated, h.reason
    assert h.metrics["server_version"] == 178
    t = await ticks(ctx)
    assert t.verdict == Verdict.PASS
    assert [cp.name for cp in t.checkpoints][:2] == ["contract_qualified", "subscribed"]
    done = await cleanup(ctx)
    assert done.verdict == Verdict.PASS and not ctx.conn.ib.isConnected()


async def test_cancelling_a_run_still_cleans_up_and_reports_aborted(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    paper_gateway.set_scenario("no_fill")
    task = asyncio.ensure_future(
        run_harness(cfg(tmp_path, trade=True, fill_deadline=30), gateway=paper_gateway)
    )
    await wait_until(lambda: len(paper_gateway.truth.orders) == 1, 10)
    task.cancel()  # what Ctrl-C does to asyncio.run's main task
    rep = await asyncio.wait_for(task, 20)
    assert rep.verdict in (Verdict.ABORTED, Verdict.FAIL)
    assert any(p.verdict == Verdict.ABORTED for p in rep.phases)
    assert rep.phase(Phase.CLEANUP).verdict == Verdict.PASS
    assert len(paper_gateway.truth.cancels) == 1, "the working entry order was cancelled"
    assert paper_gateway.position("AAPL") == 0
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        assert st.runs().iloc[0].verdict == "ABORTED"


async def test_orphans_block_trading_until_swept(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    crashed = await connect(paper_gateway.port, 77)
    aapl = Stock("AAPL", "SMART", "USD")
    await crashed.qualifyContractsAsync(aapl)
    left = crashed.placeOrder(aapl, MarketOrder("BUY", 1, orderRef="harness:earlier-run"))
    await wait_until(lambda: left.isDone())
    crashed.disconnect()
    rep = await run_harness(cfg(tmp_path, trade=True), gateway=paper_gateway)
    assert rep.verdict == Verdict.REFUSED
    assert "harness cleanup" in rep.reason
    assert len(paper_gateway.truth.orders_from(HarnessConfig().client_id)) == 0
    c = HarnessConfig(store=tmp_path / "h.sqlite")
    ctx = RunContext.create(c, host="127.0.0.1", port=paper_gateway.port)
    swept = await sweep(ctx)
    assert swept.verdict == Verdict.PASS, swept.reason
    assert paper_gateway.position("AAPL") == 0
    rep2 = await run_harness(cfg(tmp_path, trade=True), gateway=paper_gateway)
    assert rep2.verdict == Verdict.PASS, rep2.reason
