"""Net position from executions: the one rule behind "only ours" and "back to flat".

IB reports an execution's side as ``BOT`` or ``SLD`` (``Execution.side``, execDetails
field 18); orders carry ``BUY`` or ``SELL`` (``Order.action``). Both pairs are accepted,
in any case. Nothing else is: a side we cannot read must not be counted as a sale (the
old copies did that), because the net decides what cleanup sends to the broker. The
single letters ``B``/``S`` are not words of the TWS API, so they are refused too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FLAT_EPSILON", "SIDE_SIGN", "net_position", "side_sign", "side_signs"]

SIDE_SIGN: dict[str, int] = {"BOT": 1, "BUY": 1, "SLD": -1, "SELL": -1}
"""Side word (upper case) → +1 for a purchase, -1 for a sale."""

FLAT_EPSILON = 1e-9
"""Quantities smaller than this are zero (share counts are floats in ib_async)."""


def side_sign(side: object) -> int:
    """+1 for a buy (``BOT``/``BUY``), -1 for a sell (``SLD``/``SELL``).

    Raises ValueError for any other word, so an unreadable side stops a flatten instead
    of being guessed.
    """
    sign = SIDE_SIGN.get(str(side).strip().upper())
    if sign is None:
        raise ValueError(f"unknown execution side {side!r} (expected BOT/SLD or BUY/SELL)")
    return sign


def net_position(executions: Iterable[tuple[int, object, float]]) -> dict[int, float]:
    """Net quantity per conId from ``(con_id, side, shares)`` triples; flat ones omitted."""
    net: dict[int, float] = {}
    for con_id, side, shares in executions:
        net[con_id] = net.get(con_id, 0.0) + side_sign(side) * float(shares)
    return {k: v for k, v in net.items() if abs(v) > FLAT_EPSILON}


def side_signs(sides: pd.Series) -> pd.Series:
    """:func:`side_sign` over a column of side words, for frame queries: +1.0, -1.0, or
    NaN for a word it does not know (so sums over it are NaN, not silently wrong)."""
    return sides.astype(str).str.strip().str.upper().map(SIDE_SIGN).astype(float)
