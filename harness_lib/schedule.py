"""Run ``harness run`` every (week)day morning before the trading engine starts.

Backs ``harness schedule --at 08:05 --tz America/Chicago [--weekdays]
[--print launchd|cron|systemd] [--install]``.

The generators are pure (they return text); :func:`install` writes files into the
user's home but never enables anything or edits a crontab: it returns the exact commands
to run, so nothing starts firing at 08:05 without the user having seen it.

Time zones differ per scheduler:

* systemd timers (>= 235) accept a trailing zone in ``OnCalendar``, so DST is exact.
* cronie honours ``CRON_TZ=``; Debian's and macOS's cron ignore it and use the system
  zone (the install instructions say so).
* launchd always uses the Mac's local zone, so the time is converted for today and a
  warning is returned when the two zones differ (they may drift apart at DST changes).
"""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from harness_lib.files import atomic_write_text

__all__ = [
    "KINDS",
    "LABEL",
    "UNIT_NAME",
    "Installed",
    "ScheduleError",
    "ScheduleSpec",
    "build_command",
    "crontab_line",
    "default_kind",
    "install",
    "launchd_plist",
    "next_runs",
    "render",
    "systemd_units",
]

KINDS: tuple[str, ...] = ("launchd", "cron", "systemd")

LABEL = "com.livefire.harness"
"""launchd job label (and plist file stem)."""
UNIT_NAME = "livefire-harness"
"""systemd unit stem: ``livefire-harness.service`` and ``livefire-harness.timer``."""


class ScheduleError(ValueError):
    """A bad ``--at``/``--tz``/``--print`` value; the message is one line naming the flag
    and the fix, ready to print as-is."""


