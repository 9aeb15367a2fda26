"""Declared client-to-server request layouts, and the table of every request id.

Each request the simulator serves has a decoder that reads its fields in wire order with a
``FieldReader`` and returns a ``Request`` (a dict of named values), branching on the
negotiated server version where the official client's layout changes. The handlers in
``handlers.py`` then work with names, never with field indexes.

``REQUEST_IDS`` lists every message id IB's official client (``ibapi``) and ib_async can
send, with its name; ``UNSERVED`` maps the ones the simulator does not serve to the error
a gateway sends for them, so no request is ever left unanswered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .wire import UNSET_DOUBLE, UNSET_INTEGER

Request = dict[str, Any]


class FieldReader:
    """Reads a request's fields in order; accepts both spellings of unset values (ib_async
    sends an empty field, IB's official client ``2147483647`` / ``1.797...E308``)."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields
        self.i = 1  # field 0 is the message id

    def _next(self) -> str:
        if self.i >= len(self.fields):
            raise IndexError(f"request {self.fields[0]} has only {len(self.fields)} fields")
        text = self.fields[self.i]
        self.i += 1
        return text

    def str(self) -> str:
        """The next field as text."""
        return self._next()

    def optional_str(self, default: str = "") -> str:
        """The next field if the client sent it (trailing optional fields)."""
        return self._next() if self.i < len(self.fields) else default

    def int(self, default: int = 0) -> int:
        """The next field as an int; empty or unset gives ``default``."""
        text = self._next()
        if text == "":
            return default
        value = int(float(text)) if "." in text else int(text)
        return default if value == UNSET_INTEGER else value

    def float(self) -> float | None:
        """The next field as a float; empty or unset gives None."""
        text = self._next()
        if text == "":
            return None
        value = float(text)
        return None if value >= UNSET_DOUBLE else value

    def bool(self) -> bool:
        """The next field as a flag ('1'/'0', 'True'/'False')."""
        text = self._next()
        return text not in ("", "0", "False", "false")

    def skip(self, n: int = 1) -> None:
        """Skip fields the simulator does not use."""
        for _ in range(n):
            self._next()

    def contract(self, *, primary_exchange: bool = True) -> dict[str, Any]:
        """The contract block: conId, symbol, secType, lastTradeDateOrContractMonth, strike,
        right, multiplier, exchange, [primaryExchange], currency, localSymbol, tradingClass."""
        c = {
            "con_id": self.int(),
            "symbol": self.str(),
            "sec_type": self.str(),
            "expiry": self.str(),
        }
        self.skip(3)  # strike, right, multiplier
        c["exchange"] = self.str()
        c["primary_exchange"] = self.str() if primary_exchange else ""
        c["currency"] = self.str()
        c["local_symbol"] = self.str()
        c["trading_class"] = self.str()
        return c


def match_args(c: dict[str, Any]) -> dict[str, Any]:
    """The contract fields ``Catalogue.match`` resolves by."""
    keys = ("con_id", "symbol", "sec_type", "expiry", "exchange", "currency", "local_symbol")
    return {k: c[k] for k in keys}


# --- decoders, one per served request ---------------------------------------------------------


def _start_api(r: FieldReader, sv: int) -> Request:
    r.skip()  # version
    return {"client_id": r.int(), "capabilities": r.optional_str()}


def _versioned_req_id(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"req_id": r.int()}


def _plain_req_id(r: FieldReader, sv: int) -> Request:
    return {"req_id": r.int()}


def _version_only(r: FieldReader, sv: int) -> Request:
    if r.i < len(r.fields):
        r.skip()
    return {}


def _nothing(r: FieldReader, sv: int) -> Request:
    return {}


