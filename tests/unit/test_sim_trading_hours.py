"""Trading and liquid hours per session, from a given clock (pure calendar logic)."""

from __future__ import annotations

from datetime import UTC, datetime

from harness_lib.sim.market import build_catalogue
from harness_lib.sim.trading_hours import hours, is_open

CAT = {i.symbol: i for i in build_catalogue()}
AAPL, EUR, MES = CAT["AAPL"], CAT["EUR"], CAT["MES"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_equity_week_from_a_tuesday() -> None:
    trading, liquid = hours(AAPL, utc(2026, 12, 1, 15, 0))  # Tue 10:00 ET
    days = trading.split(";")
    assert days[0] == "20261201:0400-20261201:2000"
    assert days[4] == "20261205:CLOSED" and days[5] == "20261206:CLOSED"
    assert liquid.split(";")[0] == "20261201:0930-20261201:1600"
    assert is_open(AAPL, utc(2026, 12, 1, 15, 0), liquid=True)
    assert not is_open(AAPL, utc(2026, 12, 1, 13, 0), liquid=True)  # 08:00 ET pre-market
    assert is_open(AAPL, utc(2026, 12, 1, 13, 0))
    assert not is_open(AAPL, utc(2026, 12, 5, 15, 0))  # Saturday


def test_globex_and_fx_sessions_start_the_evening_before() -> None:
    # Sunday 18:00 ET = 17:00 CT: Globex has opened Monday's session, FX is open.
    sunday_evening = utc(2026, 12, 6, 23, 0)
    assert is_open(MES, sunday_evening) and is_open(EUR, sunday_evening)
    assert not is_open(AAPL, sunday_evening)
    trading, _ = hours(MES, sunday_evening)
    assert trading.split(";")[0] == "20261206:1700-20261207:1600"
    fx, _ = hours(EUR, sunday_evening)
    assert fx.split(";")[0] == "20261206:1715-20261207:1700"
    # Friday after 17:00 ET the FX week is over.
    assert not is_open(EUR, utc(2026, 12, 4, 22, 30))


def test_market_closed_closes_today() -> None:
    trading, liquid = hours(AAPL, utc(2026, 12, 1, 15, 0), closed_today=True)
    assert trading.split(";")[0] == "20261201:CLOSED" and liquid.startswith("20261201:CLOSED")
    assert trading.split(";")[1] == "20261202:0400-20261202:2000"
