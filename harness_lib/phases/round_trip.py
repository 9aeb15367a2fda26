"""Phase 3, round_trip (opt-in): buy one contract, sell it back, and measure what it cost.

Paper accounts only, quantity capped by the configured maximum, every order tagged
``harness:<run_id>`` so cleanup and the cost ledger can find exactly what we placed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from ib_async import MarketOrder, Trade

from harness_lib.models import Phase, PhaseResult, Verdict
from harness_lib.positions import FLAT_EPSILON, net_position
from harness_lib.quotes import is_real
from harness_lib.safety import GuardRefusal, check_accounts, check_order
from harness_lib.store import HARNESS_REF_PREFIX

from .base import PhaseRun, RunContext, wait_for

REJECT_CODES = {201, 203, 10147, 10148, 110, 161, 200}


@dataclass
class Leg:
    """One side of the round trip as observed."""

    name: str
    trade: Trade
    mid: float | None
    filled: float = 0.0
    avg_price: float | None = None
    commission: float | None = None
    realized_pnl: float | None = None
    problem: str = ""
    stalled: bool = False


async def find_orphans(ctx: RunContext) -> list[str]:
    """Open orders and net positions left by earlier harness runs (not this one)."""
    ib = ctx.conn.ib
    found: list[str] = []
    open_trades = await asyncio.wait_for(ib.reqAllOpenOrdersAsync(), ctx.cfg.connect_timeout * 2)
    for t in open_trades:
        ref = t.order.orderRef or ""
        if ref.startswith(HARNESS_REF_PREFIX) and ref != ctx.rec.order_ref and t.isActive():
            found.append(f"open order {t.order.orderId} {t.order.action} "
                         f"{t.order.totalQuantity:g} {t.contract.symbol} ({ref})")  # fmt: skip
    fills = await asyncio.wait_for(ib.reqExecutionsAsync(), ctx.cfg.connect_timeout * 2)
    # Net per contract across every earlier harness run: a sweep's flattening order has
    # its own run tag, so per-tag nets would never look flat.
    refs: dict[int, set[str]] = {}
    names: dict[int, str] = {}
    earlier = []
    for f in fills:
        ref = f.execution.orderRef or ""
        if not ref.startswith(HARNESS_REF_PREFIX) or ref == ctx.rec.order_ref:
            continue
        cid = f.contract.conId
        earlier.append((cid, f.execution.side, f.execution.shares))
        refs.setdefault(cid, set()).add(ref)
        names[cid] = f.contract.localSymbol or f.contract.symbol
    for cid, qty in net_position(earlier).items():
        found.append(f"net position {qty:+g} {names[cid]} from {', '.join(sorted(refs[cid]))}")
    return found


async def round_trip(ctx: RunContext) -> PhaseResult:
    """Buy, wait for fill, execDetails and commission; sell to flat, the same; report cost.

    REFUSED by the guards (live account, quantity or notional over the limit, orphans from
    an earlier run); STALLED when an order does not fill in time (it is cancelled);
    FAIL when an order is rejected or the position does not return to zero.
    """
    p = PhaseRun(ctx, Phase.ROUND_TRIP)
    cfg, ib = ctx.cfg, ctx.conn.ib
    contract, ticker = ctx.contract, ctx.ticker
    if not ib.isConnected() or not ctx.health_passed:
        return p.result(Verdict.SKIPPED, "health did not pass")
    if contract is None or ticker is None or not ctx.ticks_live:
        return p.result(Verdict.SKIPPED, "no live quote to decide on (ticks did not pass)")
    # Guards, checked again right here so no code path reaches placeOrder without them.
    try:
        check_accounts(list(ib.managedAccounts()))
        mult = float(contract.multiplier) if contract.multiplier else 1.0
        price = ticker.ask if is_real(ticker.ask) else None
        check_order(
            cfg.quantity, cfg.max_quantity, price=price, multiplier=mult,
            max_notional=cfg.max_notional,
        )  # fmt: skip
        orphans = await find_orphans(ctx)
        if orphans:
            raise GuardRefusal(
                "orphans",
                f"an earlier run left {len(orphans)} harness order(s)/position(s) "
                f"({'; '.join(orphans[:3])}); run `harness cleanup` before trading",
            )
    except GuardRefusal as exc:
        return p.result(Verdict.REFUSED, str(exc), evidence={"guard": exc.guard})
    p.cp("guards_passed", f"qty {cfg.quantity} ≤ {cfg.max_quantity}, paper account")

    if ctx.stack is not None:
        # Every watcher connected and reading before the entry: otherwise the stack's
        # latency to show the fill would include our own connect (or chromium's start-up).
        late = await ctx.stack.ready()
        p.cp("stack_ready", f"not watching yet: {', '.join(late)}" if late else
             "every stack endpoint watching")  # fmt: skip
    entry = await _leg(ctx, p, "entry", "BUY", cfg.quantity)
    legs = [entry]
    if entry.filled > 0 and ctx.stack is not None:
        # Give the user's stack its deadline to show the open position and the entry's ids
        # before the exit order changes them (read-only: nothing is placed while waiting).
        from harness_lib.stack.monitor import ENTRY_CHECKS

        await ctx.stack.settle(only=ENTRY_CHECKS)
        p.cp("stack_settled", "stack checks of the entry decided")
    if entry.filled > 0:
        exit_leg = await _leg(ctx, p, "exit", "SELL", entry.filled)
        legs.append(exit_leg)
    net = ctx.rec.net_position(contract.conId).get(contract.conId, 0.0)
    if abs(net) < FLAT_EPSILON and entry.filled > 0:
        p.cp("flat", "net position from harness executions is 0")

    metrics = _costs(legs, mult, contract.currency)
    metrics["net_position"] = net
    evidence = {
        leg.name: {
            "order_id": leg.trade.order.orderId,
            "status": leg.trade.orderStatus.status,
            "filled": leg.filled,
            "avg_price": leg.avg_price,
            "decision_mid": leg.mid,
            "commission": leg.commission,
        }
        for leg in legs
    }
    problems = [leg for leg in legs if leg.problem]
    if problems:
        first = problems[0]
        verdict = Verdict.STALLED if first.stalled else Verdict.FAIL
        reason = f"{first.name}: {first.problem}"
        if abs(net) > FLAT_EPSILON:
            reason += f"; harness position {net:+g} left for cleanup"
        return p.result(verdict, reason, metrics, evidence)
    if abs(net) > FLAT_EPSILON:
        return p.result(Verdict.FAIL, f"position not flat after the round trip: {net:+g}",
                        metrics, evidence)  # fmt: skip
    return p.result(
        Verdict.PASS,
        f"bought and sold {entry.filled:g} {contract.localSymbol or contract.symbol}; cost "
        f"{metrics['total_cost']:.2f} {contract.currency} (commission {metrics['commission']:.2f}"
        f", slippage {metrics['slippage']:.2f})",
        metrics,
        evidence,
    )


async def _leg(ctx: RunContext, p: PhaseRun, name: str, action: str, qty: float) -> Leg:
    """Place one market order and wait for fill, execution and commission report."""
    cfg, ib, ticker = ctx.cfg, ctx.conn.ib, ctx.ticker
    assert ticker is not None and ctx.contract is not None
    bid = ticker.bid if is_real(ticker.bid) else None
    ask = ticker.ask if is_real(ticker.ask) else None
    mid = (bid + ask) / 2 if bid is not None and ask is not None else None
    order = MarketOrder(action, qty, orderRef=ctx.rec.order_ref, tif="DAY")
    if ctx.account:
        order.account = ctx.account
    mark = ctx.conn.mark()
    if not ib.isConnected():
        # Never placed: say so, and let cleanup deal with whatever the entry left.
        dummy = Trade(contract=ctx.contract, order=order)
        return Leg(name, dummy, mid, problem="connection lost before the order could be sent")
    trade = ib.placeOrder(ctx.contract, order)
    ctx.trades.append(trade)
    ctx.rec.order_placed(trade, leg=name, account=ctx.account, decision_bid=bid,
                         decision_ask=ask)  # fmt: skip
    p.cp(f"{name}_submitted", f"{action} {qty:g} MKT at bid {bid} / ask {ask}")
    leg = Leg(name, trade, mid)
    deadline = time.monotonic() + cfg.fill_deadline
    await wait_for(lambda: trade.isDone(), deadline, abort=lambda: not ib.isConnected())
    status = trade.orderStatus
    leg.filled = float(status.filled)
    leg.avg_price = float(status.avgFillPrice) if leg.filled else None
    rejects = [m for m in ctx.conn.since(mark) if m.req_id == order.orderId
               and m.code in REJECT_CODES]  # fmt: skip
    if rejects:
        r = rejects[-1]
        leg.problem = f"order rejected: IB {r.code}: {r.message}"
        return leg
    if not ib.isConnected() and status.status != "Filled":
        leg.problem = "connection lost while the order was working"
        return leg
    if status.status != "Filled":
        # No (full) fill in time: cancel what is left so nothing keeps working.
        if trade.isActive():
            ib.cancelOrder(order)
            await wait_for(lambda: trade.isDone(), time.monotonic() + 5)
        leg.filled = float(trade.orderStatus.filled)
        leg.stalled = leg.filled == 0
        leg.problem = (
            f"no fill within {cfg.fill_deadline:g}s (order cancelled)"
            if leg.filled == 0
            else f"partial fill {leg.filled:g} of {qty:g} within {cfg.fill_deadline:g}s "
            "(rest cancelled)"
        )
        if leg.filled == 0:
            return leg
    p.cp(f"{name}_filled", f"{leg.filled:g} @ {leg.avg_price}")
    exec_ids = {f.execution.execId for f in trade.fills}
    got_all = await wait_for(
        lambda: (
            bool(exec_ids)
            and all(e in ctx.rec.commissions for e in exec_ids)
            and {f.execution.execId for f in trade.fills} == exec_ids
        ),
        time.monotonic() + cfg.fill_deadline,
        abort=lambda: not ib.isConnected(),
    )
    reports = [ctx.rec.commissions[e] for e in exec_ids if e in ctx.rec.commissions]
    leg.commission = sum(float(r.commission) for r in reports) if reports else None
    pnls = [float(r.realizedPNL) for r in reports if r.realizedPNL]
    leg.realized_pnl = sum(pnls) if pnls else None
    if not got_all:
        if not ib.isConnected() and not leg.problem:
            leg.problem = "connection lost before the commission report arrived"
        if not leg.problem:
            leg.problem = f"commission report did not arrive within {cfg.fill_deadline:g}s"
            leg.stalled = True
        return leg
    p.cp(f"{name}_commission", f"{leg.commission:.2f}")
    return leg


def _costs(legs: list[Leg], mult: float, currency: str) -> dict[str, object]:
    """Commission, slippage against the decision mid, total and realized P&L."""
    commission = sum(leg.commission or 0.0 for leg in legs)
    slippage = 0.0
    known = True
    for leg in legs:
        if leg.avg_price is None or leg.filled == 0:
            continue
        if leg.mid is None:
            known = False
            continue
        sign = 1 if leg.trade.order.action == "BUY" else -1
        slippage += sign * (leg.avg_price - leg.mid) * leg.filled * mult
    pnl = None
    if len(legs) == 2 and all(leg.avg_price is not None for leg in legs):
        entry, exit_ = legs
        assert entry.avg_price is not None and exit_.avg_price is not None
        qty = min(entry.filled, exit_.filled)
        pnl = (exit_.avg_price - entry.avg_price) * qty * mult - commission
    return {
        "commission": round(commission, 6),
        "slippage": round(slippage, 6),
        "slippage_known": known,
        "total_cost": round(commission + slippage, 6),
        "realized_pnl": None if pnl is None else round(pnl, 6),
        "ib_realized_pnl": next(
            (leg.realized_pnl for leg in reversed(legs) if leg.realized_pnl is not None), None
        ),
        "currency": currency,
        "entry_price": legs[0].avg_price,
        "exit_price": legs[1].avg_price if len(legs) > 1 else None,
        "quantity": legs[0].filled,
    }
