"""What ``harness replay``, ``harness drift`` and ``harness record`` do; cli.py only parses.

Each function returns the exit code (0 ok, 1 drift or unmatched requests) and raises
``BadInput`` with a one-line problem-and-fix message for wrong arguments.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness_lib.runcli import BadInput, until_signal
from harness_lib.wire.drift import DriftReport, drift
from harness_lib.wire.format import (
    SUFFIX,
    Recording,
    RecordingError,
    read_recording,
    recording_path,
    wire_dir,
)
from harness_lib.wire.mask import AccountMasker, load_key
from harness_lib.wire.proxy import RecordingProxy
from harness_lib.wire.replay import ReplayServer

Print = Callable[[str], None]
__all__ = ["BadInput", "drift_command", "record", "recording_path", "replay", "wire_dir"]


def load(path: Path) -> Recording:
    """Read a recording or raise BadInput saying why not."""
    if not path.exists():
        raise BadInput(f"no recording at {path}; runs leave theirs in data/wire/<run_id>{SUFFIX}")
    try:
        return read_recording(path)
    except RecordingError as exc:
        raise BadInput(str(exc)) from None


def _check_speed(speed: float) -> None:
    if not speed > 0:
        raise BadInput(f"--speed {speed} must be above 0 (1 = recorded timing, 10 = ten times)")


def replay(path: Path, *, host: str, port: int, speed: float, json_path: Path | None,
           say: Print) -> int:  # fmt: skip
    """Serve a recording until interrupted; print and optionally write the replay report."""
    _check_speed(speed)
    rec = load(path)

    async def serve() -> int:
        server = ReplayServer(rec, speed=speed, host=host, port=port)
        try:
            await server.start()
        except OSError as exc:
            raise BadInput(
                f"cannot listen on {host}:{port} ({exc.strerror}); try --port 0"
            ) from None
        say(f"replaying {path} ({len(rec.sessions())} session(s), speed {speed:g}) "
            f"on {host}:{server.port}")  # fmt: skip
        say(f"PORT={server.port}")
        sys.stdout.flush()
        await until_signal()
        await server.stop()
        rep = server.report
        say(f"replay: {rep.sessions_served} session(s) served, {rep.matched} request(s) "
            f"matched, {len(rep.unmatched)} unmatched")  # fmt: skip
        for u in rep.unmatched:
            say(f"  unmatched in session {u['session']}: {u['request']}")
        if json_path is not None:
            json_path.write_text(json.dumps(rep.to_dict(), indent=2))
        return 1 if rep.unmatched else 0

    return asyncio.run(serve())


def drift_command(path: Path, *, scenario: str | None, speed: float, json_path: Path | None,
                  say: Print) -> int:  # fmt: skip
    """Compare a recording with the simulator; exit 1 on structural drift."""
    _check_speed(speed)
    rec = load(path)
    if scenario is not None:
        from harness_lib.sim.scenarios import parse_scenario

        try:
            parse_scenario(scenario)
        except ValueError as exc:
            raise BadInput(f"{exc} (see `harness sim --list`)") from None
    report: DriftReport = asyncio.run(drift(rec, scenario=scenario, speed=speed))
    counts = f"{report.messages_recorded} recorded / {report.messages_simulated} simulated"
    say(f"drift {path}: scenario {report.scenario}, {report.requests} request(s), "
        f"{counts} message(s)")  # fmt: skip
    for d in report.differences:
        say(f"  {d}")
    say(f"DRIFT={report.drift}")
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2))
    return 1 if report.drift else 0


def parse_upstream(text: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port), or BadInput."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--upstream {text!r} must be HOST:PORT, e.g. 127.0.0.1:4002")
    return host, int(port)


def record(*, listen: int, upstream: str, out: Path, mask: bool, data_dir: Path,
           say: Print) -> int:  # fmt: skip
    """Run the recording proxy until interrupted."""
    host, port = parse_upstream(upstream)
    if not 0 <= listen <= 65535:
        raise BadInput(f"--listen {listen} is out of range; use 1-65535, or 0 for a free port")
    masker = AccountMasker(load_key(data_dir)) if mask else None

    async def serve() -> int:
        proxy = RecordingProxy(host, port, out, masker=masker, port=listen)
        try:
            await proxy.start()
        except OSError as exc:
            raise BadInput(
                f"cannot listen on 127.0.0.1:{listen} ({exc.strerror}); try --listen 0"
            ) from None
        say(f"recording 127.0.0.1:{proxy.port} -> {host}:{port} into {out}"
            f"{'' if mask else ' (accounts NOT masked)'}")  # fmt: skip
        say(f"PORT={proxy.port}")
        sys.stdout.flush()
        await until_signal()
        await proxy.stop()
        say(f"recorded {proxy.sessions} session(s) to {out}")
        return 0

    return asyncio.run(serve())
