"""The IB side of the dashboard: quotes, positions, the latest trade, and the connection.

Everything here only reads from IB. The dashboard never places, cancels or modifies an order;
the only requests it sends are market data, executions and the start-up sync ib_async does.

- ``QuoteFeed`` streams one contract's quotes into the hub, with a data-mode badge:
  ``waiting`` (subscribed, no tick yet), ``live``, ``snapshot_fallback`` (no tick within
  ``first_tick_timeout``; polls snapshots instead) or ``degraded`` (connection or farm down,
  or a live stream silent for ``stale_after`` seconds with no notice to explain it: then the
  heartbeat also cancels and re-requests the contract's market data, once per silence).
- ``PortfolioTracker`` keeps the position cards and the latest trade per symbol, from
  ``positionEvent``, ``execDetailsEvent``, ``commissionReportEvent`` and ``reqExecutions``.
- ``Supervisor`` connects, reconnects with backoff, and maps IB's notices to the badge:
  1100 / 2103 / 2105 / a dropped socket → degraded; 1102 → nothing to redo; 1101 (data lost)
  → resubscribe; 2104 / 2106 → that farm is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from ib_async import IB, Contract, ExecutionFilter, Fill, Forex, Position, Stock, Ticker

from examples.dashboard.hub import Doc, Hub, number

log = logging.getLogger("dashboard")

Values = dict[str, float | None]
TickListener = Callable[[str, float | None], None]


def make_contract(spec: str) -> Contract:
    """``AAPL`` → a SMART-routed USD stock; ``EUR.USD`` → the IDEALPRO pair."""
    spec = spec.strip().upper()
    if len(spec) == 7 and spec[3] == ".":
        return Forex(spec.replace(".", ""))
    return Stock(spec, "SMART", "USD")


def quote_values(ticker: Ticker) -> Values:
    """Bid, ask and last of a ticker as JSON-safe numbers (null until IB has sent them)."""
    return {"bid": number(ticker.bid), "ask": number(ticker.ask), "last": number(ticker.last)}


def has_quote(ticker: Ticker) -> bool:
    """True when the ticker holds a real bid and ask (ib_async starts every field at nan)."""
    return math.isfinite(ticker.bid) and math.isfinite(ticker.ask)


def mark_price(values: Values) -> float | None:
    """The price a position card marks to: last, else the mid."""
    if values["last"] is not None:
        return values["last"]
    if values["bid"] is not None and values["ask"] is not None:
        return (values["bid"] + values["ask"]) / 2
    return None


def _stamp(when: datetime | None) -> float:
    return when.timestamp() if when is not None else time.time()


class QuoteFeed:
    """Streams one contract's quotes into the hub and keeps its data-mode badge."""

    first_tick_timeout = 10.0
    """Seconds to wait for the first tick before deciding the stream is dead."""
    stale_after = 5.0
    """A live stream silent this long is shown degraded (reason ``stale``) until it ticks."""
    snapshot_interval = 2.0

    def __init__(self, ib: IB, hub: Hub, contract: Contract, on_tick: TickListener) -> None:
        self.ib = ib
        self.hub = hub
        self.contract = contract
        self.on_tick = on_tick
        self.mode = "waiting"
        self.degraded: set[str] = {"socket"}  # until the first connection is up
        self._ticker: Ticker | None = None
        self._handler: Callable[[Any], None] | None = None
        self._first_tick = asyncio.Event()
        self._values: Values = {"bid": None, "ask": None, "last": None}
        self._ts: float | None = None
        self._poller: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._last_tick = 0.0
        self._resubscribed_at = 0.0  # when the heartbeat last resubscribed (monotonic)

    @property
    def symbol(self) -> str:
        """The key of this contract in the state document."""
        return self.contract.symbol

    @property
    def effective_mode(self) -> str:
        """What the badge shows: degraded overrides the feed's own mode."""
        return "degraded" if self.degraded else self.mode

    async def start(self) -> None:
        """Subscribe, then wait for the first real tick before judging the stream: IB fills
        the ticker asynchronously, so right after ``reqMktData`` every field is still nan."""
        self._first_tick.clear()
        self.mode = "waiting"
        self.publish()
        self._subscribe()
        await self._await_first_tick()

    async def restart(self) -> None:
        """Resubscribe after 1101 or a reconnect, then wait for the first tick again."""
        self._first_tick.clear()
        self.mode = "waiting"
        self.publish()
        self._resubscribe()
        await self._await_first_tick()

    def _resubscribe(self) -> None:
        """Cancel the subscription, then request it again: one stream, one handler."""
        self._unsubscribe()
        self._subscribe()

    async def _await_first_tick(self) -> None:
        try:
            await asyncio.wait_for(self._first_tick.wait(), self.first_tick_timeout)
        except TimeoutError:
            self._fall_back()

    def stop(self) -> None:
        """Cancel the subscription, any snapshot polling and the stale-stream watchdog."""
        self._unsubscribe()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def _watch_for_silence(self) -> None:
        """The heartbeat: a live stream with no tick for ``stale_after`` seconds is stale.

        A silence that nothing explains (no socket, link or farm notice) is a stream the
        gateway stopped serving: the heartbeat cancels it and requests it again, once per
        silence (the next tick ends it; a new silence may recover again)."""
        while True:
            await asyncio.sleep(min(0.5, self.stale_after / 4))
            if self.degraded - {"stale"}:
                # A known outage explains the silence, and its own notice ends it (1101 and a
                # reconnect resubscribe): count silence only from when it is over.
                self._last_tick = time.monotonic()
                continue
            silent = time.monotonic() - self._last_tick > self.stale_after
            if self.mode == "live" and self._handler is not None and silent:
                self.degrade("stale")
                # Once per silence: not again until a tick arrives after this resubscription.
                if self._last_tick > self._resubscribed_at and self.ib.isConnected():
                    self._resubscribed_at = time.monotonic()
                    log.warning("%s silent for %g s: resubscribing", self.symbol, self.stale_after)
                    self._resubscribe()

    def degrade(self, reason: str) -> None:
        """Something upstream is down (socket, IB link, a data farm)."""
        if reason not in self.degraded:
            self.degraded.add(reason)
            self.publish()

    def recover(self, reason: str) -> None:
        """That upstream problem is over."""
        if reason in self.degraded:
            self.degraded.discard(reason)
            self.publish()

    def publish(self) -> None:
        """Send this contract's quote with the current badge (and the status when the badge
        changed, so ``status.mode`` always agrees with the quote's)."""
        mode = self.effective_mode
        quote: Doc = {"conId": self.contract.conId, **self._values, "mode": mode, "ts": self._ts}
        update: Doc = {"quotes": {self.symbol: quote}}
        if self.hub.state["status"].get("mode") != mode:
            update["status"] = self.status()
        self.hub.publish(update)

    def status(self) -> Doc:
        """The ``status`` part of the state document."""
        return {"connected": self.ib.isConnected(), "mode": self.effective_mode}

    # --- subscription ----------------------------------------------------------------------------
    def _subscribe(self) -> None:
        self._start_watchdog()
        self._ticker = self.ib.reqMktData(self.contract)
        self._handler = self._on_pending
        self.ib.pendingTickersEvent += self._handler

    def _start_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._last_tick = time.monotonic()
            self._watchdog = asyncio.get_running_loop().create_task(self._watch_for_silence())

    def _unsubscribe(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._handler is not None:
            self.ib.pendingTickersEvent -= self._handler
            self._handler = None
        # After a reconnect ib_async has forgotten the old ticker: nothing to cancel then.
        if (
            self._ticker is not None
            and self.ib.isConnected()
            and self.ib.ticker(self.contract) is self._ticker
        ):
            self.ib.cancelMktData(self.contract)
        self._ticker = None

    def _on_pending(self, tickers: set[Ticker]) -> None:
        ticker = self._ticker
        if ticker is not None and any(t is ticker for t in tickers):
            self._on_tick(quote_values(ticker), ticker.time)

    def _on_tick(self, values: Values, when: datetime | None) -> None:
        if "stale" in self.degraded and values == self._values:
            # IB answers a new reqMktData at once with the last known quote, even while the
            # stream is still stale: only a quote that moved shows it is alive again.
            return
        self._values = values
        self._ts = _stamp(when)
        self._last_tick = time.monotonic()
        if self.mode != "snapshot_fallback":
            self.mode = "live"
        self._first_tick.set()
        self.degraded.discard("stale")  # this tick is published with the recovered badge
        self.publish()
        self.on_tick(self.symbol, mark_price(values))

    def _fall_back(self) -> None:
        """No tick at all: poll snapshots instead of streaming, and say so on the badge."""
        self._unsubscribe()
        self.mode = "snapshot_fallback"
        self.publish()
        self._poller = asyncio.get_running_loop().create_task(self._poll_snapshots())

    async def _poll_snapshots(self) -> None:
        while True:
            if self.ib.isConnected():
                try:
                    tickers = await self.ib.reqTickersAsync(self.contract)
                except ConnectionError:
                    tickers = []
                if tickers:
                    self._on_tick(quote_values(tickers[0]), tickers[0].time)
            await asyncio.sleep(self.snapshot_interval)


class PortfolioTracker:
    """Position cards and the latest trade per symbol."""

    def __init__(self, ib: IB, hub: Hub) -> None:
        self.ib = ib
        self.hub = hub
        self.positions: dict[str, Doc] = {}
        self.last_trades: dict[str, Doc] = {}
        self._symbol_of_exec: dict[str, str] = {}
        self._cards_dirty = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self) -> None:
        """Listen to ib_async's account events (once; they survive reconnects)."""
        self.ib.positionEvent += self._on_position
        self.ib.execDetailsEvent += self._on_exec_details
        self.ib.commissionReportEvent += self._on_commission

    def load(self) -> None:
        """After (re)connecting: ib_async's start-up sync fetched positions and today's fills."""
        self.positions = {
            p.contract.symbol: self._card(p) for p in self.ib.positions() if p.position
        }
        self.hub.publish({"positions": self.rows()})
        latest: dict[str, Fill] = {}
        for fill in sorted(self.ib.fills(), key=lambda f: f.execution.time):
            latest[fill.contract.symbol] = fill
        for fill in latest.values():
            self._record_fill(fill)

    def rows(self) -> list[Doc]:
        """The position cards, as the ``positions`` list of the state document."""
        return [dict(card) for _, card in sorted(self.positions.items())]

    # --- positions -------------------------------------------------------------------------------
    def _card(self, pos: Position, mark: float | None = None) -> Doc:
        card: Doc = {
            "symbol": pos.contract.symbol,
            "conId": pos.contract.conId,
            "qty": pos.position,
            "avgCost": number(pos.avgCost),
            "mark": mark,
            "unrealized": None,
            "multiplier": float(pos.contract.multiplier or 1),
        }
        self._mark(card, mark)
        return card

    @staticmethod
    def _mark(card: Doc, mark: float | None) -> None:
        card["mark"] = mark
        if mark is not None and card["avgCost"] is not None:
            per_unit = mark * card["multiplier"] - card["avgCost"]
            card["unrealized"] = round(per_unit * card["qty"], 2)

    def _on_position(self, pos: Position) -> None:
        symbol = pos.contract.symbol
        if pos.position == 0:
            self.positions.pop(symbol, None)
        else:
            old = self.positions.get(symbol)
            self.positions[symbol] = self._card(pos, old["mark"] if old else None)
        # A position change goes out at once, so a closed card disappears without delay.
        self.hub.publish({"positions": self.rows()})
        if pos.position:
            self._stage_cards()  # the changed card gets its mark and P&L with the next tick
        # The gateway tells only the order's owner about its fills; ask for them.
        self._spawn(self._refresh_trade(pos.contract))

    def on_tick(self, symbol: str, mark: float | None) -> None:
        """A quote tick: re-mark the card. Card repaints ride on the tick rhythm (one per
        quote frame at most), so a refresh staged now goes out with the next tick."""
        self._flush_cards()
        card = self.positions.get(symbol)
        if card is not None and mark is not None:
            self._mark(card, mark)
            self._stage_cards()

    def _stage_cards(self) -> None:
        """Queue a card repaint for the next tick; it is built when it is sent."""
        self._cards_dirty = True

    def _flush_cards(self) -> None:
        if self._cards_dirty:
            self._cards_dirty = False
            self.hub.publish({"positions": self.rows()})

    # --- trades ----------------------------------------------------------------------------------
    async def _refresh_trade(self, contract: Contract) -> None:
        try:
            fills = await self.ib.reqExecutionsAsync(ExecutionFilter(symbol=contract.symbol))
        except ConnectionError:
            return
        mine = [f for f in fills if f.contract.conId == contract.conId]
        if mine:
            # Stable sort: executions within the same second keep the gateway's order.
            self._record_fill(sorted(mine, key=lambda f: f.execution.time)[-1])

    def _on_exec_details(self, trade: Any, fill: Fill) -> None:
        self._record_fill(fill)

    def _ids_for(self, symbol: str, fill: Fill) -> tuple[str, int]:
        """The ids to show for a fill (and remember which symbol its execId belongs to, so a
        commission report, which carries only the execId, finds its card)."""
        e = fill.execution
        self._symbol_of_exec[e.execId] = symbol
        return e.execId, e.permId

    def _commission(self, exec_id: str) -> float | None:
        for f in self.ib.fills():
            if f.execution.execId == exec_id and f.commissionReport.execId:
                return number(f.commissionReport.commission)
        return None

    def _record_fill(self, fill: Fill) -> None:
        symbol = fill.contract.symbol
        exec_id, perm_id = self._ids_for(symbol, fill)
        e = fill.execution
        trade: Doc = {
            "execId": exec_id,
            "permId": perm_id,
            "side": e.side,
            "qty": e.shares,
            "price": number(e.price),
            "time": e.time.timestamp(),
            "commission": self._commission(exec_id),
        }
        if self.last_trades.get(symbol) != trade:
            self.last_trades[symbol] = trade
            self.hub.publish({"last_trade": {symbol: trade}})

    def _on_commission(self, trade: Any, fill: Fill, report: Any) -> None:
        symbol = self._symbol_of_exec.get(report.execId)
        shown = self.last_trades.get(symbol or "")
        if symbol and shown and shown["execId"] == report.execId:
            self.last_trades[symbol] = {**shown, "commission": number(report.commission)}
            self.hub.publish({"last_trade": {symbol: self.last_trades[symbol]}})

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


