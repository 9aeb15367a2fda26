"""Historical bars consistent with the live random walk, deterministic from the seed.

Each instrument's price is one path in whole ticks of its minTick:

- after the walk started (``QuoteModel.t0``), the path is what the live walk really showed
  (``QuoteModel.path``), so the newest bar ends at the current quote;
- before it, the path is synthesised backwards from the walk's starting price, one price
  per minute, in day-long chunks each seeded by (seed, conId, day index), so the same seed
  gives the same history and every bar size aggregates the same path (a 5-minute bar's
  open, close, high and low agree with its five 1-minute bars).

Bars are cut on clock boundaries in the instrument's time zone, only inside its trading
hours (liquid hours when ``useRTH``), so an overnight gap shows as a jump, as in IB's bars.
TRADES bars carry volume, WAP and a trade count; MIDPOINT, BID and ASK bars carry -1 there,
as IB sends them.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from .market import QuoteModel
from .trading_hours import is_open, session_for

BAR_SIZES: dict[str, int] = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800,
    "1 day": 86400, "1 week": 7 * 86400, "1 month": 30 * 86400,
}  # fmt: skip
"""IB's documented bar sizes and their length in seconds (a month counts as 30 days)."""

WHAT_TO_SHOW = ("TRADES", "MIDPOINT", "BID", "ASK")
"""What the simulator serves; IB's other whatToShow values get error 162."""

IB_WHAT_TO_SHOW = (
    *WHAT_TO_SHOW, "BID_ASK", "ADJUSTED_LAST", "HISTORICAL_VOLATILITY",
    "OPTION_IMPLIED_VOLATILITY", "FEE_RATE", "YIELD_BID", "YIELD_ASK", "YIELD_BID_ASK",
    "YIELD_LAST", "AGGTRADES", "SCHEDULE",
)  # fmt: skip

DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400, "M": 30 * 86400, "Y": 365 * 86400}
MAX_BARS = 20_000
"""More bars than this in one request is refused with 162, as IB refuses over-long queries."""
MINUTE_SIGMA = 11.0
"""Ticks per minute of the synthetic path: the live walk's spread (a +-1 tick step with
probability 1/2, four times a second, is sqrt(120) ~ 11 ticks a minute)."""
CHUNK = 1440
"""Minutes per seeded chunk of the synthetic path (one day)."""
HEAD_YEARS = 2
"""reqHeadTimeStamp: the earliest data is this many years before the walk started (bars
before it get 162 'HMDS query returned no data'); two years of minutes is ~1M points."""


class HistoryError(ValueError):
    """A request IB would refuse: carries IB's error code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar in prices (not ticks), dated by its start."""

    start: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


