"""The stack-endpoint declaration: what a user's own stack emits and where the facts are.

One ``[[stack]]`` table in harness.toml (or one object in ``HARNESS_STACK`` JSON, or in a
``--stack-file``) becomes one :class:`Endpoint`. :func:`parse_stack` validates every key
when the config loads; anything wrong raises :class:`StackSpecError` whose message is one
line naming the key, in the form every setting's error takes, e.g.::

    invalid stack[0].quote.bid from harness.toml: 'bid[' (not a JMESPath expression: ...)

The config's ``stack`` setting (``harness_lib.config``) turns its ``path``, ``value`` and
``why`` into that setting's :class:`~harness_lib.config.ConfigError`.

Expressions are JMESPath for the JSON kinds (sse, websocket, http) and CSS selectors
for ``browser``. ``{symbol}``, ``{conId}`` and ``{localSymbol}`` are substituted with the
harness contract's values (:meth:`Endpoint.bind`) before the watchers compile them.

Headers carry tokens and are secrets: ``repr``, :meth:`Endpoint.public` and
:func:`scrub` never show them. jmespath is imported lazily (start-up time of
``harness run`` without a stack matters).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness_lib.redact import MASK as REDACTED
from harness_lib.redact import redact_text, redact_url, secrets_in_url, with_encodings

__all__ = [
    "DEFAULT_HOLD",
    "DEFAULT_INTERVAL",
    "DEFAULT_PLACEHOLDERS",
    "DEFAULT_POSITION_DEADLINE",
    "KINDS",
    "Endpoint",
    "PositionFacts",
    "QuoteFacts",
    "StackSpecError",
    "TradeFacts",
    "parse_stack",
    "redact",
    "scrub",
    "split_attr",
]

KINDS = ("sse", "websocket", "http", "browser")
JSON_KINDS = frozenset({"sse", "websocket", "http"})
DEFAULT_POSITION_DEADLINE = 5.0
"""Seconds after a fill within which the stack must show the position (or its absence)."""
DEFAULT_HOLD = 3.0
"""Seconds a cleared position must stay cleared; a repaint in this window fails."""
DEFAULT_INTERVAL = 0.25
"""Poll period of an ``http`` endpoint, in seconds."""
DEFAULT_PLACEHOLDERS = ("", "-", "--", "—", "N/A", "n/a")
"""Shown values that mean "no number" (besides null and NaN)."""

_SUBST = re.compile(r"\{(symbol|conId|localSymbol)\}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ATTR = re.compile(r"[A-Za-z_][A-Za-z0-9_:.-]*")
# Values validated with placeholders for the contract, compiled for real at run time.
_SAMPLE = {"symbol": "AAPL", "conId": "265598", "localSymbol": "AAPL"}


def redact(text: str) -> str:
    """The project's redaction (``harness_lib.redact``) for anything that may carry a
    secret (URLs, error text); the one call site of the shared rule."""
    return redact_url(text)


def scrub(text: str, secrets: Sequence[str], *, generic: bool = True) -> str:
    """``text`` with every secret (and every token-like part of one) replaced, then redacted.

    Header values are replaced literally first, so even a short token that the generic
    rule would not recognise never reaches a log, the store, a report or a notification.
    ``generic=False`` skips the generic token rule: for excerpts of the stack's own
    payloads, where long ordinary words (``snapshot_fallback``) must stay readable.
    """
    out = redact_text(str(text), _secret_parts(secrets))
    return redact(out) if generic else out


def _secret_parts(secrets: Sequence[str]) -> set[str]:
    """Each secret, its words (``Bearer abc`` -> ``abc``), in raw and percent-encoded forms."""
    parts: set[str] = set()
    for s in secrets:
        s = str(s).strip()
        if not s:
            continue
        parts.add(s)
        # "Bearer abc123": the credential alone may be echoed by a server or a library.
        for word in s.split():
            if len(word) >= 4 and word.lower() not in {"bearer", "basic", "token", "digest"}:
                parts.add(word)
    return with_encodings(parts)


class StackSpecError(ValueError):
    """An invalid stack declaration. ``str()`` is one line naming the key and the fix.

    ``key`` is the full key (``stack[0].quote.bid``), ``path`` the part after ``stack``
    (``[0].quote.bid``), ``value`` that key's value (header values already hidden) and
    ``why`` what is wrong and what is allowed.
    """

    def __init__(self, key: str, source: str, value: Any, why: str) -> None:
        self.key = key
        self.path = key.removeprefix("stack")
        self.source = source
        self.value = value
        self.why = " ".join(why.splitlines())
        msg = f"invalid {key} from {source}: {_show(value)} ({why})"
        super().__init__(" ".join(msg.splitlines()))


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def split_attr(selector: str) -> tuple[str, str | None]:
    """``"#mode@data-mode"`` -> ``("#mode", "data-mode")``; no ``@attr`` -> ``(sel, None)``.

    Only a trailing ``@name`` counts, so ``a[href="x@y"]`` stays a plain selector.
    """
    head, at, tail = selector.rpartition("@")
    if at and head.strip() and _ATTR.fullmatch(tail):
        return head.strip(), tail
    return selector.strip(), None


@dataclass(frozen=True, slots=True)
class QuoteFacts:
    """Where the contract's quote is: a container (``select``) and fields relative to it."""

    select: str
    bid: str
    ask: str
    last: str | None = None
    mode: str | None = None
    live: tuple[str, ...] = ("live",)
    placeholders: tuple[str, ...] = DEFAULT_PLACEHOLDERS


