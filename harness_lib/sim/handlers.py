"""Request handlers: what the simulated gateway answers to each decoded request.

Each handler gets the session and the request's named fields (decoded by its layout in
``requests.py``) and answers with messages built in ``messages.py``. Market streams,
orders and account state live in the gateway (``server.py``) and the broker.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from . import broker, feeds
from . import messages as m
from .history import (
    IB_WHAT_TO_SHOW,
    WHAT_TO_SHOW,
    History,
    HistoryError,
    format_time,
    parse_bar_size,
    parse_duration,
    parse_end,
)
from .market import Instrument
from .requests import Request, match_args
from .scenarios import Scenario
from .session import HANDLERS, Handler, Session


def handles(msg_id: int) -> object:
    """Register the decorated function as the handler of ``msg_id``."""

    def register(fn: Handler) -> Handler:
        HANDLERS[msg_id] = fn
        return fn

    return register


@handles(71)
def start_api(s: Session, r: Request) -> None:
    """startApi (71): register the clientId, announce accounts, next id and farm status."""
    client_id = r["client_id"]
    gw = s.gw
    if client_id in gw.clients and not gw.clients[client_id].closed:
        s.client_id = None
        s.error(
            -1,
            326,
            "Unable to connect as the client id is already in use. Retry with a unique client id.",
        )
        gw.truth.connections.append((time.monotonic(), client_id, "refused"))
        s.close()
        return
    s.client_id = client_id
    gw.clients[client_id] = s
    gw.truth.connections.append((time.monotonic(), client_id, "connected"))
    s.send([m.MANAGED_ACCTS, 1, ",".join(gw.accounts)])
    s.send([m.NEXT_VALID_ID, 1, gw.broker.next_order_id])
    for code, text in gw.farm_notices():
        s.error(-1, code, text)
    gw.on_session_started(s)


@handles(8)
def req_ids(s: Session, r: Request) -> None:
    """reqIds (8)."""
    s.send([m.NEXT_VALID_ID, 1, s.gw.broker.next_order_id])


@handles(14)
def set_server_log_level(s: Session, r: Request) -> None:
    """setServerLogLevel (14): accepted; a gateway does not answer it."""


@handles(49)
def current_time(s: Session, r: Request) -> None:
    """reqCurrentTime (49): the gateway clock, shifted by ``clock_offset`` for skew tests."""
    s.send([m.CURRENT_TIME, 1, int(time.time() + s.gw.clock_offset)])


@handles(17)
def managed_accts(s: Session, r: Request) -> None:
    """reqManagedAccts (17)."""
    s.send([m.MANAGED_ACCTS, 1, ",".join(s.gw.accounts)])


@handles(61)
def positions(s: Session, r: Request) -> None:
    """reqPositions (61): every position, then positionEnd; later changes are pushed."""
    s.positions_subscribed = True
    for acct, inst, pos in s.gw.broker.position_rows():
        s.send(m.position(acct, inst, pos.qty, pos.avg_price * inst.point_value))
    s.send([m.POSITION_END, 1])


@handles(64)
def cancel_positions(s: Session, r: Request) -> None:
    """cancelPositions (64)."""
    s.positions_subscribed = False


@handles(5)
def open_orders(s: Session, r: Request) -> None:
    """reqOpenOrders (5): this client's open orders (clientId 0 also sees everyone's)."""
    cid = None if s.client_id == 0 else s.client_id
    for o in s.gw.broker.open_orders(cid):
        s.send(m.open_order(o.view, s.server_version))
        s.send(m.order_status(o.view, s.server_version, avg_fill_price=o.avg_fill_price()))
    s.send([m.OPEN_ORDER_END, 1])


@handles(16)
def all_open_orders(s: Session, r: Request) -> None:
    """reqAllOpenOrders (16): open orders of every client."""
    for o in s.gw.broker.open_orders():
        s.send(m.open_order(o.view, s.server_version))
        s.send(m.order_status(o.view, s.server_version, avg_fill_price=o.avg_fill_price()))
    s.send([m.OPEN_ORDER_END, 1])


@handles(15)
def auto_open_orders(s: Session, r: Request) -> None:
    """reqAutoOpenOrders (15): accepted; clientId 0 already sees every order."""


@handles(99)
def completed_orders(s: Session, r: Request) -> None:
    """reqCompletedOrders (99)."""
    for o in s.gw.broker.completed_orders():
        s.send(m.completed_order(o.view, s.server_version))
    s.send([m.COMPLETED_ORDERS_END])


@handles(6)
def account_updates(s: Session, r: Request) -> None:
    """reqAccountUpdates (6): values, portfolio, time, then accountDownloadEnd."""
    account = r["account"] or s.gw.accounts[0]
    if not r["subscribe"]:
        s.account_updates = None
        return
    s.account_updates = account
    s.gw.send_account_snapshot(s, account)
    s.send([m.ACCT_DOWNLOAD_END, 1, account])


@handles(76)
def account_updates_multi(s: Session, r: Request) -> None:
    """reqAccountUpdatesMulti (76): values per account, then the end marker for the reqId."""
    req_id = r["req_id"]
    accounts = [r["account"]] if r["account"] else s.gw.accounts
    for acct in accounts:
        for key, value in s.gw.broker.account_values(acct, s.gw.marks()).items():
            s.send([m.ACCOUNT_UPDATE_MULTI, 1, req_id, acct, r["model_code"], key, value, "USD"])
    s.send([m.ACCOUNT_UPDATE_MULTI_END, 1, req_id])


@handles(77)
def cancel_account_updates_multi(s: Session, r: Request) -> None:
    """cancelAccountUpdatesMulti (77)."""


@handles(62)
def account_summary(s: Session, r: Request) -> None:
    """reqAccountSummary (62): one row per account and requested tag, then the end marker.
    ib_async asks again after 1102."""
    req_id = r["req_id"]
    tags = [t.strip() for t in r["tags"].split(",") if t.strip()]
    for acct in s.gw.accounts:
        for tag, value, currency in broker.account_summary(s.gw.broker, acct, s.gw.marks(), tags):
            s.send([m.ACCOUNT_SUMMARY, 1, req_id, acct, tag, value, currency])
    s.send([m.ACCOUNT_SUMMARY_END, 1, req_id])


@handles(63)
def cancel_account_summary(s: Session, r: Request) -> None:
    """cancelAccountSummary (63)."""


@handles(7)
def executions(s: Session, r: Request) -> None:
    """reqExecutions (7): matching executions with their commissions, then the end marker."""
    req_id = r["req_id"]
    for e in s.gw.broker.executions:
        o = e.order
        if r["client_id"] and o.client_id != r["client_id"]:
            continue
        if r["account"] and o.account != r["account"]:
            continue
        if r["symbol"] and o.inst.symbol != r["symbol"]:
            continue
        s.send(m.exec_details(req_id, e, s.server_version))
        if e.commission_sent:
            s.send(m.commission_report(e.exec_id, e.commission, "USD", e.realized_pnl))
    s.send([m.EXECUTION_DATA_END, 1, req_id])


@handles(9)
def contract_details(s: Session, r: Request) -> None:
    """reqContractDetails (9): every match, or error 200 when nothing matches."""
    req_id = r["req_id"]
    matches = s.gw.catalogue.match(**match_args(r["contract"]))
    if not matches:
        s.error(req_id, 200, "No security definition has been found for the request")
        return
    for inst in matches:
        s.send(m.contract_details(req_id, inst, s.server_version, s.gw.hours(inst)))
    s.send([m.CONTRACT_DATA_END, 1, req_id])


@handles(59)
def market_data_type(s: Session, r: Request) -> None:
    """reqMarketDataType (59): remembered per client for later subscriptions."""
    mdt = r["type"]
    if mdt not in (1, 2, 3, 4):
        raise ValueError(f"market data type {mdt}")
    s.market_data_type = mdt


def _resolve(s: Session, req_id: int, c: dict, code: int = 200) -> Instrument | None:
    """The one instrument a request's contract names, or None after sending IB's error."""
    matches = s.gw.catalogue.match(**match_args(c))
    if len(matches) == 1:
        return matches[0]
    text = (
        "No security definition has been found for the request"
        if not matches
        else f"The contract description specified for {c['symbol']} is ambiguous."
    )
    s.error(req_id, code, text)
    return None


def _no_data(s: Session, req_id: int, inst: Instrument, what: str) -> bool:
    """Send IB's error when the market-data faults or the contract leave no data."""
    gw = s.gw
    where = inst.primary_exchange or inst.exchange
    if not inst.subscribed or gw.faults.has(Scenario.NOT_SUBSCRIBED):
        s.error(req_id, 162, "Historical Market Data Service error message:No market data "
                f"permissions for {where} {inst.sec_type}")  # fmt: skip
        return True
    if not inst.liquid or gw.faults.has(Scenario.NEVER_TICKS):
        s.error(req_id, 162, "Historical Market Data Service error message:HMDS query "
                f"returned no data: {inst.symbol}@{where} {what.title()}")  # fmt: skip
        return True
    return False