_AT = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When and what to run. Validated on construction (raises :class:`ScheduleError`).

    ``at`` is ``HH:MM`` (24-hour) in the IANA zone ``tz``; ``weekdays`` limits runs to
    Monday-Friday; ``command`` is the absolute argv (see :func:`build_command`) run in
    ``workdir``.
    """

    at: str
    tz: str
    weekdays: bool = True
    command: list[str] = field(default_factory=list)
    workdir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        at = str(self.at).strip()
        if not _AT.match(at):
            raise ScheduleError(
                f"--at {self.at!r} is not a time: use 24-hour HH:MM, e.g. --at 08:05"
            )
        object.__setattr__(self, "at", f"{int(at.split(':')[0]):02d}:{at.split(':')[1]}")
        tz = str(self.tz).strip()
        try:
            if not tz or tz.startswith("/") or ".." in tz:
                raise ValueError(tz)
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ScheduleError(
                f"--tz {self.tz!r} is not an IANA time zone: use a name like "
                "--tz America/Chicago (list: python -c 'import zoneinfo; "
                "print(sorted(zoneinfo.available_timezones()))')"
            ) from None
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "workdir", Path(self.workdir).expanduser().absolute())
        # An empty command means a plain `harness run` with the project's defaults.
        command = list(self.command) or build_command([], workdir=self.workdir)
        object.__setattr__(self, "command", [str(c) for c in command])

    @property
    def hour(self) -> int:
        """Hour of ``at`` in ``tz``."""
        return int(self.at.split(":")[0])

    @property
    def minute(self) -> int:
        """Minute of ``at``."""
        return int(self.at.split(":")[1])

    @property
    def zone(self) -> ZoneInfo:
        """``tz`` as a ZoneInfo."""
        return ZoneInfo(self.tz)


def build_command(run_args: list[str], *, workdir: Path | None = None) -> list[str]:
    """The absolute argv that runs ``harness run <run_args>`` from a scheduler, whose
    PATH is minimal: ``[<abs uv>, "run", "--project", <workdir>, "harness", "run", ...]``
    when uv is on PATH now, else ``[sys.executable, "-m", "harness_lib.cli", "run", ...]``.
    """
    workdir = Path(workdir or Path.cwd()).expanduser().absolute()
    uv = shutil.which("uv")
    if uv:
        return [
            str(Path(uv).absolute()),
            "run",
            "--project",
            str(workdir),
            "harness",
            "run",
            *run_args,
        ]
    return [str(Path(sys.executable).absolute()), "-m", "harness_lib.cli", "run", *run_args]


def default_kind() -> str:
    """The scheduler this machine most likely uses: launchd on macOS, systemd when
    ``systemctl`` exists, else cron."""
    if sys.platform == "darwin":
        return "launchd"
    if shutil.which("systemctl"):
        return "systemd"
    return "cron"


# ---------------------------------------------------------------------------- launchd


def _local_zone() -> tzinfo:
    """This machine's zone, as an IANA ZoneInfo when it can be found (so DST is known),
    else the fixed offset in force now."""
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    return datetime.now().astimezone().tzinfo or ZoneInfo("UTC")


def _same_clock(a: tzinfo, b: tzinfo, year: int) -> bool:
    """Whether two zones show the same wall time all year (checked monthly, which catches
    any DST rule difference that lasts more than a few days)."""
    for month in range(1, 13):
        probe = datetime(year, month, 15, 12, tzinfo=a)
        if probe.utcoffset() != probe.astimezone(b).utcoffset():
            return False
    return True


def _launchd_time(
    spec: ScheduleSpec, local_tz: tzinfo, today: date
) -> tuple[int, int, int, str | None]:
    """(hour, minute, weekday shift, warning) of ``spec`` in launchd's local zone."""
    wanted = datetime.combine(today, time(spec.hour, spec.minute), tzinfo=spec.zone)
    local = wanted.astimezone(local_tz)
    shift = (local.date() - wanted.date()).days
    if _same_clock(spec.zone, local_tz, today.year):
        return spec.hour, spec.minute, 0, None
    local_name = getattr(local_tz, "key", None) or local.tzname() or "local time"
    warning = (
        f"launchd fires in this Mac's time zone ({local_name}), not {spec.tz}: "
        f"{spec.at} {spec.tz} is {local:%H:%M} local on {today.isoformat()}, so the job is "
        f"set for {local:%H:%M}"
        + (f" (day shifted by {shift:+d})" if shift else "")
        + ". The two zones change clocks on different dates, so re-run "
        "`harness schedule --install` after a DST change, or set the Mac to "
        f"{spec.tz}."
    )
    return local.hour, local.minute, shift, warning


def launchd_plist(
    spec: ScheduleSpec,
    *,
    home: Path | None = None,
    local_tz: tzinfo | None = None,
    today: date | None = None,
) -> tuple[str, str | None]:
    """The LaunchAgent plist (XML text) and a warning, or None.

    launchd reads ``StartCalendarInterval`` in the machine's local zone, so when ``tz``
    differs the time (and, across midnight, the weekdays) is converted for ``today``
    (default: now) and the warning says so. ``local_tz`` defaults to the machine's zone;
    pass it to get reproducible output.
    """
    home = Path(home or Path.home())
    local_tz = local_tz or _local_zone()
    today = today or datetime.now(spec.zone).date()
    hour, minute, shift, warning = _launchd_time(spec, local_tz, today)

    if spec.weekdays:
        # launchd weekdays: 0 and 7 are Sunday, 1-5 Monday-Friday.
        intervals: list[dict[str, int]] | dict[str, int] = [
            {"Weekday": (day + shift) % 7, "Hour": hour, "Minute": minute} for day in range(1, 6)
        ]
    else:
        intervals = {"Hour": hour, "Minute": minute}

    logs = home / "Library" / "Logs" / "livefire"
    data = {
        "Label": LABEL,
        "ProgramArguments": list(spec.command),
        "WorkingDirectory": str(spec.workdir),
        "StartCalendarInterval": intervals,
        # TZ only makes the run's own timestamps and logs read in the trading zone; it
        # does not change when launchd fires (see the warning).
        "EnvironmentVariables": {"TZ": spec.tz},
        "StandardOutPath": str(logs / "harness.out.log"),
        "StandardErrorPath": str(logs / "harness.err.log"),
        # No ProcessType: "Background" would throttle CPU/IO and skew the latencies the
        # harness measures (time to first bid/ask).
        "RunAtLoad": False,
    }
    return plistlib.dumps(data, sort_keys=False).decode("utf-8"), warning


