"""The wire-recording file format (version 1), its writer and its reader.

A recording is one gzip stream (``<run_id>.lfwire.gz``; ``zcat`` shows the raw bytes).
Uncompressed, it is::

    MAGIC (8 bytes: b"LFWIRE\\x00" + format version byte)
    record*

and every record is a 23-byte big-endian header followed by its payload::

    kind     u8    what the record is (below)
    session  u16   which TCP connection (1, 2, ... in connection order; 0 for META)
    t_mono   f64   time.monotonic() of the recording process when the bytes were read/written
    t_wall   f64   time.time() at the same moment (seconds since the epoch, UTC)
    length   u32   payload bytes
    payload

Kinds:

    META       JSON object: format, tool, run_id, created, masked, note (first record)
    OPEN       JSON object: the peer (host, port) and who connected, for a new session
    TO_SERVER  bytes the client wrote in one send, exactly as on the wire
    TO_CLIENT  bytes the client received in one socket read, exactly as on the wire
    CLOSE      JSON object: {"by": "client" | "server", "reason": str}

Why raw socket chunks rather than one record per message: recording must cost the event
loop almost nothing, so the tap appends each read as it came (one tuple per read, not per
message) and the writer thread only packs and compresses. Messages are cut out of the
byte stream when the file is read (:func:`frames`); every message gets the stamps of the
read that completed it, which is exactly the arrival time ib_async itself gives
``TickData.time``. Account ids are replaced by pseudonyms of the same length before
anything is written (see ``mask.py``), so the length prefixes stay valid.

Why gzip and not zstd: it is in the standard library (no dependency), every machine can
open it with ``zcat``, zlib releases the GIL while it compresses (so it runs on the other
core), and at the harness's rates (tens of thousands of ticks a second, ~40 bytes each)
compression at level 1 runs at about 200 MB/s, far above what a client receives.

A file cut short by a crash is read up to its last complete record: the writer flushes
the gzip stream (a sync flush) every ``FLUSH_SECONDS`` (0.1 s).
"""

from __future__ import annotations

import gzip
import json
import logging
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

log = logging.getLogger("harness_lib.wire")

FORMAT_VERSION = 1
MAGIC = b"LFWIRE\x00" + bytes([FORMAT_VERSION])
SUFFIX = ".lfwire.gz"
HEADER = struct.Struct(">BHddI")
FLUSH_SECONDS = 0.1
"""How often the writer thread drains the queue, compresses and sync-flushes the file: a
crash loses at most this much, and closing a recording compresses at most this much."""
LEVEL = 1
"""zlib level 1: about 4x faster than the default 6 (≈200 MB/s against 50 on tick data)
for files about 1.5x larger; the box is shared, disk is not the scarce resource."""
SLICE_SECONDS = 0.0001
"""Background threads hold the GIL for at most about this long at a time (see run.py)."""


def wire_dir(store: Path) -> Path:
    """Where recordings live: ``wire/`` beside the run store (``data/wire/`` by default)."""
    return store.parent / "wire"


def recording_path(store: Path, run_id: str) -> Path:
    """The recording of one run."""
    return wire_dir(store) / f"{run_id}{SUFFIX}"


class Kind(IntEnum):
    """Record kinds (the first header byte)."""

    META = 0
    OPEN = 1
    TO_SERVER = 2
    TO_CLIENT = 3
    CLOSE = 4


class RecordingError(Exception):
    """The file is not a wire recording this version can read."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a recording."""

    kind: Kind
    session: int
    t_mono: float
    t_wall: float
    payload: bytes

    def json(self) -> dict[str, Any]:
        """The payload of a META, OPEN or CLOSE record."""
        return json.loads(self.payload.decode("utf-8"))


@dataclass(frozen=True, slots=True)
class Frame:
    """One TWS message, cut out of the recorded byte stream.

    ``fields`` excludes the trailing empty field; a client greeting (``API\\0`` and the
    version range) is the frame ``["API", "v157..178"]`` with ``greeting`` set.
    """

    session: int
    to_server: bool
    t_mono: float
    t_wall: float
    fields: list[str]
    greeting: bool = False
    read: int = 0
    """Index of the socket read (or write) that completed this message, per session and
    direction: messages of one read share it (ib_async handles them as one batch)."""

    @property
    def msg_id(self) -> int:
        """The message id (first field), or -1 for the greeting and the handshake reply."""
        if self.greeting:
            return -1
        try:
            return int(self.fields[0])
        except (ValueError, IndexError):
            return -1


def pack(kind: Kind, session: int, t_mono: float, t_wall: float, payload: bytes) -> bytes:
    """One record's bytes."""
    return HEADER.pack(kind, session, t_mono, t_wall, len(payload)) + payload


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("utf-8")


@dataclass
class Recording:
    """A whole recording read into memory."""

    path: Path | None
    meta: dict[str, Any]
    records: list[Record]
    truncated: bool = False

    def sessions(self) -> list[int]:
        """Session numbers in connection order."""
        return sorted({r.session for r in self.records if r.kind == Kind.OPEN})

    def frames(self, session: int | None = None) -> list[Frame]:
        """Every message of one session (or all sessions), in recorded order."""
        return list(frames(self.records, session))