@handles(20)
def historical_data(s: Session, r: Request) -> None:
    """reqHistoricalData (20): bars from the seeded path, then (keepUpToDate) the open bar
    every few seconds until cancelHistoricalData."""
    req_id = r["req_id"]
    inst = _resolve(s, req_id, r["contract"])
    if inst is None:
        return
    what = r["what_to_show"]
    try:
        if what not in IB_WHAT_TO_SHOW:
            raise HistoryError(
                321,
                "Error validating request.-'bX' : cause - What to show field is missing or "
                "incorrect.",
            )
        bar_s = parse_bar_size(r["bar_size"])
        duration_s = parse_duration(r["duration"])
        if r["keep_up_to_date"] and r["end"].strip():
            raise HistoryError(
                321, "Error validating request.-'bX' : cause - End date not supported with "
                "live updates",
            )  # fmt: skip
        if what not in WHAT_TO_SHOW:
            raise HistoryError(
                162, f"Historical Market Data Service error message:{what} bars are not "
                "available from the livefire simulator",
            )  # fmt: skip
        end = parse_end(r["end"], s.gw.now())
    except HistoryError as exc:
        s.error(req_id, exc.code, exc.text)
        return
    if _no_data(s, req_id, inst, what):
        return
    hist = History(s.gw.model(inst), s.gw.price_path(inst))
    try:
        bars = hist.bars(end, duration_s, bar_s, what, r["use_rth"])
    except HistoryError as exc:
        s.error(req_id, exc.code, exc.text)
        return
    zone = inst.time_zone
    start = end.timestamp() - duration_s
    s.send(
        m.historical_data(
            req_id,
            format_time(datetime.fromtimestamp(start, UTC), zone),
            format_time(end, zone),
            [feeds.bar_fields(b, bar_s, r["format_date"], zone) for b in bars],
        )
    )
    if r["keep_up_to_date"]:
        s.start_feed(
            "history",
            req_id,
            feeds.history_updates(s.gw, s, req_id, inst, bar_s, what, r["format_date"]),
        )


