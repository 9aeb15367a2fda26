"""Money-safety guards: pure functions that refuse before any order is sent.

Every guard either returns quietly or raises :class:`GuardRefusal`, which the
runner turns into a ``REFUSED`` verdict. They fail closed: anything they cannot
prove safe (no accounts reported, no price to check a notional limit, a NaN
quantity) is refused.

The paper-account check has no override. ``--allow-live-port`` only affects
:func:`check_port`; :func:`check_accounts` deliberately takes no flag at all, so
no configuration can switch it off.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

__all__ = [
    "GUARDS",
    "LIVE_PORTS",
    "PAPER_PORTS",
    "PAPER_PREFIXES",
    "GuardRefusal",
    "check_accounts",
    "check_order",
    "check_port",
    "is_paper_account",
    "mask_account",
]

PAPER_PREFIXES = ("DU", "DF")
"""IB paper-trading account ids start with these (DU individual/sub-account, DF FA master)."""

LIVE_PORTS: dict[int, str] = {4001: "IB Gateway live", 7496: "TWS live"}
"""Default API ports of live logins."""

PAPER_PORTS: dict[int, str] = {4002: "IB Gateway paper", 7497: "TWS paper"}
"""Default API ports of paper logins, in the order the harness tries them."""

GUARDS = ("live_account", "live_port", "quantity", "notional", "orphans")
"""The short names a :class:`GuardRefusal` can carry."""

_PAPER_ACCOUNT = re.compile(r"(?:DU|DF)[0-9]+")
_LEADING_LETTERS = re.compile(r"[A-Za-z]{1,3}")


class GuardRefusal(Exception):
    """A safety guard refused to go on. ``str()`` is one line; ``guard`` says which."""

    def __init__(self, guard: str, message: str) -> None:
        if guard not in GUARDS:
            raise ValueError(f"unknown guard {guard!r} (known: {', '.join(GUARDS)})")
        self.guard = guard
        # Refusals end up in one-line notifications and JUnit messages.
        self.message = " ".join(message.split())
        super().__init__(self.message)


def is_paper_account(acct: str) -> bool:
    """True if ``acct`` (surrounding whitespace ignored) is DU/DF followed by digits.

    Case-sensitive on purpose: IB reports ids in upper case, and anything unusual is
    treated as live.
    """
    if not isinstance(acct, str):
        return False
    return _PAPER_ACCOUNT.fullmatch(acct.strip()) is not None


def mask_account(acct: str) -> str:
    """Hide the middle of an account id: ``U1234567`` -> ``U****567``.

    The leading letters (at most 3, they tell the account type) and the last 3
    characters stay visible; ids too short for that are masked after the letters.
    """
    acct = str(acct).strip()
    if not acct:
        return "<empty>"
    m = _LEADING_LETTERS.match(acct)
    head = m.group(0) if m else ""
    body = acct[len(head) :]
    if len(body) <= 3:
        # Showing the last 3 would show nearly everything.
        return head + "*" * len(body) if body else "*" * len(acct)
    return head + "*" * (len(body) - 3) + body[-3:]


def check_accounts(accounts: Sequence[str] | str) -> None:
    """Refuse unless at least one account is reported and every one is a paper account.

    ``accounts`` is the gateway's managed accounts, as a list or as IB's raw
    comma-separated string (empty entries, e.g. from a trailing comma, are ignored).
    There is intentionally no override parameter.
    """
    items = accounts.split(",") if isinstance(accounts, str) else list(accounts)
    ids = [str(a).strip() for a in items if str(a).strip()]
    if not ids:
        raise GuardRefusal(
            "live_account",
            "refusing: the gateway reported no managed accounts, so it cannot be shown to be "
            "a paper login",
        )
    live = [a for a in ids if not is_paper_account(a)]
    if live:
        shown = ", ".join(mask_account(a) for a in live)
        raise GuardRefusal(
            "live_account",
            f"refusing: non-paper account(s) {shown} reported by the gateway "
            f"(paper accounts start with {' or '.join(PAPER_PREFIXES)}); "
            "the harness only runs against paper logins and no flag changes that",
        )


def check_port(port: int, allow_live_port: bool) -> str | None:
    """Refuse a live default port unless explicitly allowed.

    Returns None for any other port, and a warning to log when a live default port
    is allowed (someone may run a paper login on 4001/7496; the account check still
    decides).
    """
    if port not in LIVE_PORTS:
        return None
    what = LIVE_PORTS[port]
    if not allow_live_port:
        paper = ", ".join(f"{p} {name}" for p, name in PAPER_PORTS.items())
        raise GuardRefusal(
            "live_port",
            f"refusing port {port}, the {what} default; use a paper port ({paper}) "
            "or pass --allow-live-port if this port really serves a paper login",
        )
    return (
        f"live default port {port} ({what}) allowed by --allow-live-port; "
        "the paper-account check still applies"
    )


def check_order(
    quantity: float,
    max_quantity: int,
    *,
    price: float | None,
    multiplier: float,
    max_notional: float | None,
) -> None:
    """Refuse an order larger than the configured limits.

    ``quantity`` must be positive, finite and at most ``max_quantity``. When
    ``max_notional`` is set, ``quantity * price * multiplier`` must not exceed it,
    and an unknown or non-positive price or multiplier is refused (the limit could
    not be checked). With ``max_notional`` None only the quantity is checked.
    """
    if not _positive(quantity):
        raise GuardRefusal("quantity", f"refusing quantity {quantity!r}: must be a positive number")
    if not _positive(max_quantity):
        raise GuardRefusal(
            "quantity", f"refusing: max_quantity {max_quantity!r} is not a positive number"
        )
    if quantity > max_quantity:
        raise GuardRefusal(
            "quantity",
            f"refusing quantity {quantity:g}: above max_quantity {max_quantity:g} "
            "(raise --max-quantity, at most 100, if you mean it)",
        )
    if max_notional is None:
        return
    if not _positive(max_notional):
        raise GuardRefusal(
            "notional", f"refusing: max_notional {max_notional!r} is not a positive number"
        )
    if price is None or not _positive(price):
        raise GuardRefusal(
            "notional",
            f"refusing: no usable price ({price!r}) to check max_notional {max_notional:g}",
        )
    if not _positive(multiplier):
        raise GuardRefusal(
            "notional",
            f"refusing: contract multiplier {multiplier!r} is not a positive number, "
            f"cannot check max_notional {max_notional:g}",
        )
    notional = quantity * price * multiplier
    if notional > max_notional:
        raise GuardRefusal(
            "notional",
            f"refusing: notional {notional:,.2f} ({quantity:g} x {price:g} x {multiplier:g}) "
            f"exceeds max_notional {max_notional:,.2f}",
        )


def _positive(x: object) -> bool:
    """A real, finite number above zero (bools and NaN are not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    if isinstance(x, int):
        return x > 0  # math.isfinite would overflow on huge ints
    return math.isfinite(x) and x > 0
