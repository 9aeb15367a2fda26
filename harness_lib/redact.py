"""Secret redaction for notification and heartbeat URLs: the one place that decides what
in a URL is a secret.

Two uses, one rule set:

* :func:`redact_url` renders a URL for people (console, store, reports): scheme, host,
  path words and harmless query values stay readable, secrets become ``***``.
* :func:`secrets_in_url` lists the secret substrings of a URL so free text (log lines,
  exception messages apprise or urllib3 produce) can be scrubbed with
  :func:`redact_text`. It is deliberately broader (:data:`TEXT_MIN_TOKEN` instead of
  :data:`DISPLAY_MIN_TOKEN`, user names too): a log line loses nothing useful when a
  little too much is masked, while a URL shown to a person should stay recognisable.

apprise knows which parts of its own URLs are private (``url(privacy=True)`` on a plugin
object); :func:`apprise_secrets` takes them from there rather than guessing, which covers
schemes whose tokens are short or sit in unusual places.

While apprise runs, :func:`redacting_logs` scrubs every log record any logger creates.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

__all__ = [
    "DISPLAY_MIN_TOKEN",
    "MASK",
    "TEXT_MIN_TOKEN",
    "UrlParts",
    "apprise_secrets",
    "redact_text",
    "redact_url",
    "redacting_logs",
    "secrets_in_url",
    "split_url",
    "with_encodings",
]

MASK = "***"

DISPLAY_MIN_TOKEN = 16
"""A run of token characters at least this long is a secret in a displayed URL."""
TEXT_MIN_TOKEN = 12
"""... and at least this long when scrubbing free text (log lines, error messages)."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# Maximal runs of the characters tokens are made of ('%' so percent-encoding does not
# split a token into short harmless-looking pieces).
_RUN = re.compile(r"[A-Za-z0-9_:%-]+")
# Telegram bot tokens: "bot123456:AAH..." in API URLs, "123456:AAH..." in apprise.
_TELEGRAM = re.compile(r"bot[0-9]+:|[0-9]{5,}:[A-Za-z0-9_-]{8,}")
# key=value pairs outside a query string (in a path, or in text that is not a URL).
_PAIR = re.compile(r"([A-Za-z0-9_.-]+)=([^&/?#\s]+)")
_SENSITIVE_KEY_PARTS = (
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "webhook",
    "auth",
    "sig",
    "cred",
    "session",
    "cookie",
    "bearer",
)
"""A query key containing any of these (case and punctuation ignored) names a secret;
``+Authorization`` is apprise's header syntax and matches ``auth``."""

# Very short values ("a", "1") would shred every log line they happen to match.
_MIN_SCRUB = 4


class UrlParts(NamedTuple):
    """A URL cut at its delimiters without validating anything (apprise URLs are often not
    RFC 3986: tokens with ':' where the host goes). ``path``, ``query`` and ``fragment``
    are None when their delimiter is absent; ``path`` keeps its leading '/'."""

    scheme: str
    userinfo: str | None
    hostport: str
    path: str | None
    query: str | None
    fragment: str | None


