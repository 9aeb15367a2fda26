"""The money-safety guards refuse what they should and pass what they should."""

from __future__ import annotations

import inspect
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness_lib.safety import (
    GUARDS,
    LIVE_PORTS,
    PAPER_PORTS,
    PAPER_PREFIXES,
    GuardRefusal,
    check_accounts,
    check_order,
    check_port,
    is_paper_account,
    mask_account,
)

# --- accounts ----------------------------------------------------------------------


@pytest.mark.parametrize("acct", ["DU1234567", "DF7654321", " DU1 ", "DU0"])
def test_paper_accounts(acct: str) -> None:
    assert is_paper_account(acct)


@pytest.mark.parametrize(
    "acct",
    ["U1234567", "F1234567", "", "   ", "DU", "du1234567", "DUX123", "DU123A", "XDU123", "D U1"],
)
def test_non_paper_accounts(acct: str) -> None:
    assert not is_paper_account(acct)


def test_is_paper_account_rejects_non_text() -> None:
    assert not is_paper_account(None)  # type: ignore[arg-type]
    assert PAPER_PREFIXES == ("DU", "DF")


@pytest.mark.parametrize(
    ("acct", "masked"),
    [
        ("U1234567", "U****567"),
        ("DU1234567", "DU****567"),
        (" F12345 ", "F**345"),
        ("U123", "U***"),
        ("12", "**"),
        ("", "<empty>"),
    ],
)
def test_mask_account(acct: str, masked: str) -> None:
    assert mask_account(acct) == masked


@given(st.text(alphabet="ABCDEFU0123456789", min_size=1, max_size=14))
def test_mask_account_never_shows_the_middle(acct: str) -> None:
    masked = mask_account(acct)
    assert len(masked) == len(acct)
    digits = acct.lstrip("ABCDEFU")
    if len(digits) > 3:
        assert digits not in masked


@pytest.mark.parametrize(
    "accounts", [["DU1234567"], ["DU1", "DF2"], "DU1234567", "DU1,DU2,", ["DU1", " ", ""]]
)
def test_check_accounts_passes_all_paper(accounts: list[str] | str) -> None:
    check_accounts(accounts)


@pytest.mark.parametrize("accounts", [[], "", ",", ["", "  "]])
def test_check_accounts_refuses_no_accounts(accounts: list[str] | str) -> None:
    with pytest.raises(GuardRefusal) as info:
        check_accounts(accounts)
    assert info.value.guard == "live_account"
    assert "no managed accounts" in str(info.value)


def test_check_accounts_refuses_any_live_and_masks_it() -> None:
    with pytest.raises(GuardRefusal) as info:
        check_accounts(["DU1111111", "U1234567", "F7654321"])
    err = info.value
    assert err.guard == "live_account"
    msg = str(err)
    assert "U****567" in msg and "F****321" in msg
    assert "1234567" not in msg and "DU1111111" not in msg  # only the offenders, masked
    assert "\n" not in msg


def test_check_accounts_refuses_raw_string_with_live() -> None:
    with pytest.raises(GuardRefusal):
        check_accounts("DU1,U2345678")


def test_account_check_has_no_override() -> None:
    # The --allow-live-port override must not be able to reach the account check.
    assert list(inspect.signature(check_accounts).parameters) == ["accounts"]


@given(st.lists(st.text(max_size=12), max_size=5))
def test_check_accounts_passes_only_when_all_paper(accounts: list[str]) -> None:
    ids = [a.strip() for a in accounts if a.strip()]
    expected_ok = bool(ids) and all(is_paper_account(a) for a in ids)
    try:
        check_accounts(accounts)
    except GuardRefusal as err:
        assert not expected_ok
        assert err.guard == "live_account" and "\n" not in str(err)
    else:
        assert expected_ok


# --- ports -------------------------------------------------------------------------


@pytest.mark.parametrize("port", sorted(LIVE_PORTS))
def test_live_ports_refused_by_default(port: int) -> None:
    with pytest.raises(GuardRefusal) as info:
        check_port(port, allow_live_port=False)
    assert info.value.guard == "live_port"
    msg = str(info.value)
    assert str(port) in msg and "--allow-live-port" in msg and "\n" not in msg


