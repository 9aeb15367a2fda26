"""Watchers: read-only clients of the user's stack, one asyncio task per endpoint.

Each watcher connects, stamps every message (or DOM change) on arrival with
``time.monotonic()`` and ``time.time()``, and hands an :class:`Observation` to the sink.
It never sends anything but the declared subscription message (websocket) and plain
GETs: stack checks only read. A lost connection is retried with a short backoff until
the watcher is cancelled; the cause of the last failure is kept (``last_error``) so an
unreachable endpoint becomes a FAIL naming it (connection refused, HTTP 401, DNS,
timeout). httpx, httpx-sse, websockets and Playwright are imported here, lazily, so a
run without a stack never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .observe import Extractor, Observation
from .spec import Endpoint

__all__ = [
    "CHROMIUM",
    "CHROMIUM_FLAGS",
    "Watcher",
    "describe_error",
    "make_watcher",
    "preload",
]

log = logging.getLogger("harness_lib.stack")

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium; Playwright's own browser is used when this does not exist."""
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONNECT_TIMEOUT = 5.0
BACKOFF = (0.2, 0.5, 1.0, 2.0)
"""Seconds between reconnect attempts (the last one repeats)."""
BURST_INTERVAL = 0.02
"""http: poll period right after a broker event (a fill), so the reported latency is the
stack's own and not up to one ``interval`` of the harness's sampling..."""
BURST_S = 1.0
"""...for this long after the event; then back to the declared ``interval``."""
_HTTPX = ("httpx", "httpcore", "h11", "anyio._backends._asyncio")
"""httpx and what it imports only on its first request (~0.1 s more)."""
_MODULES = {
    "sse": (*_HTTPX, "httpx_sse"),
    "websocket": ("websockets.asyncio.client",),
    "http": _HTTPX,
    "browser": ("playwright.async_api",),
}
"""What each kind imports: ~0.1-0.2 s each, which must not block the running loop."""

Sink = Callable[[Observation], None]


def preload(kinds: Iterable[str]) -> None:
    """Import the client libraries of the declared kinds now, before the run's clock starts.

    Imported lazily on the event loop they block it for 0.1-0.2 s each (httpx, Playwright),
    which delays the stamping of every message, broker tick and fill arriving meanwhile:
    the harness would distort the latencies it measures. A missing optional library is
    left for the watcher to report as the endpoint's FAIL."""
    import importlib

    kinds = set(kinds)
    for module in sorted({m for kind in kinds for m in _MODULES.get(kind, ())}):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    if kinds & {"sse", "http"}:
        with contextlib.suppress(ImportError):
            _tls()


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: httpx builds (and loads the CA file into) a new one for
    every client, ~50 ms of the event loop at each (re)connect, even for http:// URLs."""
    import httpx

    return httpx.create_ssl_context()


class EndpointError(Exception):
    """A failure the watcher can name precisely (HTTP status, page load error)."""


def describe_error(exc: BaseException) -> str:
    """A short cause: 'connection refused', 'HTTP 401 Unauthorized', 'DNS lookup failed'..."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, EndpointError):
            return str(e)
        if isinstance(e, socket.gaierror):
            return "DNS lookup failed"
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(e, TimeoutError):
            return "timeout"
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return _http_status(status)
        name = type(e).__name__
        if name in ("ConnectTimeout", "ReadTimeout", "PoolTimeout", "WriteTimeout"):
            return "timeout"
        text = str(e).lower()
        if "connection refused" in text or "err_connection_refused" in text:
            return "connection refused"
        if "name or service not known" in text or "err_name_not_resolved" in text:
            return "DNS lookup failed"
        if "timeout" in text or "timed out" in text:
            return "timeout"
        e = e.__cause__ or e.__context__
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"[:160]


def _http_status(code: int) -> str:
    from http import HTTPStatus

    try:
        return f"HTTP {code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


class Watcher:
    """Base: the reconnect loop and bookkeeping; subclasses implement ``_session``."""

    def __init__(self, ep: Endpoint, extractor: Extractor, sink: Sink) -> None:
        self.ep = ep
        self.extractor = extractor
        self.sink = sink
        self.connected_at: float | None = None
        """Wall time of the first successful connection (None: never connected)."""
        self.last_error: str | None = None
        self.connects = 0
        self.messages = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run the watcher as a task on the running loop."""
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"stack:{self.ep.name}")
        return self.task

    async def stop(self) -> None:
        """Cancel the task and wait for its clean-up (closing sockets and the browser)."""
        if self.task is None:
            return
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            # Our own cancel; re-raise only if the caller itself is being cancelled.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as exc:  # already recorded by run(); never let stop() raise
            log.debug("stack watcher %s ended with %r", self.ep.name, exc)

    def nudge(self) -> None:
        """The broker just did something the stack should show (a fill). Push-based kinds
        need nothing; a poller looks sooner (see :class:`HTTPWatcher`)."""

    def _connected(self) -> None:
        self.connects += 1
        if self.connected_at is None:
            self.connected_at = time.time()

    def _emit_text(self, text: str | bytes) -> None:
        t_mono, t_wall = time.monotonic(), time.time()
        self.messages += 1
        self.sink(self.extractor.from_text(text, t_mono, t_wall))

    async def run(self) -> None:
        """Connect, read, and reconnect after a failure, until cancelled."""
        attempt = 0
        while True:
            try:
                await self._session()
                self.last_error = "the endpoint closed the connection"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = self.ep.scrub(describe_error(exc))
            log.info("stack endpoint %s: %s; reconnecting", self.ep.name, self.last_error)
            await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
            attempt += 1

    async def _session(self) -> None:
        raise NotImplementedError