def _mkt_data(r: FieldReader, sv: int) -> Request:
    r.skip()  # version 11
    req: Request = {"req_id": r.int(), "contract": r.contract()}
    if req["contract"]["sec_type"] == "BAG":
        legs = r.int()
        r.skip(4 * legs)
    if r.bool():  # delta-neutral contract
        r.skip(3)
    req["generic_ticks"] = [g for g in r.str().split(",") if g.strip()]
    req["snapshot"] = r.bool()
    req["regulatory_snapshot"] = r.bool() if sv >= 114 and r.i < len(r.fields) else False
    return req


def _req_account_updates(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"subscribe": r.bool(), "account": r.optional_str()}


def _req_executions(r: FieldReader, sv: int) -> Request:
    r.skip()
    req: Request = {"req_id": r.int(), "client_id": r.int(), "account": r.str()}
    r.skip()  # time
    req["symbol"] = r.optional_str()
    return req


def _contract_request(r: FieldReader, sv: int) -> Request:
    r.skip()  # version 8
    req: Request = {"req_id": r.int(), "contract": r.contract()}
    return req


def _place_order(r: FieldReader, sv: int) -> Request:
    """placeOrder (3): read up to whatIf, stepping over the variable-length blocks."""
    if sv < 145:
        r.skip()  # version 45
    req: Request = {"order_id": r.int(), "contract": r.contract()}
    r.skip(2)  # secIdType, secId
    req["action"] = r.str().upper()
    qty = r.float()
    req["quantity"] = qty if qty is not None else 0.0
    req["order_type"] = r.str().upper()
    req["lmt_price"] = r.float()
    req["aux_price"] = r.float()
    req["tif"] = r.str() or "DAY"
    r.skip()  # ocaGroup
    req["account"] = r.str()
    r.skip(2)  # openClose, origin
    req["order_ref"] = r.str()
    req["transmit"] = r.bool()
    r.skip(7)  # parentId .. hidden
    if req["contract"]["sec_type"] == "BAG":
        r.skip(8 * r.int())
        r.skip(r.int())
        r.skip(2 * r.int())
    r.skip(7)  # sharesAllocation .. faPercentage
    if sv < 177:
        r.skip()  # faProfile
    r.skip(22)  # modelCode .. volatilityType
    dn_type = r.str()
    r.skip()  # deltaNeutralAuxPrice
    if dn_type:
        r.skip(8)
    r.skip(6)  # continuousUpdate .. scaleSubsLevelSize
    scale_inc = r.float()
    if scale_inc is not None and scale_inc > 0:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.str():  # hedgeType
        r.skip()
    r.skip(4)  # optOutSmartRouting .. notHeld
    if r.bool():  # delta-neutral contract
        r.skip(3)
    if r.str():  # algoStrategy
        r.skip(2 * r.int())
    r.skip()  # algoId
    req["what_if"] = r.bool()
    return req


def _cancel_order(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"order_id": r.int()}


def _market_data_type(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"type": r.int(1)}


def _account_summary(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"req_id": r.int(), "group": r.str(), "tags": r.str()}


def _account_updates_multi(r: FieldReader, sv: int) -> Request:
    r.skip()
    return {"req_id": r.int(), "account": r.str(), "model_code": r.str()}


def _historical_data(r: FieldReader, sv: int) -> Request:
    if sv < 124:
        r.skip()  # version 6
    req: Request = {"req_id": r.int(), "contract": r.contract()}
    r.skip()  # includeExpired
    req["end"] = r.str()
    req["bar_size"] = r.str()
    req["duration"] = r.str()
    req["use_rth"] = r.bool()
    req["what_to_show"] = r.str().upper()
    req["format_date"] = r.int(1)
    if req["contract"]["sec_type"] == "BAG":
        r.skip(4 * r.int())
    req["keep_up_to_date"] = r.bool() if sv >= 124 else False
    return req


def _head_timestamp(r: FieldReader, sv: int) -> Request:
    req: Request = {"req_id": r.int(), "contract": r.contract()}
    r.skip()  # includeExpired
    req["use_rth"] = r.bool()
    req["what_to_show"] = r.str().upper()
    req["format_date"] = r.int(1)
    return req


