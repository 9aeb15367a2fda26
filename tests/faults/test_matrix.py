"""The fault matrix: every fault at every step of a ``--trade`` run, then the referee.

Steps of a round trip, and how a cell reaches each one:

* ``before_entry_fill``: the fault fires when the entry order is accepted
  (``disconnect_on='order_submitted:1'``) or applies to the entry (``nth=1``).
* ``after_entry_fill``: the entry has filled, the exit is not sent yet
  (``disconnect_on='filled:1'``; commission faults apply to the entry's report only).
* ``after_exit_sent``: the exit was accepted and has not filled
  (``disconnect_on='order_submitted:2'``, ``nth=2``).
* ``during_cleanup``: the exit is rejected (``order_reject nth=2``), so cleanup must flatten
  with a 3rd order; the fault is staged on that order (see ``StagedGateway``).

Cells that cannot exist are listed with the reason and skipped (shown by ``-ra``).
After each cell, and one ``harness cleanup`` where the run could not finish cleaning,
``assert_clean`` checks the promises against the simulator's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness_lib.models import Phase, Verdict
from harness_lib.runner import run_harness
from harness_lib.sim import messages as m
from tests.faults.conftest import (
    HARNESS_CLIENT,
    StagedGateway,
    assert_clean,
    cli,
    harness_cfg,
    harness_cleanup,
)

BEFORE_ENTRY_FILL = "before_entry_fill"
AFTER_ENTRY_FILL = "after_entry_fill"
AFTER_EXIT_SENT = "after_exit_sent"
DURING_CLEANUP = "during_cleanup"
STEPS = (BEFORE_ENTRY_FILL, AFTER_ENTRY_FILL, AFTER_EXIT_SENT, DURING_CLEANUP)

OUTAGE = 0.3
"""connectivity_lost: seconds between 1100 and 1102/1101 (well inside the fill deadline)."""
REFUSAL = 0.4
"""refuse_connections: seconds the gateway refuses new connections (cleanup's backoff
retries at 0.5 s, so the first attempt is refused and a later one gets through)."""
LATE = 0.3
"""commission_late: seconds the commission report arrives after the fill."""

P, F, S = Verdict.PASS, Verdict.FAIL, Verdict.STALLED

REJECT_EXIT = ("order_reject", {"nth": 2})
"""The base scenario of every during_cleanup cell: the exit (2nd new order) is rejected."""


@dataclass(frozen=True)
class Cell:
    """One fault at one step: how to provoke it and what the harness must conclude."""

    fault: str
    step: str
    scenario: str = "healthy"
    params: dict[str, Any] = field(default_factory=dict)
    stages: tuple[tuple[int, str, dict[str, Any]], ...] = ()
    """(n, scenario, params): switch scenario when the harness's n-th order arrives."""
    run: Verdict = F
    cleanup: Verdict = P
    sweep: bool = False
    """The run's own cleanup could not finish (it says so): one `harness cleanup` after."""
    quantity: int = 1
    codes: tuple[int, ...] = ()
    """IB error codes the cell provokes (declared to the ib_async log referee)."""
    peer_close: bool = False
    events: tuple[int, ...] = ()
    """IB codes that must be in the run's stored events."""
    na: str = ""
    """Why this combination cannot exist (the cell is skipped with this reason)."""
    connect_timeout: float = 4.0
    """A refused connection costs the harness one connect timeout per attempt."""
    says: str = ""
    """Text the run's or cleanup's reason must contain (proof the fault took effect)."""

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.step}"


