"""Bad input, generated: every malformed config value, contract spec or CLI flag gets exit 4,
exactly one non-empty line on stderr, and never a traceback.

The many generated examples go through the real entry point in-process
(``harness_lib.cli.main``, catching ``SystemExit``); a handful of fixed cases run as real
subprocesses. Every generated value is checked to be invalid *before* the CLI sees it
(using the same validators the CLI uses), so no example can start a run, open a socket or
serve a simulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from harness_lib.config import ConfigError, HarnessConfig, env_var, load_config
from harness_lib.contracts import SpecError, parse_spec
from harness_lib.sim.scenarios import parse_scenario

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Fields whose arbitrary text is mostly valid (paths, free text): generating bad values
# for them would mostly be filtered out; their validation is unit-tested in test_config.
_MOSTLY_VALID = {"store", "reports_dir", "json_path", "junit_path", "contract"}
FIELDS = sorted(f.name for f in dataclasses.fields(HarnessConfig) if f.name not in _MOSTLY_VALID)


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory: no stray ./harness.toml, no default store nearby."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@contextlib.contextmanager
def clean_env(**values: str) -> Iterator[None]:
    """``os.environ`` without HARNESS_* variables, plus ``values``; restored afterwards."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("HARNESS_")]:
            del os.environ[key]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_main(args: list[str], **env: str) -> tuple[int, str, str]:
    """``harness ARGS`` in-process: (exit code, stdout, stderr)."""
    from harness_lib.cli import main

    out, err = io.StringIO(), io.StringIO()
    # The CLI's root callback calls basicConfig and silences ib_async for users; undo both,
    # or every later test in this process would stop seeing ib_async errors.
    root, ib_logger = logging.getLogger(), logging.getLogger("ib_async")
    saved = (root.level, list(root.handlers), ib_logger.level)
    code: int | str | None = 0
    try:
        with clean_env(**env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(args)
            except SystemExit as exc:
                code = exc.code
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        ib_logger.setLevel(saved[2])
    status = 0 if code is None else code if isinstance(code, int) else 1
    return status, out.getvalue(), err.getvalue()


def assert_bad_input(code: int, out: str, err: str) -> str:
    """Exit 4, one non-empty stderr line, no traceback; returns that line."""
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 4, (code, out, err)
    assert len(lines) == 1, err
    return lines[0]


def config_error(**env: str) -> ConfigError | None:
    """The ConfigError load_config raises for these environment values, or None if valid."""
    try:
        load_config(env=env)
    except ConfigError as exc:
        return exc
    return None


# --- config values -----------------------------------------------------------------------


@SETTINGS
@given(name=st.sampled_from(FIELDS), value=st.text(max_size=40))
def test_bad_env_values_exit_4_naming_the_variable(empty_dir: Path, name: str, value: str) -> None:
    var = env_var(name)
    assume("\0" not in value)  # an environment variable cannot hold NUL
    error = config_error(**{var: value})
    assume(error is not None)
    line = assert_bad_input(*run_main(["run"], **{var: value}))
    assert var in line and name in line, line
    assert str(error).splitlines() == [str(error)]


_TOML_VALUES = st.one_of(
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda x: {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(x), repr(x))
    ),
    st.sampled_from(["true", "false", "[]", "[1, 2]", '["a"]', "{a = 1}", "1979-05-27"]),
)


@SETTINGS
@given(name=st.sampled_from(FIELDS), value=_TOML_VALUES)
def test_bad_config_file_values_exit_4(empty_dir: Path, name: str, value: str) -> None:
    path = empty_dir / "bad.toml"
    path.write_text(f"{name} = {value}\n", encoding="utf-8")
    try:
        load_config(env={}, config_path=path)
    except ConfigError:
        pass
    else:
        assume(False)
    line = assert_bad_input(*run_main(["run", "--config", str(path)]))
    assert str(path) in line, line


