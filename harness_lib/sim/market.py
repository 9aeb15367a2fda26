"""The simulator's instrument catalogue and its seeded quote model.

Quotes follow a random walk in whole ticks of each contract's minTick with a spread
of one to a few ticks, like a liquid book. The seed makes every run reproducible.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import date


@dataclass(frozen=True, slots=True)
class Instrument:
    """One contract the simulated gateway knows, with what contractDetails reports."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    min_tick: float
    price: float
    long_name: str
    primary_exchange: str = ""
    multiplier: str = ""
    expiry: str = ""
    time_zone: str = "US/Eastern"
    liquid: bool = True
    """False for a contract that is quoted nowhere: a subscription never ticks."""
    subscribed: bool = True
    """False: the account has no market data subscription (error 354)."""
    spread_ticks: int = 1
    size_lot: int = 100

    @property
    def decimals(self) -> int:
        """Digits after the point needed to print a price on this contract's tick grid."""
        text = f"{self.min_tick:.10f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0

    @property
    def point_value(self) -> float:
        """Currency per one point of price per contract (the multiplier, 1 for stocks/FX)."""
        return float(self.multiplier) if self.multiplier else 1.0


def _future_expiries(today: date, count: int = 4) -> list[str]:
    """Quarterly (Mar/Jun/Sep/Dec) third-Friday expiries from today on, as YYYYMMDD."""
    out: list[str] = []
    year, month = today.year, today.month
    while len(out) < count:
        if month in (3, 6, 9, 12):
            first = date(year, month, 1)
            # Third Friday: first Friday plus two weeks.
            friday = 1 + (4 - first.weekday()) % 7 + 14
            expiry = date(year, month, friday)
            if expiry >= today:
                out.append(expiry.strftime("%Y%m%d"))
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


def _month_code(expiry: str) -> str:
    codes = "FGHJKMNQUVXZ"
    return codes[int(expiry[4:6]) - 1] + expiry[3]


def build_catalogue(today: date | None = None) -> list[Instrument]:
    """The default catalogue: a liquid stock, an FX pair, MES futures, an illiquid and an
    unsubscribed stock. ConIds of AAPL and EUR.USD are the real ones."""
    today = today or date.today()
    items = [
        Instrument(
            con_id=265598,
            symbol="AAPL",
            sec_type="STK",
            exchange="SMART",
            primary_exchange="NASDAQ",
            currency="USD",
            local_symbol="AAPL",
            trading_class="NMS",
            min_tick=0.01,
            price=230.00,
            long_name="APPLE INC",
        ),
        Instrument(
            con_id=12087792,
            symbol="EUR",
            sec_type="CASH",
            exchange="IDEALPRO",
            currency="USD",
            local_symbol="EUR.USD",
            trading_class="EUR.USD",
            min_tick=0.00005,
            price=1.08500,
            long_name="European Monetary Union Euro",
            size_lot=1_000_000,
            time_zone="US/Eastern",
        ),
        Instrument(
            con_id=4000001,
            symbol="ILLQ",
            sec_type="STK",
            exchange="SMART",
            primary_exchange="PINK",
            currency="USD",
            local_symbol="ILLQ",
            trading_class="ILLQ",
            min_tick=0.0001,
            price=0.42,
            long_name="ILLIQUID HOLDINGS (never quoted)",
            liquid=False,
        ),
        Instrument(
            con_id=4000002,
            symbol="NOSUB",
            sec_type="STK",
            exchange="SMART",
            primary_exchange="NYSE",
            currency="USD",
            local_symbol="NOSUB",
            trading_class="NOSUB",
            min_tick=0.01,
            price=55.10,
            long_name="NO SUBSCRIPTION CORP (market data not subscribed)",
            subscribed=False,
        ),
    ]
    for i, expiry in enumerate(_future_expiries(today)):
        items.append(
            Instrument(
                con_id=7000001 + i,
                symbol="MES",
                sec_type="FUT",
                exchange="CME",
                currency="USD",
                local_symbol="MES" + _month_code(expiry),
                trading_class="MES",
                min_tick=0.25,
                price=6000.00,
                long_name="Micro E-Mini S&P 500 Stock Price Index",
                multiplier="5",
                expiry=expiry,
                time_zone="US/Central",
                size_lot=10,
            )
        )
    return items


@dataclass(slots=True)
class Quote:
    """The top of book the simulator currently shows for one instrument."""

    bid: float
    ask: float
    bid_size: int
    ask_size: int
    last: float
    last_size: int
    volume: int = 0

    @property
    def mid(self) -> float:
        """Midpoint of bid and ask."""
        return (self.bid + self.ask) / 2


