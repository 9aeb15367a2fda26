"""A tiny, real trading-stack server for stack-check tests (Starlette under uvicorn).

It serves the agreed shape (docs: stackspec) on every kind the harness watches: SSE
``/events``, WebSocket ``/ws``, JSON ``/api/state`` and an HTML page ``/`` that renders
``#quote-AAPL`` / ``.position-card`` / ``.last-trade`` and updates itself from ``/ws``.

Two ways to feed it:

* scripted, in-process (:func:`serve` in a test's event loop): the test calls
  ``hub.publish({...})`` or ``hub.publish_raw("garbage")``;
* from a gateway, as a subprocess (``python -m tests.stack_app --ib-port P --port N``):
  it connects with ib_async like a user's dashboard and echoes quotes, positions and the
  latest trade ids; ``--null-quotes`` shows null instead of the numbers (issue 10, bug 2).

Reusable by the later e2e matrix: :func:`start_stack_process` starts it and waits for
``PORT=``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOT = Path(__file__).resolve().parents[1]

PAGE = """<!doctype html><html><head><title>tiny stack</title></head><body>
<div id="quotes"></div><div id="positions"></div><div id="trades"></div>
<script>
const state = {quotes: {}, positions: [], last_trade: {}};
const fmt = (v) => (v === null || v === undefined) ? '—' : String(v);
function render() {
  const q = document.getElementById('quotes');
  q.innerHTML = '';
  for (const [sym, x] of Object.entries(state.quotes)) {
    const d = document.createElement('div');
    d.id = 'quote-' + sym;
    d.innerHTML = `<span class="bid">${fmt(x.bid)}</span> <span class="ask">${fmt(x.ask)}</span>
      <span class="last">${fmt(x.last)}</span>
      <span class="mode" data-mode="${x.mode}">${x.mode}</span>`;
    q.appendChild(d);
  }
  const p = document.getElementById('positions');
  p.innerHTML = '';
  for (const x of state.positions) {
    const d = document.createElement('div');
    d.className = 'position-card';
    d.dataset.symbol = x.symbol;
    d.innerHTML = `<span class="qty">${x.qty}</span>`;
    p.appendChild(d);
  }
  const t = document.getElementById('trades');
  t.innerHTML = '';
  for (const [sym, x] of Object.entries(state.last_trade)) {
    const d = document.createElement('div');
    d.className = 'last-trade';
    d.dataset.symbol = sym;
    d.innerHTML = `<span class="exec-id">${x.execId}</span>` +
      `<span class="perm-id">${x.permId}</span>`;
    t.appendChild(d);
  }
}
const ws = new WebSocket(`ws://${location.host}/ws${location.search}`);
ws.onmessage = (e) => { Object.assign(state, JSON.parse(e.data)); render(); };
</script></body></html>"""


class Hub:
    """The current state document and every subscriber's queue."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.state: dict[str, Any] = {
            "quotes": {},
            "positions": [],
            "last_trade": {},
            "status": {"connected": True, "mode": "live"},
        }
        self.queues: set[asyncio.Queue[str]] = set()

    def publish(self, partial: dict[str, Any]) -> None:
        """Merge an update into the state and send it (only the changed keys) to everyone."""
        for key, value in partial.items():
            if key in ("quotes", "last_trade") and isinstance(value, dict):
                self.state[key] = {**self.state.get(key, {}), **value}
            else:
                self.state[key] = value
        self.publish_raw(json.dumps(partial))

    def publish_raw(self, text: str) -> None:
        """Send text as-is (garbage tests)."""
        for q in list(self.queues):
            q.put_nowait(text)

    def authorized(self, headers: Any, query: Any) -> bool:
        if self.token is None:
            return True
        return headers.get("authorization") == f"Bearer {self.token}" or (
            query.get("token") == self.token
        )

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[str]]:
        q: asyncio.Queue[str] = asyncio.Queue()
        q.put_nowait(json.dumps(self.state))  # the full document first
        self.queues.add(q)
        try:
            yield q
        finally:
            self.queues.discard(q)


def make_app(hub: Hub) -> Starlette:
    """The Starlette app serving ``hub`` on all four kinds."""

    def denied() -> PlainTextResponse:
        return PlainTextResponse("unauthorized", status_code=401)

    async def events(request: Request) -> Any:
        if not hub.authorized(request.headers, request.query_params):
            return denied()

        async def stream() -> AsyncIterator[str]:
            with hub.subscribe() as q:
                while True:
                    text = await q.get()
                    yield "".join(f"data: {line}\n" for line in text.splitlines() or [""]) + "\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def state(request: Request) -> Any:
        if not hub.authorized(request.headers, request.query_params):
            return denied()
        # NaN on purpose: users' stacks emit it (Python's json does by default).
        return Response(json.dumps(hub.state), media_type="application/json")

    async def page(request: Request) -> Any:
        if not hub.authorized(request.headers, request.query_params):
            return denied()
        return HTMLResponse(PAGE)

    async def ws(websocket: WebSocket) -> None:
        if not hub.authorized(websocket.headers, websocket.query_params):
            await websocket.close(code=1008)
            return
        await websocket.accept()
        with hub.subscribe() as q:
            try:
                while True:
                    await websocket.send_text(await q.get())
            except (WebSocketDisconnect, RuntimeError):
                return

    return Starlette(
        routes=[
            Route("/events", events),
            Route("/api/state", state),
            Route("/", page),
            WebSocketRoute("/ws", ws),
        ]
    )