def _connection_cells(fault: str, scenario: str, extra: dict[str, Any], **kw: Any) -> list[Cell]:
    """The four steps of a fault fired by ``disconnect_on``."""
    return [
        Cell(fault, BEFORE_ENTRY_FILL, scenario, {"disconnect_on": "order_submitted:1", **extra},
             **kw.get(BEFORE_ENTRY_FILL, {})),
        Cell(fault, AFTER_ENTRY_FILL, scenario, {"disconnect_on": "filled:1", **extra},
             **kw.get(AFTER_ENTRY_FILL, {})),
        Cell(fault, AFTER_EXIT_SENT, scenario, {"disconnect_on": "order_submitted:2", **extra},
             **kw.get(AFTER_EXIT_SENT, {})),
        Cell(fault, DURING_CLEANUP, *REJECT_EXIT,
             stages=((3, scenario, {"disconnect_on": "order_submitted:1", **extra}),),
             **kw.get(DURING_CLEANUP, {})),
    ]  # fmt: skip


SLOW_FILL = {"fill_delay": 0.5}
"""disconnect: fills take 0.5 s, so cleanup (reconnected in ~20 ms) deterministically finds the
faulted order still working and cancels it, instead of racing its fill (IB 10147)."""
_DROP = {"codes": (), "peer_close": True, "says": "connection lost"}
_REFUSED = {"peer_close": True, "connect_timeout": 1.0}
_LOST = {"run": P, "codes": (1100, 1102), "events": (1100, 1102)}
_LOST_DATA = {"run": P, "codes": (1100, 1101), "events": (1100, 1101)}
_REJ = {"codes": (201,), "events": (201,)}
NO_ORDER_IN_FLIGHT = (
    "no order is in flight between the entry fill and the exit; order faults apply to an "
    "order (entry: before_entry_fill, exit: after_exit_sent, flatten: during_cleanup)"
)
NO_COMMISSION_YET = "no commission report exists before the entry fills (see after_entry_fill)"

