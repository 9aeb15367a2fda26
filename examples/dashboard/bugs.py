"""Five plausible code mistakes, each a drop-in variant of the correct class it changes.

``--bug MODE`` picks one. None of them is an ``if bug: emit a wrong value``: each is code a
careful engineer could write, that a mocked ``IB`` returning a populated ticker cannot tell from
the correct version, and that a real gateway (or ``harness sim``) exposes at once.

- ``no-wait``: reads the ticker right after ``reqMktData``. A real gateway: the badge shows
  ``snapshot_fallback`` for good.
- ``nan-to-null``: quote values computed once, at subscribe time; NaN sanitised to null.
  A real gateway: mode live, bid/ask null forever.
- ``stale-card``: a card refresh queued as a snapshot and sent a tick later. A real gateway: a
  closed position's card is repainted.
- ``stale-trade-id``: trade ids cached per symbol with ``setdefault``. A real gateway: the exit
  shows the entry's ids.
- ``double-subscribe``: resubscribes after 1101, a reconnect or a silent stream without
  cancelling. A real gateway: every tick is published twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ib_async import Fill, Ticker

from examples.dashboard.broker import (
    FeedFactory,
    PortfolioTracker,
    QuoteFeed,
    TrackerFactory,
    has_quote,
    quote_values,
)
from examples.dashboard.hub import Doc


class NoWaitQuoteFeed(QuoteFeed):
    """``no-wait``: decides about the stream before IB could have sent a single tick."""

    async def start(self) -> None:
        """Subscribe and check the ticker at once."""
        self.mode = "waiting"
        self._subscribe()
        # BUG: ib_async returns the Ticker immediately and fills it later, from ticks, so on a
        # real gateway bid/ask are always nan here; the feed falls back to snapshots for good.
        # A mocked IB hands back a populated ticker, so the mocked test goes straight to live.
        assert self._ticker is not None
        if not has_quote(self._ticker):
            self._fall_back()


class CapturedQuoteFeed(QuoteFeed):
    """``nan-to-null``: the tick stream used to send bare NaN, which broke ``JSON.parse`` in
    the browser. The fix sanitised NaN to null (``hub.number``), and the page stopped
    crashing, but the mistake that produced the NaN is still here."""

    def _subscribe(self) -> None:
        self._start_watchdog()
        ticker = self._ticker = self.ib.reqMktData(self.contract)
        # BUG: the values are taken once, when the ticker is still all nan, and the tick
        # handler below re-sends them on every tick instead of reading the ticker again.
        values = quote_values(ticker)

        def on_pending(tickers: set[Ticker]) -> None:
            if any(t is ticker for t in tickers):
                self._on_tick(values, ticker.time)

        self._handler = on_pending
        self.ib.pendingTickersEvent += on_pending


class ResubscribingQuoteFeed(QuoteFeed):
    """``double-subscribe``: ``reqMktData`` for a contract ib_async already streams hands back
    the same Ticker, so resubscribing "is idempotent", isn't it?"""

    def _resubscribe(self) -> None:
        """Request the market data again (after 1101, a reconnect or a silent stream)."""
        # BUG: no _unsubscribe() first. The handler is connected to pendingTickersEvent a second
        # time (eventkit calls a listener once per connection), so every tick is sent twice.
        self._subscribe()


class QueuedCardsTracker(PortfolioTracker):
    """``stale-card``: card repaints are coalesced to the tick rhythm, as in the correct
    tracker, but the queued repaint is a snapshot of the cards taken when it was queued."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued: list[Doc] | None = None

    def _stage_cards(self) -> None:
        # BUG: the payload is built now, not when it is sent. While a position is open there
        # is always one queued; if the position closes before the next tick, that tick
        # repaints the closed card from this snapshot, and nothing paints it away again.
        self._queued = self.rows()

    def _flush_cards(self) -> None:
        if self._queued is not None:
            self.hub.publish({"positions": self._queued})
            self._queued = None


class CachedIdsTracker(PortfolioTracker):
    """``stale-trade-id``: execution ids cached per symbol, so commission reports (which carry
    only the execId) can find the card."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ids_by_symbol: dict[str, tuple[str, int]] = {}

    def _ids_for(self, symbol: str, fill: Fill) -> tuple[str, int]:
        e = fill.execution
        # BUG: setdefault keeps the first trade's ids for the symbol; every later trade (the
        # exit of a round trip) is shown with them. One mocked trade never notices.
        ids = self._ids_by_symbol.setdefault(symbol, (e.execId, e.permId))
        self._symbol_of_exec[ids[0]] = symbol
        return ids


@dataclass(frozen=True)
class Build:
    """Which implementation of each part the dashboard runs."""

    feed: FeedFactory = QuoteFeed
    tracker: TrackerFactory = PortfolioTracker


BUGS: dict[str, Build] = {
    "no-wait": Build(feed=NoWaitQuoteFeed),
    "nan-to-null": Build(feed=CapturedQuoteFeed),
    "stale-card": Build(tracker=QueuedCardsTracker),
    "stale-trade-id": Build(tracker=CachedIdsTracker),
    "double-subscribe": Build(feed=ResubscribingQuoteFeed),
}
MODES = ("fixed", *BUGS)
"""Every mode the dashboard runs in: the correct one and the five bugs."""


def build(mode: str | None) -> Build:
    """The parts for ``mode`` (``None`` or ``"fixed"`` = the correct dashboard)."""
    if mode in (None, "", "fixed"):
        return Build()
    try:
        return BUGS[mode]
    except KeyError:
        raise ValueError(f"unknown bug {mode!r}; choose one of: {', '.join(BUGS)}") from None
