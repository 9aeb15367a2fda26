"""The one settings declaration: what derives from it, flags parsed from it, nested values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from harness_lib.config import (
    SETTINGS,
    ConfigError,
    HarnessConfig,
    add_setting_options,
    config_from_args,
    env_var,
    load_config,
    setting_flags,
    settings_parser,
)


@pytest.fixture
def no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so no stray ./harness.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_field_is_a_declared_setting() -> None:
    fields = [f.name for f in dataclasses.fields(HarnessConfig)]
    assert list(SETTINGS) == fields
    for name, spec in SETTINGS.items():
        assert spec.name == name
        assert spec.env == env_var(name) == "HARNESS_" + name.upper()
        assert spec.option.startswith("--") and spec.help and spec.expected


def test_flags_are_unique_and_the_shorter_names_are_kept() -> None:
    options = [s.option for s in SETTINGS.values()]
    assert len(options) == len(set(options))
    renamed = {n: s.option for n, s in SETTINGS.items() if s.option != "--" + n.replace("_", "-")}
    assert renamed == {
        "sim_seed": "--seed",
        "tick_deadline": "--deadline",
        "observe_seconds": "--observe",
        "json_path": "--json",
        "junit_path": "--junit",
        "stack": "--stack-file",
    }


def test_parser_has_a_flag_per_setting_and_help_names_the_variable() -> None:
    parser = settings_parser("harness run")
    text = parser.format_help()
    for spec in SETTINGS.values():
        assert spec.option in text and spec.env in text


def test_flags_round_trip_into_the_config(no_file: Path) -> None:
    argv = ["--sim", "--deadline", "3", "--observe", "1.5", "--notify", "ntfy://a",
            "--notify", "ntfy://b", "--phases", "ticks", "--json", "out.json"]  # fmt: skip
    cfg = config_from_args(settings_parser("harness run"), argv, env={})
    assert cfg.sim is True and cfg.tick_deadline == 3.0 and cfg.observe_seconds == 1.5
    assert cfg.notify == ("ntfy://a", "ntfy://b")
    assert cfg.json_path == Path("out.json")
    # Not given means "not set": the lower layers (environment, file, defaults) apply.
    cfg = config_from_args(settings_parser("harness run"), [], env={"HARNESS_PORT": "4002"})
    assert cfg == HarnessConfig(port=4002)


def test_a_bad_flag_value_names_the_declared_flag(no_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_args(settings_parser("harness run"), ["--observe", "nan"], env={})
    assert str(info.value) == (
        "invalid observe_seconds from --observe: 'nan' (expected a number of seconds > 0 "
        "and <= 3600)"
    )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--deadl", "3"], "unrecognized arguments: --deadl"),  # no abbreviations
        (["--port"], "argument --port: expected one argument"),
        (["stray"], "unrecognized arguments: stray"),
    ],
)
def test_usage_errors_are_one_line_config_errors(argv: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_parser("harness run").parse_args(argv)
    assert says in str(info.value) and "\n" not in str(info.value)
    assert info.value.source == "flags" and "harness run --help" in info.value.hint


def test_notebooks_can_add_a_subset_beside_their_own_options(no_file: Path) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_setting_options(p, ["sim", "port", "client_id", "tick_deadline"])
    p.add_argument("--seconds", type=float, default=5.0)
    ns = p.parse_args(["--port", "7497", "--seconds", "2", "--deadline", "9"])
    flags = setting_flags(ns)
    assert flags == {"port": "7497", "tick_deadline": "9"}
    cfg = load_config(flags, env={})
    assert (cfg.port, cfg.tick_deadline, ns.seconds) == (7497, 9.0, 2.0)


# --- a nested setting: [[stack]] ---------------------------------------------------------

_STACK = SETTINGS["stack"]
_SSE = {"name": "a", "kind": "sse", "url": "http://127.0.0.1:1/e", "trades": {"ids": "id"}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            [_SSE, {**_SSE, "name": "b", "quote": {"select": "q", "bid": "x[", "ask": "a"}}],
            "invalid stack[1].quote.bid from harness.toml: 'x[' (not a JMESPath expression: ",
        ),
        (
            [{**_SSE, "quote": {"select": "q", "bdi": "b"}}],
            "invalid stack[0].quote.bdi from harness.toml: 'bdi' (unknown key; did you mean "
            "'bid'?)",
        ),
        (
            [{**_SSE, "hold": -1}],
            "invalid stack[0].hold from harness.toml: -1 (expected a number of seconds > 0 "
            "and <= 3600)",
        ),
        ([3], "invalid stack[0] from harness.toml: 3 (expected a [[stack]] table)"),
        ("nope", "invalid stack from harness.toml: '***' (not JSON: "),
    ],
)
def test_nested_errors_name_the_key_path(value: object, message: str) -> None:
    """The stack spec's own refusal, in the one form every setting's error takes."""
    with pytest.raises(ConfigError) as info:
        _STACK.read(value, "harness.toml")
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.key == message.split()[1] and info.value.source == "harness.toml"


def test_nested_values_from_the_environment_are_json() -> None:
    (ep,) = _STACK.read(json.dumps([_SSE]), "HARNESS_STACK")
    assert (ep.name, ep.kind, ep.trades.ids) == ("a", "sse", "id")
    with pytest.raises(ConfigError, match=r"^invalid stack from HARNESS_STACK: .*not JSON"):
        _STACK.read("[{", "HARNESS_STACK")


@pytest.mark.parametrize("flag", ["--port", "--account", "--json", "--max-notional"])
def test_an_empty_flag_is_bad_input_not_unset(no_file: Path, flag: str) -> None:
    """`--port=` is a typo, not "try the paper ports"; an empty variable stays unset."""
    with pytest.raises(ConfigError, match=rf"^invalid \w+ from {flag}: '' \(empty; expected "):
        config_from_args(settings_parser("harness run"), [f"{flag}="], env={})
    var = next(s.env for s in SETTINGS.values() if s.option == flag)
    assert load_config(env={var: ""}) == HarnessConfig()


def test_a_flag_can_name_a_file_holding_the_value(
    no_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``flag_reader``: the mechanism ``--stack-file PATH`` will use (shown on ``notify``)."""
    spec = dataclasses.replace(
        SETTINGS["notify"], flag_reader=lambda path: Path(path).read_text().split()
    )
    monkeypatch.setitem(SETTINGS, "notify", spec)
    urls = no_file / "urls.txt"
    urls.write_text("ntfy://a\nntfy://b\n")
    assert load_config({"notify": str(urls)}, env={}).notify == ("ntfy://a", "ntfy://b")
    with pytest.raises(ConfigError) as info:
        load_config({"notify": str(no_file / "missing.txt")}, env={})
    assert str(info.value).startswith("invalid notify from --notify: ")
    assert "No such file or directory" in str(info.value)
