"""Contract spec parsing and front-month selection (no IB connection involved)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ib_async import Forex, Future, Stock

from harness_lib.contracts import (
    FUTURES_ROOTS,
    ContractSpec,
    SpecError,
    parse_spec,
    pick_front_month,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AAPL", ContractSpec("STK", "AAPL", "SMART", "USD", None, False)),
        ("aapl", ContractSpec("STK", "AAPL", "SMART", "USD", None, False)),
        ("  msft \n", ContractSpec("STK", "MSFT", "SMART", "USD", None, False)),
        ("A", ContractSpec("STK", "A", "SMART", "USD", None, False)),
        ("GOOGLL", ContractSpec("STK", "GOOGLL", "SMART", "USD", None, False)),
        ("EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD", None, False)),
        ("usd.jpy", ContractSpec("CASH", "USD", "IDEALPRO", "JPY", None, False)),
        ("MES", ContractSpec("FUT", "MES", "CME", "USD", None, True)),
        ("es", ContractSpec("FUT", "ES", "CME", "USD", None, True)),
        ("6E", ContractSpec("FUT", "6E", "CME", "USD", None, True)),
        ("M2K", ContractSpec("FUT", "M2K", "CME", "USD", None, True)),
        ("MYM", ContractSpec("FUT", "MYM", "CBOT", "USD", None, True)),
        ("ZN", ContractSpec("FUT", "ZN", "CBOT", "USD", None, True)),
        ("MCL", ContractSpec("FUT", "MCL", "NYMEX", "USD", None, True)),
        ("GC", ContractSpec("FUT", "GC", "COMEX", "USD", None, True)),
        ("FUT:MES:202612:CME", ContractSpec("FUT", "MES", "CME", "USD", "202612", False)),
        ("fut:mes:20261218:cme", ContractSpec("FUT", "MES", "CME", "USD", "20261218", False)),
        ("FUT:MES:CME", ContractSpec("FUT", "MES", "CME", "USD", None, True)),
        ("FUT:MES", ContractSpec("FUT", "MES", "CME", "USD", None, True)),
        ("FUT:MES:202612", ContractSpec("FUT", "MES", "CME", "USD", "202612", False)),
        ("FUT:FOO:ICEUS", ContractSpec("FUT", "FOO", "ICEUS", "USD", None, True)),
        ("STK:AAPL:SMART:USD", ContractSpec("STK", "AAPL", "SMART", "USD", None, False)),
        ("STK:AAPL", ContractSpec("STK", "AAPL", "SMART", "USD", None, False)),
        ("STK:ES", ContractSpec("STK", "ES", "SMART", "USD", None, False)),
        ("STK:SAP:IBIS:EUR", ContractSpec("STK", "SAP", "IBIS", "EUR", None, False)),
        ("STK:BRK B", ContractSpec("STK", "BRK B", "SMART", "USD", None, False)),
        ("STK : aapl : island", ContractSpec("STK", "AAPL", "ISLAND", "USD", None, False)),
        ("CASH:EUR.USD", ContractSpec("CASH", "EUR", "IDEALPRO", "USD", None, False)),
        ("CASH:GBPUSD", ContractSpec("CASH", "GBP", "IDEALPRO", "USD", None, False)),
    ],
)
def test_parse_valid(text: str, expected: ContractSpec) -> None:
    assert parse_spec(text) == expected


def test_every_known_root_is_a_front_month_future() -> None:
    for root, exchange in FUTURES_ROOTS.items():
        spec = parse_spec(root.lower())
        assert (spec.sec_type, spec.symbol, spec.exchange) == ("FUT", root, exchange)
        assert spec.front_month and spec.expiry is None and spec.currency == "USD"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   \t", "empty"),
        ("BRK.B", "forex pair"),
        ("EUR.XYZ", "ISO currency"),
        ("EUR.EUR", "two different"),
        ("TOOLONGX", "1-6 letter"),
        ("AA PL", "1-6 letter"),
        ("AAPL1", "1-6 letter"),
        ("OPT:AAPL", "unsupported secType 'OPT'"),
        ("FUT:MES:2026:CME", "bad expiry"),
        ("FUT:MES:202613:CME", "bad expiry"),
        ("FUT:MES:20260231:CME", "bad expiry"),
        ("FUT:MES:2026121:CME", "bad expiry"),
        ("FUT:MES:202612:CME:USD", "FUT takes"),
        ("FUT:MES:CME:NYMEX", "FUT takes"),
        ("FUT:FOO", "needs an exchange"),
        ("FUT:FOO:202612", "needs an exchange"),
        ("STK:AAPL:SMART:USD:X", "STK takes"),
        ("STK:AAPL:SMART:XYZ", "ISO currency"),
        ("STK::SMART", "empty part"),
        ("STK:", "empty part"),
        ("CASH:EUR.USD:IDEALPRO:X", "CASH takes"),
        ("CASH:EURO.USD", "bad forex pair"),
        ("STK:AAPL:9SMART", "bad exchange"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    msg = str(info.value)
    assert fragment in msg
    assert repr(text) in msg  # names the spec
    assert "accepted:" in msg and "FUT:ROOT" in msg  # lists the accepted forms
    assert "\n" not in msg


def test_spec_error_is_value_error_and_survives_non_text() -> None:
    with pytest.raises(ValueError):
        parse_spec(None)  # type: ignore[arg-type]


def test_long_spec_is_truncated_in_message() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec("X" * 500)
    assert len(str(info.value)) < 400


def test_to_contract() -> None:
    stk = parse_spec("AAPL").to_contract()
    assert isinstance(stk, Stock)
    assert (stk.symbol, stk.exchange, stk.currency, stk.secType) == ("AAPL", "SMART", "USD", "STK")

    fx = parse_spec("EUR.USD").to_contract()
    assert isinstance(fx, Forex)
    assert (fx.symbol, fx.currency, fx.exchange, fx.secType) == ("EUR", "USD", "IDEALPRO", "CASH")

    fut = parse_spec("FUT:MES:202612:CME").to_contract()
    assert isinstance(fut, Future)
    assert (fut.symbol, fut.lastTradeDateOrContractMonth, fut.exchange, fut.currency) == (
        "MES",
        "202612",
        "CME",
        "USD",
    )
    front = parse_spec("MES").to_contract()
    assert front.lastTradeDateOrContractMonth == "" and front.conId == 0


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_raises_spec_error(text: str) -> None:
    try:
        spec = parse_spec(text)
    except SpecError as err:
        assert "\n" not in str(err)
        return
    assert spec.sec_type in ("STK", "CASH", "FUT")
    assert spec.symbol and spec.exchange and len(spec.currency) == 3
    assert spec.symbol == spec.symbol.upper()
    assert spec.front_month == (spec.sec_type == "FUT" and spec.expiry is None)
    assert parse_spec(spec.canonical) == spec


_SPEC_ALPHABET = st.sampled_from([*"ABCDEFGMNOSTUXZ0123456789:. ", "FUT:", "STK:", "CASH:"])


@given(st.lists(_SPEC_ALPHABET, max_size=12).map("".join))
def test_spec_like_text_parses_or_raises_spec_error(text: str) -> None:
    # Denser in ':' and digits than plain text, so the explicit forms get exercised.
    try:
        spec = parse_spec(text)
    except SpecError:
        return
    assert parse_spec(str(spec)) == spec
    if spec.expiry is not None:
        assert len(spec.expiry) in (6, 8) and spec.expiry.isdigit()


# --- pick_front_month --------------------------------------------------------------


def test_pick_front_month_nearest_not_before_today() -> None:
    expiries = ["20261218", "20260918", "20260619", "20260320"]
    assert pick_front_month(expiries, date(2026, 5, 1)) == "20260619"
    assert pick_front_month(expiries, date(2026, 6, 19)) == "20260619"  # expiry day counts
    assert pick_front_month(expiries, date(2026, 6, 20)) == "20260918"
    assert pick_front_month(expiries, date(2027, 1, 1)) is None
    assert pick_front_month([], date(2026, 1, 1)) is None


def test_pick_front_month_months_and_noise() -> None:
    today = date(2026, 6, 20)
    # A bare month counts until its last day.
    assert pick_front_month(["202606", "202609"], today) == "202606"
    assert pick_front_month(["202605", "202609"], today) == "202609"
    # Unparseable entries are skipped; trailing time/zone is ignored; input form is returned.
    assert pick_front_month(["junk", "", "20260918 08:30 US/Central"], today) == (
        "20260918 08:30 US/Central"
    )
    assert pick_front_month(["2026091", "20261318"], today) is None


@given(
    st.lists(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), max_size=10),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_pick_front_month_property(days: list[date], today: date) -> None:
    expiries = [d.strftime("%Y%m%d") for d in days]
    picked = pick_front_month(expiries, today)
    eligible = [d for d in days if d >= today]
    if not eligible:
        assert picked is None
    else:
        assert picked == min(eligible).strftime("%Y%m%d")


def test_pick_front_month_is_not_fooled_by_string_order() -> None:
    today = date(2026, 1, 1)
    soon = today + timedelta(days=3)
    assert pick_front_month(["20270101", soon.strftime("%Y%m%d")], today) == "20260104"