@pytest.mark.parametrize("port", sorted(LIVE_PORTS))
def test_live_ports_allowed_with_warning(port: int) -> None:
    warning = check_port(port, allow_live_port=True)
    assert warning is not None
    assert str(port) in warning
    assert "allowed by --allow-live-port" in warning
    assert "paper-account check still applies" in warning


@pytest.mark.parametrize("port", [*sorted(PAPER_PORTS), 4010, 7500, 1])
@pytest.mark.parametrize("allow", [False, True])
def test_other_ports_pass_silently(port: int, allow: bool) -> None:
    assert check_port(port, allow) is None


def test_port_tables() -> None:
    assert set(LIVE_PORTS) == {4001, 7496}
    assert list(PAPER_PORTS) == [4002, 7497]


# --- order limits ------------------------------------------------------------------


def test_check_order_passes_within_limits() -> None:
    check_order(1, 1, price=None, multiplier=1, max_notional=None)
    check_order(3, 5, price=None, multiplier=5, max_notional=None)
    check_order(1, 1, price=5000.0, multiplier=5, max_notional=25_000)  # exactly at limit
    check_order(0.5, 1, price=100.0, multiplier=1, max_notional=60)


@pytest.mark.parametrize(
    ("quantity", "max_quantity"),
    [(2, 1), (101, 100), (0, 1), (-1, 1), (math.nan, 1), (math.inf, 1), (1, 0), (True, 1)],
)
def test_check_order_refuses_quantity(quantity: float, max_quantity: int) -> None:
    with pytest.raises(GuardRefusal) as info:
        check_order(quantity, max_quantity, price=1.0, multiplier=1, max_notional=None)
    assert info.value.guard == "quantity"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("price", "multiplier", "max_notional", "fragment"),
    [
        (5000.0, 5, 24_999.0, "exceeds max_notional"),
        (None, 5, 1e9, "no usable price"),
        (math.nan, 5, 1e9, "no usable price"),
        (-1.0, 5, 1e9, "no usable price"),
        (0.0, 5, 1e9, "no usable price"),
        (10.0, 0, 1e9, "multiplier"),
        (10.0, math.nan, 1e9, "multiplier"),
        (10.0, 1, 0, "max_notional"),
        (10.0, 1, math.nan, "max_notional"),
    ],
)
def test_check_order_refuses_notional(
    price: float | None, multiplier: float, max_notional: float, fragment: str
) -> None:
    with pytest.raises(GuardRefusal) as info:
        check_order(1, 1, price=price, multiplier=multiplier, max_notional=max_notional)
    assert info.value.guard == "notional"
    assert fragment in str(info.value)


@given(
    quantity=st.integers(min_value=1, max_value=10),
    max_quantity=st.integers(min_value=1, max_value=100),
    price=st.floats(min_value=0.01, max_value=1e6),
    multiplier=st.sampled_from([1, 5, 10, 50, 100, 1000]),
    max_notional=st.none() | st.floats(min_value=1, max_value=1e9),
)
def test_check_order_property(
    quantity: int, max_quantity: int, price: float, multiplier: int, max_notional: float | None
) -> None:
    too_many = quantity > max_quantity
    too_big = max_notional is not None and quantity * price * multiplier > max_notional
    try:
        check_order(
            quantity, max_quantity, price=price, multiplier=multiplier, max_notional=max_notional
        )
    except GuardRefusal as err:
        assert err.guard == ("quantity" if too_many else "notional")
        assert too_many or too_big
    else:
        assert not too_many and not too_big


# --- the exception itself ---------------------------------------------


def test_guard_refusal_is_one_line_and_knows_its_guard() -> None:
    err = GuardRefusal("quantity", "line one\nline two")
    assert str(err) == "line one line two"
    assert err.guard in GUARDS
    with pytest.raises(ValueError):
        GuardRefusal("nonsense", "x")
