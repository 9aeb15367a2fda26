"""Simulated paper-account state: orders, matching, fills, positions, cash and commissions.

Pure state with no I/O: the server asks it what happens and sends the messages.
The commission schedule is IB-like and documented in ``commission_for``; matching (when an
order is marketable, at what price, how much fills) is ``marketable_price`` and
``SimOrder.fill_size``.
"""

from __future__ import annotations

import itertools
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .market import Instrument, Quote
from .messages import OrderStateView, OrderView
from .scenarios import Scenario

ACTIVE = ("PreSubmitted", "Submitted")
DONE = ("Filled", "Cancelled", "ApiCancelled", "Inactive")

COMMISSION_SCHEDULE = {
    "STK": "USD 0.005 per share, minimum USD 1.00, maximum 1% of trade value",
    "FUT": "USD 0.25 per contract commission + USD 0.35 exchange fee + USD 0.02 regulatory fee",
    "CASH": "0.2 basis points of trade value, minimum USD 2.00",
}
"""The simulator's commission schedule (IBKR Pro fixed pricing, rounded)."""


def commission_for(inst: Instrument, shares: float, price: float) -> float:
    """Commission in USD for one execution, following ``COMMISSION_SCHEDULE``."""
    value = abs(shares) * price * inst.point_value
    if inst.sec_type == "STK":
        return round(min(max(0.005 * abs(shares), 1.00), 0.01 * value), 4)
    if inst.sec_type == "FUT":
        return round(0.62 * abs(shares), 4)
    if inst.sec_type == "CASH":
        return round(max(value * 0.00002, 2.00), 4)
    return 1.00


@dataclass(slots=True)
class SimOrder:
    """One order as the simulated gateway holds it."""

    view: OrderView
    received_at: datetime
    fills: list[Execution] = field(default_factory=list)
    faults: frozenset[Scenario] = frozenset()
    """The order faults (no fill, partial fill) that applied when it was placed."""

    @property
    def remaining(self) -> float:
        """Quantity still to fill."""
        return self.view.quantity - self.view.filled

    @property
    def is_active(self) -> bool:
        """True while it can still fill or be cancelled."""
        return self.view.status in ACTIVE

    @property
    def withheld(self) -> bool:
        """A no_fill fault keeps this order from ever filling."""
        return Scenario.NO_FILL in self.faults

    @property
    def partial(self) -> bool:
        """A partial_fill fault lets only part of this order fill."""
        return Scenario.PARTIAL_FILL in self.faults

    def fill_size(self, partial_ratio: float) -> float:
        """Shares the next fill executes: the remainder, or under a partial-fill fault the
        ratio of the quantity, always leaving at least one unit unfilled."""
        if not self.partial:
            return self.remaining
        shares = math.floor(self.view.quantity * partial_ratio)
        return min(shares, self.view.quantity - 1) - self.view.filled

    def avg_fill_price(self) -> float:
        """Volume-weighted price of the fills so far (0 when unfilled)."""
        q = sum(e.shares for e in self.fills)
        return sum(e.shares * e.price for e in self.fills) / q if q else 0.0


def marketable_price(order: SimOrder, q: Quote) -> float | None:
    """The price an active order fills at against this quote, or None if it is not
    marketable: market orders take the far side, limits fill when the far side reaches them."""
    v = order.view
    if not order.is_active or order.remaining <= 0:
        return None
    if v.order_type == "MKT":
        return q.ask if v.action == "BUY" else q.bid
    assert v.lmt_price is not None
    if v.action == "BUY" and q.ask <= v.lmt_price:
        return q.ask
    if v.action == "SELL" and q.bid >= v.lmt_price:
        return q.bid
    return None


@dataclass(slots=True)
class Execution:
    """A fill and its commission."""

    exec_id: str
    order: OrderView
    shares: float
    price: float
    time: datetime
    cum_qty: float
    avg_price: float
    commission: float
    realized_pnl: float | None
    commission_sent: bool = False


@dataclass(slots=True)
class PositionState:
    """Net position and average cost per (account, conId)."""

    qty: float = 0.0
    avg_price: float = 0.0
    """Average price per unit including commissions (IB's avgCost / multiplier)."""
    realized: float = 0.0


PERM_ID_FLOOR = 1_000_000_000
PERM_ID_SPAN = 1_000_000_000
"""permIds stay in [1e9, 2e9): below 2**31, as clients at server version <= 178 hold them
in 32 bits, and in the range recorded gateways use (e.g. 1376327563)."""


def _perm_id_base(now: float) -> int:
    """Where an instance's permIds start: a clock in eighths of a second, so instances
    started one after another never reuse each other's ids (an instance would have to
    place more than 8 orders a second for its whole life to reach the next one's start),
    plus a random offset for instances started in the same instant."""
    return PERM_ID_FLOOR + (int(now * 8) + secrets.randbelow(4096)) % PERM_ID_SPAN