PATH_MAXLEN = 200_000
"""Steps kept for the live part of historical bars (about 14 h at 4 steps a second)."""


@dataclass(slots=True)
class QuoteModel:
    """A seeded random walk in whole ticks; one instance per instrument per gateway."""

    inst: Instrument
    rng: random.Random
    _ticks: int = 0
    quote: Quote = field(init=False)
    t0: float = field(init=False)
    """Wall-clock time the walk started: history before it is synthesised back from here."""
    start_ticks: int = field(init=False)
    """The bid in ticks at ``t0``."""
    path: deque[tuple[float, Quote]] = field(init=False)
    """(wall time, quote) of every step since ``t0``: the live part of historical bars."""
    high: float = field(init=False)
    low: float = field(init=False)
    last_time: float = field(init=False)
    """Wall time of the latest trade (tick 45)."""
    _slot: tuple[int, int] = (-1, -1)

    def __post_init__(self) -> None:
        self._ticks = round(self.inst.price / self.inst.min_tick)
        self.start_ticks = self._ticks
        self.t0 = self.last_time = time.time()
        self.quote = self._make(self._ticks)
        self.high = self.low = self.quote.last
        self.path = deque(maxlen=PATH_MAXLEN)

    @property
    def open(self) -> float:
        """The session's first trade: the walk's starting price."""
        return self._px(self.start_ticks)

    def _record(self) -> None:
        now = time.time()
        self.path.append((now, self.quote))
        self.last_time = now
        self.high = max(self.high, self.quote.last)
        self.low = min(self.low, self.quote.last)

    def _px(self, ticks: int) -> float:
        return round(ticks * self.inst.min_tick, self.inst.decimals)

    def _make(self, mid_ticks: int) -> Quote:
        spread = self.inst.spread_ticks + (1 if self.rng.random() < 0.2 else 0)
        bid_t = mid_ticks
        ask_t = mid_ticks + spread
        lot = self.inst.size_lot
        return Quote(
            bid=self._px(bid_t),
            ask=self._px(ask_t),
            bid_size=lot * self.rng.randint(1, 9),
            ask_size=lot * self.rng.randint(1, 9),
            last=self._px(bid_t + self.rng.randint(0, spread)),
            last_size=max(1, lot // 100) * self.rng.randint(1, 5),
        )

    def step(self) -> Quote:
        """Advance the walk by -1, 0 or +1 tick and return the new quote."""
        self._ticks = max(1, self._ticks + self.rng.choice((-1, 0, 0, 1)))
        volume = self.quote.volume
        self.quote = self._make(self._ticks)
        self.quote.volume = volume + self.quote.last_size
        self._record()
        return self.quote

    def step_in(self, slot: tuple[int, int]) -> Quote:
        """The quote of one slot of the instrument's market clock: the walk steps once per
        slot, whichever subscription asks first, so every subscriber gets the same tick, as
        from a real feed (stepping per subscription gave each client its own walk)."""
        if slot != self._slot:
            self._slot = slot
            self.step()
        return self.quote

    def shift(self, ticks: int) -> Quote:
        """Move the book by a number of ticks (tests use it to make a resting order marketable)."""
        self._ticks = max(1, self._ticks + ticks)
        self.quote = replace(self._make(self._ticks), volume=self.quote.volume)
        self._record()
        return self.quote


class Catalogue:
    """Lookup of instruments by conId and by the description fields a request carries."""

    def __init__(self, instruments: list[Instrument]) -> None:
        self.instruments = list(instruments)
        self.by_con_id = {i.con_id: i for i in self.instruments}

    def add(self, inst: Instrument) -> None:
        """Register an extra instrument (benchmarks add many synthetic stocks)."""
        self.instruments.append(inst)
        self.by_con_id[inst.con_id] = inst

    def match(
        self,
        *,
        con_id: int,
        symbol: str,
        sec_type: str,
        expiry: str,
        exchange: str,
        currency: str,
        local_symbol: str,
    ) -> list[Instrument]:
        """Every instrument a contract description matches, as TWS resolves it."""
        if con_id:
            inst = self.by_con_id.get(con_id)
            return [inst] if inst else []
        out = []
        for inst in self.instruments:
            if symbol and inst.symbol != symbol.upper():
                continue
            if sec_type and inst.sec_type != sec_type.upper():
                continue
            if local_symbol and inst.local_symbol != local_symbol:
                continue
            if currency and inst.currency != currency.upper():
                continue
            if (
                exchange
                and exchange.upper() not in (inst.exchange, "SMART")
                and (exchange.upper() != inst.primary_exchange)
            ):
                continue
            if expiry and not inst.expiry.startswith(expiry):
                continue
            if not symbol and not local_symbol:
                continue
            out.append(inst)
        return out
