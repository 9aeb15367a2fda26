"""Parse the contract a run should use from a short text spec.

Parsing is pure; :func:`resolve_contract` then qualifies a spec on the gateway
(picking the front month of a future from its contract details), so the conId is
known before anything subscribes.

Accepted forms (case-insensitive, normalised to upper case)::

    AAPL                      stock, SMART, USD (any plain 1-6 letter symbol)
    EUR.USD                   forex pair of two ISO currencies, IDEALPRO
    MES                       a known futures root: front month on its home exchange
    STK:AAPL[:SMART[:USD]]    explicit stock
    CASH:EUR.USD[:IDEALPRO]   explicit forex (CASH:EURUSD also accepted)
    FUT:MES                   front month, known root only (exchange from the table)
    FUT:MES:CME               front month on an explicit exchange
    FUT:MES:202612[:CME]      one expiry, YYYYMM or YYYYMMDD

A plain symbol that is also a futures root (ES, CL, GC, ...) means the future;
use ``STK:ES`` for the stock.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import date

from ib_async import IB, Contract

__all__ = [
    "ACCEPTED_FORMS",
    "CURRENCIES",
    "FUTURES_ROOTS",
    "ContractError",
    "ContractSpec",
    "SpecError",
    "parse_spec",
    "pick_front_month",
    "resolve_contract",
]

ACCEPTED_FORMS = (
    "AAPL, EUR.USD, MES (known futures root), STK:SYMBOL[:EXCHANGE[:CURRENCY]], "
    "CASH:BASE.QUOTE[:EXCHANGE], FUT:ROOT[:YYYYMM[DD]][:EXCHANGE]"
)
"""The accepted forms, in the words every :class:`SpecError` uses."""

FUTURES_ROOTS: dict[str, str] = {
    "MES": "CME",
    "ES": "CME",
    "MNQ": "CME",
    "NQ": "CME",
    "M2K": "CME",
    "RTY": "CME",
    "6E": "CME",
    "MYM": "CBOT",
    "YM": "CBOT",
    "ZN": "CBOT",
    "ZB": "CBOT",
    "MCL": "NYMEX",
    "CL": "NYMEX",
    "MGC": "COMEX",
    "GC": "COMEX",
}
"""Futures roots a bare symbol resolves to, with their home exchange (all USD)."""

# Active ISO 4217 codes (plus the precious-metal codes IB quotes on IDEALPRO).
# Only used to tell ``EUR.USD`` (forex) from a typo; IB decides what it trades.
CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL
    BSD BTN BWP BYN BZD CAD CDF CHF CLP CNH CNY COP CRC CUP CVE CZK DJF DKK DOP DZD
    EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD
    LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK
    NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
    UGX USD UYU UZS VES VND VUV WST XAF XAG XAU XCD XOF XPF YER ZAR ZMW ZWL
    """.split()  # noqa: SIM905 - a table of codes reads better than a list literal
)
"""Three-letter currency codes accepted in forex pairs and explicit currencies."""

_SEC_TYPES = ("STK", "CASH", "FUT")
_PLAIN_STOCK = re.compile(r"[A-Z]{1,6}")
# Explicit stock symbols may carry digits (e.g. 7203 on TSEJ) and one space or
# dot class separator (IB spells Berkshire B as "BRK B").
_EXPLICIT_STOCK = re.compile(r"(?=.{1,12}$)[A-Z0-9]+(?:[ .][A-Z0-9]+)?")
_FX_PAIR = re.compile(r"([A-Z]{3})\.?([A-Z]{3})")
_FUT_ROOT = re.compile(r"[A-Z0-9]{1,6}")
_EXCHANGE = re.compile(r"[A-Z][A-Z0-9_.]{0,15}")
_EXPIRY = re.compile(r"[0-9]{6}|[0-9]{8}")
_DIGITS = frozenset("0123456789")
_LEADING_EXPIRY = re.compile(r"\s*([0-9]{8}|[0-9]{6})(?![0-9])")


