"""Which request a server message answers: ids, contracts and message names at server 178.

Replay and drift both need to split a recorded session into "request → its answers".
Request ids and order ids share one sequence in the TWS API, so one map (id → request)
covers both. Field positions follow /work/shared/docs/ib-wire-protocol.md §3 (ib_async
2.1 at server version 178).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness_lib.wire.format import Frame

REQUEST_NAMES: dict[int, str] = {
    1: "reqMktData", 2: "cancelMktData", 3: "placeOrder", 4: "cancelOrder",
    5: "reqOpenOrders", 6: "reqAccountUpdates", 7: "reqExecutions", 8: "reqIds",
    9: "reqContractDetails", 15: "reqAutoOpenOrders", 16: "reqAllOpenOrders",
    17: "reqManagedAccts", 49: "reqCurrentTime", 58: "reqGlobalCancel",
    59: "reqMarketDataType", 61: "reqPositions", 62: "reqAccountSummary",
    63: "cancelAccountSummary", 64: "cancelPositions", 71: "startApi",
    76: "reqAccountUpdatesMulti", 77: "cancelAccountUpdatesMulti", 99: "reqCompletedOrders",
}  # fmt: skip

MESSAGE_NAMES: dict[int, str] = {
    1: "tickPrice", 2: "tickSize", 3: "orderStatus", 4: "error", 5: "openOrder",
    6: "updateAccountValue", 7: "updatePortfolio", 8: "updateAccountTime", 9: "nextValidId",
    10: "contractDetails", 11: "execDetails", 15: "managedAccounts", 45: "tickGeneric",
    46: "tickString", 49: "currentTime", 52: "contractDetailsEnd", 53: "openOrderEnd",
    54: "accountDownloadEnd", 55: "execDetailsEnd", 57: "tickSnapshotEnd",
    58: "marketDataType", 59: "commissionReport", 61: "position", 62: "positionEnd",
    63: "accountSummary", 64: "accountSummaryEnd", 73: "accountUpdateMulti",
    74: "accountUpdateMultiEnd", 81: "tickReqParams", 101: "completedOrder",
    102: "completedOrdersEnd",
}  # fmt: skip

REQUEST_ID_AT: dict[int, int] = {1: 2, 2: 2, 3: 1, 4: 2, 7: 2, 9: 2, 62: 2, 63: 2, 76: 2, 77: 2}
"""Client message id → index of its request (or order) id."""

CONTRACT_AT: dict[int, int] = {1: 3, 9: 3, 3: 2}
"""Client message id → index of the contract's conId; 12 contract fields follow from there
(placeOrder's primaryExchange sits where reqMktData's does)."""

ANSWER_ID_AT: dict[int, int] = {
    1: 2, 2: 2, 3: 1, 4: 2, 5: 1, 10: 1, 45: 2, 46: 2, 52: 2, 55: 2, 57: 2, 58: 2,
    63: 2, 64: 2, 73: 2, 74: 2, 81: 1,
}  # fmt: skip
"""Server message id → index of the request id it answers (orderId for order messages)."""

EXEC_ORDER_ID_AT = 2
"""execDetails (11): reqId at 1 (-1 for live fills), the orderId at 2."""

STREAMING = frozenset({1, 2, 45, 46, 47, 48})
"""Tick messages: how many arrive depends on time and prices, not on the protocol."""

CANCELS: dict[int, int] = {2: 1, 4: 3, 63: 62, 77: 76}
"""Cancel message id → the request it cancels (by the same id)."""


EXPECTS: dict[int, frozenset[int]] = {
    71: frozenset({15, 9, 4}),  # startApi: accounts, next id, farm notices (id -1)
    17: frozenset({15}),
    8: frozenset({9}),
    49: frozenset({49}),
    61: frozenset({61, 62}),
    5: frozenset({5, 3, 53}),
    16: frozenset({5, 3, 53}),
    15: frozenset({5, 3, 53}),
    99: frozenset({101, 102}),
    6: frozenset({6, 7, 8, 54}),
}
"""Client message id → the server messages without a request id that answer it."""

ENDS: dict[int, frozenset[int]] = {
    71: frozenset({15, 9}), 17: frozenset({15}), 8: frozenset({9}), 49: frozenset({49}),
    61: frozenset({62}), 5: frozenset({53}), 16: frozenset({53}), 15: frozenset({53}),
    99: frozenset({102}), 6: frozenset({54}),
}  # fmt: skip
"""Client message id → the message(s) that complete its answer. Until they have arrived a
request is open, and id-less answers go to the oldest open request expecting them: a
client that sends the next request before the previous answer is complete (or a replay
that sends at recorded times) still has each answer counted where it belongs."""


def request_name(msg_id: int) -> str:
    """Readable name of a client message."""
    return REQUEST_NAMES.get(msg_id, f"msg{msg_id}")


def message_name(msg_id: int) -> str:
    """Readable name of a server message."""
    return MESSAGE_NAMES.get(msg_id, f"msg{msg_id}")


def _int(fields: list[str], i: int) -> int | None:
    try:
        return int(fields[i])
    except (IndexError, ValueError):
        return None


def request_id(frame: Frame) -> int | None:
    """The request/order id a client message carries, if any."""
    i = REQUEST_ID_AT.get(frame.msg_id)
    return None if i is None else _int(frame.fields, i)


def answer_id(frame: Frame) -> int | None:
    """The request/order id a server message refers to (None: not tied to one)."""
    mid = frame.msg_id
    if mid == 11:
        rid = _int(frame.fields, 1)
        return rid if rid is not None and rid >= 0 else _int(frame.fields, EXEC_ORDER_ID_AT)
    i = ANSWER_ID_AT.get(mid)
    if i is None:
        return None
    rid = _int(frame.fields, i)
    return rid if rid is not None and rid >= 0 else None


def contract_key(frame: Frame) -> tuple[str, ...]:
    """conId, symbol, secType, expiry, strike, right, multiplier, exchange, primary
    exchange, currency, local symbol, trading class, as sent (empty tuple: none)."""
    i = CONTRACT_AT.get(frame.msg_id)
    if i is None:
        return ()
    key = tuple(frame.fields[i : i + 12])
    # ib_async sends conId 0 before a contract is qualified: the symbol decides then.
    return ("", *key[1:]) if key[:1] == ("0",) else key


ORDER_SHAPE = slice(16, 19)
"""placeOrder: action, totalQuantity, orderType."""


def request_key(frame: Frame) -> tuple:
    """What a replayed request must match: the message type and the contract (and for an
    order its action, quantity and type: the entry and the exit are different requests)."""
    if frame.msg_id == 3:
        return (3, contract_key(frame), tuple(frame.fields[ORDER_SHAPE]))
    return (frame.msg_id, contract_key(frame))


def describe(frame: Frame) -> str:
    """A short human description of a client request."""
    name = request_name(frame.msg_id)
    key = contract_key(frame)
    if key:
        sym = key[10] or key[1]
        return f"{name} {sym} {key[2]} {key[7]}".strip()
    return name


@dataclass
class Exchange:
    """One client request of a recorded session and the server messages that answer it."""

    index: int
    request: Frame | None
    """None for what the server sent unprompted at connect (the handshake group)."""
    answers: list[Frame] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The request's description ('connect' for the handshake group)."""
        return "connect" if self.request is None else describe(self.request)


