"""Observations: what one endpoint showed at one moment, and how facts are extracted.

A watcher stamps every message (or DOM change) on arrival with a monotonic and a
wall-clock time and turns it into an :class:`Observation` with :class:`Extractor`.
A message that says nothing about a fact leaves that fact ``None``; a flat position
is quantity ``0.0``; a shown value that is not a real number (null, NaN, a placeholder)
is ``None`` inside the fact. Garbage becomes an observation with ``error`` set.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from harness_lib.models import finite

from .spec import Endpoint, split_attr

__all__ = ["Extractor", "Observation", "PositionSeen", "QuoteSeen", "number"]


@dataclass(slots=True, frozen=True)
class QuoteSeen:
    """The quote as the stack showed it; numbers are None when not a real number."""

    bid: float | None
    ask: float | None
    last: float | None = None
    mode: str | None = None
    shown: tuple[tuple[str, Any], ...] = ()
    """The raw shown values (for messages): (("bid", None), ("ask", "NaN"), ...)."""

    def describe(self) -> str:
        """``bid null, ask 'NaN', mode 'live'`` as the stack showed them."""
        parts = [f"{k} {_fmt_raw(v)}" for k, v in self.shown]
        return ", ".join(parts) if parts else "no quote shown"


@dataclass(slots=True, frozen=True)
class PositionSeen:
    """The contract's position as shown: 0.0 flat, None when the shown value is no number."""

    quantity: float | None
    shown: Any = None


