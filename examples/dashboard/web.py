"""The web side: Starlette routes over the hub.

- ``GET /``           the HTML page (quote badge, position cards, last trade), live over ``/ws``
- ``GET /api/state``  the full state document as JSON
- ``GET /events``     Server-Sent Events: the full document first, then every update
- ``WS  /ws``         the same over a WebSocket; an optional first message
                      ``{"op": "subscribe", "symbols": ["AAPL"]}`` narrows it to those symbols

With ``--token`` every endpoint wants ``Authorization: Bearer <token>``. The page sets an
HttpOnly cookie on a successful load so its own WebSocket (browsers cannot add headers to one)
is authorised too; the token is never written into the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from examples.dashboard.hub import Hub, Subscription, encode, for_symbols

PAGE = Path(__file__).with_name("page.html")
COOKIE = "dashboard_session"
KEEPALIVE_S = 15.0
"""An SSE comment this often keeps proxies from closing an idle stream."""


def _authorised(conn: HTTPConnection, token: str | None) -> bool:
    if token is None:
        return True
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token):
        return True
    return hmac.compare_digest(conn.cookies.get(COOKIE, ""), token)


def _unauthorised() -> Response:
    return Response(
        "missing or wrong bearer token\n",
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
        media_type="text/plain",
    )


def create_app(
    hub: Hub,
    token: str | None = None,
    lifespan: Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    """The Starlette app serving ``hub``; ``lifespan`` runs the IB side next to it."""

    async def page(request: Request) -> Response:
        if not _authorised(request, token):
            return _unauthorised()
        response = HTMLResponse(PAGE.read_text(encoding="utf-8"))
        if token is not None:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def state(request: Request) -> Response:
        if not _authorised(request, token):
            return _unauthorised()
        return Response(encode(hub.snapshot()), media_type="application/json")

    async def events(request: Request) -> Response:
        if not _authorised(request, token):
            return _unauthorised()

        async def stream() -> AsyncIterator[str]:
            with hub.subscribe() as sub:
                yield f"data: {encode(hub.snapshot())}\n\n"
                while True:
                    try:
                        update = await sub.next(KEEPALIVE_S)
                    except ConnectionAbortedError:
                        return
                    yield ": keep-alive\n\n" if update is None else f"data: {encode(update)}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def ws(websocket: WebSocket) -> None:
        if not _authorised(websocket, token):
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        await websocket.accept()
        with hub.subscribe() as sub:
            await websocket.send_text(encode(hub.snapshot()))
            reading = _read_subscriptions(websocket, hub, sub)
            reader = asyncio.get_running_loop().create_task(reading)
            try:
                while True:
                    # Wait for the next update or for the client to go away, whichever is first.
                    nxt = asyncio.ensure_future(sub.next(KEEPALIVE_S))
                    await asyncio.wait({nxt, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not nxt.done():
                        nxt.cancel()
                        break
                    update = nxt.result()
                    if update is not None and (narrowed := _narrow(update, sub.symbols)):
                        await websocket.send_text(encode(narrowed))
            except (WebSocketDisconnect, RuntimeError, ConnectionAbortedError):
                pass
            finally:
                reader.cancel()
                with contextlib.suppress(Exception):
                    await websocket.close()

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/events", events),
            WebSocketRoute("/ws", ws),
        ],
        lifespan=lifespan,
    )


def _narrow(update: dict[str, Any], symbols: set[str] | None) -> dict[str, Any]:
    out = for_symbols(update, symbols)
    # A per-symbol update about other symbols only is nothing for this client.
    return {k: v for k, v in out.items() if v or k in ("positions", "status")}


async def _read_subscriptions(websocket: WebSocket, hub: Hub, sub: Subscription) -> None:
    """Read client messages; a subscribe narrows the stream and resends the state for it."""
    while True:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            msg = json.loads(text)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("op") == "subscribe":
            symbols = msg.get("symbols")
            if isinstance(symbols, list) and all(isinstance(s, str) for s in symbols):
                sub.symbols = {s.upper() for s in symbols}
                await websocket.send_text(encode(hub.snapshot(sub.symbols)))
