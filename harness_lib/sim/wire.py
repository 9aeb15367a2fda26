"""Framing and field encoding of the TWS API socket protocol, seen from the server side.

Every frame is a 4-byte big-endian length followed by NUL-terminated text fields
(the last one included: ib_async pops the trailing empty field unconditionally).
The connection starts with the client's raw ``API\\0`` prefix and a length-prefixed
version range, which the server answers with exactly two fields.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any

SERVER_VERSION = 178
"""What a current TWS/IB Gateway negotiates with ib_async 2.1 (the top of its range)."""

MIN_CLIENT_VERSION = 157
"""The lowest server version the simulator negotiates (ib_async's minimum, and the maximum
of IB's official ibapi 9.81); a client whose range ends below it is refused at the
handshake. Every layout the simulator sends is encoded for the version negotiated in
MIN_CLIENT_VERSION..SERVER_VERSION (see messages.py)."""
MAX_FRAME = 16 * 1024 * 1024
"""Frames larger than this are treated as garbage rather than buffered forever."""

UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE = 1.7976931348623157e308

_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent bytes that are not the TWS protocol; only that connection is dropped."""


def fmt(value: Any) -> str:
    """Encode one field the way TWS does: empty for unset, ints plain, floats compact."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "" if value == UNSET_INTEGER else str(value)
    if isinstance(value, float):
        if value == UNSET_DOUBLE or math.isnan(value):
            return ""
        if math.isinf(value):
            return "Infinity"
        # repr gives the shortest round-tripping text; integers keep a ".0" like TWS.
        return repr(value)
    return str(value)


def frame(fields: Iterable[Any]) -> bytes:
    """Build one length-prefixed frame from already-ordered fields."""
    payload = "".join(fmt(f) + "\0" for f in fields).encode("utf-8")
    return _LEN.pack(len(payload)) + payload


def handshake_reply(server_version: int, connection_time: str) -> bytes:
    """The reply to the client's version range: exactly two fields, or ib_async never connects."""
    return frame([server_version, connection_time])


def parse_version_range(text: str) -> tuple[int, int, str]:
    """Parse ``v157..178[ +PACEAPI]`` into (min, max, options)."""
    head, _, options = text.partition(" ")
    if not head.startswith("v"):
        raise ProtocolError(f"bad version string {text!r}")
    lo, sep, hi = head[1:].partition("..")
    try:
        low = int(lo)
        high = int(hi) if sep else low
    except ValueError as exc:
        raise ProtocolError(f"bad version string {text!r}") from exc
    return low, high, options


class FrameReader:
    """Incremental parser for what a client sends: the API prefix, then frames.

    Feed it bytes as they arrive; iterate ``frames()`` for complete messages. It never
    blocks and never buffers more than ``MAX_FRAME`` bytes for one message.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.greeted = False
        self.version_text: str | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buf += data

    def greet(self) -> bool:
        """Consume the ``API\\0`` prefix and version range once they are complete.

        Returns True exactly once, when the greeting has just been read (the server must
        answer it before the client sends anything else).
        """
        if self.greeted:
            return False
        buf = self._buf
        if len(buf) < 4:
            return False
        if bytes(buf[:4]) != b"API\0":
            raise ProtocolError(f"expected API\\0 prefix, got {bytes(buf[:4])!r}")
        if len(buf) < 8:
            return False
        (n,) = _LEN.unpack_from(buf, 4)
        if n > 1024:
            raise ProtocolError(f"version string of {n} bytes")
        if len(buf) < 8 + n:
            return False
        self.version_text = bytes(buf[8 : 8 + n]).decode("ascii", errors="replace")
        del buf[: 8 + n]
        self.greeted = True
        return True

    def frames(self) -> Iterator[list[str]]:
        """Yield each complete message as its list of fields (the trailing NUL removed)."""
        buf = self._buf
        if not self.greeted:
            return
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf, 0)
            if n > MAX_FRAME:
                raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
            if len(buf) < 4 + n:
                return
            text = bytes(buf[4 : 4 + n]).decode("utf-8", errors="backslashreplace")
            del buf[: 4 + n]
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            if not fields or fields[0] == "":
                raise ProtocolError("empty message")
            yield fields