@handles(25)
def cancel_historical_data(s: Session, r: Request) -> None:
    """cancelHistoricalData (25): stop keepUpToDate updates; an unknown id gets 366."""
    if not s.stop_feed("history", r["req_id"]):
        s.error(r["req_id"], 366, f"No historical data query found for ticker id:{r['req_id']}")


@handles(87)
def head_timestamp(s: Session, r: Request) -> None:
    """reqHeadTimeStamp (87): the earliest bar the simulator serves for the contract."""
    req_id = r["req_id"]
    inst = _resolve(s, req_id, r["contract"])
    if inst is None or _no_data(s, req_id, inst, r["what_to_show"] or "TRADES"):
        return
    t = History(s.gw.model(inst), s.gw.price_path(inst)).head_timestamp()
    value = str(int(t.timestamp())) if r["format_date"] == 2 else t.strftime("%Y%m%d-%H:%M:%S")
    s.send([m.HEAD_TIMESTAMP, req_id, value])


@handles(90)
def cancel_head_timestamp(s: Session, r: Request) -> None:
    """cancelHeadTimeStamp (90): the answer was immediate; nothing to stop."""


def _account(s: Session, req_id: int, account: str) -> str | None:
    acct = account or s.gw.accounts[0]
    if acct not in s.gw.accounts:
        s.error(req_id, 321, "Error validating request.-'bn' : cause - Invalid account code "
                f"{acct}")  # fmt: skip
        return None
    return acct