class SpecError(ValueError):
    """A contract spec that cannot be parsed. ``str()`` is one line."""

    def __init__(self, spec: object, why: str) -> None:
        self.spec = spec
        self.why = why
        shown = repr(spec)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        super().__init__(f"bad contract spec {shown}: {why} (accepted: {ACCEPTED_FORMS})")


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A parsed, normalised contract spec (not yet qualified with IB)."""

    sec_type: str
    """``STK``, ``CASH`` or ``FUT``."""
    symbol: str
    """Stock symbol, forex base currency, or futures root."""
    exchange: str
    currency: str
    expiry: str | None = None
    """``YYYYMM`` or ``YYYYMMDD`` for futures with an explicit expiry, else None."""
    front_month: bool = False
    """True for a future without an expiry: the nearest one is resolved later."""

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        """The fully explicit spec, e.g. ``FUT:MES:CME`` or ``STK:AAPL:SMART:USD``.

        ``parse_spec(spec.canonical) == spec`` always holds.
        """
        if self.sec_type == "CASH":
            return f"CASH:{self.symbol}.{self.currency}:{self.exchange}"
        if self.sec_type == "FUT":
            middle = f":{self.expiry}" if self.expiry else ""
            return f"FUT:{self.symbol}{middle}:{self.exchange}"
        return f"STK:{self.symbol}:{self.exchange}:{self.currency}"

    def to_contract(self) -> Contract:
        """An unqualified ib_async contract (``Stock``, ``Forex`` or ``Future``).

        A front-month future has an empty ``lastTradeDateOrContractMonth``; the caller
        asks IB for contract details and picks one with :func:`pick_front_month`.
        """
        # Imported here so parsing specs (e.g. while loading config) stays cheap.
        from ib_async import Forex, Future, Stock

        if self.sec_type == "CASH":
            return Forex(pair=self.symbol + self.currency, exchange=self.exchange)
        if self.sec_type == "FUT":
            return Future(
                symbol=self.symbol,
                lastTradeDateOrContractMonth=self.expiry or "",
                exchange=self.exchange,
                currency=self.currency,
            )
        return Stock(self.symbol, self.exchange, self.currency)


def parse_spec(text: str) -> ContractSpec:
    """Parse a contract spec such as ``AAPL``, ``EUR.USD``, ``MES`` or ``FUT:MES:202612:CME``.

    Raises :class:`SpecError` (a ``ValueError``) with a one-line message naming the
    spec and the accepted forms; never any other exception.
    """
    if not isinstance(text, str):
        raise SpecError(text, f"expected text, got {type(text).__name__}")
    spec = text.strip().upper()
    if not spec:
        raise SpecError(text, "empty spec")
    if ":" not in spec:
        return _parse_bare(text, spec)
    parts = [p.strip() for p in spec.split(":")]
    if any(not p for p in parts):
        raise SpecError(text, "empty part between ':'")
    sec_type, rest = parts[0], parts[1:]
    if sec_type == "STK":
        return _parse_stk(text, rest)
    if sec_type == "CASH":
        return _parse_cash(text, rest)
    if sec_type == "FUT":
        return _parse_fut(text, rest)
    raise SpecError(text, f"unsupported secType {sec_type!r} (use one of {', '.join(_SEC_TYPES)})")


def _parse_bare(text: str, spec: str) -> ContractSpec:
    """A spec without a secType prefix: futures root, forex pair or stock symbol."""
    if spec in FUTURES_ROOTS:
        return ContractSpec("FUT", spec, FUTURES_ROOTS[spec], "USD", None, True)
    if "." in spec:
        # Only BASE.QUOTE currency pairs may contain a dot; share classes like
        # BRK.B are deliberately not guessed at (IB spells them "BRK B").
        m = _FX_PAIR.fullmatch(spec)
        if m is None:
            raise SpecError(text, "a dotted spec must be a forex pair like EUR.USD")
        return _fx(text, m.group(1), m.group(2), "IDEALPRO")
    if _PLAIN_STOCK.fullmatch(spec):
        return ContractSpec("STK", spec, "SMART", "USD", None, False)
    raise SpecError(text, "not a 1-6 letter symbol, forex pair or known futures root")


def _parse_stk(text: str, rest: list[str]) -> ContractSpec:
    if not 1 <= len(rest) <= 3:
        raise SpecError(text, "STK takes SYMBOL[:EXCHANGE[:CURRENCY]]")
    symbol = rest[0]
    if not _EXPLICIT_STOCK.fullmatch(symbol):
        raise SpecError(text, f"bad stock symbol {symbol!r}")
    exchange = _exchange(text, rest[1]) if len(rest) > 1 else "SMART"
    currency = _currency(text, rest[2]) if len(rest) > 2 else "USD"
    return ContractSpec("STK", symbol, exchange, currency, None, False)


def _parse_cash(text: str, rest: list[str]) -> ContractSpec:
    if not 1 <= len(rest) <= 2:
        raise SpecError(text, "CASH takes BASE.QUOTE[:EXCHANGE]")
    m = _FX_PAIR.fullmatch(rest[0])
    if m is None:
        raise SpecError(text, f"bad forex pair {rest[0]!r} (expected e.g. EUR.USD)")
    exchange = _exchange(text, rest[1]) if len(rest) > 1 else "IDEALPRO"
    return _fx(text, m.group(1), m.group(2), exchange)


def _parse_fut(text: str, rest: list[str]) -> ContractSpec:
    if not 1 <= len(rest) <= 3:
        raise SpecError(text, "FUT takes ROOT[:YYYYMM[DD]][:EXCHANGE]")
    root, *tail = rest
    if not _FUT_ROOT.fullmatch(root):
        raise SpecError(text, f"bad futures root {root!r}")
    expiry: str | None = None
    # The part after the root is an expiry when it starts with a digit (exchanges
    # never do), so FUT:MES:202612 and FUT:MES:CME are both unambiguous.
    if tail and tail[0][:1] in _DIGITS:
        expiry = _expiry(text, tail.pop(0))
    if len(tail) > 1:
        raise SpecError(text, "FUT takes ROOT[:YYYYMM[DD]][:EXCHANGE]")
    if tail:
        exchange = _exchange(text, tail[0])
    elif root in FUTURES_ROOTS:
        exchange = FUTURES_ROOTS[root]
    else:
        known = ", ".join(FUTURES_ROOTS)
        raise SpecError(text, f"unknown futures root {root!r} needs an exchange (known: {known})")
    return ContractSpec("FUT", root, exchange, "USD", expiry, expiry is None)


def _fx(text: str, base: str, quote: str, exchange: str) -> ContractSpec:
    for code in (base, quote):
        if code not in CURRENCIES:
            raise SpecError(text, f"{code!r} is not an ISO currency code")
    if base == quote:
        raise SpecError(text, "a forex pair needs two different currencies")
    return ContractSpec("CASH", base, exchange, quote, None, False)


def _exchange(text: str, exchange: str) -> str:
    if not _EXCHANGE.fullmatch(exchange):
        raise SpecError(text, f"bad exchange {exchange!r}")
    return exchange


def _currency(text: str, currency: str) -> str:
    if currency not in CURRENCIES:
        raise SpecError(text, f"{currency!r} is not an ISO currency code")
    return currency


def _expiry(text: str, expiry: str) -> str:
    if not _EXPIRY.fullmatch(expiry) or _expiry_date(expiry) is None:
        raise SpecError(text, f"bad expiry {expiry!r} (expected YYYYMM or YYYYMMDD)")
    return expiry


def _expiry_date(expiry: str, *, month_end: bool = False) -> date | None:
    """The date an ``YYYYMM``/``YYYYMMDD`` string denotes, or None if it is not one.

    A bare month is its first day, or its last day with ``month_end``.
    """
    try:
        year, month = int(expiry[:4]), int(expiry[4:6])
        if year < 1970:
            return None
        if len(expiry) == 8:
            return date(year, month, int(expiry[6:8]))
        if len(expiry) != 6:
            return None
        if not month_end:
            return date(year, month, 1)
        first_of_next = date(year + month // 12, month % 12 + 1, 1)
        return date.fromordinal(first_of_next.toordinal() - 1)
    except ValueError:
        return None


def pick_front_month(details_expiries: list[str], today: date) -> str | None:
    """The nearest expiry that is not before ``today``, as it was given, or None.

    Entries are ``YYYYMMDD`` or ``YYYYMM`` strings as IB reports them in
    ``lastTradeDateOrContractMonth`` (anything after the leading digits, such as a
    time and zone, is ignored). A bare month counts as not before today while its
    month has not ended; it sorts as its last day. Unparseable entries are skipped,
    ties keep the first one given. Note an expiry *on* today is still returned: the
    caller decides whether a contract in its last trading day is acceptable.
    """
    best: tuple[date, str] | None = None
    for raw in details_expiries:
        if not isinstance(raw, str):
            continue
        m = _LEADING_EXPIRY.match(raw)
        if m is None:
            continue
        when = _expiry_date(m.group(1), month_end=True)
        if when is None or when < today:
            continue
        if best is None or when < best[0]:
            best = (when, raw)
    return None if best is None else best[1]


class ContractError(Exception):
    """IB could not resolve a spec to exactly one contract; carries IB's error code."""

    def __init__(self, spec: ContractSpec, code: int | None, message: str) -> None:
        self.spec = spec
        self.code = code
        prefix = f"IB {code}: " if code is not None else ""
        super().__init__(f"contract {spec.canonical}: {prefix}{message}")


