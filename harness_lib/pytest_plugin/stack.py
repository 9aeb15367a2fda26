"""Stack and drill fixtures: a test starts its own stack, watches it, and drills it.

``livefire_stack`` (against the simulator or a ``--livefire-gateway``)::

    async def test_dashboard_shows_my_position(livefire, livefire_stack):
        await livefire_stack.spawn("python -m mydash --ib-port {ib_port} --port {port}")
        await livefire_stack.watch("harness.toml", symbol="AAPL")   # URLs may say {port}
        ib = await livefire.connect()
        await livefire.place(ib, Stock("AAPL", "SMART", "USD"), "BUY", 1)
        assert await livefire_stack.shows_position(1, within=2.0) <= 2.0

``livefire_drill`` (simulator only; skipped with the reason against a real gateway)::

    async def test_reconnects_without_duplicates(livefire, livefire_stack, livefire_drill):
        ...
        outcome = await livefire_drill("disconnect", reconnected=5)
        assert outcome.passed, outcome.summary()

The drill runs through the same control channel and judges as `harness drill`, served by the
test's own in-process simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness_lib.stack.observe import Observation
from harness_lib.stack.spec import Endpoint, parse_stack
from harness_lib.stack.watch import Watcher, make_watcher

__all__ = ["StackUnderTest", "free_port"]

START_TIMEOUT = 30.0


def free_port() -> int:
    """A free loopback TCP port (bound, then released) for the user's stack to serve on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StackUnderTest:
    """The user's stack in one test: processes it started, endpoints it watches."""

    def __init__(self, ib_host: str, ib_port: int) -> None:
        self.ib_host = ib_host
        self.ib_port = ib_port
        self.port = free_port()
        """The port ``{port}`` stands for in commands and endpoint URLs."""
        self.endpoints: list[Endpoint] = []
        self.symbol = ""
        self.observations: list[Observation] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._watchers: list[Watcher] = []

    def _fill(self, text: str) -> str:
        return (
            text.replace("{ib_port}", str(self.ib_port))
            .replace("{ib_host}", self.ib_host)
            .replace("{port}", str(self.port))
        )

    async def spawn(
        self, command: str | Sequence[str], *, ready_url: str | None = "http://127.0.0.1:{port}/"
    ) -> subprocess.Popen[bytes]:
        """Start the user's stack (``{ib_port}``, ``{ib_host}`` and ``{port}`` filled in); wait
        until ``ready_url`` answers (None: do not wait). Stopped when the test ends."""
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        argv = [self._fill(a) for a in argv]
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ}
        )
        self._procs.append(proc)
        if ready_url is None:
            return proc
        import httpx

        url = self._fill(ready_url)
        end = time.monotonic() + START_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace")[-800:] if proc.stderr else ""
                    raise AssertionError(f"the stack exited ({proc.returncode}): {err}")
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(url)
                    return proc
                if time.monotonic() > end:
                    raise AssertionError(f"the stack did not answer {url} in {START_TIMEOUT:g} s")
                await asyncio.sleep(0.1)

    async def watch(self, declaration: str | Path | list[dict[str, Any]], *, symbol: str) -> None:
        """Watch the declared endpoints (a TOML file of ``[[stack]]`` tables or the tables
        themselves; ``{port}`` in URLs is this stack's port) for ``symbol``."""
        import tomllib

        from harness_lib.drill.cli import bind_endpoints

        if isinstance(declaration, list):
            import json

            raw: Any = json.loads(self._fill(json.dumps(declaration)))
        else:
            text = self._fill(Path(declaration).read_text(encoding="utf-8"))
            raw = tomllib.loads(text).get("stack", [])
        self.symbol = symbol
        self.endpoints = bind_endpoints(parse_stack(raw, str(declaration)[:80]), symbol)
        for ep in self.endpoints:
            w = make_watcher(ep, self.observations.append)
            w.start()
            self._watchers.append(w)

    def shown_position(self, endpoint: str | None = None) -> float | None:
        """The latest position each (or one) endpoint showed; None if none showed one."""
        for o in reversed(self.observations):
            if o.position is not None and endpoint in (None, o.endpoint):
                return o.position.quantity
        return None

    async def shows_position(self, quantity: float, *, within: float) -> float:
        """Wait until every watched endpoint with a position shows ``quantity``; return the
        seconds it took, or fail the test saying what each showed."""
        eps = [ep.name for ep in self.endpoints if ep.position is not None]
        if not eps:
            raise AssertionError("no watched endpoint declares a position")
        t0 = time.monotonic()
        while True:
            shown = {name: self.shown_position(name) for name in eps}
            if all(q is not None and abs(q - quantity) < 1e-9 for q in shown.values()):
                return time.monotonic() - t0
            if time.monotonic() - t0 > within:
                raise AssertionError(
                    f"the stack did not show a position of {quantity:g} within {within:g} s "
                    f"(shown: {shown})"
                )
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop the watchers and the processes this test started."""
        for w in self._watchers:
            await w.stop()
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
