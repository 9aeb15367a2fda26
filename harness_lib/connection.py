"""One ib_async connection per run: connect with a timeout, collect IB messages, reconnect.

Everything uses ib_async's async API (``connectAsync`` and friends), so it runs on any
event loop, marimo's included, without nest_asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ib_async import IB

from harness_lib.models import IBMessage, utcnow
from harness_lib.sim import SIM_MARKER

log = logging.getLogger("harness_lib.connection")

GOOD_FARM_CODES = {2104, 2106, 2158}
BAD_FARM_CODES = {2103, 2105, 1100}
CONNECTIVITY_CODES = {1100, 1101, 1102}
WARNING_CODES = {105, 110, 165, 321, 329, 399, 404, 434, 492, 10167, *range(2100, 2200)}
"""What ib_async itself treats as warnings rather than errors."""


class GatewayUnreachable(Exception):
    """Nothing accepted the TCP connection (no gateway listening on that host and port)."""


class HandshakeTimeout(Exception):
    """The TCP connection opened but the API handshake did not finish in time."""


def kind_of(code: int) -> str:
    """Classify an IB message code as 'notice', 'warning' or 'error'."""
    if code in GOOD_FARM_CODES:
        return "notice"
    if code in WARNING_CODES:
        return "warning"
    return "error"


@dataclass
class Connection:
    """An ib_async ``IB`` plus everything IB told us on it, with timestamps.

    ``messages`` keeps every error/warning/notice in arrival order; phases look at the
    slice that arrived during their own work (``mark()`` / ``since()``).
    """

    host: str
    port: int
    client_id: int
    timeout: float = 4.0
    ib: IB = field(default_factory=IB)
    messages: list[IBMessage] = field(default_factory=list)
    listeners: list[Callable[[IBMessage], None]] = field(default_factory=list)
    connect_seconds: float | None = None
    reconnects: int = 0
    _wired: bool = False

    def _wire(self) -> None:
        if self._wired:
            return
        self._wired = True
        self.ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, text: str, contract: object) -> None:
        msg = IBMessage(code=code, message=text, req_id=req_id, t_wall=utcnow())
        self.messages.append(msg)
        for fn in list(self.listeners):
            try:
                fn(msg)
            except Exception:  # a listener must never break message collection
                log.exception("IB message listener failed")

    @property
    def simulated(self) -> bool:
        """True when the gateway identified itself as the livefire simulator."""
        return any(SIM_MARKER in m.message for m in self.messages if m.code in GOOD_FARM_CODES)

    def mark(self) -> int:
        """A position in the message log, for ``since``."""
        return len(self.messages)

    def since(self, mark: int, codes: set[int] | None = None) -> list[IBMessage]:
        """Messages that arrived after ``mark`` (optionally only some codes)."""
        out = self.messages[mark:]
        return [m for m in out if codes is None or m.code in codes]

    def codes(self) -> set[int]:
        """Every code seen so far."""
        return {m.code for m in self.messages}

    async def connect(self) -> float:
        """Connect within ``timeout``; return the seconds it took.

        Raises GatewayUnreachable when nothing listens (at once, not after the timeout)
        and HandshakeTimeout when the socket opened but the API never became ready.
        """
        self._wire()
        t0 = time.monotonic()
        try:
            await self.ib.connectAsync(
                self.host, self.port, clientId=self.client_id, timeout=self.timeout
            )
        except (ConnectionRefusedError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise HandshakeTimeout(self._timeout_text()) from None
            self.ib.disconnect()
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
            raise GatewayUnreachable(
                f"nothing is listening on {self.host}:{self.port} ({why})"
            ) from None
        except (TimeoutError, ConnectionError):
            self.ib.disconnect()
            raise HandshakeTimeout(self._timeout_text()) from None
        self.connect_seconds = time.monotonic() - t0
        return self.connect_seconds

    def _timeout_text(self) -> str:
        if 326 in self.codes():
            return (
                f"client id {self.client_id} is already in use on {self.host}:{self.port} "
                "(IB 326); pick another --client-id"
            )
        return (
            f"{self.host}:{self.port} accepted the connection but the API handshake did not "
            f"finish within {self.timeout:g}s (is the API enabled and the gateway logged in?)"
        )

    async def ensure_connected(self, attempts: int = 5, backoff: float = 0.5) -> bool:
        """Reconnect after a drop, with bounded retries and exponential backoff.

        Returns True when connected. Used by cleanup, which must finish even after the
        gateway dropped us mid-run.
        """
        if self.ib.isConnected():
            return True
        delay = backoff
        for attempt in range(1, attempts + 1):
            with contextlib.suppress(GatewayUnreachable, HandshakeTimeout):
                self.ib.disconnect()
                await self.connect()
                self.reconnects += 1
                log.info("reconnected on attempt %d", attempt)
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return False

    def disconnect(self) -> None:
        """Close the socket (idempotent)."""
        self.ib.disconnect()