def _pnl(r: FieldReader, sv: int) -> Request:
    return {"req_id": r.int(), "account": r.str(), "model_code": r.str()}


def _pnl_single(r: FieldReader, sv: int) -> Request:
    return {"req_id": r.int(), "account": r.str(), "model_code": r.str(), "con_id": r.int()}


def _tick_by_tick(r: FieldReader, sv: int) -> Request:
    req: Request = {"req_id": r.int(), "contract": r.contract(), "tick_type": r.str()}
    if sv >= 140:
        req["number_of_ticks"] = r.int()
        req["ignore_size"] = r.bool()
    return req


def _mkt_depth(r: FieldReader, sv: int) -> Request:
    r.skip()  # version 5
    req: Request = {"req_id": r.int(), "contract": r.contract(primary_exchange=sv >= 149)}
    req["num_rows"] = r.int(5)
    req["smart"] = r.bool() if sv >= 146 and r.i < len(r.fields) else False
    return req


def _matching_symbols(r: FieldReader, sv: int) -> Request:
    return {"req_id": r.int(), "pattern": r.str()}


def _market_rule(r: FieldReader, sv: int) -> Request:
    return {"rule_id": r.int()}


@dataclass(frozen=True, slots=True)
class RequestLayout:
    """One incoming message id: its name and the decoder of its fields."""

    name: str
    decode: Callable[[FieldReader, int], Request]


LAYOUTS: dict[int, RequestLayout] = {
    1: RequestLayout("reqMktData", _mkt_data),
    2: RequestLayout("cancelMktData", _versioned_req_id),
    3: RequestLayout("placeOrder", _place_order),
    4: RequestLayout("cancelOrder", _cancel_order),
    5: RequestLayout("reqOpenOrders", _version_only),
    6: RequestLayout("reqAccountUpdates", _req_account_updates),
    7: RequestLayout("reqExecutions", _req_executions),
    8: RequestLayout("reqIds", _version_only),
    9: RequestLayout("reqContractDetails", _contract_request),
    10: RequestLayout("reqMktDepth", _mkt_depth),
    11: RequestLayout("cancelMktDepth", _versioned_req_id),
    14: RequestLayout("setServerLogLevel", _version_only),
    15: RequestLayout("reqAutoOpenOrders", _version_only),
    16: RequestLayout("reqAllOpenOrders", _version_only),
    17: RequestLayout("reqManagedAccts", _version_only),
    20: RequestLayout("reqHistoricalData", _historical_data),
    25: RequestLayout("cancelHistoricalData", _versioned_req_id),
    49: RequestLayout("reqCurrentTime", _version_only),
    58: RequestLayout("reqGlobalCancel", _version_only),
    59: RequestLayout("reqMarketDataType", _market_data_type),
    61: RequestLayout("reqPositions", _version_only),
    62: RequestLayout("reqAccountSummary", _account_summary),
    63: RequestLayout("cancelAccountSummary", _versioned_req_id),
    64: RequestLayout("cancelPositions", _version_only),
    71: RequestLayout("startApi", _start_api),
    76: RequestLayout("reqAccountUpdatesMulti", _account_updates_multi),
    77: RequestLayout("cancelAccountUpdatesMulti", _versioned_req_id),
    79: RequestLayout("reqSoftDollarTiers", _plain_req_id),
    80: RequestLayout("reqFamilyCodes", _nothing),
    81: RequestLayout("reqMatchingSymbols", _matching_symbols),
    82: RequestLayout("reqMktDepthExchanges", _nothing),
    85: RequestLayout("reqNewsProviders", _nothing),
    87: RequestLayout("reqHeadTimeStamp", _head_timestamp),
    90: RequestLayout("cancelHeadTimeStamp", _plain_req_id),
    91: RequestLayout("reqMarketRule", _market_rule),
    92: RequestLayout("reqPnL", _pnl),
    93: RequestLayout("cancelPnL", _plain_req_id),
    94: RequestLayout("reqPnLSingle", _pnl_single),
    95: RequestLayout("cancelPnLSingle", _plain_req_id),
    97: RequestLayout("reqTickByTickData", _tick_by_tick),
    98: RequestLayout("cancelTickByTickData", _plain_req_id),
    99: RequestLayout("reqCompletedOrders", _nothing),
    104: RequestLayout("reqUserInfo", _plain_req_id),
}
"""Every request the simulator serves, by message id."""


