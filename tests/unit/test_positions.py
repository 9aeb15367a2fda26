"""The one net-position rule: side words IB really uses, and nothing guessed."""

from __future__ import annotations

import pandas as pd
import pytest

from harness_lib.phases.cleanup import flatten_order
from harness_lib.positions import net_position, side_sign, side_signs


@pytest.mark.parametrize(
    ("side", "sign"),
    [("BOT", 1), ("BUY", 1), ("bot", 1), (" buy ", 1), ("SLD", -1), ("SELL", -1), ("sld", -1)],
)
def test_side_words_of_executions_and_orders(side: str, sign: int) -> None:
    assert side_sign(side) == sign


@pytest.mark.parametrize("side", ["B", "S", "", "SHORT", None, "SOLD"])
def test_unknown_side_is_refused_not_counted_as_a_sale(side: object) -> None:
    with pytest.raises(ValueError, match="unknown execution side"):
        side_sign(side)


def test_net_position_sums_per_contract_and_drops_flat() -> None:
    execs = [(1, "BOT", 2), (1, "SLD", 2), (2, "BOT", 3.0), (2, "SELL", 1), (3, "SLD", 5)]
    assert net_position(execs) == {2: 2.0, 3: -5.0}
    assert net_position([]) == {}
    # Float share counts that cancel up to rounding are flat.
    assert net_position([(7, "BOT", 0.1 + 0.2), (7, "SLD", 0.3)]) == {}


def test_net_position_refuses_an_unreadable_side() -> None:
    with pytest.raises(ValueError):
        net_position([(1, "BOT", 1), (1, "B", 1)])


def test_side_signs_for_frames_agree_with_side_sign() -> None:
    words = pd.Series(["BOT", "sld", "BUY", "SELL", "B"])
    out = side_signs(words)
    assert out.iloc[:4].tolist() == [1.0, -1.0, 1.0, -1.0]
    assert pd.isna(out.iloc[4])


@pytest.mark.parametrize(("to_close", "action"), [(3.0, "SELL"), (-2.0, "BUY")])
def test_flatten_order_closes_in_the_right_direction(to_close: float, action: str) -> None:
    order = flatten_order(to_close, "harness:r1", "DU123")
    assert (order.action, order.totalQuantity, order.orderType) == (action, abs(to_close), "MKT")
    assert (order.orderRef, order.account, order.tif) == ("harness:r1", "DU123", "DAY")
    assert flatten_order(1.0, "harness:r1", None).account == ""
