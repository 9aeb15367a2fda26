"""Server-to-client message layouts for every server version from 157 to 178.

One function per message, returning the ordered field list for the negotiated server
version ``sv``; ``wire.frame`` turns it into bytes. The long layouts (openOrder,
completedOrder, contractDetails, execDetails) follow tables A-D of
shared/docs/ib-wire-protocol.md field by field at 178 and branch at IB's thresholds
below it (the ``V_*`` constants, named after ibapi's ``MIN_SERVER_VER_*``), as both IB's
official decoder and ib_async's read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .market import Instrument

if TYPE_CHECKING:
    from .broker import Execution

# Server versions at which a layout the simulator sends changes (ibapi server_versions.py).
V_DURATION = 158
"""openOrder + duration (IB's decoder reads it from 158, ib_async from 159; at 158 ib_async
ignores the extra trailing field)."""
V_POST_TO_ATS = 160
V_AUTO_CANCEL_PARENT = 162
V_SIZE_RULES_163 = 163
"""contractDetails: one size field (sizeMinTick, read as suggestedSizeIncrement) at exactly 163."""
V_SIZE_RULES = 164
"""contractDetails loses its version and mdSizeMultiplier, gains minSize, sizeIncrement and
suggestedSizeIncrement."""
V_ADVANCED_ORDER_REJECT = 166
"""error gains advancedOrderRejectJson."""
V_PEGBEST_PEGMID_OFFSETS = 170
"""openOrder and completedOrder gain 5 PEG BEST/MID fields."""
V_FA_PROFILE_DESUPPORT = 177
"""openOrder and completedOrder lose faProfile."""
V_PENDING_PRICE_REVISION = 178
"""execDetails gains pendingPriceRevision."""

# Message ids (server -> client).
TICK_PRICE = 1
TICK_SIZE = 2
ORDER_STATUS = 3
ERR_MSG = 4
OPEN_ORDER = 5
ACCT_VALUE = 6
PORTFOLIO_VALUE = 7
ACCT_UPDATE_TIME = 8
NEXT_VALID_ID = 9
CONTRACT_DATA = 10
EXECUTION_DATA = 11
MANAGED_ACCTS = 15
CURRENT_TIME = 49
CONTRACT_DATA_END = 52
OPEN_ORDER_END = 53
ACCT_DOWNLOAD_END = 54
EXECUTION_DATA_END = 55
TICK_SNAPSHOT_END = 57
MARKET_DATA_TYPE = 58
COMMISSION_REPORT = 59
POSITION_DATA = 61
POSITION_END = 62
ACCOUNT_SUMMARY = 63
ACCOUNT_SUMMARY_END = 64
ACCOUNT_UPDATE_MULTI = 73
ACCOUNT_UPDATE_MULTI_END = 74
TICK_REQ_PARAMS = 81
COMPLETED_ORDER = 101
COMPLETED_ORDERS_END = 102

MARKET_RULE_IDS = {"STK": "26", "FUT": "67", "CASH": "239"}
"""contractDetails marketRuleIds per security type; reqMarketRule answers for these."""

UNSET_DOUBLE_TEXT = "1.7976931348623157E308"
"""What TWS sends for 'no value' in double fields such as realizedPNL of an opening fill."""


@dataclass(slots=True)
class OrderView:
    """The order fields the simulator echoes back in openOrder/completedOrder/execDetails."""

    order_id: int
    client_id: int
    perm_id: int
    inst: Instrument
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    account: str
    order_ref: str
    status: str
    filled: float = 0.0
    parent_id: int = 0
    completed_time: str = ""
    completed_status: str = ""


@dataclass(slots=True)
class OrderStateView:
    """The what-if answer: margin before/change/after and the commission of an order."""

    init_before: float
    maint_before: float
    equity_before: float
    init_change: float
    maint_change: float
    commission: float

    def margins(self) -> list[str]:
        """The 9 margin strings: before x3, change x3, after x3 (init, maint, equity)."""
        after = (
            self.init_before + self.init_change,
            self.maint_before + self.maint_change,
            self.equity_before,
        )
        before = (self.init_before, self.maint_before, self.equity_before)
        change = (self.init_change, self.maint_change, 0.0)
        return [f"{v:.2f}" for v in (*before, *change, *after)]


def contract_fields(inst: Instrument) -> list[Any]:
    """The 11 contract fields used by openOrder, completedOrder, execDetails and position:
    conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange,
    currency, localSymbol, tradingClass."""
    return [
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        inst.expiry,
        0.0,
        "",
        inst.multiplier,
        inst.exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,
    ]


def _qty(q: float) -> str:
    """Quantities go out as plain numbers ('1', '0.5'), as TWS prints Decimal sizes."""
    return str(int(q)) if float(q).is_integer() else repr(float(q))


def error(req_id: int, code: int, text: str, sv: int) -> list[Any]:
    """Error/notice (msg 4): six fields at >= 166 (advancedOrderRejectJson may be empty),
    five below."""
    if sv >= V_ADVANCED_ORDER_REJECT:
        return [ERR_MSG, 2, req_id, code, text, ""]
    return [ERR_MSG, 2, req_id, code, text]


def contract_details(req_id: int, inst: Instrument, sv: int, hours: tuple[str, str]) -> list[Any]:
    """contractDetails (msg 10), 40 fields with no secIds at >= 163 (table C), 39 below;
    ``hours`` is (tradingHours, liquidHours) from ``trading_hours.hours``."""
    is_stk = inst.sec_type == "STK"
    order_types = "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,DAY,GTC,IOC,LMT,MKT,STP,STPLMT,TRAIL"
    valid_ex = "SMART,NASDAQ,NYSE,ARCA,BATS,IEX" if is_stk else inst.exchange
    head: list[Any] = [CONTRACT_DATA] if sv >= V_SIZE_RULES else [CONTRACT_DATA, 8]
    f = [
        *head,
        req_id,
        inst.symbol,
        inst.sec_type,
        inst.expiry,
        0.0,
        "",
        inst.exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,  # marketName
        inst.trading_class,
        inst.con_id,
        inst.min_tick,
    ]
    if sv < V_SIZE_RULES:
        f.append(1)  # mdSizeMultiplier
    f += [
        inst.multiplier,
        order_types,
        valid_ex,
        1,  # priceMagnifier
        0,  # underConId
        inst.long_name,
        inst.primary_exchange,
        inst.expiry[:6] if inst.expiry else "",  # contractMonth
        "Technology" if is_stk else "",
        "",
        "",
        inst.time_zone,
        hours[0],
        hours[1],
        "",  # evRule
        0,  # evMultiplier
        0,  # numSecIds
        1,  # aggGroup
        inst.symbol if inst.sec_type == "FUT" else "",
        "IND" if inst.sec_type == "FUT" else "",
        MARKET_RULE_IDS.get(inst.sec_type, ""),
        inst.expiry,
        "COMMON" if is_stk else "",
    ]
    if sv == V_SIZE_RULES_163:
        f.append("1")  # sizeMinTick
    elif sv >= V_SIZE_RULES:
        f += ["1", "1", "1"]  # minSize, sizeIncrement, suggestedSizeIncrement
    return f


def open_order(o: OrderView, sv: int, state: OrderStateView | None = None) -> list[Any]:
    """openOrder (msg 5) for a plain order: 127 fields at 178 (table A), 128 at 170-176,
    123 at 162-169, 120 at 157. ``state`` fills the what-if margin and commission block."""
    f: list[Any] = [OPEN_ORDER, o.order_id, *contract_fields(o.inst)]
    f += [o.action, _qty(o.quantity), o.order_type, o.lmt_price, o.aux_price, o.tif]
    f += ["", o.account, "O", 0, o.order_ref, o.client_id, o.perm_id]  # ocaGroup..permId
    f += [0, 0, 0, "", "", "", "", ""]  # outsideRth..faPercentage (idx 26-33)
    if sv < V_FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += ["", "", "", "", "", 0, "", -1, 0]  # modelCode..auctionStrategy (34-42)
    f += ["", "", "", "", "", "", 0, 0, 0, "", 3, 0, 0, ""]  # startingPrice..nbboPriceCap (43-56)
    f += [o.parent_id, 0, "", 0, "", ""]  # parentId..deltaNeutralAuxPrice (57-62)
    f += [0, 0, "", "", "", "", ""]  # continuousUpdate..comboLegsDescrip (63-69)
    f += [0, 0, 0]  # numComboLegs, numOrderComboLegs, numSmartComboRoutingParams
    f += ["", "", ""]  # scale fields (73-75)
    f += ["", 0, "", "", 0, 0, "", 0, int(state is not None)]  # hedgeType..whatIf (76-84)
    if state is None:
        f += [o.status] + [""] * 9  # status + margin fields (85-94)
        f += ["", "", "", "", ""]  # commission..warningText (95-99)
    else:
        f += [o.status, *state.margins()]
        f += [state.commission, state.commission, state.commission, "USD", ""]
    f += [0, 0, 0]  # randomizeSize, randomizePrice, numConditions (100-102)
    f += ["", "", "", "", "", "", "", 0]  # adjustedOrderType..adjustableTrailingUnit (103-110)
    f += ["", "", "", ""]  # softDollarTier x3, cashQty (111-114)
    f += [0, 0, 0, 0]  # dontUseAutoPriceForHedge..usePriceMgmtAlgo (115-118)
    if sv >= V_DURATION:
        f.append("")  # duration (119)
    if sv >= V_POST_TO_ATS:
        f.append("")  # postToAts (120)
    if sv >= V_AUTO_CANCEL_PARENT:
        f.append(0)  # autoCancelParent (121)
    if sv >= V_PEGBEST_PEGMID_OFFSETS:
        f += ["", "", "", "", ""]  # minTradeQty..midOffsetAtHalf (122-126)
    return f


def completed_order(o: OrderView, sv: int) -> list[Any]:
    """completedOrder (msg 101), 96 fields for a plain order (table B)."""
    f: list[Any] = [COMPLETED_ORDER, *contract_fields(o.inst)]
    f += [o.action, _qty(o.quantity), o.order_type, o.lmt_price, o.aux_price, o.tif]
    f += ["", o.account, "O", 0, o.order_ref, o.perm_id]  # ocaGroup..permId (18-23)
    f += [0, 0, 0, "", "", "", ""]  # outsideRth..faPercentage (24-30)
    if sv < V_FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += ["", "", "", "", "", 0, "", -1]  # modelCode..exemptCode (31-38)
    f += [
        "",
        "",
        "",
        "",
        "",
        "",
        0,
        0,
        "",
        3,
        0,
        "",
        0,
        "",
        "",
    ]  # startingPrice..dnAuxPrice (39-53)
    f += [0, 0, "", "", ""]  # continuousUpdate..comboLegsDescrip (54-58)
    f += [0, 0, 0]  # combo counts (59-61)
    f += ["", "", "", "", "", "", 0, 0, "", 0]  # scale..solicited (62-71)
    f += [o.status, 0, 0, 0]  # status, randomizeSize, randomizePrice, numConditions (72-75)
    f += ["", "", "", 0, 0, "", _qty(o.filled), 0, 0, "", 0, 0, 0]  # (76-88)
    f += [o.completed_time, o.completed_status]  # (89-90)
    if sv >= V_PEGBEST_PEGMID_OFFSETS:
        f += ["", "", "", "", ""]  # (91-95)
    return f


def order_status(
    o: OrderView, sv: int, last_fill_price: float = 0.0, avg_fill_price: float = 0.0
) -> list[Any]:
    """orderStatus (msg 3), no version field."""
    return [
        ORDER_STATUS,
        o.order_id,
        o.status,
        _qty(o.filled),
        _qty(o.quantity - o.filled),
        avg_fill_price,
        o.perm_id,
        o.parent_id,
        last_fill_price,
        o.client_id,
        "",
        0.0,
    ]


def exec_details(req_id: int, e: Execution, sv: int) -> list[Any]:
    """execDetails (msg 11), 32 fields at 178 (table D), 31 below; reqId -1 for live fills."""
    o = e.order
    return [
        EXECUTION_DATA,
        req_id,
        o.order_id,
        *contract_fields(o.inst),
        e.exec_id,
        e.time.strftime("%Y%m%d %H:%M:%S") + " UTC",
        o.account,
        o.inst.exchange if o.inst.exchange != "SMART" else (o.inst.primary_exchange or "ISLAND"),
        "BOT" if o.action == "BUY" else "SLD",
        _qty(e.shares),
        e.price,
        o.perm_id,
        o.client_id,
        0,
        _qty(e.cum_qty),
        e.avg_price,
        o.order_ref,
        "",
        "",
        "",
        2,  # lastLiquidity: removed liquidity
        0,  # pendingPriceRevision (dropped below 178)
    ][: None if sv >= V_PENDING_PRICE_REVISION else -1]


def commission_report(
    exec_id: str, commission: float, currency: str, realized_pnl: float | None
) -> list[Any]:
    """commissionReport (msg 59), exactly 8 fields."""
    pnl = UNSET_DOUBLE_TEXT if realized_pnl is None else round(realized_pnl, 6)
    return [COMMISSION_REPORT, 1, exec_id, round(commission, 6), currency, pnl, "", ""]


def position(account: str, inst: Instrument, qty: float, avg_cost: float) -> list[Any]:
    """position (msg 61), exactly 16 fields."""
    c = contract_fields(inst)
    # position's contract block has no primaryExchange but is otherwise the same 11 fields
    return [POSITION_DATA, 3, account, *c, _qty(qty), round(avg_cost, 6)]


def portfolio_value(
    account: str, inst: Instrument, qty: float, price: float, avg_cost: float, realized: float
) -> list[Any]:
    """updatePortfolio (msg 7), exactly 20 fields; numbers must not be empty."""
    mult = inst.point_value
    value = qty * price * mult
    unreal = value - qty * avg_cost
    return [
        PORTFOLIO_VALUE,
        8,
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        inst.expiry,
        0.0,
        "",
        inst.multiplier,
        inst.primary_exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,
        _qty(qty),
        price,
        round(value, 4),
        round(avg_cost, 6),
        round(unreal, 4),
        round(realized, 4),
        account,
    ]


# --- more server -> client messages (layouts identical across 157..178) ------------------------
TICK_GENERIC = 45
TICK_STRING = 46
MARKET_DEPTH = 12
MARKET_DEPTH_L2 = 13
HISTORICAL_DATA = 17
SOFT_DOLLAR_TIERS = 77
FAMILY_CODES = 78
SYMBOL_SAMPLES = 79
MKT_DEPTH_EXCHANGES = 80
NEWS_PROVIDERS = 85
HEAD_TIMESTAMP = 88
HISTORICAL_DATA_UPDATE = 90
MARKET_RULE = 93
PNL = 94
PNL_SINGLE = 95
TICK_BY_TICK = 99
USER_INFO = 107

V_BOND_ISSUERID = 176
"""symbolSamples gains description and issuerId per contract."""


def historical_data(req_id: int, start: str, end: str, bars: list[list[Any]]) -> list[Any]:
    """historicalData (msg 17) at >= 124: no version, no hasGaps; each bar is
    date, open, high, low, close, volume, wap, barCount. The message itself ends the data."""
    f: list[Any] = [HISTORICAL_DATA, req_id, start, end, len(bars)]
    for b in bars:
        f += b
    return f


def historical_data_update(req_id: int, bar: list[Any]) -> list[Any]:
    """historicalDataUpdate (msg 90): barCount, date, open, close, high, low, wap, volume
    (close before high, as IB sends it); ``bar`` is in historicalData order."""
    date_, open_, high, low, close, volume, wap, count = bar
    return [HISTORICAL_DATA_UPDATE, req_id, count, date_, open_, close, high, low, wap, volume]


def pnl(req_id: int, daily: float, unrealized: float, realized: float) -> list[Any]:
    """pnl (msg 94) at >= 135: reqId, dailyPnL, unrealizedPnL, realizedPnL (no version)."""
    return [PNL, req_id, round(daily, 2), round(unrealized, 2), round(realized, 2)]


def pnl_single(
    req_id: int, pos: float, daily: float, unrealized: float, realized: float, value: float
) -> list[Any]:
    """pnlSingle (msg 95) at >= 135: reqId, pos, daily, unrealized, realized, value."""
    return [
        PNL_SINGLE, req_id, _qty(pos), round(daily, 2), round(unrealized, 2),
        round(realized, 2), round(value, 2),
    ]  # fmt: skip


def symbol_samples(req_id: int, insts: list[Instrument], sv: int) -> list[Any]:
    """symbolSamples (msg 79): per contract conId, symbol, secType, primaryExchange,
    currency, derivative sec types, and from 176 description and issuerId."""
    f: list[Any] = [SYMBOL_SAMPLES, req_id, len(insts)]
    for i in insts:
        f += [i.con_id, i.symbol, i.sec_type, i.primary_exchange or i.exchange, i.currency, 0]
        if sv >= V_BOND_ISSUERID:
            f += [i.long_name, ""]
    return f


def tick_by_tick(req_id: int, tick_type: int, when: int, values: list[Any]) -> list[Any]:
    """tickByTick (msg 99): reqId, tickType (1 Last, 2 AllLast, 3 BidAsk, 4 MidPoint), time,
    then the type's fields."""
    return [TICK_BY_TICK, req_id, tick_type, when, *values]