# fmt: off
CELLS: list[Cell] = [
    # The gateway drops every connection (the harness's and the foreign client's).
    *_connection_cells("disconnect", "disconnect", SLOW_FILL, **{
        BEFORE_ENTRY_FILL: _DROP, AFTER_ENTRY_FILL: _DROP, AFTER_EXIT_SENT: _DROP,
        DURING_CLEANUP: {**_DROP, "codes": (201,), "events": (201,), "says": "exit: order rej"},
    }),
    # 1100 connectivity lost, then 1102 restored (data maintained): fills wait out the outage.
    *_connection_cells("connectivity_1102", "connectivity_lost", {"outage_seconds": OUTAGE}, **{
        BEFORE_ENTRY_FILL: _LOST, AFTER_ENTRY_FILL: _LOST, AFTER_EXIT_SENT: _LOST,
        DURING_CLEANUP: {"codes": (201, 1100, 1102), "events": (201, 1100, 1102)},
    }),
    # 1100, then 1101 restored with data lost: the harness must resubscribe market data.
    *_connection_cells(
        "connectivity_1101", "connectivity_lost", {"outage_seconds": OUTAGE, "data_lost": True},
        **{BEFORE_ENTRY_FILL: _LOST_DATA, AFTER_ENTRY_FILL: _LOST_DATA,
           AFTER_EXIT_SENT: _LOST_DATA,
           DURING_CLEANUP: {"codes": (201, 1100, 1101), "events": (201, 1100, 1101)}},
    ),
    # The gateway drops everyone and refuses new connections for a short while.
    *_connection_cells("refuse_connections", "refuse_connections", {"outage_seconds": REFUSAL},
        **{step: _REFUSED for step in STEPS[:3]},
        **{DURING_CLEANUP: {**_REFUSED, "codes": (201,), "events": (201,)}},
    ),
    # Order rejected (201).
    Cell("order_reject", BEFORE_ENTRY_FILL, "order_reject", {"nth": 1}, **_REJ,
         says="entry: order rejected"),
    Cell("order_reject", AFTER_ENTRY_FILL, na=NO_ORDER_IN_FLIGHT),
    Cell("order_reject", AFTER_EXIT_SENT, "order_reject", {"nth": 2}, **_REJ,
         says="exit: order rejected"),
    Cell("order_reject", DURING_CLEANUP, *REJECT_EXIT, stages=((3, "order_reject", {"nth": 1}),),
         cleanup=F, sweep=True, **_REJ, says="not clean: 0 harness order(s) open, net"),
    # Partial fill: quantity 2 (max_quantity 2) so half can fill; the rest is cancelled.
    Cell("partial_fill", BEFORE_ENTRY_FILL, "partial_fill", {"nth": 1}, quantity=2,
         says="entry: partial fill 1 of 2"),
    Cell("partial_fill", AFTER_ENTRY_FILL, na=NO_ORDER_IN_FLIGHT),
    Cell("partial_fill", AFTER_EXIT_SENT, "partial_fill", {"nth": 2}, quantity=2,
         says="exit: partial fill 1 of 2"),
    Cell("partial_fill", DURING_CLEANUP, *REJECT_EXIT, stages=((3, "partial_fill", {"nth": 1}),),
         cleanup=F, sweep=True, quantity=2, **_REJ, says="not clean"),
    # No fill: accepted, never filled; the harness cancels at the fill deadline.
    Cell("no_fill", BEFORE_ENTRY_FILL, "no_fill", {"nth": 1}, run=S,
         says="entry: no fill within"),
    Cell("no_fill", AFTER_ENTRY_FILL, na=NO_ORDER_IN_FLIGHT),
    Cell("no_fill", AFTER_EXIT_SENT, "no_fill", {"nth": 2}, run=S,
         says="exit: no fill within"),
    Cell("no_fill", DURING_CLEANUP, *REJECT_EXIT, stages=((3, "no_fill", {"nth": 1}),),
         cleanup=F, sweep=True, **_REJ, says="not clean"),
    # Commission report late (inside the fill deadline): only the faulted leg's report.
    Cell("commission_late", BEFORE_ENTRY_FILL, na=NO_COMMISSION_YET),
    Cell("commission_late", AFTER_ENTRY_FILL, "commission_late", {"commission_delay": LATE},
         stages=((2, "healthy", {}),), run=P),
    Cell("commission_late", AFTER_EXIT_SENT,
         stages=((2, "commission_late", {"commission_delay": LATE}),), run=P),
    Cell("commission_late", DURING_CLEANUP, *REJECT_EXIT,
         stages=((3, "commission_late", {"commission_delay": LATE}),), **_REJ),
    # Commission report never arrives.
    Cell("commission_never", BEFORE_ENTRY_FILL, na=NO_COMMISSION_YET),
    Cell("commission_never", AFTER_ENTRY_FILL, "commission_late", {"commission_delay": -1},
         stages=((2, "healthy", {}),), run=S, says="entry: commission report did not arrive"),
    Cell("commission_never", AFTER_EXIT_SENT,
         stages=((2, "commission_late", {"commission_delay": -1}),), run=S,
         says="exit: commission report did not arrive"),
    Cell("commission_never", DURING_CLEANUP, *REJECT_EXIT,
         stages=((3, "commission_late", {"commission_delay": -1}),), **_REJ),
]
# fmt: on