class PricePath:
    """The synthetic minute path of one instrument before its live walk started."""

    def __init__(self, model: QuoteModel, seed: int) -> None:
        self.model = model
        self.seed = seed
        self.m0 = math.floor(model.t0 / 60)
        """The epoch minute the synthetic path ends in; its price there is the start."""
        # Chunk k holds minutes m0-(k+1)*CHUNK .. m0-k*CHUNK-1 (prices at their start),
        # walking back from the price at the start of the next-newer chunk.
        self._prices: list[Any] = []
        self._vols: list[Any] = []
        self._wicks: list[Any] = []

    def _chunk(self, k: int) -> None:
        import numpy as np

        lot = max(1, self.model.inst.size_lot // 100)
        while len(self._prices) <= k:
            i = len(self._prices)
            newer = self._prices[-1][0] if self._prices else self.model.start_ticks
            rng = np.random.default_rng([self.seed, self.model.inst.con_id, i])
            steps = np.rint(rng.normal(0.0, MINUTE_SIGMA, CHUNK)).astype(np.int64)
            back = newer - np.cumsum(steps)  # back[0] is one minute before `newer`
            back = np.abs(back - 1) + 1  # reflect at one tick: prices stay positive
            self._prices.append(back[::-1].astype(np.int32))
            self._vols.append((rng.integers(5, 60, CHUNK) * lot)[::-1].astype(np.int32))
            self._wicks.append(rng.integers(0, 3, CHUNK)[::-1].astype(np.int8))

    def _series(self, arrays: list[Any], m_from: int, m_to: int) -> list[int]:
        """Values of minutes [m_from, m_to) (all before m0), oldest first."""
        out: list[int] = []
        m = m_from
        while m < m_to:
            k = (self.m0 - m - 1) // CHUNK
            self._chunk(k)
            i = m - (self.m0 - (k + 1) * CHUNK)
            take = min(CHUNK - i, m_to - m)
            out += arrays[k][i : i + take].tolist()
            m += take
        return out

    def span(self, m_from: int, m_to: int) -> tuple[list[int], list[int], list[int]]:
        """Prices at the start of minutes m_from..m_to (<= m0), and per minute
        m_from..m_to-1 its volume and its wick (ticks its high and low reach beyond its
        open and close)."""
        if m_to == self.m0:
            prices = [*self._series(self._prices, m_from, m_to), self.model.start_ticks]
        else:
            prices = self._series(self._prices, m_from, m_to + 1)
        return (
            prices,
            self._series(self._vols, m_from, m_to),
            self._series(self._wicks, m_from, m_to),
        )


def parse_duration(text: str) -> int:
    """``'<n> <S|D|W|M|Y>'`` (a bare number is seconds) to seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([SDWMY]?)\s*", text.upper())
    if not m or int(m.group(1)) <= 0:
        raise HistoryError(
            321,
            f"Error validating request.-'bX' : cause - Historical data request duration "
            f"{text!r} is invalid. Format is '<integer> <S|D|W|M|Y>'.",
        )
    return int(m.group(1)) * DURATION_UNITS[m.group(2) or "S"]


def parse_bar_size(text: str) -> int:
    """A documented bar size to seconds; anything else is IB's 321."""
    size = BAR_SIZES.get(text.strip().lower())
    if size is None:
        legal = ", ".join(BAR_SIZES)
        raise HistoryError(
            321,
            "Error validating request.-'bX' : cause - Historical data bar size setting is "
            f"invalid. Legal ones are: {legal}",
        )
    return size


def parse_end(text: str, now: datetime) -> datetime:
    """endDateTime: empty = now; ``yyyymmdd hh:mm:ss [zone]``, ``yyyymmdd-hh:mm:ss`` (UTC),
    or ``yyyymmdd`` (end of that day, UTC)."""
    text = text.strip()
    if not text:
        return now
    try:
        if re.fullmatch(r"\d{8}-\d{2}:\d{2}:\d{2}", text):
            return datetime.strptime(text, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        if re.fullmatch(r"\d{8}", text):
            return datetime.strptime(text, "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1)
        d, t, *zone = text.split()
        tz = ZoneInfo(zone[0]) if zone else UTC
        return datetime.strptime(d + t, "%Y%m%d%H:%M:%S").replace(tzinfo=tz)
    except (ValueError, KeyError, OSError):
        raise HistoryError(
            321,
            f"Error validating request.-'bX' : cause - Historical data query end date/time "
            f"string [{text}] is invalid. Format is 'YYYYMMDD{{SPACE}}hh:mm:ss[{{SPACE}}TMZ]'.",
        ) from None


class History:
    """Bars and head timestamps for one instrument, from its live walk and synthetic past."""

    def __init__(self, model: QuoteModel, synthetic: PricePath) -> None:
        self.model = model
        self.inst = model.inst
        self.synthetic = synthetic
        self.tick = model.inst.min_tick
        # One snapshot per request: the walk keeps stepping while bars are cut.
        self._live = list(model.path)
        self._times = [t for t, _ in self._live]

    # --- the path --------------------------------------------------------------------------
    def _live_points(self, a: float, b: float) -> list[tuple[float, Any]]:
        i, j = bisect.bisect_left(self._times, a), bisect.bisect_left(self._times, b)
        return self._live[i:j]

    def _quote_at(self, t: float) -> Any:
        """The live quote in force at wall time t (>= t0), None before the first step."""
        i = bisect.bisect_right(self._times, t)
        return self._live[i - 1][1] if i else None

    def _offset(self, what: str) -> float:
        spread = self.inst.spread_ticks
        return {"BID": 0.0, "ASK": float(spread), "MIDPOINT": spread / 2}.get(what, 0.0)

    def _px(self, ticks: float) -> float:
        return round(ticks * self.tick, self.inst.decimals + 1)

    def _value(self, q: Any, what: str) -> float:
        if what == "BID":
            return q.bid
        if what == "ASK":
            return q.ask
        if what == "MIDPOINT":
            return round((q.bid + q.ask) / 2, self.inst.decimals + 1)
        return q.last

    def bar(self, a: float, b: float, what: str) -> Bar | None:
        """The bar over wall times [a, b), or None when no price exists in it."""
        t_live = self.synthetic.m0 * 60
        prices: list[float] = []
        volume = 0.0
        off = self._offset(what)
        if a < t_live:
            eb = min(b, t_live)
            m_a, m_b = math.floor(a / 60), math.ceil(eb / 60)
            ticks, vols, wicks = self.synthetic.span(m_a, m_b)
            frac_a, frac_b = a / 60 - m_a, eb / 60 - (m_b - 1)
            # Sub-minute bars interpolate between the minute prices they fall in.
            first = ticks[0] + (ticks[1] - ticks[0]) * frac_a if len(ticks) > 1 else ticks[0]
            last = ticks[-2] + (ticks[-1] - ticks[-2]) * frac_b if len(ticks) > 1 else ticks[-1]
            path = [round(first), *ticks[1:-1], round(last)]
            prices += [self._px(x + off) for x in path]
            close = prices[-1]
            hi, lo = max(path), min(path)
            for i in range(len(vols)):
                m = m_a + i
                share = (min(eb, (m + 1) * 60) - max(a, m * 60)) / 60
                volume += vols[i] * share
                if share == 1:
                    # A whole minute reaches its wick: the same high/low at every bar size.
                    hi = max(hi, max(ticks[i], ticks[i + 1]) + wicks[i])
                    lo = min(lo, min(ticks[i], ticks[i + 1]) - wicks[i])
            prices += [self._px(hi + off), self._px(max(1, lo) + off)]
        if b > t_live:
            start = max(a, t_live)
            q0 = self._quote_at(start)
            # Before the walk's first step the price is its start.
            close = (
                self._value(q0, what) if q0 is not None else self._px(self.model.start_ticks + off)
            )
            prices.append(close)
            for _t, q in self._live_points(start, b):
                close = self._value(q, what)
                prices.append(close)
                volume += q.last_size
        if not prices:
            return None
        first_px = prices[0]
        high, low = max(prices), min(prices)
        trades = what == "TRADES"
        wap = round((high + low + close) / 3, self.inst.decimals + 2) if trades else -1.0
        # A bar can trade nothing (the newest one, just opened, often has): then it has no
        # trades either, as IB reports quiet bars, rather than one trade of zero shares.
        traded = round(volume)
        count = (
            (max(1, int(volume // max(1, self.inst.size_lot // 100))) if traded else 0)
            if trades
            else -1
        )
        return Bar(
            datetime.fromtimestamp(a, UTC),
            first_px,
            high,
            low,
            close,
            traded if trades else -1.0,
            wap,
            count,
        )

    # --- requests ---------------------------------------------------------------------------
    def bars(
        self, end: datetime, duration_s: int, bar_s: int, what: str, use_rth: bool
    ) -> list[Bar]:
        """The bars of a reqHistoricalData: the last ``duration/bar`` session bars before end
        (intraday), or one bar per session day, week or month (daily and longer); none
        before the head timestamp."""
        head = self.head_timestamp()
        if end <= head:
            raise HistoryError(
                162,
                "Historical Market Data Service error message:HMDS query returned no data: "
                f"{self.inst.symbol}@{self.inst.primary_exchange or self.inst.exchange} "
                f"{what.title()}",
            )
        if bar_s >= 86400:
            return self._period_bars(end, duration_s, bar_s, what, use_rth)
        want = duration_s // bar_s
        if want < 1:
            raise HistoryError(
                321,
                "Error validating request.-'bX' : cause - The duration is shorter than one bar.",
            )
        if want > MAX_BARS:
            raise HistoryError(
                162, "Historical Market Data Service error message:Time length exceed max."
            )
        out: list[Bar] = []
        t = math.floor(end.timestamp() / bar_s) * bar_s
        now = end.timestamp()
        # The open bar (containing `end`) comes first, then whole bars back in time.
        probes = 0
        while len(out) < want and probes < want * 8 + 2000:
            probes += 1
            a, b = t, min(t + bar_s, now)
            t -= bar_s
            if a < head.timestamp():
                break
            if b <= a:
                continue
            mid = datetime.fromtimestamp(a, UTC)
            if not is_open(self.inst, mid, liquid=use_rth):
                continue
            bar = self.bar(a, b, what)
            if bar is not None:
                out.append(bar)
        out.reverse()
        return out

    def _period_bars(
        self, end: datetime, duration_s: int, bar_s: int, what: str, use_rth: bool
    ) -> list[Bar]:
        sess = session_for(self.inst)
        zone = ZoneInfo(sess.zone)
        start_t, end_t, overnight = sess.liquid if use_rth else sess.trading
        local_end = end.astimezone(zone)
        days: list[tuple[date, float, float]] = []
        # The session days of the calendar window [end - duration, end].
        window = end - timedelta(seconds=max(duration_s, 86400) - 1)
        first_day = max(window, self.head_timestamp()).astimezone(zone).date()
        d = local_end.date()
        while d >= first_day:
            if d.weekday() < 5:
                first = d - timedelta(days=1) if overnight else d
                a = datetime.combine(first, start_t, zone).timestamp()
                b = min(datetime.combine(d, end_t, zone).timestamp(), end.timestamp())
                if b > a:
                    days.append((d, a, b))
            d -= timedelta(days=1)
        days.reverse()
        if bar_s == 86400:
            groups = [[x] for x in days]
        else:
            key = (
                (lambda x: x[0].isocalendar()[:2])
                if bar_s == 7 * 86400
                else (lambda x: (x[0].year, x[0].month))
            )
            groups = []
            for item in days:
                if groups and key(groups[-1][0]) == key(item):
                    groups[-1].append(item)
                else:
                    groups.append([item])
        out = []
        for g in groups:
            parts = [p for p in (self.bar(a, b, what) for _, a, b in g) if p is not None]
            if not parts:
                continue
            vol = sum(p.volume for p in parts) if what == "TRADES" else -1.0
            out.append(
                Bar(
                    datetime.combine(g[0][0], datetime.min.time(), UTC),
                    parts[0].open,
                    max(p.high for p in parts),
                    min(p.low for p in parts),
                    parts[-1].close,
                    vol,
                    parts[-1].wap,
                    sum(p.count for p in parts) if what == "TRADES" else -1,
                )
            )
        return out

    def head_timestamp(self) -> datetime:
        """The earliest bar the simulator would serve: ``HEAD_YEARS`` before the walk."""
        t0 = datetime.fromtimestamp(self.model.t0, UTC)
        return datetime(t0.year - HEAD_YEARS, t0.month, 1, 14, 30, tzinfo=UTC)


def format_bar_date(bar: Bar, bar_s: int, format_date: int, zone: str) -> str:
    """IB's bar date: ``yyyymmdd`` for daily and longer, else formatDate 1
    (``yyyymmdd hh:mm:ss zone``) or 2 (epoch seconds)."""
    if bar_s >= 86400:
        return bar.start.strftime("%Y%m%d")
    if format_date == 2:
        return str(int(bar.start.timestamp()))
    return bar.start.astimezone(ZoneInfo(zone)).strftime("%Y%m%d %H:%M:%S ") + zone


def format_time(t: datetime, zone: str) -> str:
    """A time as IB writes start/end of a historicalData message."""
    return t.astimezone(ZoneInfo(zone)).strftime("%Y%m%d %H:%M:%S ") + zone
