"""``harness record --listen PORT --upstream HOST:PORT``: a transparent recording proxy.

Any TWS client (a user's own engine, TWS API samples, ib_async) connects to the proxy as
if it were the gateway; every byte is passed on unchanged in both directions and
recorded, each client connection as one session of the same recording, with account ids
masked on disk exactly as the harness's own tap masks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from harness_lib.wire.format import Kind, RecordingWriter
from harness_lib.wire.mask import AccountMasker

log = logging.getLogger("harness_lib.wire.proxy")

READ_SIZE = 65536


class RecordingProxy:
    """Listens on 127.0.0.1 (or ``host``) and forwards to the upstream gateway."""

    def __init__(self, upstream_host: str, upstream_port: int, path: Path, *,
                 masker: AccountMasker | None, host: str = "127.0.0.1", port: int = 0,
                 meta: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.upstream = (upstream_host, upstream_port)
        self.host, self._port = host, port
        info = {"tool": "harness record", "upstream": f"{upstream_host}:{upstream_port}"}
        self.writer = RecordingWriter(path, {**info, **(meta or {}), "masked": bool(masker)},
                                      transform=masker)  # fmt: skip
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.sessions = 0

    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> RecordingProxy:
        """Open the recording and listen."""
        self.writer.start()
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        return self

    async def stop(self) -> Path:
        """Stop listening, end open sessions, finish the recording."""
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
        return self.writer.close()

    async def __aenter__(self) -> RecordingProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = c_writer.get_extra_info("peername")
        try:
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        except OSError as exc:
            log.warning("upstream %s:%s refused %s: %s", *self.upstream, peer, exc)
            c_writer.close()
            if task is not None:
                self._tasks.discard(task)
            return
        self.sessions += 1
        up = f"{self.upstream[0]}:{self.upstream[1]}"
        session = self.writer.open_session({"via": "proxy", "upstream": up})
        ended: list[str] = []

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, kind: Kind,
                       side: str) -> None:  # fmt: skip
            q = self.writer.queue
            try:
                while data := await src.read(READ_SIZE):
                    q.append((kind, session, time.monotonic(), time.time(), data))
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            if not ended:
                ended.append(side)
            with contextlib.suppress(Exception):
                dst.close()

        try:
            await asyncio.gather(
                pump(c_reader, u_writer, Kind.TO_SERVER, "client"),
                pump(u_reader, c_writer, Kind.TO_CLIENT, "server"),
            )
        finally:
            self.writer.close_session(session, ended[0] if ended else "proxy")
            for w in (c_writer, u_writer):
                with contextlib.suppress(Exception):
                    w.close()
            if task is not None:
                self._tasks.discard(task)