@handles(92)
def req_pnl(s: Session, r: Request) -> None:
    """reqPnL (92): daily, unrealized and realized P&L about once a second."""
    acct = _account(s, r["req_id"], r["account"])
    if acct is not None:
        s.start_feed("pnl", r["req_id"], feeds.pnl_updates(s.gw, s, r["req_id"], acct))


@handles(93)
def cancel_pnl(s: Session, r: Request) -> None:
    """cancelPnL (93)."""
    s.stop_feed("pnl", r["req_id"])


@handles(94)
def req_pnl_single(s: Session, r: Request) -> None:
    """reqPnLSingle (94): one contract's position, P&L and value about once a second."""
    req_id = r["req_id"]
    acct = _account(s, req_id, r["account"])
    if acct is None:
        return
    inst = s.gw.catalogue.by_con_id.get(r["con_id"])
    if inst is None:
        s.error(req_id, 200, "No security definition has been found for the request")
        return
    s.start_feed("pnl", req_id, feeds.pnl_single_updates(s.gw, s, req_id, acct, inst))


@handles(95)
def cancel_pnl_single(s: Session, r: Request) -> None:
    """cancelPnLSingle (95)."""
    s.stop_feed("pnl", r["req_id"])


@handles(97)
def req_tick_by_tick(s: Session, r: Request) -> None:
    """reqTickByTickData (97): Last, AllLast, BidAsk or MidPoint, at most
    ``feeds.TICK_BY_TICK_LIMIT`` at once."""
    req_id = r["req_id"]
    kind = feeds.TICK_BY_TICK_TYPES.get(r["tick_type"])
    if kind is None:
        s.error(req_id, 321, "Error validating request.-'bK' : cause - Invalid tick type "
                f"{r['tick_type']!r}; use Last, AllLast, BidAsk or MidPoint")  # fmt: skip
        return
    inst = _resolve(s, req_id, r["contract"])
    if inst is None:
        return
    if not inst.subscribed or s.gw.faults.has(Scenario.NOT_SUBSCRIBED):
        s.error(req_id, 10189, "Failed to request tick-by-tick data.No market data "
                "permissions")  # fmt: skip
        return
    if s.feed_count("tbt") >= feeds.TICK_BY_TICK_LIMIT:
        s.error(req_id, 10190, "Max number of tick-by-tick requests has been reached.")
        return
    s.start_feed("tbt", req_id, feeds.tick_by_tick(s.gw, s, req_id, inst, kind))


@handles(98)
def cancel_tick_by_tick(s: Session, r: Request) -> None:
    """cancelTickByTickData (98)."""
    s.stop_feed("tbt", r["req_id"])


@handles(10)
def req_mkt_depth(s: Session, r: Request) -> None:
    """reqMktDepth (10): a book of ``numRows`` levels around the quote, at most
    ``feeds.DEPTH_LIMIT`` at once."""
    req_id = r["req_id"]
    inst = _resolve(s, req_id, r["contract"])
    if inst is None:
        return
    if not inst.subscribed or s.gw.faults.has(Scenario.NOT_SUBSCRIBED):
        s.error(req_id, 354, "Requested market data is not subscribed.")
        return
    if s.feed_count("depth") >= feeds.DEPTH_LIMIT:
        s.error(req_id, 309, f"Max number ({feeds.DEPTH_LIMIT}) of market depth requests "
                "has been reached")  # fmt: skip
        return
    rows = max(1, min(r["num_rows"], 10))
    s.start_feed("depth", req_id, feeds.market_depth(s.gw, s, req_id, inst, rows, r["smart"]))


@handles(11)
def cancel_mkt_depth(s: Session, r: Request) -> None:
    """cancelMktDepth (11)."""
    s.stop_feed("depth", r["req_id"])


