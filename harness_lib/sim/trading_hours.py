"""Trading and liquid hours per instrument session, computed from the simulator's clock.

contractDetails carries them as ``yyyymmdd:HHMM-yyyymmdd:HHMM;...`` with ``yyyymmdd:CLOSED``
for days without a session, in the contract's time zone (IB's legacy names US/Eastern,
US/Central). Sessions:

- US equities (STK): trading 04:00-20:00, liquid (regular hours) 09:30-16:00 ET, Mon-Fri;
- CME Globex futures (FUT): trading 17:00 the day before to 16:00 CT, keyed by the end
  day, Mon-Fri; liquid 08:30-16:00 CT;
- IDEALPRO FX (CASH): 17:15 the day before to 17:00 ET, Mon-Fri (so Sunday evening to
  Friday 17:00), liquid the same.

Holidays are not modelled; the market_closed fault marks today ``CLOSED``, as a holiday is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .market import Instrument

DAYS_LISTED = 7
"""Days listed from today on, as a gateway lists about a week."""


@dataclass(frozen=True, slots=True)
class Session:
    """One instrument's daily session: start (possibly the evening before) and end."""

    zone: str
    trading: tuple[time, time, bool]
    """(start, end, starts the day before)."""
    liquid: tuple[time, time, bool]


SESSIONS = {
    "STK": Session("US/Eastern", (time(4), time(20), False), (time(9, 30), time(16), False)),
    "FUT": Session("US/Central", (time(17), time(16), True), (time(8, 30), time(16), False)),
    "CASH": Session("US/Eastern", (time(17, 15), time(17), True), (time(17, 15), time(17), True)),
}


def session_for(inst: Instrument) -> Session:
    """The session an instrument trades in (equities for anything not listed)."""
    return SESSIONS.get(inst.sec_type, SESSIONS["STK"])


def _spans(days: list[date], span: tuple[time, time, bool], closed: set[date]) -> str:
    out = []
    for d in days:
        if d.weekday() >= 5 or d in closed:
            out.append(f"{d:%Y%m%d}:CLOSED")
            continue
        start, end, overnight = span
        start_day = d - timedelta(days=1) if overnight else d
        out.append(f"{start_day:%Y%m%d}:{start:%H%M}-{d:%Y%m%d}:{end:%H%M}")
    return ";".join(out)


def hours(inst: Instrument, now_utc: datetime, *, closed_today: bool = False) -> tuple[str, str]:
    """(tradingHours, liquidHours) for the week starting on the session day of ``now_utc``."""
    sess = session_for(inst)
    local = now_utc.astimezone(ZoneInfo(sess.zone))
    today = local.date()
    if sess.trading[2] and local.time() >= sess.trading[0]:
        # An evening session belongs to the next day (Globex, FX).
        today += timedelta(days=1)
    days = [today + timedelta(days=i) for i in range(DAYS_LISTED)]
    closed = {today} if closed_today else set()
    return _spans(days, sess.trading, closed), _spans(days, sess.liquid, closed)


def is_open(inst: Instrument, now_utc: datetime, *, liquid: bool = False) -> bool:
    """True when ``now_utc`` falls inside the instrument's trading (or liquid) hours."""
    sess = session_for(inst)
    zone = ZoneInfo(sess.zone)
    local = now_utc.astimezone(zone)
    start, end, overnight = sess.liquid if liquid else sess.trading
    for day in (local.date(), local.date() + timedelta(days=1)):
        if day.weekday() >= 5:
            continue
        first = day - timedelta(days=1) if overnight else day
        lo = datetime.combine(first, start, zone)
        hi = datetime.combine(day, end, zone)
        if lo <= local < hi:
            return True
    return False
