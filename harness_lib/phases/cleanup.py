"""Phase 4, cleanup (always runs): cancel our orders, flatten our position, unsubscribe,
disconnect, and verify. Nothing the harness did not create is ever touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from ib_async import Contract, MarketOrder, Trade

from harness_lib.models import Phase, PhaseResult, Verdict
from harness_lib.positions import FLAT_EPSILON, net_position
from harness_lib.safety import GuardRefusal, check_accounts
from harness_lib.store import HARNESS_REF_PREFIX

from .base import PhaseRun, RunContext, wait_for


def clip_to_account(harness_net: float, account_position: float) -> float:
    """How much to flatten: the harness's own net, never more than the account holds in
    that direction (if someone already closed it by hand, flattening would open a new
    position the other way)."""
    if harness_net > 0:
        return min(harness_net, max(account_position, 0.0))
    if harness_net < 0:
        return max(harness_net, min(account_position, 0.0))
    return 0.0


async def _cancel_ours(ctx: RunContext, is_ours: Callable[[str], bool]) -> list[Trade]:
    """Cancel every active order whose orderRef ``is_ours`` and wait until they are done."""
    ib = ctx.conn.ib
    trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), ctx.cfg.connect_timeout * 2)
    mine = [t for t in trades if t.isActive() and is_ours(t.order.orderRef or "")]
    # reqAllOpenOrders returns fresh Trade objects; cancel through the ones ib_async tracks.
    for t in mine:
        ib.cancelOrder(t.order)
    deadline = time.monotonic() + ctx.cfg.fill_deadline
    await wait_for(
        lambda: all(not _still_open(ctx, t) for t in mine), deadline,
        abort=lambda: not ib.isConnected(),
    )  # fmt: skip
    return mine


def _still_open(ctx: RunContext, t: Trade) -> bool:
    for live in ctx.conn.ib.trades():
        if live.order.permId == t.order.permId and live.order.permId:
            return live.isActive()
    return t.isActive()


def flatten_order(to_close: float, order_ref: str, account: str | None) -> MarketOrder:
    """The closing order for ``to_close`` (positive: we hold it long, so sell; negative:
    buy back), tagged with ``order_ref`` so it is ours like every other harness order."""
    action = "SELL" if to_close > 0 else "BUY"
    order = MarketOrder(action, abs(to_close), orderRef=order_ref, tif="DAY")
    if account:
        order.account = account
    return order


def _place_flatten(ctx: RunContext, contract: Contract, to_close: float) -> Trade:
    """Place and record the closing order for ``to_close`` on ``contract``."""
    order = flatten_order(to_close, ctx.rec.order_ref, ctx.account)
    trade = ctx.conn.ib.placeOrder(contract, order)
    ctx.trades.append(trade)
    ctx.rec.order_placed(trade, leg="flatten", account=ctx.account)
    return trade


async def _await_flatten(ctx: RunContext, trade: Trade) -> None:
    """Wait for the closing order to finish; cancel what did not fill in time."""
    ib = ctx.conn.ib
    await wait_for(lambda: trade.isDone(), time.monotonic() + ctx.cfg.fill_deadline,
                   abort=lambda: not ib.isConnected())  # fmt: skip
    if trade.orderStatus.status != "Filled" and trade.isActive():
        ib.cancelOrder(trade.order)


async def _flatten(
    ctx: RunContext, p: PhaseRun, net: dict[int, float], contracts: dict[int, Contract]
) -> dict[int, float]:
    """Send closing market orders for the harness's net per conId; return what is left."""
    ib = ctx.conn.ib
    positions = {(pos.account, pos.contract.conId): pos.position for pos in ib.positions()}
    left: dict[int, float] = {}
    for con_id, qty in net.items():
        held = sum(v for (acct, cid), v in positions.items()
                   if cid == con_id and (ctx.account is None or acct == ctx.account))  # fmt: skip
        to_close = clip_to_account(qty, held)
        if to_close == 0:
            if abs(qty) > FLAT_EPSILON:
                ctx.rec.note(
                    "warning",
                    f"harness net {qty:+g} on conId {con_id} but the account holds {held:+g}; "
                    "not flattening what is not there",
                )
            continue
        contract = contracts[con_id]
        if not contract.exchange:
            contract.exchange = "SMART" if contract.secType == "STK" else contract.exchange
        trade = _place_flatten(ctx, contract, to_close)
        p.cp("flatten_submitted", f"{trade.order.action} {abs(to_close):g} conId {con_id}")
        await _await_flatten(ctx, trade)
        for f in trade.fills:
            ctx.rec.record_execution(f)
    for con_id, qty in ctx.rec.net_position().items():
        if abs(qty) > FLAT_EPSILON and con_id in net:
            left[con_id] = qty
    return left


