"""Small async helpers for integration tests (no stand-ins: these drive real ib_async)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ib_async import IB


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> float:
    """Await until ``pred()`` is true; return the seconds it took or fail the test."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
    return time.monotonic() - t0


async def connect(port: int, client_id: int = 1, timeout: float = 4.0) -> IB:
    """A real ib_async client connected to the simulator on loopback."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=timeout)
    return ib
