"""The one "real quote" rule: the scalar form (ticks phase, live feed) and the array form
(charts over the store) agree, and first-real stamping happens once per field."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from harness_lib.quotes import (
    MARKET_DATA_TYPES,
    QUOTE_FIELDS,
    is_real,
    market_data_name,
    note_first_real,
    real_mask,
)

VALUES = [100.25, -1.0, 0.0, math.nan, math.inf, 1.797e308, 3.0, -5.0]


@pytest.mark.parametrize("size", [False, True])
def test_array_rule_agrees_with_scalar_rule(size: bool) -> None:
    arr = np.array([v if abs(v) < 1e300 else np.nan for v in VALUES])
    assert real_mask(arr, size).tolist() == [is_real(v, size=size) for v in VALUES]


def test_real_values() -> None:
    assert is_real(100.25) and is_real(0.0) and not is_real(-1.0) and not is_real(None)
    assert not is_real(math.nan) and not is_real(1.797e308)  # IB's UNSET_DOUBLE
    assert is_real(3.0, size=True) and not is_real(0.0, size=True)


def test_note_first_real_stamps_each_field_once() -> None:
    first: dict[str, float] = {}
    nan = math.nan
    t = SimpleNamespace(bid=nan, ask=-1.0, last=nan, bidSize=0.0, askSize=nan)
    assert note_first_real(first, t, 1.0) == []
    t.bid, t.bidSize = 99.5, 2.0
    assert note_first_real(first, t, 2.0) == ["bid", "bidSize"]
    t.ask, t.bid = 100.0, 99.0
    assert note_first_real(first, t, 3.0) == ["ask"]
    assert first == {"bid": 2.0, "bidSize": 2.0, "ask": 3.0}
    assert set(first) <= set(QUOTE_FIELDS)


def test_market_data_names() -> None:
    assert market_data_name(4) == "delayed-frozen" == MARKET_DATA_TYPES[4]
    assert market_data_name(9) == "9" and market_data_name(None) is None