@handles(79)
def soft_dollar_tiers(s: Session, r: Request) -> None:
    """reqSoftDollarTiers (79): none for this account."""
    s.send([m.SOFT_DOLLAR_TIERS, r["req_id"], 0])


@handles(80)
def family_codes(s: Session, r: Request) -> None:
    """reqFamilyCodes (80): the account alone."""
    s.send([m.FAMILY_CODES, 1, s.gw.accounts[0], ""])


@handles(81)
def matching_symbols(s: Session, r: Request) -> None:
    """reqMatchingSymbols (81): catalogue contracts whose symbol or name starts with the
    pattern (one per symbol)."""
    pat = r["pattern"].upper()
    seen: dict[str, Instrument] = {}
    for inst in s.gw.catalogue.instruments:
        if pat and (inst.symbol.startswith(pat) or inst.long_name.upper().startswith(pat)):
            seen.setdefault(inst.symbol, inst)
    s.send(m.symbol_samples(r["req_id"], list(seen.values()), s.server_version))


@handles(82)
def mkt_depth_exchanges(s: Session, r: Request) -> None:
    """reqMktDepthExchanges (82): where the simulator serves depth."""
    rows = [("NASDAQ", "STK", "NASDAQ", "Deep2", 1), ("CME", "FUT", "CME", "Deep", 2),
            ("IDEALPRO", "CASH", "", "Deep", 4)]  # fmt: skip
    s.send([m.MKT_DEPTH_EXCHANGES, len(rows), *[x for row in rows for x in row]])


@handles(85)
def news_providers(s: Session, r: Request) -> None:
    """reqNewsProviders (85): none (news is not served)."""
    s.send([m.NEWS_PROVIDERS, 0])


@handles(91)
def market_rule(s: Session, r: Request) -> None:
    """reqMarketRule (91): one increment, the minTick of the contracts using that rule id
    (the simulator's rule ids are its contracts' marketRuleIds)."""
    rule = r["rule_id"]
    ticks = {int(v): k for k, v in m.MARKET_RULE_IDS.items()}
    tick = next(
        (i.min_tick for i in s.gw.catalogue.instruments if i.sec_type == ticks.get(rule)), 0.01
    )
    s.send([m.MARKET_RULE, rule, 1, 0, tick])


@handles(104)
def user_info(s: Session, r: Request) -> None:
    """reqUserInfo (104): no white-branding id."""
    s.send([m.USER_INFO, r["req_id"], ""])


@handles(1)
def mkt_data(s: Session, r: Request) -> None:
    """reqMktData (1): resolve the contract, apply the faults, start the stream."""
    req_id = r["req_id"]
    c = r["contract"]
    if c["sec_type"] == "BAG":
        s.error(req_id, 200, "No security definition has been found for the request")
        return
    matches = s.gw.catalogue.match(**match_args(c))
    if len(matches) != 1:
        text = (
            "No security definition has been found for the request"
            if not matches
            else f"The contract description specified for {c['symbol']} is ambiguous."
        )
        s.error(req_id, 200, text)
        return
    s.gw.subscribe(s, req_id, matches[0], r["snapshot"], frozenset(r["generic_ticks"]))


@handles(2)
def cancel_mkt_data(s: Session, r: Request) -> None:
    """cancelMktData (2): stop the stream."""
    sub = s.subs.pop(r["req_id"], None)
    if sub and sub.task:
        sub.task.cancel()


@handles(3)
def place_order(s: Session, r: Request) -> None:
    """placeOrder (3): the gateway validates, accepts, and fills or rests per the faults."""
    s.gw.handle_order(s, r)


@handles(4)
def cancel_order(s: Session, r: Request) -> None:
    """cancelOrder (4)."""
    s.gw.cancel_order(s, r["order_id"])


@handles(58)
def global_cancel(s: Session, r: Request) -> None:
    """reqGlobalCancel (58): cancel every open order of every client."""
    for o in s.gw.broker.open_orders():
        s.gw.cancel_order(s, o.view.order_id, owner=o.view.client_id)