ORDERS = {
    # Each path is deterministic: the simulator's placeOrder count from the harness's
    # clientId (entry, exit, cleanup's flatten(s), and the `harness cleanup` sweep).
    "disconnect-before_entry_fill": 1,  # entry cancelled by cleanup before it filled
    "disconnect-after_entry_fill": 2,  # exit never arrived; cleanup flattens
    "disconnect-after_exit_sent": 3,  # exit cancelled by cleanup; flatten
    "disconnect-during_cleanup": 4,  # exit rejected; flatten cancelled; flatten again
    "connectivity_1102-before_entry_fill": 2,
    "connectivity_1102-after_entry_fill": 2,
    "connectivity_1102-after_exit_sent": 2,
    "connectivity_1102-during_cleanup": 3,
    "connectivity_1101-before_entry_fill": 2,
    "connectivity_1101-after_entry_fill": 2,
    "connectivity_1101-after_exit_sent": 2,
    "connectivity_1101-during_cleanup": 3,
    "refuse_connections-before_entry_fill": 2,  # entry filled while refused; flatten
    "refuse_connections-after_entry_fill": 2,
    "refuse_connections-after_exit_sent": 2,  # exit filled while refused: found, no flatten
    "refuse_connections-during_cleanup": 3,  # flatten filled while refused: found
    "order_reject-before_entry_fill": 1,
    "order_reject-after_exit_sent": 3,
    "order_reject-during_cleanup": 4,  # flatten rejected too; the sweep's order fills
    "partial_fill-before_entry_fill": 2,  # entry 1 of 2; exit sells 1
    "partial_fill-after_exit_sent": 3,
    "partial_fill-during_cleanup": 4,
    "no_fill-before_entry_fill": 1,
    "no_fill-after_exit_sent": 3,
    "no_fill-during_cleanup": 4,
    "commission_late-after_entry_fill": 2,
    "commission_late-after_exit_sent": 2,
    "commission_late-during_cleanup": 3,
    "commission_never-after_entry_fill": 2,
    "commission_never-after_exit_sent": 2,
    "commission_never-during_cleanup": 3,
}
"""placeOrder messages the simulator received from the harness client, per cell."""

REACHED = {
    BEFORE_ENTRY_FILL: {"connected", "bid_ask_live", "guards_passed", "entry_submitted"},
    AFTER_ENTRY_FILL: {"bid_ask_live", "entry_submitted", "entry_filled"},
    AFTER_EXIT_SENT: {"bid_ask_live", "entry_filled", "exit_submitted"},
    DURING_CLEANUP: {"bid_ask_live", "entry_filled", "exit_submitted", "flatten_submitted"},
}
"""Checkpoints that must be in the store once a cell's step was reached."""


def _param(cell: Cell) -> Any:
    marks: list[Any] = [pytest.mark.ib_errors(*cell.codes)]
    if cell.peer_close:
        marks.append(pytest.mark.allow_peer_close)
    if cell.na:
        marks.append(pytest.mark.skip(reason=f"not applicable: {cell.na}"))
    return pytest.param(cell, id=cell.id, marks=marks)


