"""The dashboard's state document and its fan-out to SSE and WebSocket clients.

Every message the dashboard sends is a (partial) document of one shape::

    {"quotes": {SYM: {...}}, "positions": [...], "last_trade": {SYM: {...}}, "status": {...}}

An update carries only the keys that changed; ``positions`` is always the full list. The hub
keeps the merge of every update it published, which ``/api/state`` serves and every new
subscriber receives first, so a late client sees exactly what an early one has painted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

Doc = dict[str, Any]

# Keys whose value is a map per symbol: an update replaces the entries it names.
PER_SYMBOL = ("quotes", "last_trade")
QUEUE_LIMIT = 1000
"""Messages a subscriber may lag behind before it is cut off (a stuck tab must not grow
memory without bound)."""


def number(value: float | int | None) -> float | None:
    """A JSON-safe number: JSON has no NaN, so a value IB has not sent yet is null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def encode(doc: Doc) -> str:
    """Serialise a document; ``allow_nan=False`` so a stray NaN is an error, not bad JSON."""
    return json.dumps(doc, allow_nan=False, separators=(",", ":"))


def for_symbols(update: Doc, symbols: Iterable[str] | None) -> Doc:
    """The part of ``update`` about ``symbols`` (all of it when ``symbols`` is None)."""
    if symbols is None:
        return update
    wanted = set(symbols)
    out: Doc = {}
    for key, value in update.items():
        if key in PER_SYMBOL:
            out[key] = {s: v for s, v in value.items() if s in wanted}
        elif key == "positions":
            out[key] = [p for p in value if p.get("symbol") in wanted]
        else:
            out[key] = value
    return out


class Subscription:
    """One client's queue of updates; closed by the hub when the client lags too far."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Doc | None] = asyncio.Queue(QUEUE_LIMIT)
        self.symbols: set[str] | None = None

    async def next(self, timeout: float) -> Doc | None:
        """The next update, or None after ``timeout`` seconds (time for a keep-alive)."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        if item is None:
            raise ConnectionAbortedError("subscriber cut off (too far behind, or shutdown)")
        return item


class Hub:
    """The full state document plus the set of live subscribers."""

    def __init__(self) -> None:
        self.state: Doc = {
            "quotes": {},
            "positions": [],
            "last_trade": {},
            "status": {"connected": False, "mode": "connecting"},
        }
        self._subs: set[Subscription] = set()

    def publish(self, update: Doc) -> None:
        """Merge ``update`` into the state and queue it for every subscriber."""
        for key, value in update.items():
            if key in PER_SYMBOL:
                self.state[key].update(value)
            else:
                self.state[key] = value
        for sub in list(self._subs):
            try:
                sub.queue.put_nowait(update)
            except asyncio.QueueFull:
                self._cut_off(sub)

    def snapshot(self, symbols: Iterable[str] | None = None) -> Doc:
        """The full state document (a copy), optionally for some symbols only."""
        return for_symbols(json.loads(encode(self.state)), symbols)

    def close(self) -> None:
        """End every subscriber's stream (at shutdown: open SSE streams and WebSockets would
        otherwise hold the server until its graceful-shutdown timeout)."""
        for sub in list(self._subs):
            self._cut_off(sub)

    def _cut_off(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        with contextlib.suppress(asyncio.QueueEmpty):
            sub.queue.get_nowait()  # make room for the sentinel
        sub.queue.put_nowait(None)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Register a subscriber for the duration of a ``with`` block."""
        sub = Subscription()
        self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        """How many clients are listening (for the status line and tests)."""
        return len(self._subs)
