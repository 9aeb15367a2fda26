"""Serve a recorded session to any TWS client: ``harness replay <recording>``.

Each client connection gets the next recorded session. Every request the client sends
is matched to the first unused recorded request with the same message type and contract
(orders also by action, quantity and type); the recorded answers come back with the
recorded delays after the request (divided by ``speed``), with request and order ids
rewritten to the client's, and the harness's ``orderRef`` rewritten to the new run's.
What the gateway sent unprompted (connectivity notices, the dropped socket) comes back
at its recorded time after the request it followed.

A request with no recorded counterpart gets error ``UNMATCHED`` naming it, and is
listed in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_lib.sim.wire import FrameReader, ProtocolError
from harness_lib.wire.format import Frame, Kind, Recording, encode_frame, read_recording
from harness_lib.wire.protocol import (
    ANSWER_ID_AT,
    CANCELS,
    EXEC_ORDER_ID_AT,
    Exchange,
    describe,
    exchanges,
    request_id,
    request_key,
)

log = logging.getLogger("harness_lib.wire.replay")

UNMATCHED = 10990
"""Error code sent for a request the recording has no counterpart for (not an IB code)."""
ORDER_REF_AT = 26
"""placeOrder: the orderRef field (the harness's ``harness:<run_id>``)."""


@dataclass
class ReplayReport:
    """What a replay served and what it could not."""

    recording: str
    sessions_recorded: int
    sessions_served: int = 0
    matched: int = 0
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    """Connections beyond the recorded sessions (closed at once)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "recording": self.recording,
            "sessions_recorded": self.sessions_recorded,
            "sessions_served": self.sessions_served,
            "requests_matched": self.matched,
            "requests_unmatched": self.unmatched,
            "connections_refused": self.refused,
        }


class _Plan:
    """One recorded session, ready to be matched against a live client."""

    def __init__(self, number: int, frames: list[Frame], close: tuple[float, str] | None):
        self.number = number
        self.exchanges = exchanges(frames)
        self.used: set[int] = set()
        self.close = close
        """(t_mono, by) of the recorded end of the session."""

    def match(self, frame: Frame) -> Exchange | None:
        key = request_key(frame)
        for ex in self.exchanges[1:]:
            if ex.index not in self.used and ex.request and request_key(ex.request) == key:
                self.used.add(ex.index)
                return ex
        return None

    def is_last_request(self, ex: Exchange) -> bool:
        return ex.index == len(self.exchanges) - 1


class ReplayServer:
    """A TCP server on 127.0.0.1 playing back one recording."""

    def __init__(self, recording: Recording | Path | str, *, speed: float = 1.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:  # fmt: skip
        self.recording = (
            recording if isinstance(recording, Recording) else read_recording(recording)
        )
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._plans = self._build()
        self.report = ReplayReport(str(self.recording.path or ""), len(self._plans))
        self._tasks: set[asyncio.Task[Any]] = set()

    def _build(self) -> list[_Plan]:
        plans = []
        closes = {
            r.session: (r.t_mono, r.json().get("by", ""))
            for r in self.recording.records
            if r.kind == Kind.CLOSE
        }
        for s in self.recording.sessions():
            plans.append(_Plan(s, self.recording.frames(s), closes.get(s)))
        return plans

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> ReplayServer:
        """Listen."""
        self._server = await asyncio.start_server(self._serve, self.host, self._port)
        return self

    async def stop(self) -> None:
        """Stop listening and drop every client."""
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    async def __aenter__(self) -> ReplayServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        served = self.report.sessions_served
        if served >= len(self._plans):
            self.report.refused += 1
            writer.close()
            return
        self.report.sessions_served += 1
        session = _Live(self, self._plans[served], writer)
        try:
            await session.run(reader)
        except (ConnectionError, ProtocolError, asyncio.CancelledError):
            pass
        except Exception:  # a bug here must show, but only end this one connection
            log.exception("replay session %d failed", session.plan.number)
        finally:
            session.cancel()
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)


class _Live:
    """One client connection being served from one recorded session."""

    def __init__(self, server: ReplayServer, plan: _Plan, writer: asyncio.StreamWriter):
        self.server = server
        self.plan = plan
        self.writer = writer
        self.ids: dict[int, int] = {}
        self.texts: dict[str, str] = {}
        self.pending: dict[int, list[asyncio.TimerHandle]] = {}
        self.loop = asyncio.get_running_loop()

    async def run(self, reader: asyncio.StreamReader) -> None:
        fr = FrameReader()
        while data := await reader.read(65536):
            fr.feed(data)
            if fr.greet():
                self.on_request(Frame(0, True, 0.0, 0.0, ["API", fr.version_text or ""], True))
            for fields in fr.frames():
                self.on_request(Frame(0, True, 0.0, 0.0, fields))

    def on_request(self, frame: Frame) -> None:
        ex = self.plan.match(frame)
        live_id = request_id(frame)
        if frame.msg_id in CANCELS and live_id is not None:
            for h in self.pending.pop(live_id, []):
                h.cancel()
        if ex is None:
            self.unmatched(frame, live_id)
            return
        self.server.report.matched += 1
        assert ex.request is not None
        rec_id = request_id(ex.request)
        if rec_id is not None and live_id is not None:
            self.ids[rec_id] = live_id
        if ex.request.msg_id == 3 and frame.msg_id == 3:
            old, new = ex.request.fields[ORDER_REF_AT], frame.fields[ORDER_REF_AT]
            if old and new and old != new:
                self.texts[old] = new
        t0, speed = ex.request.t_mono, self.server.speed
        handles = self.pending.setdefault(live_id if live_id is not None else -1, [])
        for ans in ex.answers:
            delay = max(0.0, ans.t_mono - t0) / speed
            handles.append(self.loop.call_later(delay, self.send, ans))
        close = self.plan.close
        if close and close[1] == "server" and self._last_before_close(ex):
            delay = max(0.0, close[0] - t0) / speed
            handles.append(self.loop.call_later(delay, self.drop))

    def _last_before_close(self, ex: Exchange) -> bool:
        close = self.plan.close
        assert close is not None and ex.request is not None
        later = [
            e for e in self.plan.exchanges[ex.index + 1 :]
            if e.request is not None and e.request.t_mono <= close[0]
        ]  # fmt: skip
        return ex.request.t_mono <= close[0] and not later

    def rewrite(self, ans: Frame) -> list[str]:
        fields = list(ans.fields)
        if ans.greeting:
            return fields
        positions = [ANSWER_ID_AT.get(ans.msg_id)]
        if ans.msg_id == 11:
            positions = [1, EXEC_ORDER_ID_AT]
        for i in positions:
            if i is None or i >= len(fields):
                continue
            with contextlib.suppress(ValueError):
                rid = int(fields[i])
                if rid in self.ids:
                    fields[i] = str(self.ids[rid])
        if self.texts:
            fields = [self.texts.get(f, f) for f in fields]
        return fields

    def send(self, ans: Frame) -> None:
        if self.writer.is_closing():
            return
        self.writer.write(encode_frame(self.rewrite(ans)))

    def drop(self) -> None:
        self.writer.close()

    def unmatched(self, frame: Frame, live_id: int | None) -> None:
        what = describe(frame)
        self.server.report.unmatched.append(
            {"session": self.plan.number, "request": what, "fields": frame.fields[:16]}
        )
        log.warning("replay: no recorded request matches %s", what)
        if frame.greeting:
            self.writer.close()
            return
        text = f"replay: the recording has no request matching {what}"
        if not self.writer.is_closing():  # not rewritten: the id is already the client's
            self.writer.write(encode_frame([4, 2, -1 if live_id is None else live_id,
                                            UNMATCHED, text, ""]))  # fmt: skip

    def cancel(self) -> None:
        for hs in self.pending.values():
            for h in hs:
                h.cancel()
        self.pending.clear()


REPLAY_OVERRIDES = {"sim": False, "notify": (), "heartbeat": None, "json_path": None,
                    "junit_path": None, "allow_live_port": False}  # fmt: skip
"""A replayed run never notifies, never writes report files, and is never a simulator run
(it talks to the replay server like to a gateway)."""


async def replay_run(store_path: Path, run_id: str, *, speed: float = 1.0,
                     scratch_store: Path | None = None) -> tuple[Any, ReplayReport]:  # fmt: skip
    """Run the harness again, with the run's own configuration, against a replay of its
    recording (``wire/<run_id>.lfwire.gz`` beside the store). The replayed run is recorded
    in ``scratch_store`` (default ``wire/replays.sqlite``), never in the original store.
    Returns (the replayed RunReport, what the replay served)."""
    from harness_lib.config import HarnessConfig
    from harness_lib.runner import run_harness
    from harness_lib.store import Store
    from harness_lib.wire.format import recording_path, wire_dir

    with Store(store_path, readonly=True) as st:
        run = st.run(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in {store_path}")
    names = set(HarnessConfig.__dataclass_fields__)
    config = {k: v for k, v in (run.get("config") or {}).items() if k in names}
    scratch = scratch_store or wire_dir(store_path) / "replays.sqlite"
    async with ReplayServer(recording_path(store_path, run_id), speed=speed) as server:
        cfg = HarnessConfig(**{**config, **REPLAY_OVERRIDES, "host": "127.0.0.1",
                               "port": server.port, "store": scratch})  # fmt: skip
        rep = await run_harness(cfg)
    return rep, server.report


async def replay_for_notebook(store_path: Path | str, run_id: str) -> tuple[Any, ReplayReport, Any]:
    """``replay_run`` for the post-mortem notebook: also returns the replayed run's
    checkpoints (a frame, as ``Store.checkpoints``) to draw beside the original's."""
    from harness_lib.store import Store

    rep, served = await replay_run(Path(store_path), run_id)
    with Store(rep.store_path, readonly=True) as st:
        return rep, served, st.checkpoints(rep.run_id)