class SSEWatcher(Watcher):
    """``text/event-stream``: every event's data is one JSON document."""

    async def _session(self) -> None:
        import httpx
        from httpx_sse import aconnect_sse

        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=None)
        async with (
            httpx.AsyncClient(
                headers=dict(self.ep.headers), timeout=timeout, verify=_tls()
            ) as client,
            aconnect_sse(client, "GET", self.ep.url) as source,
        ):
            status = source.response.status_code
            if status != 200:
                raise EndpointError(_http_status(status))
            self._connected()
            async for event in source.aiter_sse():
                if event.data.strip():
                    self._emit_text(event.data)


class WebSocketWatcher(Watcher):
    """A WebSocket: sends the declared subscription first, then reads every message."""

    async def _session(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            ws_ctx = connect(
                self.ep.url,
                additional_headers=dict(self.ep.headers),
                open_timeout=CONNECT_TIMEOUT,
                proxy=None,
                max_size=2**24,
            )
            async with ws_ctx as ws:
                self._connected()
                if self.ep.subscribe is not None:
                    await ws.send(self.ep.subscribe)
                async for message in ws:
                    self._emit_text(message)
        except InvalidStatus as exc:
            raise EndpointError(_http_status(exc.response.status_code)) from None


class HTTPWatcher(Watcher):
    """A JSON document polled every ``interval`` seconds, and every ``BURST_INTERVAL`` for
    ``BURST_S`` after a :meth:`nudge` (a fill): a change is then seen within ~20 ms of when
    the stack made it, not up to a whole ``interval`` later."""

    def __init__(self, ep: Endpoint, extractor: Extractor, sink: Sink) -> None:
        super().__init__(ep, extractor, sink)
        self._nudged = asyncio.Event()
        self._burst_until = 0.0

    def nudge(self) -> None:
        """Poll now, then fast for ``BURST_S`` (called on the monitor's loop)."""
        self._burst_until = time.monotonic() + BURST_S
        self._nudged.set()

    def _period(self) -> float:
        if time.monotonic() < self._burst_until:
            return min(self.ep.interval, BURST_INTERVAL)
        return self.ep.interval

    async def _session(self) -> None:
        import httpx

        async with httpx.AsyncClient(
            headers=dict(self.ep.headers), timeout=httpx.Timeout(CONNECT_TIMEOUT), verify=_tls()
        ) as client:
            while True:
                started = time.monotonic()
                self._nudged.clear()
                response = await client.get(self.ep.url)
                if response.status_code != 200:
                    raise EndpointError(_http_status(response.status_code))
                self._connected()
                self._emit_text(response.content)
                wait = self._period() - (time.monotonic() - started)
                if wait > 0 and not self._nudged.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._nudged.wait(), wait)