def frames(records: list[Record], session: int | None = None) -> Iterator[Frame]:
    """Cut the recorded byte streams into messages (per session and direction)."""
    bufs: dict[tuple[int, bool], bytearray] = {}
    greeted: set[int] = set()
    reads: dict[tuple[int, bool], int] = {}
    for r in records:
        if r.kind not in (Kind.TO_SERVER, Kind.TO_CLIENT):
            continue
        if session is not None and r.session != session:
            continue
        key = (r.session, r.kind == Kind.TO_SERVER)
        n_read = reads[key] = reads.get(key, 0) + 1
        buf = bufs.setdefault(key, bytearray())
        buf += r.payload
        if key[1] and r.session not in greeted:
            if len(buf) < 8 or bytes(buf[:4]) != b"API\0":
                if len(buf) >= 4 and bytes(buf[:4]) != b"API\0":
                    greeted.add(r.session)  # not a TWS client; read frames as they come
                else:
                    continue
            else:
                (n,) = struct.unpack_from(">I", buf, 4)
                if len(buf) < 8 + n:
                    continue
                text = bytes(buf[8 : 8 + n]).decode("ascii", "replace")
                del buf[: 8 + n]
                greeted.add(r.session)
                yield Frame(r.session, True, r.t_mono, r.t_wall, ["API", text], True, n_read)
        while len(buf) >= 4:
            (n,) = struct.unpack_from(">I", buf, 0)
            if len(buf) < 4 + n:
                break
            text = bytes(buf[4 : 4 + n]).decode("utf-8", "backslashreplace")
            del buf[: 4 + n]
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            yield Frame(r.session, key[1], r.t_mono, r.t_wall, fields, False, n_read)


def read_recording(path: Path | str) -> Recording:
    """Read a recording; a file cut short by a crash yields its complete records."""
    p = Path(path)
    try:
        raw_file = p.open("rb")
    except OSError as exc:
        raise RecordingError(f"cannot open recording {p}: {exc.strerror or exc}") from None
    data = bytearray()
    truncated = False
    with raw_file, gzip.GzipFile(fileobj=raw_file, mode="rb") as gz:
        try:
            while chunk := gz.read(1 << 20):
                data += chunk
        except (EOFError, zlib.error):
            truncated = True  # a crash cut the stream; keep what was flushed
        except gzip.BadGzipFile:
            raise RecordingError(f"{p} is not a wire recording (not a gzip file)") from None
    return parse(bytes(data), p, truncated)


def parse(data: bytes, path: Path | None = None, truncated: bool = False) -> Recording:
    """Parse uncompressed recording bytes."""
    if data[:6] != MAGIC[:6]:
        raise RecordingError(f"{path or 'data'} is not a wire recording (bad magic)")
    if data[7] != FORMAT_VERSION:
        raise RecordingError(
            f"{path or 'data'} is wire format version {data[7]}; this harness reads "
            f"version {FORMAT_VERSION} (upgrade livefire)"
        )
    records: list[Record] = []
    off, end, hsize = len(MAGIC), len(data), HEADER.size
    while off + hsize <= end:
        kind, session, t_mono, t_wall, n = HEADER.unpack_from(data, off)
        if off + hsize + n > end:
            truncated = True
            break
        payload = data[off + hsize : off + hsize + n]
        records.append(Record(Kind(kind), session, t_mono, t_wall, payload))
        off += hsize + n
    else:
        truncated = truncated or off != end
    meta = records[0].json() if records and records[0].kind == Kind.META else {}
    # The masker may hold a read back until the next one arrives, so the file order can
    # differ slightly from the time order; the stamps (one monotonic clock) are the truth.
    records.sort(key=lambda r: (r.kind != Kind.META, r.t_mono))
    return Recording(path, meta, records, truncated)


def write_records(path: Path | str, meta: dict[str, Any], records: list[Record]) -> Path:
    """Write a complete recording at once (tests, hand-written and edited recordings)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = [MAGIC, pack(Kind.META, 0, 0.0, time.time(), _json_bytes(meta))]
    body += [pack(r.kind, r.session, r.t_mono, r.t_wall, r.payload) for r in records]
    with gzip.open(p, "wb", compresslevel=LEVEL) as gz:
        gz.write(b"".join(body))
    return p


def encode_frame(fields: list[Any]) -> bytes:
    """A TWS message on the wire: length prefix and NUL-terminated fields."""
    payload = "".join(f"{f}\0" for f in fields).encode("utf-8")
    return struct.pack(">I", len(payload)) + payload


def encode_greeting(version_text: str = "v157..178") -> bytes:
    """The client's first bytes: ``API\\0`` and the length-prefixed version range."""
    text = version_text.encode("ascii")
    return b"API\0" + struct.pack(">I", len(text)) + text


