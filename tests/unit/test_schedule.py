"""Schedule generators: launchd plist, crontab line, systemd units, and install()."""

from __future__ import annotations

import configparser
import plistlib
import shlex
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness_lib.schedule import (
    ScheduleError,
    ScheduleSpec,
    build_command,
    crontab_line,
    install,
    launchd_plist,
    next_runs,
    render,
    systemd_units,
)

CHICAGO = ZoneInfo("America/Chicago")


def spec(
    tmp_path: Path, *, weekdays: bool = True, command: list[str] | None = None
) -> ScheduleSpec:
    return ScheduleSpec(
        at="08:05",
        tz="America/Chicago",
        weekdays=weekdays,
        command=command
        or [sys.executable, "-m", "harness_lib.cli", "run", "--contract", "MES 50% test"],
        workdir=tmp_path / "work dir",
    )


# ----------------------------------------------------------------------- validation


@pytest.mark.parametrize("at", ["25:00", "8", "08:60", "0805", "08:05:00", "", "noon"])
def test_bad_at_is_one_line_naming_the_flag(tmp_path: Path, at: str) -> None:
    with pytest.raises(ScheduleError) as info:
        ScheduleSpec(at=at, tz="America/Chicago", command=["x"], workdir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--at")
    assert "HH:MM" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("tz", ["Chicago", "America/Chicgo", "", "/etc/passwd", "../UTC"])
def test_bad_tz_is_one_line_naming_the_flag(tmp_path: Path, tz: str) -> None:
    with pytest.raises(ScheduleError) as info:
        ScheduleSpec(at="08:05", tz=tz, command=["x"], workdir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--tz")
    assert "America/Chicago" in message


def test_at_is_normalised(tmp_path: Path) -> None:
    s = ScheduleSpec(at="8:05", tz="Europe/London", command=["x"], workdir=tmp_path)
    assert (s.at, s.hour, s.minute) == ("08:05", 8, 5)


def test_build_command_is_absolute(tmp_path: Path) -> None:
    argv = build_command(["--contract", "MES"], workdir=tmp_path)
    assert Path(argv[0]).is_absolute()
    assert argv[-3:] == ["run", "--contract", "MES"]
    if shutil.which("uv"):
        assert argv[1:4] == ["run", "--project", str(tmp_path)]
        assert argv[4:6] == ["harness", "run"]
    else:
        assert argv[1:3] == ["-m", "harness_lib.cli"]


def test_empty_command_defaults_to_harness_run(tmp_path: Path) -> None:
    s = ScheduleSpec(at="08:05", tz="UTC", workdir=tmp_path)
    assert Path(s.command[0]).is_absolute()
    assert s.command[-1] == "run"


# --------------------------------------------------------------------------- launchd


def test_launchd_plist_weekdays(tmp_path: Path) -> None:
    text, warning = launchd_plist(
        spec(tmp_path), home=tmp_path / "home", local_tz=CHICAGO, today=date(2026, 3, 2)
    )
    assert warning is None
    data = plistlib.loads(text.encode())
    assert data["Label"] == "com.livefire.harness"
    assert data["ProgramArguments"] == spec(tmp_path).command
    assert data["WorkingDirectory"] == str(tmp_path / "work dir")
    intervals = data["StartCalendarInterval"]
    assert len(intervals) == 5
    assert [i["Weekday"] for i in intervals] == [1, 2, 3, 4, 5]
    assert all((i["Hour"], i["Minute"]) == (8, 5) for i in intervals)
    logs = tmp_path / "home" / "Library" / "Logs" / "livefire"
    assert Path(data["StandardOutPath"]).parent == logs
    assert Path(data["StandardErrorPath"]).parent == logs
    assert data["EnvironmentVariables"]["TZ"] == "America/Chicago"


def test_launchd_plist_daily(tmp_path: Path) -> None:
    text, _ = launchd_plist(spec(tmp_path, weekdays=False), home=tmp_path, local_tz=CHICAGO)
    assert plistlib.loads(text.encode())["StartCalendarInterval"] == {"Hour": 8, "Minute": 5}


def test_launchd_converts_to_local_zone_with_warning(tmp_path: Path) -> None:
    # 08:05 in Chicago (CST, UTC-6) on a Monday is 14:05 in London (GMT).
    text, warning = launchd_plist(
        spec(tmp_path), home=tmp_path, local_tz=ZoneInfo("Europe/London"), today=date(2026, 1, 5)
    )
    intervals = plistlib.loads(text.encode())["StartCalendarInterval"]
    assert {(i["Hour"], i["Minute"]) for i in intervals} == {(14, 5)}
    assert [i["Weekday"] for i in intervals] == [1, 2, 3, 4, 5]
    assert warning is not None and "America/Chicago" in warning and "14:05" in warning


def test_launchd_shifts_weekdays_across_midnight(tmp_path: Path) -> None:
    # 08:05 CST Monday is 03:05 Tuesday in Auckland (NZDT, UTC+13).
    text, warning = launchd_plist(
        spec(tmp_path), home=tmp_path, local_tz=ZoneInfo("Pacific/Auckland"), today=date(2026, 1, 5)
    )
    intervals = plistlib.loads(text.encode())["StartCalendarInterval"]
    assert [i["Weekday"] for i in intervals] == [2, 3, 4, 5, 6]
    assert {(i["Hour"], i["Minute"]) for i in intervals} == {(3, 5)}
    assert warning is not None


# ------------------------------------------------------------------------------ cron


def test_crontab_line(tmp_path: Path) -> None:
    s = spec(tmp_path)
    log = tmp_path / "logs" / "harness.log"
    text = crontab_line(s, log=log)
    lines = text.splitlines()
    assert lines[0] == "CRON_TZ=America/Chicago"
    assert len(lines) == 2
    fields = lines[1].split(" ", 5)
    assert fields[:5] == ["5", "8", "*", "*", "1-5"]
    command = fields[5]
    assert command.startswith(f"cd {shlex.quote(str(s.workdir))} && ")
    assert command.endswith(f">> {shlex.quote(str(log))} 2>&1")
    # cron treats a bare % as end-of-command; every % must be escaped.
    assert "50\\%" in command and "50%" not in command.replace("\\%", "")
    assert shlex.quote(sys.executable) in command


def test_crontab_line_daily(tmp_path: Path) -> None:
    line = crontab_line(spec(tmp_path, weekdays=False), home=tmp_path).splitlines()[1]
    assert line.split(" ", 5)[:5] == ["5", "8", "*", "*", "*"]
    assert str(tmp_path / ".local" / "state" / "livefire" / "harness.log") in line


# --------------------------------------------------------------------------- systemd


def _parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def test_systemd_units_keys(tmp_path: Path) -> None:
    s = spec(tmp_path)
    service, timer = systemd_units(s)
    svc = _parse_unit(service)
    assert svc["Service"]["Type"] == "oneshot"
    assert svc["Service"]["WorkingDirectory"] == str(s.workdir)
    exec_start = svc["Service"]["ExecStart"]
    assert exec_start.startswith(sys.executable + " ")
    assert '"MES 50%% test"' in exec_start  # quoted, % escaped as a systemd specifier
    tim = _parse_unit(timer)
    assert tim["Timer"]["OnCalendar"] == "Mon..Fri *-*-* 08:05:00 America/Chicago"
    assert tim["Timer"]["Persistent"] == "true"
    assert tim["Install"]["WantedBy"] == "timers.target"
    daily = _parse_unit(systemd_units(spec(tmp_path, weekdays=False))[1])
    assert daily["Timer"]["OnCalendar"] == "*-*-* 08:05:00 America/Chicago"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_units_verify(tmp_path: Path) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    true = shutil.which("true") or "/bin/true"
    s = ScheduleSpec(
        at="08:05",
        tz="America/Chicago",
        weekdays=True,
        command=[true, "run", "--contract", "MES 50% test"],
        workdir=workdir,
    )
    service, timer = systemd_units(s)
    units = tmp_path / "units"
    units.mkdir()
    (units / "livefire-harness.service").write_text(service)
    (units / "livefire-harness.timer").write_text(timer)
    proc = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(units / "livefire-harness.service"),
            str(units / "livefire-harness.timer"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # verify exits 0 on settings it merely ignores; those would silently break the timer.
    assert "livefire-harness" not in output, output
    cal = subprocess.run(
        ["systemd-analyze", "calendar", "Mon..Fri *-*-* 08:05:00 America/Chicago"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cal.returncode == 0, cal.stderr


# --------------------------------------------------------------------------- install


@pytest.mark.parametrize(
    ("kind", "relpaths", "enable"),
    [
        ("launchd", ["Library/LaunchAgents/com.livefire.harness.plist"], "launchctl load -w"),
        (
            "systemd",
            [
                ".config/systemd/user/livefire-harness.service",
                ".config/systemd/user/livefire-harness.timer",
            ],
            "systemctl --user daemon-reload && systemctl --user enable --now "
            "livefire-harness.timer",
        ),
        ("cron", [".config/livefire/crontab.txt"], "| crontab -"),
    ],
)
def test_install_writes_files(tmp_path: Path, kind: str, relpaths: list[str], enable: str) -> None:
    home = tmp_path / "home"
    paths, how, _warning = install(spec(tmp_path), kind, home=home)
    assert paths == [home / p for p in relpaths]
    assert all(p.is_file() for p in paths)
    assert enable in how
    # Only the files named above (plus log folders), no leftovers from atomic writes.
    written = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    assert written == sorted(relpaths)
    if kind == "launchd":
        plistlib.loads(paths[0].read_bytes())
        assert (home / "Library" / "Logs" / "livefire").is_dir()
    if kind == "cron":
        assert paths[0].read_text().startswith("CRON_TZ=America/Chicago\n")
        assert (home / ".local" / "state" / "livefire").is_dir()


def test_install_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match="--print"):
        install(spec(tmp_path), "anacron", home=tmp_path)


def test_render_all_kinds(tmp_path: Path) -> None:
    for kind in ("launchd", "cron", "systemd"):
        text, _ = render(spec(tmp_path), kind, home=tmp_path)
        assert text.strip()
    text, _ = render(spec(tmp_path), "systemd", home=tmp_path)
    assert "livefire-harness.service" in text and "OnCalendar=" in text


def test_next_runs_skip_weekends(tmp_path: Path) -> None:
    from datetime import datetime

    friday_noon = datetime(2026, 3, 6, 12, 0, tzinfo=CHICAGO)
    runs = next_runs(spec(tmp_path), 2, after=friday_noon)
    assert [r.date() for r in runs] == [date(2026, 3, 9), date(2026, 3, 10)]
    assert all((r.hour, r.minute) == (8, 5) for r in runs)