# ------------------------------------------------------------------------------- cron


def _cron_escape(text: str) -> str:
    # In a crontab command an unescaped % ends the command and starts stdin.
    return text.replace("%", r"\%")


def crontab_line(spec: ScheduleSpec, *, log: Path | None = None, home: Path | None = None) -> str:
    """Two lines for a crontab: ``CRON_TZ=<tz>`` and
    ``M H * * 1-5 cd <workdir> && <command> >> <log> 2>&1`` (``*`` for the day of week
    without ``weekdays``). ``log`` defaults to ``~/.local/state/livefire/harness.log``.
    """
    home = Path(home or Path.home())
    log = Path(log or home / ".local" / "state" / "livefire" / "harness.log")
    dow = "1-5" if spec.weekdays else "*"
    command = " ".join(shlex.quote(c) for c in spec.command)
    job = f"cd {shlex.quote(str(spec.workdir))} && {command} >> {shlex.quote(str(log))} 2>&1"
    return f"CRON_TZ={spec.tz}\n{spec.minute} {spec.hour} * * {dow} {_cron_escape(job)}\n"


# ---------------------------------------------------------------------------- systemd


def _systemd_escape(text: str) -> str:
    # % starts a specifier in any unit setting; $ expands variables in Exec lines.
    return text.replace("%", "%%")