FeedFactory = Callable[[IB, Hub, Contract, TickListener], QuoteFeed]
TrackerFactory = Callable[[IB, Hub], PortfolioTracker]

# Farm notices: code → True when it means the farm is down.
FARM_NOTICES = {2103: True, 2105: True, 2104: False, 2106: False}


class Supervisor:
    """Connects, keeps the dashboard connected, and turns IB's notices into the badge."""

    backoff_start = 0.5
    backoff_max = 5.0

    def __init__(
        self,
        hub: Hub,
        contract: Contract,
        host: str,
        port: int,
        client_id: int,
        feed_factory: FeedFactory = QuoteFeed,
        tracker_factory: TrackerFactory = PortfolioTracker,
        ib: IB | None = None,
    ) -> None:
        self.hub = hub
        self.contract = contract
        self.host, self.port, self.client_id = host, port, client_id
        self.ib = ib if ib is not None else IB()
        self.tracker = tracker_factory(self.ib, hub)
        self.feed = feed_factory(self.ib, hub, contract, self.tracker.on_tick)
        self._lost = asyncio.Event()
        self._stopping = False
        self._feed_task: asyncio.Task[None] | None = None
        self._subscribed_once = False
        self.ib.errorEvent += self._on_error
        self.ib.disconnectedEvent += self._on_disconnected
        self.tracker.attach()

    async def run(self) -> None:
        """Connect, serve the session, and reconnect with backoff whenever it drops."""
        backoff = self.backoff_start
        while not self._stopping:
            try:
                await self.ib.connectAsync(self.host, self.port, clientId=self.client_id, timeout=4)
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("cannot connect to %s:%s (%s); retrying", self.host, self.port, exc)
                self._publish_status()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max)
                continue
            self._lost.clear()
            try:
                await self._on_connected()
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("gateway lost while starting the session (%s); reconnecting", exc)
                self.ib.disconnect()
                await asyncio.sleep(backoff)
                continue
            backoff = self.backoff_start
            await self._lost.wait()

    def stop(self) -> None:
        """Stop reconnecting, cancel subscriptions and disconnect."""
        self._stopping = True
        if self._feed_task is not None:
            self._feed_task.cancel()
        with contextlib.suppress(Exception):
            self.feed.stop()
        self.ib.disconnect()
        self._lost.set()

    async def _on_connected(self) -> None:
        if not self.contract.conId:
            await self.ib.qualifyContractsAsync(self.contract)
        self.feed.recover("socket")
        self.tracker.load()
        self._publish_status()
        if self.contract.conId:
            self._resubscribe()
        else:
            log.error("the gateway does not know %s: no quotes, positions only", self.contract)

    def _resubscribe(self) -> None:
        first = not self._subscribed_once
        self._subscribed_once = True
        if self._feed_task is not None and not self._feed_task.done():
            self._feed_task.cancel()
        coro = self.feed.start() if first else self.feed.restart()
        self._feed_task = asyncio.get_running_loop().create_task(coro)

    def _on_disconnected(self) -> None:
        if self._stopping:
            return
        self.feed.degrade("socket")
        self._publish_status()
        self._lost.set()

    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        if code == 1100:
            self.feed.degrade("ib-link")
        elif code == 1102:
            self.feed.recover("ib-link")  # data maintained: the subscription still streams
        elif code == 1101:
            self.feed.recover("ib-link")  # data lost: the gateway forgot our subscription
            self._resubscribe()
        elif code in FARM_NOTICES:
            # "…is broken:usfarm" / "…is OK:usfarm.nj": one badge reason per farm family.
            farm = message.rsplit(":", 1)[-1].split(".")[0]
            if FARM_NOTICES[code]:
                self.feed.degrade(f"farm:{farm}")
            else:
                self.feed.recover(f"farm:{farm}")
        else:
            return
        self._publish_status()

    def _publish_status(self) -> None:
        self.hub.publish({"status": self.feed.status()})