@pytest.mark.parametrize("cell", [_param(c) for c in CELLS])
async def test_fault_cell(cell: Cell, gw: StagedGateway, tmp_path: Path) -> None:
    gw.set_scenario(cell.scenario, **cell.params)
    for n, scenario, params in cell.stages:
        gw.stage(n, scenario, **params)
    store = tmp_path / "h.sqlite"
    cfg = harness_cfg(
        tmp_path,
        quantity=cell.quantity,
        max_quantity=max(1, cell.quantity),
        connect_timeout=cell.connect_timeout,
    )
    rep = await run_harness(cfg, gateway=gw)
    clean = rep.phase(Phase.CLEANUP)
    assert clean is not None
    said = f"{rep.reason} | cleanup: {clean.reason}"
    assert rep.verdict == cell.run, f"{rep.verdict}: {said}"
    assert cell.says in said, said
    assert clean.verdict == cell.cleanup, clean.reason
    rt = rep.phase(Phase.ROUND_TRIP)
    assert rt is not None and rt.checkpoints[0].name == "guards_passed", rt.reason
    if cell.sweep:
        assert "harness cleanup" in clean.reason, clean.reason
        code, out, err = await harness_cleanup(gw, store)
        assert code == 0, out + err
        assert "PASS" in out and "Traceback" not in out + err
    placed = gw.truth.orders_from(HARNESS_CLIENT)
    assert len(placed) == ORDERS[cell.id], [(o.order_id, o.action, o.quantity) for o in placed]
    # Ticks the simulator wrote just before it dropped the socket may never arrive; that is
    # the fault, not a recording gap. Everything recorded must still match what was sent.
    seen = assert_clean(gw, rep, store, exact_ticks=not cell.peer_close)
    # Everything observed up to the fault is stored: the checkpoints of the step reached.
    reached = set(seen["checkpoints"]["name"])
    assert REACHED[cell.step] <= reached, f"missing {REACHED[cell.step] - reached}"
    codes = set(seen["events"]["code"].dropna().astype(int))
    assert set(cell.events) <= codes, f"events {sorted(codes)} lack {cell.events}"
    if cell.fault == "connectivity_1101" and cell.step != DURING_CLEANUP:
        # Resubscribed after 1101: the gateway accepted a second subscription (it answers
        # each with tickReqParams), and (checked above) no tick was recorded twice.
        notes = list(seen["events"]["message"])
        assert any("resubscribed" in n for n in notes), notes
        assert gw.truth.counts[(HARNESS_CLIENT, m.TICK_REQ_PARAMS)] == 2
        if cell.step == BEFORE_ENTRY_FILL:
            # The run goes on long enough after 1101 for the new stream to tick.
            req_ids = {t.req_id for t in gw.truth.ticks_for(HARNESS_CLIENT)}
            assert len(req_ids) == 2, req_ids
    if cell.fault in ("disconnect", "refuse_connections"):
        # Cleanup reconnected (with backoff while refused) to finish the job.
        assert any(p.name == "reconnected" for p in clean.checkpoints), clean.reason
    if cell.fault == "refuse_connections":
        assert any(c[2] == "refused" for c in gw.truth.connections), "no refusal happened"
    if cell.fault == "disconnect" and cell.step != AFTER_ENTRY_FILL:
        # Fills are slow here: cleanup found the faulted order working and cancelled it.
        assert [c for c in gw.truth.cancels if c[1] == HARNESS_CLIENT], "nothing cancelled"
    if cell.fault == "commission_late" and cell.step != DURING_CLEANUP:
        leg = "entry" if cell.step == AFTER_ENTRY_FILL else "exit"
        t = {cp.name: cp.t_mono for cp in rt.checkpoints}
        assert t[f"{leg}_commission"] - t[f"{leg}_filled"] >= LATE * 0.9, t


UNREACHABLE = (
    "could not reach",
    "positions may be open",
    "`harness cleanup` will close them",
)


@pytest.mark.allow_peer_close
async def test_cleanup_cannot_reconnect_then_harness_cleanup_sweeps(
    gw: StagedGateway, tmp_path: Path
) -> None:
    """refuse_connections outlasting cleanup's bounded retries: cleanup says plainly that
    positions may be open and names `harness cleanup`; once the gateway accepts again, the
    real CLI (a subprocess) sweeps the position the run left."""
    gw.set_scenario("refuse_connections", disconnect_on="filled:1", outage_seconds=300)
    store = tmp_path / "h.sqlite"
    rep = await run_harness(harness_cfg(tmp_path, connect_timeout=0.5), gateway=gw)
    clean = rep.phase(Phase.CLEANUP)
    assert clean is not None and clean.verdict == F, clean.reason
    assert all(text in clean.reason for text in UNREACHABLE), clean.reason
    assert rep.verdict == F and rep.exit_code == 1, rep.reason
    assert "+1 left for cleanup" in rep.reason, rep.reason
    assert gw.position("AAPL", gw.foreign.account) == gw.foreign.position + 1, "left open"
    gw.set_scenario("healthy")  # the outage ends
    code, out, err = await cli(
        "cleanup", "--host", "127.0.0.1", "--port", str(gw.port), "--store", str(store),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    assert "flattened 1 position(s)" in out and "Traceback" not in out + err
    assert len(gw.truth.orders_from(HARNESS_CLIENT)) == 2, "entry, then the sweep's flatten"
    assert_clean(gw, rep, store)