@dataclass(slots=True)
class Observation:
    """What one endpoint showed at one moment (stamped on arrival in Python)."""

    endpoint: str
    t_mono: float
    t_wall: float
    """Epoch seconds."""
    quote: QuoteSeen | None = None
    position: PositionSeen | None = None
    trade_ids: tuple[str, ...] | None = None
    error: str | None = None
    raw: str = ""
    """A short, secret-free excerpt of what arrived (for the store)."""
    digest: str = ""
    """A hash of the whole message (JSON kinds), so a message delivered twice is seen as one
    (the drills' duplicate rule); empty for DOM observations, which are states, not messages."""

    @property
    def says_anything(self) -> bool:
        """True when the observation carries at least one fact."""
        return not (self.quote is None and self.position is None and self.trade_ids is None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the store."""
        q = self.quote
        return {
            "endpoint": self.endpoint,
            "t_mono": self.t_mono,
            "t_wall": self.t_wall,
            "bid": q.bid if q else None,
            "ask": q.ask if q else None,
            "last": q.last if q else None,
            "mode": q.mode if q else None,
            "has_quote": q is not None,
            "position": self.position.quantity if self.position else None,
            "has_position": self.position is not None,
            "trade_ids": list(self.trade_ids) if self.trade_ids is not None else None,
            "error": self.error,
            "raw": self.raw,
        }


def _fmt_raw(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else repr(v)
    return repr(v) if isinstance(v, str) else str(v)


def number(v: Any, placeholders: tuple[str, ...] = ()) -> float | None:
    """A shown value as a real number, or None for null, NaN, placeholders and text."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return finite(v)
    if isinstance(v, str):
        s = v.strip()
        if s in placeholders or v in placeholders:
            return None
        try:
            return finite(float(s.replace(",", "")))
        except ValueError:
            return None
    return None


def _ids(v: Any) -> tuple[str, ...] | None:
    """Flatten shown ids: a value or (nested) list; nulls dropped; 123.0 -> '123'."""
    if v is None:
        return None
    out: list[str] = []

    def walk(x: Any) -> None:
        if x is None or (isinstance(x, str) and not x.strip()):
            return
        if isinstance(x, (list, tuple)):
            for y in x:
                walk(y)
        elif isinstance(x, float) and x.is_integer():
            out.append(str(int(x)))
        elif isinstance(x, (str, int, float)) and not isinstance(x, bool):
            out.append(str(x).strip())
        else:
            raise ValueError(f"trades.ids is {type(x).__name__}, expected ids (text or numbers)")

    walk(v)
    return tuple(out)


class Extractor:
    """Compiled expressions of one bound endpoint; turns documents into facts."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.is_browser = ep.kind == "browser"
        if not self.is_browser:
            import jmespath

            def comp(expr: str | None) -> Any:
                return None if expr is None else jmespath.compile(expr)

            q, p, t = ep.quote, ep.position, ep.trades
            self._q = (
                (comp(q.select), comp(q.bid), comp(q.ask), comp(q.last), comp(q.mode))
                if q
                else None
            )
            self._p = (comp(p.scope), comp(p.select), comp(p.quantity)) if p else None
            self._t = comp(t.ids) if t else None

    # --- JSON kinds ------------------------------------------------------------------------
    def from_text(self, text: str | bytes, t_mono: float, t_wall: float) -> Observation:
        """One SSE event / WebSocket message / HTTP document -> an observation."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                return self._garbage("not UTF-8 text", repr(text[:60]), t_mono, t_wall)
        excerpt = self.ep.scrub(text, generic=False)[:200]  # scrub first: no cut token
        try:
            doc = json.loads(text)
        except ValueError as err:
            return self._garbage(f"not JSON ({err.args[0].split(':')[0]})", excerpt, t_mono, t_wall)
        if not isinstance(doc, dict):
            return self._garbage(
                f"wrong shape: a JSON {type(doc).__name__}, expected an object",
                excerpt,
                t_mono,
                t_wall,
            )
        obs = Observation(
            self.ep.name,
            t_mono,
            t_wall,
            raw=excerpt,
            digest=hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest(),
        )
        try:
            self._extract(doc, obs)
        except ValueError as err:
            obs.error = f"wrong shape: {err}"
        return obs

    def _garbage(self, why: str, excerpt: str, t_mono: float, t_wall: float) -> Observation:
        return Observation(self.ep.name, t_mono, t_wall, error=why, raw=excerpt)

    def _extract(self, doc: dict[str, Any], obs: Observation) -> None:
        ep = self.ep
        if self._q is not None and ep.quote is not None:
            sel, bid, ask, last, mode = self._q
            node = sel.search(doc)
            if node is not None:
                if not isinstance(node, dict):
                    raise ValueError(f"quote.select gives a {type(node).__name__}, not an object")
                obs.quote = self._quote(
                    {
                        "bid": bid.search(node),
                        "ask": ask.search(node),
                        "last": last.search(node) if last else None,
                        "mode": mode.search(node) if mode else None,
                    },
                    has_last=last is not None,
                    has_mode=mode is not None,
                )
        if self._p is not None:
            scope, sel, qty = self._p
            node = doc if scope is None else scope.search(doc)
            if node is not None:
                card = sel.search(node)
                if card is None:
                    obs.position = PositionSeen(0.0, None)
                else:
                    shown = qty.search(card)
                    if isinstance(shown, (dict, list)):
                        raise ValueError("position.quantity is not a single value")
                    obs.position = PositionSeen(number(shown), shown)
        if self._t is not None:
            obs.trade_ids = _ids(self._t.search(doc))

    def _quote(self, shown: dict[str, Any], *, has_last: bool, has_mode: bool) -> QuoteSeen:
        assert self.ep.quote is not None
        ph = self.ep.quote.placeholders
        for k in ("bid", "ask", "last"):
            if isinstance(shown[k], (dict, list)):
                raise ValueError(f"quote.{k} is a {type(shown[k]).__name__}, not a value")
        keys = ["bid", "ask"] + (["last"] if has_last else []) + (["mode"] if has_mode else [])
        mode = shown["mode"]
        return QuoteSeen(
            bid=number(shown["bid"], ph),
            ask=number(shown["ask"], ph),
            last=number(shown["last"], ph),
            mode=None if mode is None else str(mode),
            shown=tuple((k, shown[k]) for k in keys),
        )

    # --- browser ----------------------------------------------------------------------------
    def from_dom(self, facts: dict[str, Any], t_mono: float, t_wall: float) -> Observation:
        """The raw texts the page script read (see ``watch.DOM_READER``) -> an observation.

        A page always shows everything: an absent quote container is a quote with nothing
        shown, an absent position card is flat, no id elements is "no ids shown".
        """
        obs = Observation(
            self.ep.name,
            t_mono,
            t_wall,
            raw=self.ep.scrub(json.dumps(facts, default=str), generic=False)[:200],
        )
        ep = self.ep
        if ep.quote is not None:
            q = facts.get("quote")
            if q is None:
                obs.quote = QuoteSeen(None, None, shown=(("quote", None),))
            else:
                obs.quote = self._quote(
                    {k: q.get(k) for k in ("bid", "ask", "last", "mode")},
                    has_last=ep.quote.last is not None,
                    has_mode=ep.quote.mode is not None,
                )
        if ep.position is not None:
            card = facts.get("position")
            obs.position = (
                PositionSeen(0.0, None)
                if card is None
                else PositionSeen(number(card.get("quantity")), card.get("quantity"))
            )
        if ep.trades is not None:
            obs.trade_ids = tuple(str(x).strip() for x in facts.get("ids") or [] if str(x).strip())
        return obs

    def dom_spec(self) -> dict[str, Any]:
        """The selectors for the page script, each split into (selector, attribute)."""
        ep = self.ep

        def sa(sel: str | None) -> list[Any] | None:
            return None if sel is None else list(split_attr(sel))

        out: dict[str, Any] = {}
        if ep.quote is not None:
            q = ep.quote
            out["quote"] = {
                "select": q.select,
                "bid": sa(q.bid),
                "ask": sa(q.ask),
                "last": sa(q.last),
                "mode": sa(q.mode),
            }
        if ep.position is not None:
            out["position"] = {"select": ep.position.select, "quantity": sa(ep.position.quantity)}
        if ep.trades is not None:
            out["ids"] = sa(ep.trades.ids)
        return out