class Broker:
    """Orders, executions and positions across every account of the simulated gateway."""

    def __init__(self, accounts: list[str], *, starting_cash: float = 1_000_000.0) -> None:
        self.accounts = list(accounts)
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[Execution] = []
        self.positions: dict[tuple[str, int], PositionState] = {}
        self.instruments: dict[int, Instrument] = {}
        self.starting_cash = starting_cash
        self.cash = {a: starting_cash for a in self.accounts}
        now = time.time()
        self._perm_ids = itertools.count(_perm_id_base(now))
        # execId "iiiiiiii.ssssssss.01.01": an instance prefix (random, like the gateway
        # prefix in recorded ids), then a per-fill number starting at this instance's
        # start time in hex seconds (so it reads as a recent date, as IB's part 2 does).
        self._exec_prefix = secrets.token_hex(4)
        self._exec_seq = itertools.count(int(now))
        self.next_order_id = 1

    def new_perm_id(self) -> int:
        """A gateway-wide permanent order id."""
        return next(self._perm_ids)

    def note_order_id(self, order_id: int) -> None:
        """Keep nextValidId ahead of every id a client used."""
        self.next_order_id = max(self.next_order_id, order_id + 1)

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        """Active orders, optionally only those of one client."""
        return [
            o
            for o in self.orders.values()
            if o.is_active and (client_id is None or o.view.client_id == client_id)
        ]

    def completed_orders(self) -> list[SimOrder]:
        """Orders in a final state."""
        return [o for o in self.orders.values() if o.view.status in DONE]

    def fill(self, order: SimOrder, shares: float, price: float) -> Execution:
        """Execute part or all of an order; update position, cash and realized P&L."""
        view = order.view
        inst = view.inst
        self.instruments[inst.con_id] = inst
        now = datetime.now(UTC)
        shares = min(shares, order.remaining)
        view.filled += shares
        if math.isclose(view.filled, view.quantity):
            view.status = "Filled"
            view.completed_status = "Filled"
            view.completed_time = now.strftime("%Y%m%d %H:%M:%S") + " UTC"
        commission = commission_for(inst, shares, price)
        realized = self._apply_position(view.account, inst, view.action, shares, price, commission)
        seq = next(self._exec_seq)
        exec_id = f"{self._exec_prefix}.{seq & 0xFFFFFFFF:08x}.01.01"
        mult = inst.point_value
        sign = -1 if view.action == "BUY" else 1
        self.cash[view.account] = (
            self.cash.get(view.account, 0.0) + sign * shares * price * mult - commission
        )
        execution = Execution(
            exec_id=exec_id,
            order=view,
            shares=shares,
            price=price,
            time=now,
            cum_qty=view.filled,
            avg_price=0.0,
            commission=commission,
            realized_pnl=realized,
        )
        order.fills.append(execution)
        execution.avg_price = order.avg_fill_price()
        self.executions.append(execution)
        return execution

    def _apply_position(
        self, account: str, inst: Instrument, action: str, shares: float, price: float, fee: float
    ) -> float | None:
        """Update the position; return realized P&L (net of this fill's commission) when the
        fill reduces a position, None when it opens or adds (IB leaves it unset then)."""
        pos = self.positions.setdefault((account, inst.con_id), PositionState())
        mult = inst.point_value
        signed = shares if action == "BUY" else -shares
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            # Opening or adding: fold the commission into the average cost, as IB does.
            cost = pos.avg_price * abs(pos.qty) + price * shares + fee / mult
            pos.qty += signed
            pos.avg_price = cost / abs(pos.qty)
            return None
        closing = min(abs(signed), abs(pos.qty))
        direction = 1 if pos.qty > 0 else -1
        realized = (price - pos.avg_price) * closing * mult * direction - fee
        pos.realized += realized
        pos.qty += signed
        if math.isclose(pos.qty, 0.0, abs_tol=1e-9):
            pos.qty = 0.0
            pos.avg_price = 0.0
        elif (pos.qty > 0) == (signed > 0):
            # Flipped through zero: the remainder opens at this price.
            pos.avg_price = price
        return realized

    def position_rows(
        self, account: str | None = None
    ) -> list[tuple[str, Instrument, PositionState]]:
        """(account, instrument, state) for every position ever held (zeros included, as IB
        reports a position that went flat during the session)."""
        rows = []
        for (acct, con_id), pos in self.positions.items():
            if account is None or acct == account:
                rows.append((acct, self.instruments[con_id], pos))
        return rows

    def account_values(self, account: str, marks: dict[int, float]) -> dict[str, float]:
        """Summary values for updateAccountValue / accountUpdateMulti."""
        cash = self.cash.get(account, 0.0)
        gross = 0.0
        unreal = 0.0
        realized = 0.0
        for acct, inst, pos in self.position_rows(account):
            mark = marks.get(inst.con_id, pos.avg_price)
            gross += abs(pos.qty) * mark * inst.point_value
            unreal += pos.qty * (mark - pos.avg_price) * inst.point_value
            realized += pos.realized
            del acct
        net_liq = cash + sum(
            pos.qty * marks.get(inst.con_id, pos.avg_price) * inst.point_value
            for _, inst, pos in self.position_rows(account)
        )
        return {
            "NetLiquidation": round(net_liq, 2),
            "TotalCashValue": round(cash, 2),
            "GrossPositionValue": round(gross, 2),
            "UnrealizedPnL": round(unreal, 2),
            "RealizedPnL": round(realized, 2),
            "BuyingPower": round(max(net_liq, 0) * 4, 2),
            "AvailableFunds": round(max(net_liq - gross * 0.25, 0), 2),
        }