# Reads the declared facts from the live DOM. Runs in the page; returns raw texts only,
# Python parses them (one number rule for every kind).
DOM_READER = """(spec) => {
  const read = (root, sa) => {
    if (!sa || !root) return null;
    const el = root.querySelector(sa[0]);
    if (!el) return null;
    return sa[1] ? el.getAttribute(sa[1]) : el.textContent.trim();
  };
  const out = {};
  if (spec.quote) {
    const q = spec.quote;
    const box = document.querySelector(q.select);
    out.quote = box ? {
      bid: read(box, q.bid), ask: read(box, q.ask), last: read(box, q.last),
      // The mode badge may sit outside the quote container.
      mode: read(box, q.mode) ?? read(document, q.mode),
    } : null;
  }
  if (spec.position) {
    const card = document.querySelector(spec.position.select);
    out.position = card ? {quantity: read(card, spec.position.quantity)} : null;
  }
  if (spec.ids) {
    const [sel, attr] = spec.ids;
    out.ids = [...document.querySelectorAll(sel)]
      .map((e) => (attr ? e.getAttribute(attr) : e.textContent.trim()))
      .filter((x) => x);
  }
  return out;
}"""

# Installed before any page script: report once the DOM exists, then on every mutation
# (coalesced per microtask) when the facts changed. Python stamps the arrival.
_OBSERVER = """(() => {
  if (window.top !== window) return;
  const spec = __SPEC__;
  const readFacts = __READER__;
  let last = null, queued = false;
  const report = () => {
    queued = false;
    let facts;
    try { facts = readFacts(spec); } catch (e) { facts = {error: String(e)}; }
    const text = JSON.stringify(facts);
    if (text !== last) { last = text; window.__livefireReport(facts); }
  };
  const schedule = () => { if (!queued) { queued = true; queueMicrotask(report); } };
  const start = () => {
    new MutationObserver(schedule).observe(document, {
      subtree: true, childList: true, characterData: true, attributes: true});
    report();
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();"""


class BrowserWatcher(Watcher):
    """A page in headless chromium, read from the live DOM through a MutationObserver."""

    _accepting = False
    _held: list[Observation]

    async def _session(self) -> None:
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise EndpointError(
                "the browser kind needs Playwright: uv sync --extra browser "
                "(or pip install 'livefire[browser]')"
            ) from None
        script = _OBSERVER.replace("__SPEC__", json.dumps(self.extractor.dom_spec())).replace(
            "__READER__", DOM_READER
        )
        self._accepting = False
        self._held = []
        async with async_playwright() as pw:
            launch: dict[str, Any] = {"headless": True, "args": CHROMIUM_FLAGS}
            if CHROMIUM.exists():
                launch["executable_path"] = str(CHROMIUM)
            browser = await pw.chromium.launch(**launch)
            try:
                context = await browser.new_context(extra_http_headers=dict(self.ep.headers))
                await context.expose_binding("__livefireReport", self._on_dom)
                await context.add_init_script(script)
                page = await context.new_page()
                closed = asyncio.Event()
                page.on("close", lambda _page: closed.set())
                page.on("crash", lambda _page: closed.set())
                response = await page.goto(
                    self.ep.url, timeout=CONNECT_TIMEOUT * 1000, wait_until="domcontentloaded"
                )
                if response is not None and response.status >= 400:
                    raise EndpointError(_http_status(response.status))
                self._connected()
                # What the page showed while it loaded counts only once it loaded fine.
                self._accepting = True
                held, self._held = self._held, []
                for obs in held:
                    self.sink(obs)
                await closed.wait()
            finally:
                await browser.close()

    def _on_dom(self, _source: Any, facts: Any) -> None:
        t_mono, t_wall = time.monotonic(), time.time()
        if not isinstance(facts, dict) or "error" in facts:
            why = facts.get("error") if isinstance(facts, dict) else repr(facts)
            error = self.ep.scrub(f"page script: {why}")
            obs = Observation(self.ep.name, t_mono, t_wall, error=error)
        else:
            obs = self.extractor.from_dom(facts, t_mono, t_wall)
        if self._accepting:
            self.messages += 1
            self.sink(obs)
        else:
            self._held.append(obs)


_KINDS: dict[str, type[Watcher]] = {
    "sse": SSEWatcher,
    "websocket": WebSocketWatcher,
    "http": HTTPWatcher,
    "browser": BrowserWatcher,
}


def make_watcher(ep: Endpoint, sink: Sink) -> Watcher:
    """The watcher for a bound endpoint (its expressions compiled now)."""
    return _KINDS[ep.kind](ep, Extractor(ep), sink)