@contextlib.asynccontextmanager
async def serve(hub: Hub) -> AsyncIterator[int]:
    """Serve ``hub`` with uvicorn in the running loop on an ephemeral loopback port."""
    import uvicorn

    config = uvicorn.Config(
        make_app(hub), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        # Streaming responses never end by themselves; do not wait for them.
        server.force_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


# ---------------------------------------------------------------------------
# Fed by a gateway (the e2e tests run this as a subprocess)
# ---------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


async def feed_from_gateway(
    hub: Hub,
    ib_port: int,
    symbol: str,
    *,
    null_quotes: bool,
    client_id: int,
    garbage_every: int = 0,
) -> None:
    """Connect like a user's dashboard and echo what the gateway says into ``hub``.

    ``garbage_every`` > 0 sends a non-JSON message after every that many quote updates.
    """
    from ib_async import IB, Stock

    ib = IB()
    await ib.connectAsync("127.0.0.1", ib_port, clientId=client_id, timeout=10)
    (contract,) = await ib.qualifyContractsAsync(Stock(symbol, "SMART", "USD"))
    ticker = ib.reqMktData(contract, "", False, False)
    sent = [0]

    def on_tick(t: Any) -> None:
        bid, ask, last = _num(t.bid), _num(t.ask), _num(t.last)
        if bid is None and ask is None:
            return  # wait for real numbers, like a correct dashboard
        quote = {"conId": contract.conId, "bid": bid, "ask": ask, "last": last, "mode": "live"}
        if null_quotes:
            quote.update(bid=None, ask=None, last=None)
        hub.publish({"quotes": {symbol: quote}})
        sent[0] += 1
        if garbage_every and sent[0] % garbage_every == 0:
            hub.publish_raw("<html>502 Bad Gateway</html>")

    ticker.updateEvent += on_tick

    async def refresh_trades() -> None:
        fills = await ib.reqExecutionsAsync()
        mine = [f for f in fills if f.contract.symbol == symbol]
        if mine:
            ex = mine[-1].execution  # the latest; exec times have 1 s resolution
            hub.publish({"last_trade": {symbol: {"execId": ex.execId, "permId": ex.permId}}})

    def on_position(_pos: Any) -> None:
        positions = [
            {"symbol": p.contract.symbol, "conId": p.contract.conId, "qty": p.position}
            for p in ib.positions()
            if p.position
        ]
        fut = asyncio.ensure_future(refresh_trades())
        pending.add(fut)
        fut.add_done_callback(pending.discard)
        hub.publish({"positions": positions})

    pending: set[asyncio.Future[None]] = set()
    ib.positionEvent += on_position
    on_position(None)
    await asyncio.Event().wait()


async def _main(args: argparse.Namespace) -> None:
    import uvicorn

    hub = Hub(token=os.environ.get("STACK_TOKEN") or None)
    config = uvicorn.Config(
        make_app(hub), host="127.0.0.1", port=args.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    feed = asyncio.create_task(
        feed_from_gateway(
            hub,
            args.ib_port,
            args.contract,
            null_quotes=args.null_quotes,
            client_id=args.client_id,
            garbage_every=args.garbage_every,
        )
    )
    print(f"PORT={server.servers[0].sockets[0].getsockname()[1]}", flush=True)
    await asyncio.wait([task, feed], return_when=asyncio.FIRST_COMPLETED)
    if feed.done():
        feed.result()


def start_stack_process(
    ib_port: int,
    *,
    null_quotes: bool = False,
    garbage_every: int = 0,
    token: str | None = None,
    client_id: int = 41,
    timeout: float = 30,
) -> tuple[subprocess.Popen[str], int]:
    """Start the tiny stack against a gateway; returns (process, HTTP port). Two stacks on
    one gateway need different client ids, as two real dashboards would."""
    cmd = [sys.executable, "-m", "tests.stack_app", "--ib-port", str(ib_port), "--port", "0",
           "--client-id", str(client_id)]  # fmt: skip
    if null_quotes:
        cmd.append("--null-quotes")
    if garbage_every:
        cmd += ["--garbage-every", str(garbage_every)]
    env = {**os.environ, "STACK_TOKEN": token or ""}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return proc, _read_port(proc, timeout)


def _read_port(proc: subprocess.Popen[str], timeout: float) -> int:
    assert proc.stdout is not None
    end = time.monotonic() + timeout
    lines = []
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("PORT="):
            # Keep draining so a chatty process never blocks on a full pipe.
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return int(line.strip().split("=", 1)[1])
    proc.kill()
    raise RuntimeError("stack process did not print PORT=: " + "".join(lines)[-2000:])


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        del lines[:-200]


def start_sim_process(timeout: float = 30) -> tuple[subprocess.Popen[str], int]:
    """``harness sim --port 0`` as a subprocess; returns (process, port)."""
    cmd = [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return proc, _read_port(proc, timeout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ib-port", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--contract", default="AAPL")
    parser.add_argument("--client-id", type=int, default=41)
    parser.add_argument("--null-quotes", action="store_true")
    parser.add_argument("--garbage-every", type=int, default=0)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))