MARGIN_RATES = {"STK": (0.50, 0.25), "FUT": (0.06, 0.05), "CASH": (0.03, 0.025)}
"""(initial, maintenance) margin as a share of position value: Reg T for stocks, roughly
CME's rates for equity-index futures and IB's for major FX pairs."""

SUMMARY_TAGS = (
    "AccountType", "NetLiquidation", "TotalCashValue", "SettledCash", "AccruedCash",
    "BuyingPower", "EquityWithLoanValue", "PreviousDayEquityWithLoanValue",
    "GrossPositionValue", "RegTEquity", "RegTMargin", "SMA", "InitMarginReq",
    "MaintMarginReq", "AvailableFunds", "ExcessLiquidity", "Cushion", "FullInitMarginReq",
    "FullMaintMarginReq", "FullAvailableFunds", "FullExcessLiquidity", "LookAheadNextChange",
    "LookAheadInitMarginReq", "LookAheadMaintMarginReq", "LookAheadAvailableFunds",
    "LookAheadExcessLiquidity", "HighestSeverity", "DayTradesRemaining",
    "DayTradesRemainingT+1", "DayTradesRemainingT+2", "DayTradesRemainingT+3",
    "DayTradesRemainingT+4", "Leverage",
)  # fmt: skip
"""The account summary tags IB documents (CAMPUS 14.01.02), in ib_async's request order."""

TAG_ALIASES = {
    "PreviousEquityWithLoanValue": "PreviousDayEquityWithLoanValue",
    "ReqTEquity": "RegTEquity",
    "ReqTMargin": "RegTMargin",
}
"""Other spellings in IB's own sources (ibapi's AccountSummaryTags), answered under the
name the client asked for."""

LEDGER_KEYS = (
    "CashBalance", "TotalCashBalance", "AccruedCash", "StockMarketValue", "FuturesPNL",
    "NetLiquidationByCurrency", "UnrealizedPnL", "RealizedPnL", "ExchangeRate",
)  # fmt: skip
"""$LEDGER rows (per currency; the simulator's only currency is USD)."""


def _margin(inst: Instrument, value: float) -> tuple[float, float]:
    init, maint = MARGIN_RATES.get(inst.sec_type, MARGIN_RATES["STK"])
    return abs(value) * init, abs(value) * maint


def _account_state(broker: Broker, account: str, marks: dict[int, float]) -> dict[str, float]:
    """Cash, values, P&L and margins of one account at the marks."""
    cash = broker.cash.get(account, 0.0)
    gross = unreal = realized = stock = fut_pnl = 0.0
    init = maint = 0.0
    net_positions = 0.0
    for _, inst, pos in broker.position_rows(account):
        mark = marks.get(inst.con_id, pos.avg_price)
        value = pos.qty * mark * inst.point_value
        gross += abs(value)
        net_positions += value
        upnl = pos.qty * (mark - pos.avg_price) * inst.point_value
        unreal += upnl
        realized += pos.realized
        if inst.sec_type == "STK":
            stock += value
        if inst.sec_type == "FUT":
            fut_pnl += upnl
        i, mnt = _margin(inst, value)
        init += i
        maint += mnt
    net_liq = cash + net_positions
    return {
        "cash": cash, "net_liq": net_liq, "gross": gross, "unreal": unreal,
        "realized": realized, "stock": stock, "fut_pnl": fut_pnl, "init": init, "maint": maint,
    }  # fmt: skip