@dataclass(frozen=True, slots=True)
class Unserved:
    """A request the simulator does not serve and the error it answers with.

    ``req_id_at`` is the index of the request's own id among its fields (None when the
    request carries none, then the error goes out with reqId -1); ``code`` is the error a
    gateway sends when it cannot serve such a request for this account.
    """

    name: str
    req_id_at: int | None
    code: int
    text: str


_NOT_HERE = "not available from the livefire simulator"

UNSERVED: dict[int, Unserved] = {
    12: Unserved("reqNewsBulletins", None, 10276, f"News feed is not allowed ({_NOT_HERE})"),
    13: Unserved("cancelNewsBulletins", None, 10276, f"News feed is not allowed ({_NOT_HERE})"),
    18: Unserved("requestFA", None, 321, "Error validating request.-'bB' : cause - "
                 "FA data operations ignored for non FA customers."),
    19: Unserved("replaceFA", None, 321, "Error validating request.-'bB' : cause - "
                 "FA data operations ignored for non FA customers."),
    21: Unserved("exerciseOptions", 2, 200, "No security definition has been found for the "
                 "request (the simulator lists no options)"),
    22: Unserved("reqScannerSubscription", 1, 162, "Historical Market Data Service error "
                 f"message:scanner subscriptions are {_NOT_HERE}"),
    23: Unserved("cancelScannerSubscription", 2, 162, "Historical Market Data Service error "
                 f"message:scanner subscriptions are {_NOT_HERE}"),
    24: Unserved("reqScannerParameters", None, 162, "Historical Market Data Service error "
                 f"message:scanner parameters are {_NOT_HERE}"),
    50: Unserved("reqRealTimeBars", 2, 420, f"Invalid Real-time Query: real-time bars are "
                 f"{_NOT_HERE}"),
    51: Unserved("cancelRealTimeBars", 2, 420, "Invalid Real-time Query: no real-time bars "
                 "subscription"),
    52: Unserved("reqFundamentalData", 2, 430, "The fundamentals data for the security "
                 "specified is not available."),
    53: Unserved("cancelFundamentalData", 2, 430, "The fundamentals data for the security "
                 "specified is not available."),
    54: Unserved("calculateImpliedVolatility", 2, 200, "No security definition has been found "
                 "for the request (the simulator lists no options)"),
    55: Unserved("calculateOptionPrice", 2, 200, "No security definition has been found for "
                 "the request (the simulator lists no options)"),
    56: Unserved("cancelCalculateImpliedVolatility", 2, 200, "No security definition has been "
                 "found for the request (the simulator lists no options)"),
    57: Unserved("cancelCalculateOptionPrice", 2, 200, "No security definition has been found "
                 "for the request (the simulator lists no options)"),
    65: Unserved("verifyRequest", None, 321, "Error validating request.-'ve' : cause - "
                 f"API verification is {_NOT_HERE}"),
    66: Unserved("verifyMessage", None, 321, "Error validating request.-'ve' : cause - "
                 f"API verification is {_NOT_HERE}"),
    67: Unserved("queryDisplayGroups", 2, 321, "Error validating request.-'dg' : cause - "
                 f"display groups are {_NOT_HERE}"),
    68: Unserved("subscribeToGroupEvents", 2, 321, "Error validating request.-'dg' : cause - "
                 f"display groups are {_NOT_HERE}"),
    69: Unserved("updateDisplayGroup", 2, 321, "Error validating request.-'dg' : cause - "
                 f"display groups are {_NOT_HERE}"),
    70: Unserved("unsubscribeFromGroupEvents", 2, 321, "Error validating request.-'dg' : "
                 f"cause - display groups are {_NOT_HERE}"),
    72: Unserved("verifyAndAuthRequest", None, 321, "Error validating request.-'ve' : cause - "
                 f"API verification is {_NOT_HERE}"),
    73: Unserved("verifyAndAuthMessage", None, 321, "Error validating request.-'ve' : cause - "
                 f"API verification is {_NOT_HERE}"),
    74: Unserved("reqPositionsMulti", 2, 321, "Error validating request.-'pm' : cause - "
                 "positions by model are for FA accounts only"),
    75: Unserved("cancelPositionsMulti", 2, 321, "Error validating request.-'pm' : cause - "
                 "positions by model are for FA accounts only"),
    78: Unserved("reqSecDefOptParams", 1, 200, "No security definition has been found for the "
                 "request (the simulator lists no options)"),
    83: Unserved("reqSmartComponents", 1, 321, "Error validating request.-'sc' : cause - "
                 f"SMART components are {_NOT_HERE}"),
    84: Unserved("reqNewsArticle", 1, 10276, f"News feed is not allowed ({_NOT_HERE})"),
    86: Unserved("reqHistoricalNews", 1, 10276, f"News feed is not allowed ({_NOT_HERE})"),
    88: Unserved("reqHistogramData", 1, 162, "Historical Market Data Service error message:"
                 f"histogram data is {_NOT_HERE}"),
    89: Unserved("cancelHistogramData", 1, 162, "Historical Market Data Service error message:"
                 f"histogram data is {_NOT_HERE}"),
    96: Unserved("reqHistoricalTicks", 1, 10187, "Failed to request historical ticks:"
                 f"historical ticks are {_NOT_HERE}"),
    100: Unserved("reqWshMetaData", 1, 10276, f"News feed is not allowed (Wall Street Horizon "
                  f"data is {_NOT_HERE})"),
    101: Unserved("cancelWshMetaData", 1, 10276, "News feed is not allowed (Wall Street "
                  f"Horizon data is {_NOT_HERE})"),
    102: Unserved("reqWshEventData", 1, 10276, "News feed is not allowed (Wall Street Horizon "
                  f"data is {_NOT_HERE})"),
    103: Unserved("cancelWshEventData", 1, 10276, "News feed is not allowed (Wall Street "
                  f"Horizon data is {_NOT_HERE})"),
}  # fmt: skip
"""Requests the simulator does not serve, each answered at once with this error."""

REQUEST_IDS: dict[int, str] = dict(
    sorted({**{k: v.name for k, v in LAYOUTS.items()}, **{k: v.name for k, v in UNSERVED.items()}}
           .items())
)  # fmt: skip
"""Every request id IB's official client and ib_async can send (at server versions up to
178), with its name: served ones from ``LAYOUTS``, the rest from ``UNSERVED``."""

SILENT_OK = frozenset({2, 11, 14, 15, 25, 58, 59, 63, 64, 77, 90, 93, 95, 98})
"""Requests to which a real gateway sends nothing when they succeed: cancels of live
subscriptions, setServerLogLevel, reqMarketDataType, reqAutoOpenOrders and reqGlobalCancel
(which answers only with the cancels it causes). A cancel of an unknown id is answered with
an error where IB documents one."""


def unserved_req_id(fields: list[str], spec: Unserved) -> int:
    """The reqId to answer an unserved request with (-1 when it carries none)."""
    if spec.req_id_at is None or spec.req_id_at >= len(fields):
        return -1
    try:
        return int(fields[spec.req_id_at])
    except ValueError:
        return -1
