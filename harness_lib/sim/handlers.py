"""Request handlers: what the simulated gateway answers to each decoded request.

Each handler gets the session and the request's named fields (decoded by its layout in
``requests.py``) and answers with messages built in ``messages.py``. Market streams,
orders and account state live in the gateway (``server.py``) and the broker.
"""

from __future__ import annotations

import time

from . import messages as m
from .requests import Request, match_args
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
    """reqAccountSummary (62): ib_async asks again after 1102."""
    req_id = r["req_id"]
    for acct in s.gw.accounts:
        for key, value in s.gw.broker.account_values(acct, s.gw.marks()).items():
            s.send([m.ACCOUNT_SUMMARY, 1, req_id, acct, key, value, "USD"])
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