async def _sync_executions(ctx: RunContext, is_ours: Callable[[str], bool]) -> dict[int, Contract]:
    """Fetch executions from the gateway (fills may have happened while we were cut off)
    and record ours exactly once; return contracts by conId."""
    ib = ctx.conn.ib
    fills = await asyncio.wait_for(ib.reqExecutionsAsync(), ctx.cfg.connect_timeout * 2)
    contracts: dict[int, Contract] = {}
    for f in fills:
        if is_ours(f.execution.orderRef or ""):
            ctx.rec.record_execution(f)
            contracts[f.contract.conId] = f.contract
    for f in ctx.rec.executions.values():
        contracts.setdefault(f.contract.conId, f.contract)
    return contracts


CLEANUP_ATTEMPTS = 3
"""Times cleanup reconnects and starts over when the gateway drops it midway."""


async def cleanup(ctx: RunContext) -> PhaseResult:
    """Cancel this run's open orders, flatten this run's net position, unsubscribe,
    disconnect, and verify no harness order is open and the net is zero.

    If the connection drops (or was already gone), it reconnects with bounded retries and
    backoff and starts over; every step is idempotent. If it cannot reach the gateway it
    says plainly that positions may be open and that `harness cleanup` will close them.
    """
    p = PhaseRun(ctx, Phase.CLEANUP)
    conn, ib = ctx.conn, ctx.conn.ib
    if not ib.isConnected() and not ctx.trades:
        ctx.tickers.clear()
        conn.disconnect()
        return p.result(Verdict.PASS, "nothing to clean up (no order was placed)")

    def is_ours(ref: str) -> bool:
        return ref == ctx.rec.order_ref

    unreachable = (
        f"could not reach {conn.host}:{conn.port} to clean up: harness positions may be "
        "open; `harness cleanup` will close them when the gateway is back"
    )
    outcome: tuple[int, list[Trade], dict[int, float]] | None = None
    problem = ""
    for _attempt in range(CLEANUP_ATTEMPTS):
        if not ib.isConnected():
            if not await conn.ensure_connected():
                return p.result(Verdict.FAIL, unreachable, {"reconnects": conn.reconnects})
            p.cp("reconnected", f"reconnect #{conn.reconnects}")
        try:
            outcome = await _clean_once(ctx, p, is_ours)
            break
        except GuardRefusal as exc:
            return p.result(Verdict.REFUSED, f"cleanup refused to trade: {exc}")
        except (TimeoutError, ConnectionError, OSError) as exc:
            # Dropped midway: reconnect and start over (each step is idempotent).
            problem = f"{exc.__class__.__name__}: {exc}"
            await asyncio.sleep(0.2)
    if outcome is None:
        return p.result(Verdict.FAIL, f"{unreachable} (last error {problem})",
                        {"reconnects": conn.reconnects})  # fmt: skip
    cancelled, still_open, net_after = outcome
    metrics: dict[str, object] = {
        "cancelled": cancelled, "open_after": len(still_open), "net_after": net_after,
        "reconnects": conn.reconnects, "duplicate_executions": ctx.rec.duplicate_executions,
    }  # fmt: skip
    ctx.tickers.clear()
    conn.disconnect()
    p.cp("disconnected")
    if still_open or net_after:
        return p.result(
            Verdict.FAIL,
            f"not clean: {len(still_open)} harness order(s) open, net {net_after}; "
            "run `harness cleanup`",
            metrics,
        )
    p.cp("verified", "no open harness orders, net 0")
    return p.result(Verdict.PASS, "no harness order open, harness net position 0", metrics)


