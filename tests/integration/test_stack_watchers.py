"""Each watcher kind against a real Starlette/uvicorn server on 127.0.0.1.

Good values, nulls, NaN, garbage, a 401 for a wrong token and a closed port: what the
watcher turns them into (observations, and the cause it names), read over real sockets.
The browser kind runs in Debian's chromium through Playwright.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness_lib.stack.observe import Observation
from harness_lib.stack.spec import Endpoint, parse_stack
from harness_lib.stack.watch import Watcher, make_watcher
from tests.stack_app import Hub, serve

TOKEN = "not-a-real-token-0123456789"
QUOTE = {"AAPL": {"conId": 265598, "bid": 189.5, "ask": 189.52, "last": 189.51, "mode": "live"}}
JSON_FACTS = {
    "quote": {
        "select": 'quotes."{symbol}"',
        "bid": "bid",
        "ask": "ask",
        "last": "last",
        "mode": "mode",
    },
    "position": {
        "scope": "positions",
        "select": "[?symbol == '{symbol}'] | [0]",
        "quantity": "qty",
    },
    "trades": {"ids": 'last_trade."{symbol}".[execId, permId]'},
}
BROWSER_FACTS = {
    "quote": {
        "select": "#quote-{symbol}",
        "bid": ".bid",
        "ask": ".ask",
        "last": ".last",
        "mode": ".mode@data-mode",
    },
    "position": {"select": '.position-card[data-symbol="{symbol}"]', "quantity": ".qty"},
    "trades": {"ids": '.last-trade[data-symbol="{symbol}"] span'},
}
PATHS = {"sse": "/events", "websocket": "/ws", "http": "/api/state", "browser": "/"}


def endpoint(kind: str, port: int, token: str | None = None, **extra: object) -> Endpoint:
    scheme = "ws" if kind == "websocket" else "http"
    d: dict = {
        "name": f"t-{kind}",
        "kind": kind,
        "url": f"{scheme}://127.0.0.1:{port}{PATHS[kind]}",
        **(BROWSER_FACTS if kind == "browser" else JSON_FACTS),
        **extra,
    }
    if kind == "http":
        d["interval"] = 0.05
    if token:
        d["headers"] = {"Authorization": f"Bearer {token}"}
    (ep,) = parse_stack([d], "test")
    return ep.bind(symbol="AAPL", con_id=265598, local_symbol="AAPL")


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


class Run:
    """A started watcher and what it observed."""

    def __init__(self, ep: Endpoint) -> None:
        self.obs: list[Observation] = []
        self.watcher: Watcher = make_watcher(ep, self.obs.append)

    def quotes(self) -> list[Observation]:
        return [o for o in self.obs if o.quote is not None]


JSON_KINDS = ["sse", "websocket", "http"]


@pytest.mark.parametrize("kind", JSON_KINDS)
async def test_good_values_nulls_nan_and_positions(kind: str) -> None:
    hub = Hub()
    hub.publish({"quotes": QUOTE})
    async with serve(hub) as port:
        run = Run(endpoint(kind, port))
        run.watcher.start()
        try:
            assert await until(lambda: bool(run.quotes())), run.watcher.last_error
            first = run.quotes()[0]
            assert first.quote is not None
            assert (first.quote.bid, first.quote.ask, first.quote.mode) == (189.5, 189.52, "live")
            assert first.t_wall == pytest.approx(time.time(), abs=10)
            assert run.watcher.connected_at is not None
            hub.publish({"quotes": {"AAPL": {**QUOTE["AAPL"], "bid": None, "ask": math.nan}}})
            assert await until(lambda: run.quotes()[-1].quote.bid is None)  # type: ignore[union-attr]
            last = run.quotes()[-1].quote
            assert last is not None and last.ask is None and "ask NaN" in last.describe()
            hub.publish({"positions": [{"symbol": "AAPL", "qty": -2}]})
            hub.publish({"last_trade": {"AAPL": {"execId": "0001.01", "permId": 77}}})
            assert await until(
                lambda: (
                    any(o.position and o.position.quantity == -2 for o in run.obs)
                    and any(o.trade_ids == ("0001.01", "77") for o in run.obs)
                )
            )
            hub.publish({"positions": []})
            assert await until(
                lambda: any(o.position and o.position.quantity == 0 for o in run.obs)
            )
        finally:
            await run.watcher.stop()
    assert all(o.error is None for o in run.obs)


@pytest.mark.parametrize("kind", ["sse", "websocket"])
async def test_garbage_is_an_error_observation_and_the_watcher_keeps_going(kind: str) -> None:
    hub = Hub()
    async with serve(hub) as port:
        run = Run(endpoint(kind, port))
        run.watcher.start()
        try:
            assert await until(lambda: bool(run.obs))
            hub.publish_raw("this is not json")
            hub.publish_raw('"a string"')
            hub.publish({"quotes": QUOTE})
            assert await until(lambda: bool(run.quotes()))
        finally:
            await run.watcher.stop()
    errors = [o.error for o in run.obs if o.error]
    assert len(errors) == 2
    assert errors[0].startswith("not JSON") and errors[1].startswith("wrong shape")


@pytest.mark.parametrize("kind", [*JSON_KINDS, "browser"])
async def test_wrong_token_is_http_401_and_token_is_not_in_the_cause(kind: str) -> None:
    if kind == "browser":
        _require_chromium()
    hub = Hub(token=TOKEN)
    async with serve(hub) as port:
        run = Run(endpoint(kind, port, token="wrong-" + TOKEN))
        run.watcher.start()
        try:
            assert await until(lambda: run.watcher.last_error is not None, 20)
        finally:
            await run.watcher.stop()
    assert run.watcher.connected_at is None and not run.obs
    cause = run.watcher.last_error or ""
    assert "401" in cause or "403" in cause, cause
    assert TOKEN not in cause


@pytest.mark.parametrize("kind", JSON_KINDS)
async def test_right_token_connects(kind: str) -> None:
    hub = Hub(token=TOKEN)
    hub.publish({"quotes": QUOTE})
    async with serve(hub) as port:
        run = Run(endpoint(kind, port, token=TOKEN))
        run.watcher.start()
        try:
            assert await until(lambda: bool(run.quotes())), run.watcher.last_error
        finally:
            await run.watcher.stop()


@pytest.mark.parametrize("kind", JSON_KINDS)
async def test_closed_port_is_connection_refused(kind: str, dead_port: int) -> None:
    run = Run(endpoint(kind, dead_port))
    run.watcher.start()
    try:
        assert await until(lambda: run.watcher.last_error is not None)
    finally:
        await run.watcher.stop()
    assert run.watcher.last_error == "connection refused"
    assert run.watcher.connected_at is None


async def test_websocket_sends_the_subscription_first() -> None:
    hub = Hub()
    got: list[str] = []
    from starlette.routing import WebSocketRoute

    from tests import stack_app

    app = stack_app.make_app(hub)

    async def recording_ws(ws) -> None:  # type: ignore[no-untyped-def]
        await ws.accept()
        got.append(await ws.receive_text())
        await ws.send_text('{"quotes": {"AAPL": {"bid": 1, "ask": 2, "mode": "live"}}}')
        await asyncio.sleep(5)

    app.router.routes.append(WebSocketRoute("/sub", recording_ws))
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    (decl,) = parse_stack(
        [
            {
                "name": "sub",
                "kind": "websocket",
                "url": f"ws://127.0.0.1:{port}/sub",
                "subscribe": '{"op": "subscribe", "symbols": ["{symbol}"]}',
                **JSON_FACTS,
            }
        ],
        "t",
    )
    run = Run(decl.bind(symbol="AAPL", con_id=1, local_symbol="AAPL"))
    run.watcher.start()
    try:
        assert await until(lambda: bool(run.quotes()))
    finally:
        await run.watcher.stop()
        server.should_exit = server.force_exit = True
        await asyncio.wait_for(task, 5)
    assert got == ['{"op": "subscribe", "symbols": ["AAPL"]}']


CHROMIUM = Path("/usr/bin/chromium")


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium); CI=1 makes this a failure")
    try:
        import playwright  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (uv sync --extra browser)")


@pytest.mark.browser
@pytest.mark.slow
async def test_browser_reads_the_live_dom() -> None:
    _require_chromium()
    hub = Hub()
    async with serve(hub) as port:
        run = Run(endpoint("browser", port))
        run.watcher.start()
        try:
            assert await until(lambda: run.watcher.connected_at is not None, 30), (
                run.watcher.last_error
            )
            # The page shows nothing yet: no quote container, no card, no ids.
            assert await until(lambda: bool(run.obs), 10)
            assert run.obs[0].quote is not None and run.obs[0].quote.bid is None
            hub.publish({"quotes": QUOTE})
            assert await until(lambda: any(o.quote and o.quote.bid == 189.5 for o in run.obs))
            shown = next(o for o in run.obs if o.quote and o.quote.bid == 189.5).quote
            assert shown is not None and shown.ask == 189.52 and shown.mode == "live"
            hub.publish({"quotes": {"AAPL": {**QUOTE["AAPL"], "bid": None}}})
            assert await until(
                lambda: run.obs[-1].quote is not None and run.obs[-1].quote.bid is None
            )
            hub.publish({"positions": [{"symbol": "AAPL", "qty": 1}]})
            hub.publish({"last_trade": {"AAPL": {"execId": "e9", "permId": 9}}})
            assert await until(
                lambda: (
                    run.obs[-1].position is not None
                    and run.obs[-1].position.quantity == 1
                    and run.obs[-1].trade_ids == ("e9", "9")
                )
            )
            hub.publish({"positions": []})
            assert await until(
                lambda: run.obs[-1].position is not None and run.obs[-1].position.quantity == 0
            )
        finally:
            await run.watcher.stop()
    assert all(o.error is None for o in run.obs)


@pytest.mark.browser
async def test_browser_closed_port_is_connection_refused(dead_port: int) -> None:
    _require_chromium()
    run = Run(endpoint("browser", dead_port))
    run.watcher.start()
    try:
        assert await until(lambda: run.watcher.last_error is not None, 30)
    finally:
        await run.watcher.stop()
    assert run.watcher.last_error == "connection refused"


# --- measuring without distorting (README: Stack checks, latency) --------------------------------
async def test_http_is_polled_at_once_after_a_fill_not_an_interval_later() -> None:
    """An http endpoint polled every 30 s still shows a change within the wait below once the
    monitor nudges it (it does on every fill): the harness's sampling is not the stack's
    latency. No stopwatch: the regular poll cannot come within the 5 s waited here."""
    hub = Hub()
    hub.publish({"quotes": QUOTE, "positions": []})
    async with serve(hub) as port:
        ep = endpoint("http", port)
        ep = dataclasses.replace(ep, interval=30.0)
        run = Run(ep)
        run.watcher.start()
        try:
            assert await until(lambda: len(run.obs) == 1), run.watcher.last_error
            hub.publish({"positions": [{"symbol": "AAPL", "qty": 1}]})
            await asyncio.sleep(0.2)
            assert len(run.obs) == 1, "no poll before the nudge: the interval is 30 s"
            run.watcher.nudge()
            assert await until(
                lambda: any(o.position and o.position.quantity == 1 for o in run.obs), 5
            )
            # ...and keeps looking fast for a moment: the stack may change a few ms later.
            hub.publish({"positions": []})
            assert await until(
                lambda: run.obs[-1].position is not None and run.obs[-1].position.quantity == 0,
                5,
            )
        finally:
            await run.watcher.stop()


PRELOAD_PROBE = r"""
import asyncio, json, sys
from harness_lib.stack.observe import Extractor
from harness_lib.stack.watch import make_watcher, preload
from tests.integration.test_stack_watchers import endpoint