async def resolve_contract(
    ib: IB, spec: ContractSpec, *, today: date | None = None, timeout: float = 10.0
) -> Contract:
    """Qualify a spec on the gateway so its conId is known (an unqualified contract never ticks).

    A front-month future is resolved through contract details to the nearest unexpired
    expiry. Unknown and ambiguous specs raise ContractError with IB's error code (200).
    """
    errors: list[tuple[int, str]] = []

    def on_error(req_id: int, code: int, text: str, contract: object) -> None:
        if code == 200:
            errors.append((code, text))

    ib.errorEvent += on_error
    try:
        contract = spec.to_contract()
        if spec.sec_type == "FUT" and spec.front_month:
            details = await asyncio.wait_for(ib.reqContractDetailsAsync(contract), timeout)
            if not details:
                code, text = errors[-1] if errors else (None, "no contract details returned")
                raise ContractError(spec, code, text)
            expiries = [d.contract.lastTradeDateOrContractMonth for d in details]
            front = pick_front_month(expiries, today or date.today())
            if front is None:
                raise ContractError(spec, None, f"no unexpired expiry among {sorted(expiries)}")
            chosen = next(d.contract for d in details if d.contract.lastTradeDateOrContractMonth
                          == front)  # fmt: skip
            return chosen
        result = await asyncio.wait_for(ib.qualifyContractsAsync(contract), timeout)
        if not result or result[0] is None or not contract.conId:
            if errors:
                code, text = errors[-1]
                raise ContractError(spec, code, text)
            raise ContractError(
                spec, 200, "The contract description is ambiguous: add an expiry or exchange"
            )
        return contract
    finally:
        ib.errorEvent -= on_error