def split_url(url: str) -> UrlParts | None:
    """Cut ``scheme://userinfo@hostport/path?query#fragment``; None when ``url`` does
    not start with a scheme."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    rest = url[m.end() :]
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    return UrlParts(
        scheme=m.group(1),
        userinfo=userinfo if at else None,
        hostport=hostport,
        path=slash + path if slash else None,
        query=query if qmark else None,
        fragment=fragment if hash_ else None,
    )


def is_sensitive_key(key: str) -> bool:
    """Does a query key (``token``, ``Api-Key``, ``+Authorization``) name a secret?"""
    norm = re.sub(r"[^a-z0-9]", "", urllib.parse.unquote_plus(key).lower())
    return any(part in norm for part in _SENSITIVE_KEY_PARTS)


def looks_secret(run: str, min_len: int = DISPLAY_MIN_TOKEN) -> bool:
    """Is this run of token characters a credential (long, or a Telegram bot token)?"""
    return len(run) >= min_len or _TELEGRAM.search(run) is not None


def _scrub(text: str) -> str:
    """Hide ``token=...``-style values and every token-like run of characters."""
    text = _PAIR.sub(
        lambda m: m.group(1) + "=" + MASK if is_sensitive_key(m.group(1)) else m.group(0),
        text,
    )
    return _RUN.sub(lambda m: MASK if looks_secret(m.group(0)) else m.group(0), text)


def _redact_query(query: str) -> str:
    items = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        value = MASK if eq and value and is_sensitive_key(key) else _scrub(value)
        items.append(_scrub(key) + eq + value)
    return "&".join(items)


def redact_url(url: str) -> str:
    """Hide the secrets in a notification or heartbeat URL, keeping scheme and host.

    Replaced with ``***``: the password in ``scheme://user:pass@host``; any path
    segment, user name, host or query value that looks like a token
    (:data:`DISPLAY_MIN_TOKEN` or more of ``[A-Za-z0-9_:%-]``, or a Telegram
    ``bot123:ABC`` token); and the value of any query key naming a token, key, secret,
    password, signature, session or webhook. Text that is not a URL gets the token rule
    only. Pure, idempotent; never raises.
    """
    url = str(url)
    parts = split_url(url)
    if parts is None:
        return _scrub(url)
    if parts.userinfo is not None:
        user, colon, _password = parts.userinfo.partition(":")
        authority = _scrub(user) + (":" + MASK if colon else "") + "@" + _scrub(parts.hostport)
    else:
        authority = _scrub(parts.hostport)
    out = f"{parts.scheme}://{authority}"
    if parts.path is not None:
        out += _scrub(parts.path)
    if parts.query is not None:
        out += "?" + _redact_query(parts.query)
    if parts.fragment is not None:
        out += "#" + _scrub(parts.fragment)
    return out


def _host_only(hostport: str) -> str:
    if hostport.startswith("["):  # IPv6 literal
        return hostport.split("]", 1)[0] + "]"
    # A telegram token has one ':' too, so only strip a purely numeric port.
    host, sep, port = hostport.rpartition(":")
    return host if sep and port.isdigit() else hostport


def _text_secret(piece: str) -> bool:
    raw = urllib.parse.unquote_plus(piece)
    return any(looks_secret(r, TEXT_MIN_TOKEN) for r in _RUN.findall(raw))


def secrets_in_url(url: str) -> set[str]:
    """Every substring of ``url`` that is or may be secret, in raw, decoded and encoded
    forms, for :func:`redact_text`. Broader than :func:`redact_url`: user names of six
    or more characters, tokens from :data:`TEXT_MIN_TOKEN` characters, the fragment."""
    url = str(url).strip()
    parts = split_url(url)
    if parts is None:
        return with_encodings([url])
    found: set[str] = set()
    if parts.userinfo:
        user, _, password = parts.userinfo.partition(":")
        found.update({password, parts.userinfo})
        if len(urllib.parse.unquote(user)) >= 6:
            found.add(user)
    host = _host_only(parts.hostport)
    # Many apprise schemes put a token where the host goes (tgram://<bot token>/<chat>,
    # slack://TokenA/..., discord://<id>/<token>). Real host names have dots; a long
    # dot-less run with a digit (or a very long one) is a secret.
    telegram = parts.scheme.lower() in ("tgram", "telegram")
    token_like = _text_secret(host) and (any(c.isdigit() for c in host) or looks_secret(host))
    if host and (telegram or ("." not in host and token_like)):
        found.add(host)
    for segment in (parts.path or "").split("/"):
        if _text_secret(segment):
            found.add(segment)
    for item in (parts.query or "").split("&"):
        key, _, value = item.partition("=")
        if value and (is_sensitive_key(key) or _text_secret(value)):
            found.add(value)
    if parts.fragment:
        found.add(parts.fragment)
    return with_encodings(found)


def with_encodings(values: Iterable[str]) -> set[str]:
    """Each value as written, percent-decoded and percent-encoded (a secret may appear in
    any of these forms in a log line); values shorter than four characters are dropped."""
    out: set[str] = set()
    for value in values:
        if not value or len(value) < _MIN_SCRUB:
            continue
        for variant in (
            value,
            urllib.parse.unquote(value),
            urllib.parse.unquote_plus(value),
            urllib.parse.quote(urllib.parse.unquote(value), safe=""),
            urllib.parse.quote_plus(urllib.parse.unquote_plus(value), safe=""),
        ):
            if len(variant) >= _MIN_SCRUB:
                out.add(variant)
    return out


def apprise_secrets(plugin: Any) -> set[str]:
    """The parts of a plugin's URL that apprise itself hides in ``url(privacy=True)``
    (passwords, API keys, webhook tokens), found by comparing that rendering with the
    plain one piece by piece. Empty when the plugin cannot render its URL."""
    try:
        plain = split_url(str(plugin.url(privacy=False)))
        private = split_url(str(plugin.url(privacy=True)))
    except Exception:  # a plugin that cannot render its URL is still sendable
        return set()
    if plain is None or private is None:
        return set()
    found: set[str] = set()

    def differing(a: str | None, b: str | None, sep: str) -> None:
        xs, ys = (a or "").split(sep), (b or "").split(sep)
        if len(xs) != len(ys):  # shapes differ: the whole part is suspect
            found.add(a or "")
            return
        found.update(x for x, y in zip(xs, ys, strict=True) if x != y)

    differing(plain.userinfo, private.userinfo, ":")
    differing(plain.hostport, private.hostport, "\0")
    differing(plain.path, private.path, "/")
    hidden_q = dict(i.partition("=")[::2] for i in (private.query or "").split("&"))
    for item in (plain.query or "").split("&"):
        key, _, value = item.partition("=")
        if value and hidden_q.get(key, value) != value:
            found.add(value)
    return with_encodings(found)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in ``text`` with ``***`` (longest first, so
    a password inside a longer token is not left half-visible)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _scrub_record(record: logging.LogRecord, secrets: set[str]) -> None:
    """Rewrite a log record in place so no handler (files, caplog, rich) sees a secret."""
    try:
        message = record.getMessage()
    except Exception:  # a malformed record: keep only the template
        message = str(record.msg)
    clean = redact_text(message, secrets)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info:
        # Exception texts (e.g. requests' "Max retries exceeded with url: /bot<token>")
        # are rendered once here, scrubbed, and the live traceback dropped.
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact_text(text, secrets)
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact_text(record.exc_text, secrets)


# Serialises users so each one restores exactly the factory it replaced.
_factory_lock = threading.RLock()


@contextlib.contextmanager
def redacting_logs(secrets: set[str]) -> Iterator[None]:
    """Scrub ``secrets`` from every log record created while the block runs.

    A record factory rather than logger filters: filters only see records of the logger
    they are attached to, and apprise pulls in requests/urllib3 (whose connection pool
    logs ``POST /bot<token>/sendMessage`` at DEBUG) and plugin libraries lazily, after
    any list of loggers could have been made. ``secrets`` may grow while the block runs.
    """
    with _factory_lock:
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _scrub_record(record, secrets)
            return record

        logging.setLogRecordFactory(factory)
        try:
            yield
        finally:
            # If something replaced our factory meanwhile, leave theirs (it wraps ours,
            # which only ever redacts).
            if logging.getLogRecordFactory() is factory:
                logging.setLogRecordFactory(previous)
