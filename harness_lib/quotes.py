"""What counts as a real quote, and when each quote field first had one.

One home for the rule the ticks phase judges by, the live feed shows and the charts draw
from the store: ``reqMktData`` returns a Ticker full of ``nan``, IB says "no quote" with
price -1 and size 0, and a field is *real* from its first finite, non-sentinel value.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar

from harness_lib.models import finite

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MARKET_DATA_TYPES",
    "NO_QUOTE_PRICE",
    "QUOTE_FIELDS",
    "is_real",
    "market_data_name",
    "note_first_real",
    "real_mask",
]

QUOTE_FIELDS: tuple[str, ...] = ("bid", "ask", "last", "bidSize", "askSize")
"""The Ticker fields whose first real value the harness times, in display order."""

NO_QUOTE_PRICE = -1.0
"""IB sends price -1 (with size 0) to say "no quote on this side", not a real price."""

MARKET_DATA_TYPES: dict[int, str] = {1: "live", 2: "frozen", 3: "delayed", 4: "delayed-frozen"}
"""``reqMarketDataType`` codes and their names (IB's docs write type 4 "Delayed-Frozen")."""

T = TypeVar("T")


def market_data_name(mdt: int | None) -> str | None:
    """The name of a market data type code; the code itself when unknown; None for None."""
    if mdt is None:
        return None
    return MARKET_DATA_TYPES.get(mdt, str(mdt))


def is_real(value: float | None, *, size: bool = False) -> bool:
    """True for a real quote value: finite, not IB's -1 'no quote', sizes above zero."""
    x = finite(value)
    if x is None:
        return False
    return x > 0 if size else x != NO_QUOTE_PRICE


def real_mask(values: np.ndarray, size: np.ndarray | bool) -> np.ndarray:
    """:func:`is_real` over an array (``size`` per element or for all), for frames."""
    import numpy as np

    finite = np.isfinite(values)
    return finite & np.where(size, values > 0, values != NO_QUOTE_PRICE)


def note_first_real(
    first: MutableMapping[str, T], ticker: Any, stamp: T, fields: tuple[str, ...] = QUOTE_FIELDS
) -> list[str]:
    """Stamp each of ``fields`` that is real on ``ticker`` now and had no stamp yet; return
    the fields stamped. Called on every ticker update, so "first" is the first update in
    which the field was real."""
    new = []
    for f in fields:
        if f not in first and is_real(getattr(ticker, f), size=f.endswith("Size")):
            first[f] = stamp
            new.append(f)
    return new