@SETTINGS
@given(text=st.binary(min_size=1, max_size=40))
def test_config_file_that_is_not_toml_exits_4(empty_dir: Path, text: bytes) -> None:
    path = empty_dir / "harness.toml"
    path.write_bytes(text)
    try:
        load_config(env={}, config_path=path)
    except ConfigError:
        pass
    else:
        assume(False)
    assert_bad_input(*run_main(["run", "--config", str(path)]))


# --- contract specs ----------------------------------------------------------------------


def _spec_invalid(spec: str) -> bool:
    try:
        parse_spec(spec)
    except SpecError:
        return True
    return False


_SPECS = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-/ ", max_size=30),
    st.builds(
        lambda kind, parts: ":".join([kind, *parts]),
        st.sampled_from(["STK", "CASH", "FUT", "OPT", "stk", "fut", ""]),
        st.lists(
            st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.", max_size=10), max_size=4
        ),
    ),
)


@SETTINGS
@given(spec=_SPECS)
def test_bad_contract_specs_exit_4(empty_dir: Path, spec: str) -> None:
    assume("\0" not in spec and _spec_invalid(spec))
    line = assert_bad_input(*run_main(["run", "--sim", f"--contract={spec}"]))
    assert "contract" in line, line


@SETTINGS
@given(spec=_SPECS)
def test_bad_contract_specs_in_the_environment_exit_4(empty_dir: Path, spec: str) -> None:
    assume("\0" not in spec and spec.strip() and _spec_invalid(spec))
    line = assert_bad_input(*run_main(["run"], HARNESS_CONTRACT=spec))
    assert "HARNESS_CONTRACT" in line, line


# --- CLI flags ---------------------------------------------------------------------------

_NO_DIGITS = st.text(max_size=12).filter(lambda s: not any(c.isdigit() for c in s))
"""Text click cannot turn into an int (and, unless it spells nan/inf, into a float)."""

# (flag, valid range) of the numeric `harness run` options.
_INT_FLAGS = {
    "--port": (1, 65535),
    "--client-id": (0, 2**31 - 1),
    "--quantity": (1, 2**63 - 1),
    "--max-quantity": (1, 100),
    "--market-data-type": (1, 4),
    "--seed": (0, 2**32 - 1),
}
_FLOAT_FLAGS = {"--deadline": 3600.0, "--fill-deadline": 3600.0, "--observe": 3600.0,
                "--max-notional": None}  # fmt: skip


@st.composite
def bad_int_flag(draw: st.DrawFn) -> list[str]:
    flag = draw(st.sampled_from(sorted(_INT_FLAGS)))
    lo, hi = _INT_FLAGS[flag]
    value = draw(
        st.one_of(
            _NO_DIGITS,
            st.integers(max_value=lo - 1).map(str),
            st.integers(min_value=hi + 1, max_value=hi * 4 + 10).map(str),
            st.floats(allow_nan=False).filter(lambda x: not x.is_integer()).map(repr),
        )
    )
    return [f"{flag}={value}"]


@st.composite
def bad_float_flag(draw: st.DrawFn) -> list[str]:
    flag = draw(st.sampled_from(sorted(_FLOAT_FLAGS)))
    hi = _FLOAT_FLAGS[flag]
    bad_numbers = st.one_of(
        st.floats(max_value=0.0),
        st.sampled_from([float("nan"), float("inf"), float("-inf")]),
        *([st.floats(min_value=hi, exclude_min=True)] if hi is not None else []),
    )
    value = draw(st.one_of(_NO_DIGITS, bad_numbers.map(repr)))
    return [f"{flag}={value}"]