def account_summary(
    broker: Broker, account: str, marks: dict[int, float], tags: list[str]
) -> list[tuple[str, str, str]]:
    """(tag, value, currency) rows of reqAccountSummary for the requested tags, in request
    order; ``$LEDGER``, ``$LEDGER:USD`` and ``$LEDGER:ALL`` give the per-currency rows.
    Unknown tags are left out, as IB leaves them out."""
    st = _account_state(broker, account, marks)
    nl, gross = st["net_liq"], st["gross"]
    avail = nl - st["init"]
    excess = nl - st["maint"]
    money = {
        "NetLiquidation": nl, "TotalCashValue": st["cash"], "SettledCash": st["cash"],
        "AccruedCash": 0.0, "BuyingPower": max(avail, 0.0) * 4,
        "EquityWithLoanValue": nl, "PreviousDayEquityWithLoanValue": broker.starting_cash,
        "GrossPositionValue": gross, "RegTEquity": nl, "RegTMargin": st["init"],
        "SMA": max(nl - st["init"], 0.0), "InitMarginReq": st["init"],
        "MaintMarginReq": st["maint"], "AvailableFunds": avail, "ExcessLiquidity": excess,
        "FullInitMarginReq": st["init"], "FullMaintMarginReq": st["maint"],
        "FullAvailableFunds": avail, "FullExcessLiquidity": excess,
        "LookAheadInitMarginReq": st["init"], "LookAheadMaintMarginReq": st["maint"],
        "LookAheadAvailableFunds": avail, "LookAheadExcessLiquidity": excess,
    }  # fmt: skip
    plain = {
        "AccountType": "INDIVIDUAL",
        "Cushion": f"{excess / nl:.6f}" if nl else "0",
        "LookAheadNextChange": "0",
        "HighestSeverity": "0",
        "Leverage": f"{gross / nl:.2f}" if nl else "0",
        **{t: "-1" for t in SUMMARY_TAGS if t.startswith("DayTradesRemaining")},
    }
    ledger = {
        "CashBalance": st["cash"], "TotalCashBalance": st["cash"], "AccruedCash": 0.0,
        "StockMarketValue": st["stock"], "FuturesPNL": st["fut_pnl"],
        "NetLiquidationByCurrency": nl, "UnrealizedPnL": st["unreal"],
        "RealizedPnL": st["realized"], "ExchangeRate": 1.0,
    }  # fmt: skip
    rows: list[tuple[str, str, str]] = []
    for tag in tags:
        name = TAG_ALIASES.get(tag, tag)
        if name in money:
            rows.append((tag, f"{money[name]:.2f}", "USD"))
        elif name in plain:
            rows.append((tag, plain[name], ""))
        elif tag.upper().startswith("$LEDGER"):
            which = tag.upper().partition(":")[2] or "BASE"
            currencies = ["BASE", "USD"] if which == "ALL" else [which]
            for cur in currencies:
                if cur not in ("BASE", "USD"):
                    continue
                rows += [(k, f"{v:.2f}", cur) for k, v in ledger.items()]
    return rows


def pnl(broker: Broker, account: str, marks: dict[int, float]) -> tuple[float, float, float]:
    """reqPnL: (daily, unrealized, realized) of the account. The simulated trading day
    starts with the gateway, so daily P&L is everything since then."""
    st = _account_state(broker, account, marks)
    return st["unreal"] + st["realized"], st["unreal"], st["realized"]


def pnl_single(
    broker: Broker, account: str, inst: Instrument, marks: dict[int, float]
) -> tuple[float, float, float, float, float]:
    """reqPnLSingle: (position, daily, unrealized, realized, value) of one contract; zeros
    for a contract the account never held."""
    pos = broker.positions.get((account, inst.con_id))
    if pos is None:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    mark = marks.get(inst.con_id, pos.avg_price)
    unreal = pos.qty * (mark - pos.avg_price) * inst.point_value
    return pos.qty, unreal + pos.realized, unreal, pos.realized, pos.qty * mark * inst.point_value


def what_if(
    broker: Broker,
    account: str,
    inst: Instrument,
    action: str,
    qty: float,
    price: float,
    marks: dict[int, float],
) -> OrderStateView:
    """The what-if answer for an order: margins before and their change, and commission.
    Nothing in the broker changes."""
    st = _account_state(broker, account, marks)
    pos = broker.positions.get((account, inst.con_id))
    held = pos.qty if pos else 0.0
    signed = qty if action == "BUY" else -qty
    mark = marks.get(inst.con_id, price)
    before = _margin(inst, held * mark * inst.point_value)
    after = _margin(inst, (held + signed) * mark * inst.point_value)
    return OrderStateView(
        init_before=st["init"],
        maint_before=st["maint"],
        equity_before=st["net_liq"],
        init_change=after[0] - before[0],
        maint_change=after[1] - before[1],
        commission=commission_for(inst, qty, price),
    )
