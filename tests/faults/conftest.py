"""Fault-matrix fixtures: a simulator with FOREIGN state, and the ground-truth referee.

Every cell of the matrix runs the real harness against the real simulator over loopback,
then calls :func:`assert_clean`, which checks the promises of the reliability issue
against what the simulator itself recorded (never against what the harness believes):

1. the net position created by harness executions (orderRef ``harness:``) is 0;
2. no harness-tagged order is still active at the gateway;
3. the foreign position and the foreign resting order placed first by another client are
   unchanged, and no cancel ever targeted that client's orders;
4. the run is in the store with the report's verdict and exit code, and what was observed
   up to the fault is there: ticks, orders, executions (exactly once, each);
5. the recorded tick count equals the ticks the simulator sent to the harness client.

Each check feeds a registry; ``pytest_terminal_summary`` prints the figures as
``faults: N scenarios, N passed, P positions left open, F foreign orders touched``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from ib_async import IB, LimitOrder, MarketOrder, Stock, Trade

from harness_lib.config import HarnessConfig
from harness_lib.models import RunReport, Verdict
from harness_lib.sim import PaperGateway
from harness_lib.sim.server import Session
from harness_lib.store import Store
from tests.conftest import FAULT_FIGURES
from tests.helpers import connect, wait_until

HARNESS_CLIENT = HarnessConfig().client_id
"""The harness's default API client id (917): the simulator's ground truth is per client."""
FOREIGN_CLIENT = 42
FOREIGN_REF = "strategy"
FOREIGN_QTY = 3.0
FOREIGN_LIMIT = 999.0
SYMBOL = "AAPL"
HARNESS_PREFIX = "harness:"


# --- the simulator, with scenario changes staged on the harness's n-th order ---------------


class StagedGateway(PaperGateway):
    """The paper-gateway simulator plus one test control: switch scenario when the harness
    client sends its n-th placeOrder, before the simulator handles that order.

    ``set_scenario`` applies to one scenario at a time; staging lets one cell combine two,
    e.g. "the exit is rejected (order_reject, nth=2), then the gateway drops the connection
    when cleanup's flattening order (the 3rd) is accepted". A staged switch resets the
    scenario's step and order counters, so the staged fault uses ``order_submitted:1`` /
    ``nth=1`` for "this very order". Nothing in the protocol changes.
    """

    foreign: Foreign

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stages: dict[int, tuple[str, dict[str, Any]]] = {}

    def stage(self, nth_order: int, scenario: str, **params: Any) -> None:
        """Switch to ``scenario`` when the harness client's ``nth_order``-th order arrives."""
        self.stages[nth_order] = (scenario, params)

    def handle_order(self, s: Session, r: Any) -> None:
        if s.client_id == HARNESS_CLIENT:
            n = len(self.truth.orders_from(HARNESS_CLIENT)) + 1
            staged = self.stages.pop(n, None)
            if staged is not None:
                self.set_scenario(staged[0], **staged[1])
        super().handle_order(s, r)


@dataclass
class Foreign:
    """State another client (a 'strategy') placed before the harness ran."""

    ib: IB
    account: str
    position: float
    resting_order_id: int
    resting_qty: float
    resting_price: float
    order_ids: set[int] = field(default_factory=set)