preload(["sse", "http"])
before = set(sys.modules)
DOC = json.dumps({"quotes": {"AAPL": {"bid": 1.0, "ask": 1.1, "mode": "live"}}}).encode()

async def answer(reader, writer):
    request = await reader.readuntil(b"\r\n\r\n")
    if b"/events" in request.split(b"\r\n")[0]:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
                     b"data: " + DOC + b"\n\n")
    else:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(DOC)).encode() + b"\r\n\r\n" + DOC)
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    seen = []
    watchers = [make_watcher(endpoint(k, port), seen.append) for k in ("sse", "http")]
    for w in watchers:
        w.start()
    for _ in range(200):
        if {o.endpoint for o in seen} == {"t-sse", "t-http"}:
            break
        await asyncio.sleep(0.02)
    for w in watchers:
        await w.stop()
    server.close()
    print(json.dumps({"endpoints": sorted({o.endpoint for o in seen}),
                      "imported": sorted(set(sys.modules) - before)}))

asyncio.run(main())
"""


def test_preload_leaves_nothing_to_import_while_the_run_stamps() -> None:
    """After ``preload`` (the runner calls it before connecting), a watcher's first
    connection and message import nothing: imports on the event loop took 0.1-0.25 s each
    (httpx, httpcore, anyio), during which fills and messages waited to be stamped."""
    out = subprocess.run(
        [sys.executable, "-c", PRELOAD_PROBE], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["endpoints"] == ["t-http", "t-sse"], out.stderr[-2000:]
    heavy = ("httpx", "httpcore", "h11", "anyio", "httpx_sse", "certifi", "ssl", "sniffio")
    late = [m for m in probe["imported"] if m.split(".")[0] in heavy]
    assert not late, f"imported on the running loop: {late}"