def _oldest_open(open_: list[tuple[Exchange, set[int]]], msg_id: int) -> Exchange | None:
    """The oldest open request that expects ``msg_id``; closes it when that was its end."""
    for i, (ex, missing) in enumerate(open_):
        assert ex.request is not None
        if msg_id in EXPECTS.get(ex.request.msg_id, ()):
            missing.discard(msg_id)
            if not missing:
                del open_[i]
            return ex
    return None


def exchanges(session_frames: list[Frame]) -> list[Exchange]:
    """Split one session into requests and their answers.

    A server message goes to the request whose id it carries (request ids and order ids
    share one sequence); commission reports follow the execution before them; a message
    without an id goes to the oldest still-open request that expects it (``EXPECTS``,
    ``ENDS``: positions, open orders, account values...), else the latest that expects it
    (farm notices: startApi), so an answer overtaken on the wire by the client's next
    request still lands right; anything else goes to the latest request before it.
    """
    out = [Exchange(0, None)]
    by_id: dict[int, Exchange] = {}
    by_answer: dict[int, Exchange] = {}
    open_: list[tuple[Exchange, set[int]]] = []
    exec_owner: Exchange | None = None
    for f in session_frames:
        if f.to_server:
            ex = Exchange(len(out), f)
            out.append(ex)
            rid = request_id(f)
            if rid is not None and f.msg_id not in CANCELS:
                by_id[rid] = ex
            for mid in EXPECTS.get(f.msg_id, ()):
                by_answer[mid] = ex
            if f.msg_id in ENDS:
                open_.append((ex, set(ENDS[f.msg_id])))
            continue
        rid = answer_id(f)
        owner = by_id.get(rid) if rid is not None else None
        if owner is None and f.msg_id == 59 and exec_owner is not None:
            owner = exec_owner
        if owner is None and rid is None:
            owner = _oldest_open(open_, f.msg_id)
        if owner is None:
            owner = by_answer.get(f.msg_id, out[-1])
        if f.msg_id == 11:
            exec_owner = owner
        owner.answers.append(f)
    return out