def frame_records(session_frames: list[Frame], session: int = 1, t_wall0: float = 0.0,
                  close_by: str | None = None) -> list[Record]:  # fmt: skip
    """Records holding these messages, one read each (for edited and hand-written
    recordings): an OPEN, the frames, and a CLOSE when ``close_by`` is given."""
    if not session_frames:
        return []
    t0 = session_frames[0].t_mono
    out = [Record(Kind.OPEN, session, t0, t_wall0 + t0, _json_bytes({"via": "script"}))]
    for f in session_frames:
        data = encode_greeting(f.fields[1]) if f.greeting else encode_frame(f.fields)
        kind = Kind.TO_SERVER if f.to_server else Kind.TO_CLIENT
        out.append(Record(kind, session, f.t_mono, f.t_wall or t_wall0 + f.t_mono, data))
    if close_by:
        end = session_frames[-1].t_mono + 0.001
        payload = _json_bytes({"by": close_by, "reason": ""})
        out.append(Record(Kind.CLOSE, session, end, t_wall0 + end, payload))
    return out


Event = tuple[int, int, float, float, bytes]
"""(kind, session, t_mono, t_wall, payload): what the tap queues for the writer."""


@dataclass
class RecordingWriter:
    """Writes one recording from a background thread.

    The event loop only appends ``Event`` tuples to ``queue`` (a deque: appends and pops
    are thread-safe); the thread masks, packs, compresses and flushes. ``transform`` (the
    account masker) sees each (kind, session, payload) before it is written.
    """

    path: Path
    meta: dict[str, Any]
    transform: Callable[[int, int, bytes], list[tuple[int, int, float, float, bytes]]] | None = None
    flush_seconds: float = FLUSH_SECONDS
    queue: deque[Event] = field(default_factory=deque)
    derive_queue: deque[Event] | None = None
    """When set, every event also goes here after it is written (for the tick deriver)."""
    bytes_in: int = 0
    records_out: int = 0
    _sessions: int = 0
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _closed: bool = False

    def start(self) -> RecordingWriter:
        """Create the file and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "created": time.time(), **self.meta}
        # Closed by close(): the file lives as long as the run, across many calls.
        self._gz = gzip.open(self.path, "wb", compresslevel=LEVEL)  # noqa: SIM115
        head = pack(Kind.META, 0, time.monotonic(), time.time(), _json_bytes(meta))
        self._gz.write(MAGIC + head)
        self._gz.flush()
        self._thread = threading.Thread(target=self._run, name="wire-writer", daemon=True)
        self._thread.start()
        return self

    # --- called on the event loop ------------------------------------------------------------
    def open_session(self, info: dict[str, Any]) -> int:
        """Start a new TCP session; returns its number."""
        self._sessions += 1
        self.queue.append(
            (Kind.OPEN, self._sessions, time.monotonic(), time.time(), _json_bytes(info))
        )
        return self._sessions

    def close_session(self, session: int, by: str, reason: str = "") -> None:
        """Record that a session ended."""
        payload = _json_bytes({"by": by, "reason": reason})
        self.queue.append((Kind.CLOSE, session, time.monotonic(), time.time(), payload))

    # --- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        q = self.queue
        if not q:
            return
        out: list[bytes] = []
        hdr = HEADER.pack
        transform = self.transform
        dq = self.derive_queue
        n_in = 0
        clock = time.perf_counter
        t_slice = clock()
        try:
            while q:
                if len(out) & 127 == 0 and clock() - t_slice > SLICE_SECONDS:
                    # Python here holds the GIL; a short sleep lets the event loop's
                    # thread take it now rather than after the 5 ms switch interval.
                    time.sleep(SLICE_SECONDS)
                    t_slice = clock()
                event = q.popleft()
                if dq is not None:
                    dq.append(event)
                kind, session, t_mono, t_wall, payload = event
                n_in += len(payload)
                if transform is None:
                    out.append(hdr(kind, session, t_mono, t_wall, len(payload)))
                    out.append(payload)
                    continue
                for k, s, m, w, p in transform(kind, session, payload, t_mono, t_wall):
                    out.append(hdr(k, s, m, w, len(p)))
                    out.append(p)
            if transform is not None and hasattr(transform, "drain_end"):
                for k, s, m, w, p in transform.drain_end():
                    out.append(hdr(k, s, m, w, len(p)))
                    out.append(p)
            self.bytes_in += n_in
            self.records_out += len(out) // 2
            self._gz.write(b"".join(out))
            self._gz.flush()  # a sync flush: a crash keeps everything written so far
        except Exception:  # the recording must never take the run down
            log.exception("wire recording %s: write failed", self.path)

    def close(self) -> Path:
        """Write everything queued, finish the gzip stream and stop the thread."""
        if self._closed:
            return self.path
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.transform is not None and hasattr(self.transform, "finish"):
            rest = self.transform.finish()  # type: ignore[attr-defined]
            body = [pack(Kind(k), s, m, w, p) for k, s, m, w, p in rest]
            self._gz.write(b"".join(body))
        self._gz.close()
        return self.path
