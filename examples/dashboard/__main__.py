"""Run the dashboard: ``uv run python -m examples.dashboard --ib-port 7599 --port 8765``.

From the repository root. It connects to the gateway (or ``harness sim``) at ``--ib-port``,
retrying until it answers, and serves http://127.0.0.1:8765/ (page), ``/api/state``,
``/events`` (SSE) and ``/ws`` (WebSocket). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from examples.dashboard.broker import Supervisor, make_contract
from examples.dashboard.bugs import BUGS, build
from examples.dashboard.hub import Hub
from examples.dashboard.web import create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m examples.dashboard", description=__doc__)
    p.add_argument("--ib-host", default="127.0.0.1", help="gateway host (default 127.0.0.1)")
    p.add_argument("--ib-port", type=int, default=7599, help="gateway port (default 7599)")
    p.add_argument("--client-id", type=int, default=77, help="IB API client id (default 77)")
    p.add_argument("--host", default="127.0.0.1", help="interface to serve on (default loopback)")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    p.add_argument("--contract", default="AAPL", help="symbol to quote: AAPL, EUR.USD, …")
    p.add_argument("--bug", choices=sorted(BUGS), default=None, help="run with one planted mistake")
    p.add_argument(
        "--stale-after",
        type=float,
        default=5.0,
        help="seconds without a tick before a live stream is shown degraded (default 5)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("DASHBOARD_TOKEN") or None,
        help="require 'Authorization: Bearer TOKEN' (default: $DASHBOARD_TOKEN, else none)",
    )
    return p.parse_args(argv)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts, so a busy port is one clear line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"error: cannot serve on {host}:{port} ({exc.strerror}); pick another --port",
              file=sys.stderr)  # fmt: skip
        sys.exit(4)
    sock.set_inheritable(True)
    return sock


async def serve(args: argparse.Namespace, sock: socket.socket) -> None:
    """Run uvicorn and the IB supervisor on one event loop until interrupted."""
    hub = Hub()
    parts = build(args.bug)
    supervisor = Supervisor(
        hub,
        make_contract(args.contract),
        args.ib_host,
        args.ib_port,
        args.client_id,
        feed_factory=parts.feed,
        tracker_factory=parts.tracker,
    )
    supervisor.feed.stale_after = args.stale_after

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(supervisor.run())
        try:
            yield
        finally:
            supervisor.stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = create_app(hub, token=args.token, lifespan=lifespan)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=2,  # open SSE streams and tabs must not block Ctrl-C
    )
    server = uvicorn.Server(config)
    serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if server.started:
        print(
            f"dashboard on http://{args.host}:{args.port}/ "
            f"(gateway {args.ib_host}:{args.ib_port}, contract {args.contract}, "
            f"bug {args.bug or 'none'})",
            flush=True,
        )
    # On Ctrl-C uvicorn stops accepting, then waits for open connections; end the streams
    # now rather than after its graceful-shutdown timeout.
    while not server.should_exit and not serving.done():
        await asyncio.sleep(0.1)
    hub.close()
    await serving


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    sock = bind(args.host, args.port)
    # uvicorn re-raises the Ctrl-C it handled once it has shut down.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, sock))
    print("dashboard stopped", flush=True)


if __name__ == "__main__":
    main()
