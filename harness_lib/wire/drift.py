"""Drift: does the simulator still answer like the gateway in a recording?

``harness drift <recording>`` plays the recording's client side (every byte the client
sent, at its recorded time) against a fresh simulator, records what comes back, and
compares the two answers request by request, structurally:

- **messages**: the sequence of non-streaming message types (a missing or extra
  ``contractDetailsEnd``, an ``orderStatus`` out of order); tick messages are compared as
  a set of types, since how many arrive depends on time and prices;
- **error codes**: in order, per request;
- **field counts** per message type (at the negotiated server version);
- **field presence and shape** per position: empty, int, float or text, compared as
  the set seen across all messages of that type; a drift is a position whose shapes on
  the two sides have nothing in common (a price sent as text, a count left empty).

Values that legitimately differ (prices, sizes, times, ids, texts) are never compared.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from harness_lib.wire.format import (
    Frame,
    Kind,
    Record,
    Recording,
    encode_frame,
    encode_greeting,
    frames,
)
from harness_lib.wire.protocol import STREAMING, Exchange, exchanges, message_name

SETTLE_SECONDS = 0.5
"""How long to keep listening after the last request when the recording gives no end."""


@dataclass(frozen=True)
class Difference:
    """One structural difference between the recording and the simulator."""

    session: int
    request: str
    kind: str
    """missing message | extra message | message order | error code | field count |
    field shape | tick types"""
    message: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.session}] {self.request}: {self.kind} {self.message}: {self.detail}"


@dataclass
class DriftReport:
    """Every difference found, and what was compared."""

    recording: str
    scenario: str
    requests: int = 0
    messages_recorded: int = 0
    messages_simulated: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def drift(self) -> int:
        """Number of structural differences (0: no drift)."""
        return len(self.differences)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "recording": self.recording,
            "scenario": self.scenario,
            "requests": self.requests,
            "messages_recorded": self.messages_recorded,
            "messages_simulated": self.messages_simulated,
            "drift": self.drift,
            "differences": [asdict(d) for d in self.differences],
        }


def shape(value: str) -> str:
    """empty | int | float | text: what a field is, never what it says."""
    if value == "":
        return "empty"
    try:
        int(value)
        return "int"
    except ValueError:
        pass
    try:
        float(value)
        return "float"
    except ValueError:
        return "text"


def _type(f: Frame, handshake: bool) -> str:
    return "handshake" if handshake else message_name(f.msg_id)


def _typed(ex: Exchange) -> list[tuple[str, Frame]]:
    greeting = ex.request is not None and ex.request.greeting
    return [(_type(f, greeting and i == 0), f) for i, f in enumerate(ex.answers)]


def compare(session: int, rec: Exchange, sim: Exchange) -> list[Difference]:
    """Structural differences between one recorded and one simulated answer."""
    out: list[Difference] = []
    name = rec.name

    def diff(kind: str, message: str, detail: str) -> None:
        out.append(Difference(session, name, kind, message, detail))

    a, b = _typed(rec), _typed(sim)
    seq_a = [t for t, f in a if f.msg_id not in STREAMING or t == "handshake"]
    seq_b = [t for t, f in b if f.msg_id not in STREAMING or t == "handshake"]
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=seq_a, b=seq_b).get_opcodes():
        if op == "delete":
            for t in seq_a[i1:i2]:
                diff("missing message", t, "the gateway sent it; the simulator did not")
        elif op == "insert":
            for t in seq_b[j1:j2]:
                diff("extra message", t, "the simulator sent it; the gateway did not")
        elif op == "replace":
            diff("message order", ",".join(seq_a[i1:i2]), f"simulator: {','.join(seq_b[j1:j2])}")
    ticks_a = {t for t, f in a if f.msg_id in STREAMING and t != "handshake"}
    ticks_b = {t for t, f in b if f.msg_id in STREAMING and t != "handshake"}
    for t in sorted(ticks_a - ticks_b):
        diff("missing message", t, "the gateway streamed it; the simulator did not")
    for t in sorted(ticks_b - ticks_a):
        diff("extra message", t, "the simulator streamed it; the gateway did not")
    codes_a = [f.fields[3] for t, f in a if f.msg_id == 4 and len(f.fields) > 3 and t == "error"]
    codes_b = [f.fields[3] for t, f in b if f.msg_id == 4 and len(f.fields) > 3 and t == "error"]
    if codes_a != codes_b:
        diff("error code", "error", f"gateway {codes_a or 'none'}, simulator {codes_b or 'none'}")
    by_a: dict[str, list[list[str]]] = {}
    by_b: dict[str, list[list[str]]] = {}
    for t, f in a:
        by_a.setdefault(t, []).append(f.fields)
    for t, f in b:
        by_b.setdefault(t, []).append(f.fields)
    for t in sorted(by_a.keys() & by_b.keys()):
        na = {len(x) for x in by_a[t]}
        nb = {len(x) for x in by_b[t]}
        if na != nb:
            diff("field count", t, f"gateway {sorted(na)}, simulator {sorted(nb)}")
            continue
        for pos in range(1, max(na)):
            sa = {shape(x[pos]) for x in by_a[t] if pos < len(x)}
            sb = {shape(x[pos]) for x in by_b[t] if pos < len(x)}
            if sa and sb and not _compatible(sa, sb):
                diff("field shape", t, f"field {pos}: gateway {sorted(sa)}, simulator {sorted(sb)}")
    return out


def _compatible(a: set[str], b: set[str]) -> bool:
    # An int-looking float ("1") is a valid float, but a float is not a valid int.
    widen = {"int": {"int", "float"}}
    return bool({y for x in a for y in widen.get(x, {x})} & b) or bool(a & b)


async def play(recording: Recording, session: int, port: int, speed: float = 1.0,
               settle: float = SETTLE_SECONDS) -> list[Frame]:  # fmt: skip
    """Send one recorded session's client side to ``port`` at its recorded timing; return
    both directions as frames (the simulator's side of the same conversation)."""
    rec_frames = recording.frames(session)
    client = [f for f in rec_frames if f.to_server]
    if not client:
        return []
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    records: list[Record] = []
    t0 = time.monotonic()
    base = client[0].t_mono

    async def listen() -> None:
        while data := await reader.read(65536):
            records.append(Record(Kind.TO_CLIENT, 1, time.monotonic(), time.time(), data))

    listener = asyncio.create_task(listen())
    try:
        for f in client:
            wait = (f.t_mono - base) / speed - (time.monotonic() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            data = encode_greeting(f.fields[1]) if f.greeting else encode_frame(f.fields)
            records.append(Record(Kind.TO_SERVER, 1, time.monotonic(), time.time(), data))
            writer.write(data)
            await writer.drain()
        # Listen as long after the last request as the recording did.
        tail = max((g.t_mono for g in rec_frames), default=base) - client[-1].t_mono
        await asyncio.sleep(max(tail / speed, settle))
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
    return list(frames(records))


async def drift(recording: Recording, *, scenario: str | None = None, speed: float = 1.0,
                settle: float = SETTLE_SECONDS) -> DriftReport:  # fmt: skip
    """Play every session of the recording against a fresh simulator and compare."""
    from harness_lib.sim import PaperGateway

    scen = scenario or recording.meta.get("scenario") or "healthy"
    report = DriftReport(str(recording.path or ""), scen)
    async with PaperGateway(scenario=scen) as gw:
        for s in recording.sessions():
            rec_ex = exchanges(recording.frames(s))
            sim_ex = exchanges(await play(recording, s, gw.port, speed, settle))
            for i, rex in enumerate(rec_ex):
                if rex.request is None and not rex.answers:
                    continue
                sex = sim_ex[i] if i < len(sim_ex) else Exchange(i, rex.request)
                report.requests += rex.request is not None
                report.messages_recorded += len(rex.answers)
                report.messages_simulated += len(sex.answers)
                report.differences += compare(s, rex, sex)
    return report