@dataclass(frozen=True, slots=True)
class PositionFacts:
    """Where the contract's position is. ``scope`` null => says nothing; ``select`` null => flat."""

    select: str
    quantity: str
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """The id(s) the stack shows for the contract's latest trade."""

    ids: str


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """One declared endpoint of the user's stack. Immutable; headers are secret."""

    name: str
    kind: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    subscribe: str | None = None
    interval: float = DEFAULT_INTERVAL
    quote: QuoteFacts | None = None
    position: PositionFacts | None = None
    trades: TradeFacts | None = None
    position_deadline: float = DEFAULT_POSITION_DEADLINE
    hold: float = DEFAULT_HOLD
    tolerance: float | None = None
    """Allowed absolute price difference from a broker quote; None: 0.1% of the price."""

    @property
    def secrets(self) -> tuple[str, ...]:
        """The header values and any secret in the URL (what :func:`scrub` hides)."""
        return (*self.headers.values(), *sorted(secrets_in_url(self.url)))

    @property
    def safe_url(self) -> str:
        """The URL with secrets hidden, for messages."""
        return scrub(self.url, self.secrets)

    def scrub(self, text: str, *, generic: bool = True) -> str:
        """``text`` without this endpoint's secrets (see :func:`scrub`)."""
        return scrub(text, self.secrets, generic=generic)

    def public(self) -> dict[str, Any]:
        """JSON-ready declaration with header values hidden (for reports and the store)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "url": self.safe_url,
            "headers": {k: REDACTED for k in self.headers},
            "position_deadline": self.position_deadline,
            "hold": self.hold,
            "tolerance": self.tolerance,
        }
        if self.subscribe is not None:
            out["subscribe"] = self.scrub(self.subscribe)
        if self.kind == "http":
            out["interval"] = self.interval
        for key in ("quote", "position", "trades"):
            facts = getattr(self, key)
            if facts is not None:
                out[key] = {
                    f: list(v) if isinstance(v, tuple) else v
                    for f in facts.__slots__
                    if (v := getattr(facts, f)) is not None
                }
        return out

    def bind(self, *, symbol: str, con_id: int | str, local_symbol: str) -> Endpoint:
        """A copy with ``{symbol}``, ``{conId}`` and ``{localSymbol}`` substituted."""
        values = {"symbol": symbol, "conId": str(con_id), "localSymbol": local_symbol or symbol}

        def sub(text: str | None) -> str | None:
            return None if text is None else _SUBST.sub(lambda m: values[m.group(1)], text)

        def sub_facts(facts: Any) -> Any:
            if facts is None:
                return None
            changes = {
                f: sub(getattr(facts, f))
                for f in facts.__slots__
                if isinstance(getattr(facts, f), str)
            }
            return replace(facts, **changes)

        return replace(
            self,
            url=sub(self.url) or self.url,
            subscribe=sub(self.subscribe),
            quote=sub_facts(self.quote),
            position=sub_facts(self.position),
            trades=sub_facts(self.trades),
        )

    def __repr__(self) -> str:
        return f"Endpoint({self.name!r}, {self.kind}, {self.safe_url!r})"


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

_TOP_KEYS = (
    "name",
    "kind",
    "url",
    "headers",
    "subscribe",
    "interval",
    "quote",
    "position",
    "trades",
    "position_deadline",
    "hold",
    "tolerance",
)
_QUOTE_KEYS = ("select", "bid", "ask", "last", "mode", "live", "placeholders")
_POSITION_KEYS = ("scope", "select", "quantity")
_TRADE_KEYS = ("ids",)


class _Ctx:
    """Names keys as ``stack[i].quote.bid`` and raises the one-line error."""

    def __init__(self, source: str, index: int, kind: str | None = None) -> None:
        self.source = source
        self.index = index
        self.kind = kind

    def key(self, *parts: str) -> str:
        return f"stack[{self.index}]" + "".join("." + p for p in parts)

    def fail(self, parts: tuple[str, ...], value: Any, why: str) -> StackSpecError:
        return StackSpecError(self.key(*parts), self.source, value, why)


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], c: _Ctx, *at: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=2)
            tail = (
                f"did you mean {' or '.join(map(repr, close))}?"
                if close
                else ("known keys: " + ", ".join(allowed))
            )
            raise StackSpecError(c.key(*at, str(key)), c.source, key, "unknown key; " + tail)


def _string(v: Any, c: _Ctx, *at: str, required: bool = True) -> str | None:
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip():
        raise c.fail(at, v, "expected a non-empty string" + ("" if required else " or unset"))
    return v.strip()


def _seconds(v: Any, c: _Ctx, *at: str, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise c.fail(at, v, "expected a number of seconds > 0 and <= 3600")
    try:
        x = float(v)
    except ValueError:
        raise c.fail(at, v, "expected a number of seconds > 0 and <= 3600") from None
    if not (math.isfinite(x) and 0 < x <= 3600):
        raise c.fail(at, v, "expected a number of seconds > 0 and <= 3600")
    return x


def _expr(v: Any, c: _Ctx, *at: str, required: bool = True) -> str | None:
    """A JMESPath expression (JSON kinds) or a CSS selector (browser), validated."""
    text = _string(v, c, *at, required=required)
    if text is None:
        return None
    sample = _SUBST.sub(lambda m: _SAMPLE[m.group(1)], text)
    if c.kind == "browser":
        sel, _attr = split_attr(sample)
        if not sel or sel.count("[") != sel.count("]") or sel.count("(") != sel.count(")"):
            raise c.fail(
                at,
                text,
                "not a CSS selector: unbalanced brackets; use e.g. "
                "'#quote-{symbol} .bid' or '.mode@data-mode'",
            )
        return text
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(sample)
    except JMESPathError as err:
        why = " ".join(str(err).split())[:120]
        raise c.fail(at, text, f"not a JMESPath expression: {why}; see jmespath.org") from None
    return text


def _words(v: Any, c: _Ctx, *at: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if v is None:
        return default
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(w, str) for w in v):
        raise c.fail(at, v, "expected a list of strings")
    return tuple(v)


def _table(v: Any, c: _Ctx, key: str) -> Mapping[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise c.fail((key,), v, f"expected a table [stack.{key}]")
    return v


def _endpoint(raw: Any, c: _Ctx) -> Endpoint:
    if not isinstance(raw, Mapping):
        raise StackSpecError(c.key(), c.source, raw, "expected a [[stack]] table")
    _check_keys(raw, _TOP_KEYS, c)
    name = _string(raw.get("name"), c, "name")
    assert name is not None
    if not _NAME.fullmatch(name):
        raise c.fail(("name",), name, "expected letters, digits, '_', '.' or '-' (max 64)")
    kind = _string(raw.get("kind"), c, "kind")
    if kind not in KINDS:
        raise c.fail(("kind",), kind, "expected one of " + " | ".join(KINDS))
    c.kind = kind
    url = _string(raw.get("url"), c, "url")
    assert url is not None
    schemes = ("ws://", "wss://") if kind == "websocket" else ("http://", "https://")
    if not url.lower().startswith(schemes) or len(url) <= len(schemes[0]) + 1:
        raise StackSpecError(
            c.key("url"), c.source, redact(url), f"a {kind} URL starts with {' or '.join(schemes)}"
        )

    headers_raw = raw.get("headers") or {}
    if not isinstance(headers_raw, Mapping):
        raise c.fail(("headers",), REDACTED, "expected a table of header names to values")
    headers: dict[str, str] = {}
    for hk, hv in headers_raw.items():
        if not isinstance(hk, str) or not _HEADER_NAME.fullmatch(hk):
            raise c.fail(("headers",), hk, "not a valid HTTP header name")
        if not isinstance(hv, str) or "\n" in hv or "\r" in hv:
            raise c.fail(("headers", hk), REDACTED, "expected a one-line string value")
        headers[hk] = hv

    subscribe = raw.get("subscribe")
    if subscribe is not None:
        if kind != "websocket":
            raise c.fail(
                ("subscribe",),
                subscribe,
                "only a websocket endpoint sends a first "
                'message; remove it or use kind = "websocket"',
            )
        if not isinstance(subscribe, str):
            raise c.fail(("subscribe",), subscribe, "expected the message text (a string)")
    interval = raw.get("interval")
    if interval is not None and kind != "http":
        raise c.fail(("interval",), interval, "only an http endpoint is polled; remove it")
    interval_s = _seconds(interval, c, "interval", default=DEFAULT_INTERVAL)

    quote = position = trades = None
    q = _table(raw.get("quote"), c, "quote")
    if q is not None:
        _check_keys(q, _QUOTE_KEYS, c, "quote")
        quote = QuoteFacts(
            select=_expr(q.get("select"), c, "quote", "select") or "",
            bid=_expr(q.get("bid"), c, "quote", "bid") or "",
            ask=_expr(q.get("ask"), c, "quote", "ask") or "",
            last=_expr(q.get("last"), c, "quote", "last", required=False),
            mode=_expr(q.get("mode"), c, "quote", "mode", required=False),
            live=_words(q.get("live"), c, "quote", "live", default=("live",)),
            placeholders=_words(
                q.get("placeholders"), c, "quote", "placeholders", default=DEFAULT_PLACEHOLDERS
            ),
        )
        if not quote.live:
            raise c.fail(("quote", "live"), [], "expected at least one value meaning live")
    p = _table(raw.get("position"), c, "position")
    if p is not None:
        _check_keys(p, _POSITION_KEYS, c, "position")
        position = PositionFacts(
            scope=_expr(p.get("scope"), c, "position", "scope", required=False),
            select=_expr(p.get("select"), c, "position", "select") or "",
            quantity=_expr(p.get("quantity"), c, "position", "quantity") or "",
        )
    t = _table(raw.get("trades"), c, "trades")
    if t is not None:
        _check_keys(t, _TRADE_KEYS, c, "trades")
        trades = TradeFacts(ids=_expr(t.get("ids"), c, "trades", "ids") or "")
    if quote is None and position is None and trades is None:
        raise StackSpecError(
            c.key(),
            c.source,
            name,
            "declares no facts; add at least one of "
            "[stack.quote], [stack.position], [stack.trades]",
        )

    tolerance = raw.get("tolerance")
    if tolerance is not None:
        try:
            tol = float(tolerance)
        except (TypeError, ValueError):
            tol = -1.0
        if isinstance(tolerance, bool) or not (math.isfinite(tol) and tol >= 0):
            raise c.fail(("tolerance",), tolerance, "expected a price difference >= 0")
        tolerance = tol
    return Endpoint(
        name=name,
        kind=kind,
        url=url,
        headers=headers,
        subscribe=subscribe,
        interval=interval_s,
        quote=quote,
        position=position,
        trades=trades,
        position_deadline=_seconds(
            raw.get("position_deadline"), c, "position_deadline", default=DEFAULT_POSITION_DEADLINE
        ),
        hold=_seconds(raw.get("hold"), c, "hold", default=DEFAULT_HOLD),
        tolerance=tolerance,
    )


def parse_stack(raw: Any, source: str = "the stack declaration") -> tuple[Endpoint, ...]:
    """Validate a list of ``[[stack]]`` tables (or a JSON string of that list).

    Raises :class:`StackSpecError` (one line naming the key) for anything wrong.
    """
    if isinstance(raw, str):
        import json

        text = raw.strip()
        if not text:
            return ()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise StackSpecError(
                "stack",
                source,
                REDACTED,
                f"not JSON: {err.msg} at char {err.pos}; expected a JSON list of endpoint objects",
            ) from None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise StackSpecError(
            "stack", source, type(raw).__name__, "expected a list of [[stack]] tables"
        )
    endpoints = tuple(_endpoint(item, _Ctx(source, i)) for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, ep in enumerate(endpoints):
        if ep.name in seen:
            raise StackSpecError(
                f"stack[{i}].name", source, ep.name, "duplicate endpoint name; names must be unique"
            )
        seen.add(ep.name)
    return endpoints