async def place_foreign_state(gw: StagedGateway) -> Foreign:
    """From client 42: BUY 3 AAPL (filled) and a resting LIMIT SELL 3 @ 999, both tagged
    ``strategy``. Returns what the checks compare against."""
    ib = await connect(gw.port, FOREIGN_CLIENT)
    aapl = Stock(SYMBOL, "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    bought: Trade = ib.placeOrder(aapl, MarketOrder("BUY", FOREIGN_QTY, orderRef=FOREIGN_REF))
    await wait_until(lambda: bought.isDone(), 5)
    resting: Trade = ib.placeOrder(
        aapl, LimitOrder("SELL", FOREIGN_QTY, FOREIGN_LIMIT, orderRef=FOREIGN_REF)
    )
    await wait_until(lambda: resting.orderStatus.status == "Submitted", 5)
    account = gw.accounts[0]
    assert gw.position(SYMBOL, account) == FOREIGN_QTY
    return Foreign(
        ib=ib,
        account=account,
        position=FOREIGN_QTY,
        resting_order_id=resting.order.orderId,
        resting_qty=FOREIGN_QTY,
        resting_price=FOREIGN_LIMIT,
        order_ids={bought.order.orderId, resting.order.orderId},
    )


@contextlib.asynccontextmanager
async def foreign_gateway(port: int = 0) -> AsyncIterator[StagedGateway]:
    """A simulator on the running loop, listening on ``port`` (0: any free one), with the
    foreign state already in place. Its scenario is healthy: set the cell's scenario
    afterwards (which also resets the scenario's order and step counters)."""
    async with StagedGateway(port=port) as gateway:
        gateway.foreign = await place_foreign_state(gateway)
        try:
            yield gateway
        finally:
            gateway.foreign.ib.disconnect()


@pytest_asyncio.fixture
async def gw() -> AsyncIterator[StagedGateway]:
    """:func:`foreign_gateway` on a free port, for the test's loop."""
    async with foreign_gateway() as gateway:
        yield gateway


def harness_cfg(tmp_path: Path, **overrides: Any) -> HarnessConfig:
    """A --trade config with short deadlines, its store and reports under ``tmp_path``."""
    base: dict[str, Any] = {
        "sim": True,
        "trade": True,
        "store": tmp_path / "h.sqlite",
        "reports_dir": tmp_path / "reports",
        "fill_deadline": 2.0,
        "tick_deadline": 3.0,
        "observe_seconds": 0.2,
    }
    base.update(overrides)
    return HarnessConfig(**base)


# --- running the real CLI ------------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment for CLI subprocesses: no stray HARNESS_* settings, wide output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["COLUMNS"] = "200"
    return env


HARNESS = [sys.executable, "-m", "harness_lib.cli"]


async def cli(*args: str, cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``harness ARGS`` in ``cwd`` as a subprocess, without blocking the loop the
    simulator runs on."""
    proc = await asyncio.create_subprocess_exec(
        *HARNESS,
        *args,
        cwd=cwd,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def _keep_logging() -> Iterator[None]:
    """Undo what the CLI's root callback does to logging (``basicConfig``, and silencing
    ``ib_async`` unless ``-v``) once ``main`` returns."""
    root, ib_logger = logging.getLogger(), logging.getLogger("ib_async")
    saved = (root.level, list(root.handlers), ib_logger.level)
    try:
        yield
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        ib_logger.setLevel(saved[2])


def _cli_main_in_thread(args: list[str]) -> tuple[int, str, str]:
    from harness_lib.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with _keep_logging(), redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


async def harness_cleanup(gateway: PaperGateway, store: Path) -> tuple[int, str, str]:
    """`harness -v cleanup --host 127.0.0.1 --port P --store S`: the real CLI entry point,
    run in a worker thread (its own event loop) so the simulator on this loop keeps serving.
    In-process only to save the interpreter start-up; the subprocess form is exercised by
    the unreachable-gateway and SIGKILL tests. ``-v`` keeps ``ib_async`` logging on, so the
    sweep's own ib_async errors are judged like the run's."""
    args = ["-v", "cleanup", "--host", "127.0.0.1", "--port", str(gateway.port)]
    args += ["--store", str(store)]
    return await asyncio.to_thread(_cli_main_in_thread, args)


# --- the referee -----------------------------------------------------------------------------


@dataclass
class CellFigures:
    """What :func:`assert_clean` measured for one scenario."""

    positions_left_open: int = 0
    foreign_orders_touched: int = 0


REGISTRY: dict[str, CellFigures] = {}
"""nodeid -> figures, filled by assert_clean (also when one of its checks fails)."""


def _current_nodeid() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "unknown")
    return current.rsplit(" (", 1)[0]


def harness_net(gateway: PaperGateway, ref_prefix: str = HARNESS_PREFIX) -> dict[int, float]:
    """Net quantity per conId of every gateway execution whose orderRef starts with
    ``ref_prefix`` (ground truth, whatever the harness recorded)."""
    net: dict[int, float] = {}
    for e in gateway.broker.executions:
        if not (e.order.order_ref or "").startswith(ref_prefix):
            continue
        sign = 1.0 if e.order.action == "BUY" else -1.0
        cid = e.order.inst.con_id
        net[cid] = net.get(cid, 0.0) + sign * e.shares
    return {k: v for k, v in net.items() if not math.isclose(v, 0.0, abs_tol=1e-9)}


def foreign_touches(gateway: StagedGateway) -> list[str]:
    """Every way the foreign state differs from what client 42 left (empty = untouched)."""
    f = gateway.foreign
    problems: list[str] = []
    con_id = gateway._find(SYMBOL).con_id
    held = gateway.position(SYMBOL, f.account) - harness_net(gateway).get(con_id, 0.0)
    if not math.isclose(held, f.position):
        problems.append(f"foreign position {held:g}, expected {f.position:g}")
    order = gateway.broker.orders.get((FOREIGN_CLIENT, f.resting_order_id))
    if order is None or not order.is_active:
        problems.append(f"foreign resting order is {order.view.status if order else 'gone'}")
    elif (order.view.quantity, order.view.lmt_price, order.view.filled) != (
        f.resting_qty,
        f.resting_price,
        0.0,
    ):
        v = order.view
        problems.append(f"foreign resting order changed: {v.quantity} @ {v.lmt_price}")
    cancels = [c for c in gateway.truth.cancels if c[1] == FOREIGN_CLIENT]
    if cancels:
        problems.append(f"cancels sent for client {FOREIGN_CLIENT}'s orders: {cancels}")
    new = {o for (cid, o) in gateway.broker.orders if cid == FOREIGN_CLIENT} - f.order_ids
    if new:
        problems.append(f"orders appeared under client {FOREIGN_CLIENT}: {sorted(new)}")
    return problems


def _verdict_of(report_or_exit_code: RunReport | int, run: dict[str, Any]) -> tuple[str, int]:
    if isinstance(report_or_exit_code, RunReport):
        rep = report_or_exit_code
        assert rep.exit_code == Verdict(rep.verdict).exit_code, "report exit code vs verdict"
        return str(rep.verdict), rep.exit_code
    return str(run["verdict"]), int(report_or_exit_code)


def assert_clean(
    gateway: StagedGateway,
    report_or_exit_code: RunReport | int,
    store_path: Path,
    *,
    run_id: str | None = None,
    aborted: bool = False,
    exact_ticks: bool = True,
    traded: bool = True,
) -> dict[str, Any]:
    """Check the five promises for one run against the simulator's ground truth.

    ``report_or_exit_code`` is the in-process RunReport, or the CLI's exit code (then
    ``run_id`` names the run). ``aborted``: the run was killed, so its record must say
    'aborted' and only a prefix of the ticks may be there (``exact_ticks`` False).
    ``traded`` False for refused runs: nothing placed, nothing executed.
    Returns the stored run row.
    """
    figures = REGISTRY.setdefault(_current_nodeid(), CellFigures())
    net = harness_net(gateway)
    figures.positions_left_open = len(net)
    touched = foreign_touches(gateway)
    figures.foreign_orders_touched = len(touched)

    # 1. flat, 2. no harness order working, 3. foreign state untouched.
    assert not net, f"harness net position left at the gateway: {net} (conId: qty)"
    working = [
        (o.view.order_id, o.view.order_ref)
        for o in gateway.broker.open_orders()
        if (o.view.order_ref or "").startswith(HARNESS_PREFIX)
    ]
    assert not working, f"harness orders still working at the gateway: {working}"
    assert not touched, "; ".join(touched)

    # 4. the run is stored with the right verdict and exit code.
    if isinstance(report_or_exit_code, RunReport):
        run_id = run_id or report_or_exit_code.run_id
    assert run_id is not None, "pass run_id with a CLI exit code"
    with Store(store_path, readonly=True) as st:
        run = st.run(run_id)
        assert run is not None, f"run {run_id} is not in {store_path}"
        verdict, exit_code = _verdict_of(report_or_exit_code, run)
        if aborted:
            assert run["status"] == "aborted", run["status"]
            assert run["verdict"] == str(Verdict.ABORTED)
            assert run["exit_code"] == Verdict.ABORTED.exit_code
        else:
            assert run["status"] == "finished", run["status"]
            assert run["verdict"] == verdict, (run["verdict"], verdict)
            assert run["exit_code"] == exit_code == Verdict(verdict).exit_code
        ticks = st.ticks(run_id)
        orders = st.orders(run_id)
        trades = st.trades(run_id)
        events = st.events(run_id)
        checkpoints = st.checkpoints(run_id)

    ref = f"{HARNESS_PREFIX}{run_id}"
    truth_orders = [o for o in gateway.truth.orders_from(HARNESS_CLIENT) if o.order_ref == ref]
    gw_execs = [e for e in gateway.broker.executions if e.order.order_ref == ref]
    if traded:
        assert not checkpoints.empty, "no checkpoint recorded"
        assert len(ticks) > 0, "no tick recorded before the fault"
        assert truth_orders, "the harness never reached the gateway with an order"
    else:
        assert truth_orders == [], f"refused run sent placeOrder: {truth_orders}"
    # Every order the gateway received from this run is in the store. The store may hold
    # one more: an order written to a socket the gateway was closing at that moment never
    # arrives; it must then never have been acknowledged (no Submitted/Filled status).
    received = {o.order_id for o in truth_orders}
    stored = dict(zip(orders["order_id"], orders["status"], strict=True))
    assert received <= set(stored), f"orders received {sorted(received)}, stored {stored}"
    lost = {oid: status for oid, status in stored.items() if oid not in received}
    acked = {oid: st for oid, st in lost.items() if st in ("PreSubmitted", "Submitted", "Filled")}
    assert not acked, f"stored as acknowledged but never received by the gateway: {acked}"
    assert len(lost) <= 1, f"orders never received by the gateway: {lost}"
    # Every execution of this run is in the store exactly once (execId is the key).
    stored_ids = list(trades["exec_id"])
    assert len(stored_ids) == len(set(stored_ids)), f"execution recorded twice: {stored_ids}"
    assert set(stored_ids) == {e.exec_id for e in gw_execs}, (
        sorted(stored_ids),
        sorted(e.exec_id for e in gw_execs),
    )

    # 5. ticks: ib_async turns each tickPrice/tickSize into one TickData.
    sent = gateway.truth.ticks_for(HARNESS_CLIENT)
    assert list(ticks["seq"]) == list(range(1, len(ticks) + 1)), "tick seq has gaps/dupes"

    # What was recorded is exactly what was sent, in order: nothing twice, nothing invented.
    def price(p: Any) -> float | None:
        return None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p)

    got = [(int(tt), price(p)) for tt, p in zip(ticks["tick_type"], ticks["price"], strict=True)]
    want = [(t.tick_type, price(t.price)) for t in sent[: len(got)]]
    assert got == want, "recorded ticks differ from the ticks the simulator sent"
    if exact_ticks:
        assert len(ticks) == len(sent), f"recorded {len(ticks)} ticks, simulator sent {len(sent)}"
    else:
        assert len(ticks) <= len(sent), f"recorded {len(ticks)} > sent {len(sent)}"
    return {"run": run, "ticks": ticks, "events": events, "checkpoints": checkpoints}


# --- the summary line --------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Carry the cell's figures (filled by assert_clean) on its call report."""
    report = yield
    figures = REGISTRY.get(item.nodeid)
    if report.when == "call" and figures is not None:
        report.user_properties.append((FAULT_FIGURES, dataclasses.asdict(figures)))
    return report