_KNOWN_OPTIONS = {
    "--sim", "--scenario", "--host", "--port", "--client-id", "--account", "--contract",
    "--trade", "--allow-delayed", "--phases", "--deadline", "--fill-deadline", "--observe",
    "--market-data-type", "--quantity", "--max-quantity", "--max-notional",
    "--allow-live-port", "--store", "--json", "--junit", "--notify", "--notify-on",
    "--heartbeat", "--seed", "--config", "--help", "--connect-timeout", "--stale-after",
    "--reports-dir",
}  # fmt: skip
_unknown_flag = st.from_regex(r"--[a-z][a-z0-9-]{3,15}", fullmatch=True).filter(
    lambda f: f not in _KNOWN_OPTIONS and not any(k.startswith(f) for k in _KNOWN_OPTIONS)
)
_COMMANDS = {"run", "cleanup", "runs", "costs", "report", "schedule", "sim"}
_unknown_command = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True).filter(
    lambda c: c not in _COMMANDS
)


@SETTINGS
@given(extra=st.one_of(bad_int_flag(), bad_float_flag(), _unknown_flag.map(lambda f: [f])))
def test_bad_run_flags_exit_4(empty_dir: Path, extra: list[str]) -> None:
    assert_bad_input(*run_main(["run", "--sim", *extra]))


@SETTINGS
@given(command=_unknown_command, rest=st.lists(st.text(max_size=8), max_size=2))
def test_unknown_commands_exit_4(empty_dir: Path, command: str, rest: list[str]) -> None:
    assume(not any("\0" in r for r in rest))
    line = assert_bad_input(*run_main([command, *rest]))
    assert command in line, line


_SCENARIO_WORDS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,20}", fullmatch=True)


def _not_a_scenario(name: str) -> bool:
    try:
        parse_scenario(name)
    except ValueError:
        return True
    return False


@SETTINGS
@given(name=_SCENARIO_WORDS.filter(_not_a_scenario), command=st.sampled_from(["run", "sim"]))
def test_unknown_scenarios_exit_4(empty_dir: Path, name: str, command: str) -> None:
    args = [command, "--sim"] if command == "run" else [command]
    line = assert_bad_input(*run_main([*args, "--scenario", name]))
    assert "scenario" in line, line


@SETTINGS
@given(
    port=st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=65536, max_value=10**9),
        st.sampled_from([4001, 4002, 7496, 7497]),
    )
)
def test_sim_refuses_bad_and_ib_ports(empty_dir: Path, port: int) -> None:
    """Never a listening simulator: out-of-range ports and IB's own ports are refused."""
    assert_bad_input(*run_main(["sim", f"--port={port}"]))


@SETTINGS
@given(
    args=st.one_of(
        st.integers(max_value=0).map(lambda n: ["runs", f"--last={n}"]),
        st.text(max_size=10)
        .filter(lambda s: re.fullmatch(r"\s*\d+\s*[dhw]\s*", s) is None and "\0" not in s)
        .map(lambda s: ["costs", f"--since={s}"]),
        _NO_DIGITS.map(lambda s: ["cleanup", f"--port={s}"]),
        _NO_DIGITS.map(lambda s: ["cleanup", f"--client-id={s}"]),
        st.just(["report", "-o", "x.html"]),
    )
)
def test_bad_flags_of_other_commands_exit_4(empty_dir: Path, args: list[str]) -> None:
    # A store path that does not exist: even a valid flag could only end in "no store".
    assert_bad_input(*run_main([*args, "--store", str(empty_dir / "none.sqlite")]))


# --- a handful of real subprocesses ----------------------------------------------------------

SUBPROCESS_CASES = [
    (["run", "--port", "abc"], {}),
    (["run", "--sim", "--contract", "FUT::"], {}),
    (["run"], {"HARNESS_FILL_DEADLINE": "nan"}),
    (["cleanup", "--client-id", "-1"], {}),
]


def test_bad_input_through_real_subprocesses(tmp_path: Path) -> None:
    """The same promise from a real process: exit 4, one stderr line, no traceback."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness_lib.cli", *args],
            cwd=tmp_path,
            env={**base, **env},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args, env in SUBPROCESS_CASES
    ]
    for (args, _), proc in zip(SUBPROCESS_CASES, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 4, (args, out, err)
        assert_bad_input(proc.returncode, out, err)