async def _clean_once(
    ctx: RunContext, p: PhaseRun, is_ours: Callable[[str], bool]
) -> tuple[int, list[Trade], dict[int, float]]:
    """One pass of cancel → sync executions → flatten → unsubscribe → verify."""
    ib = ctx.conn.ib
    cancelled = await _cancel_ours(ctx, is_ours)
    p.cp("orders_cancelled", f"{len(cancelled)} open harness order(s) cancelled")
    contracts = await _sync_executions(ctx, is_ours)
    net = ctx.rec.net_position()
    if net:
        check_accounts(list(ib.managedAccounts()))
        left = await _flatten(ctx, p, net, contracts)
        p.cp("flattened", f"net left {left or 0}")
    # After a reconnect ib_async has forgotten the old subscriptions (they died with the
    # socket); cancelling them would only log "No reqId found".
    live = ib.wrapper.ticker2ReqId.get("mktData", {})
    ctx.tickers[:] = [t for t in ctx.tickers if t in live]
    for t in ctx.tickers:
        with contextlib.suppress(Exception):
            ib.cancelMktData(t.contract)
    p.cp("unsubscribed", f"{len(ctx.tickers)} subscription(s)")
    trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), ctx.cfg.connect_timeout * 2)
    still_open = [t for t in trades if t.isActive() and is_ours(t.order.orderRef or "")]
    await _sync_executions(ctx, is_ours)
    if not ib.isConnected():
        raise ConnectionError("connection lost during cleanup")
    return len(cancelled), still_open, ctx.rec.net_position()


async def sweep(
    ctx: RunContext, stored: list[tuple[str, int, str, float]] | None = None
) -> PhaseResult:
    """`harness cleanup`: find orders and positions left by ANY harness run (orderRef
    ``harness:``), cancel and flatten them, and report what was done.

    ``stored`` adds harness executions the local store knows, as (execId, conId, side,
    shares): IB only returns today's executions, the store remembers earlier days.
    Executions are merged by execId, so none counts twice.
    """
    p = PhaseRun(ctx, Phase.CLEANUP)
    conn, ib = ctx.conn, ctx.conn.ib
    try:
        await conn.connect()
    except Exception as exc:
        return p.result(Verdict.BAD_INPUT, f"{exc}; is the gateway running? (or use --sim)")
    p.cp("connected")
    try:
        check_accounts(list(ib.managedAccounts()))
    except GuardRefusal as exc:
        conn.disconnect()
        return p.result(Verdict.REFUSED, str(exc))
    ctx.account = ctx.cfg.account or ib.managedAccounts()[0]

    def any_harness(ref: str) -> bool:
        return ref.startswith(HARNESS_REF_PREFIX)

    cancelled = await _cancel_ours(ctx, any_harness)
    p.cp("orders_cancelled", f"{len(cancelled)}")
    executions: dict[str, tuple[int, str, float]] = {
        eid: (cid, side, shares) for eid, cid, side, shares in stored or []
    }
    contracts: dict[int, Contract] = {}
    for f in await asyncio.wait_for(ib.reqExecutionsAsync(), ctx.cfg.connect_timeout * 2):
        if any_harness(f.execution.orderRef or ""):
            ex = f.execution
            executions[ex.execId] = (f.contract.conId, ex.side, float(ex.shares))
            contracts[f.contract.conId] = f.contract
    net = net_position(executions.values())
    positions: dict[int, float] = {}
    for pos in ib.positions():
        if pos.account == ctx.account:
            positions[pos.contract.conId] = positions.get(pos.contract.conId, 0.0) + pos.position
    flattened: dict[int, float] = {}
    unfilled: dict[int, float] = {}
    for cid, qty in net.items():
        to_close = clip_to_account(qty, positions.get(cid, 0.0))
        if not to_close:
            continue
        contract = contracts.get(cid) or Contract(conId=cid)
        if not contract.exchange or contract.secType == "STK":
            await ib.qualifyContractsAsync(contract)
            contract.exchange = contract.exchange or "SMART"
        trade = _place_flatten(ctx, contract, to_close)
        await _await_flatten(ctx, trade)
        if trade.orderStatus.status == "Filled":
            flattened[cid] = -to_close
        else:
            unfilled[cid] = to_close
    p.cp("flattened", f"{len(flattened)} position(s)")
    conn.disconnect()
    p.cp("disconnected")
    metrics = {"cancelled": len(cancelled), "flattened": flattened, "harness_net_before": net}
    if unfilled:
        return p.result(Verdict.FAIL, f"could not flatten {unfilled} (conId: qty)", metrics)
    what = f"cancelled {len(cancelled)} order(s), flattened {len(flattened)} position(s)"
    if not cancelled and not flattened:
        what = "nothing to sweep: no open harness orders, no harness positions"
    return p.result(Verdict.PASS, what, metrics)