def _systemd_arg(arg: str) -> str:
    arg = _systemd_escape(arg).replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def systemd_units(spec: ScheduleSpec) -> tuple[str, str]:
    """(service, timer) text for ``~/.config/systemd/user/livefire-harness.*``.

    The timer's ``OnCalendar`` carries the zone (systemd >= 235), so the run follows the
    trading zone's DST; ``Persistent=true`` runs a missed check at the next boot/login.
    """
    exec_start = " ".join(_systemd_arg(a) for a in spec.command)
    service = (
        "[Unit]\n"
        "Description=livefire: check the Interactive Brokers stack before trading starts\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={_systemd_escape(str(spec.workdir))}\n"
        f"Environment=TZ={_systemd_escape(spec.tz)}\n"
        f"ExecStart={exec_start}\n"
        "# oneshot units have no start timeout by default; a hung run would block every\n"
        "# later trigger, so give up long after the harness's own deadlines.\n"
        "TimeoutStartSec=15min\n"
    )
    days = "Mon..Fri " if spec.weekdays else ""
    timer = (
        "[Unit]\n"
        f"Description=Run livefire at {spec.at} {spec.tz}"
        f"{' on weekdays' if spec.weekdays else ' every day'}\n"
        "\n"
        "[Timer]\n"
        f"OnCalendar={days}*-*-* {spec.hour:02d}:{spec.minute:02d}:00 {spec.tz}\n"
        "Persistent=true\n"
        f"Unit={UNIT_NAME}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer


# ---------------------------------------------------------------------- print/install


def render(spec: ScheduleSpec, kind: str, *, home: Path | None = None) -> tuple[str, str | None]:
    """Printable text for ``--print <kind>`` (systemd: both units, each headed by a
    comment naming its file) and a warning or None."""
    kind = _check_kind(kind)
    home = Path(home or Path.home())
    if kind == "launchd":
        return launchd_plist(spec, home=home)
    if kind == "cron":
        return crontab_line(spec, home=home), _CRON_TZ_NOTE
    service, timer = systemd_units(spec)
    unit_dir = home / ".config" / "systemd" / "user"
    return (
        f"# {unit_dir / f'{UNIT_NAME}.service'}\n{service}\n"
        f"# {unit_dir / f'{UNIT_NAME}.timer'}\n{timer}",
        None,
    )


_CRON_TZ_NOTE = (
    "CRON_TZ is honoured by cronie (Fedora/RHEL/Arch); Debian/Ubuntu and macOS cron ignore "
    "it and use the system time zone."
)


class Installed(NamedTuple):
    """What :func:`install` wrote, and what the user must run to turn it on."""

    paths: list[Path]
    how_to_enable: str
    warning: str | None = None


def _check_kind(kind: str) -> str:
    kind = str(kind).strip().lower()
    if kind not in KINDS:
        raise ScheduleError(f"--print {kind!r} is not a scheduler: use one of {', '.join(KINDS)}")
    return kind


def _write(path: Path, text: str) -> Path:
    # 0644: what a plain write gives under the usual umask; launchd/systemd/cron read it.
    return atomic_write_text(path, text, mode=0o644)


def install(spec: ScheduleSpec, kind: str, home: Path | None = None) -> Installed:
    """Write the schedule files under ``home`` and return them with the commands that
    enable them. Nothing is loaded or enabled here, and a crontab is never edited.

    launchd: ``~/Library/LaunchAgents/com.livefire.harness.plist`` (and the log folder);
    systemd: ``~/.config/systemd/user/livefire-harness.{service,timer}``;
    cron: ``~/.config/livefire/crontab.txt`` (and the log folder).
    """
    kind = _check_kind(kind)
    home = Path(home or Path.home())
    if kind == "launchd":
        text, warning = launchd_plist(spec, home=home)
        # launchd does not create missing folders for StandardOutPath.
        (home / "Library" / "Logs" / "livefire").mkdir(parents=True, exist_ok=True)
        plist = _write(home / "Library" / "LaunchAgents" / f"{LABEL}.plist", text)
        q = shlex.quote(str(plist))
        how = (
            f"launchctl unload {q} 2>/dev/null; launchctl load -w {q}\n"
            f"Check: launchctl list | grep {LABEL}"
        )
        return Installed([plist], how, warning)
    if kind == "systemd":
        service, timer = systemd_units(spec)
        unit_dir = home / ".config" / "systemd" / "user"
        paths = [
            _write(unit_dir / f"{UNIT_NAME}.service", service),
            _write(unit_dir / f"{UNIT_NAME}.timer", timer),
        ]
        how = (
            "systemctl --user daemon-reload && "
            f"systemctl --user enable --now {UNIT_NAME}.timer\n"
            f"Check: systemctl --user list-timers {UNIT_NAME}.timer\n"
            "To run while logged out: loginctl enable-linger $USER"
        )
        return Installed(paths, how, None)
    log = home / ".local" / "state" / "livefire" / "harness.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    crontab = _write(
        home / ".config" / "livefire" / "crontab.txt", crontab_line(spec, log=log, home=home)
    )
    q = shlex.quote(str(crontab))
    how = (
        f"Review {crontab}, then append it to your crontab:\n"
        f"(crontab -l 2>/dev/null; cat {q}) | crontab -\n"
        "Check: crontab -l"
    )
    return Installed([crontab], how, _CRON_TZ_NOTE)


def next_runs(
    spec: ScheduleSpec, count: int = 3, *, after: datetime | None = None
) -> list[datetime]:
    """The next ``count`` run times (aware, in ``tz``), for showing the user what they
    scheduled. Skips weekends when ``weekdays``."""
    zone = spec.zone
    now = (after or datetime.now(zone)).astimezone(zone)
    out: list[datetime] = []
    day = now.date()
    while len(out) < count:
        candidate = datetime.combine(day, time(spec.hour, spec.minute), tzinfo=zone)
        if candidate > now and (not spec.weekdays or candidate.weekday() < 5):
            out.append(candidate)
        day += timedelta(days=1)
    return out
