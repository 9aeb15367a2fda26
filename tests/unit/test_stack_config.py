"""The stack setting from harness.toml, HARNESS_STACK and --stack-file, like every setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness_lib.config import (
    ConfigError,
    HarnessConfig,
    config_from_args,
    load_config,
    settings_parser,
)

TOKEN = "not-a-real-token-0123456789"
TOML = f"""
contract = "AAPL"

[[stack]]
name = "dash-sse"
kind = "sse"
url = "http://127.0.0.1:8765/events"
headers = {{ Authorization = "Bearer {TOKEN}" }}

[stack.quote]
select = 'quotes."{{symbol}}"'
bid = "bid"
ask = "ask"
mode = "mode"

[[stack]]
name = "dash-page"
kind = "browser"
url = "http://127.0.0.1:8765/"
[stack.position]
select = '.position-card[data-symbol="{{symbol}}"]'
quantity = ".qty"
"""


def test_toml_stack_tables_load(tmp_path: Path) -> None:
    path = tmp_path / "harness.toml"
    path.write_text(TOML)
    cfg = load_config(env={}, config_path=path)
    assert [ep.name for ep in cfg.stack] == ["dash-sse", "dash-page"]
    assert TOKEN not in repr(cfg) and TOKEN not in json.dumps(cfg.redacted())
    assert cfg.redacted()["stack"][0]["headers"] == {"Authorization": "***"}


def test_bad_key_in_toml_names_it_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "harness.toml"
    path.write_text(TOML.replace('bid = "bid"', 'bid = "bid["'))
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_path=path)
    msg = str(err.value)
    assert msg.startswith(f"invalid stack[0].quote.bid from {path}: 'bid['"), msg
    assert "JMESPath" in msg and "\n" not in msg


def test_env_json_and_its_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"HARNESS_STACK": json.dumps([{"name": "x", "kind": "ws", "url": "ws://h/"}])}
    with pytest.raises(ConfigError, match=r"^invalid stack\[0\]\.kind from HARNESS_STACK: 'ws'"):
        load_config(env=env)


def test_stack_file_flag_overrides_and_must_hold_only_stack(tmp_path: Path) -> None:
    stack_file = tmp_path / "stack.toml"
    stack_file.write_text(TOML.replace('contract = "AAPL"', ""))
    cfg = load_config({"stack": stack_file}, env={}, config_path=None)
    assert len(cfg.stack) == 2
    stack_file.write_text(TOML)
    with pytest.raises(ConfigError, match="may hold only"):
        load_config({"stack": stack_file}, env={})
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as err:
        load_config({"stack": missing}, env={})
    assert str(err.value).startswith("invalid stack from --stack-file: '/")
    assert str(err.value).endswith(" (cannot read stack file: No such file or directory)")


def test_stack_file_is_a_flag_derived_from_the_declaration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness run --stack-file PATH`: the argparse flag comes from the stack setting."""
    monkeypatch.chdir(tmp_path)
    stack_file = tmp_path / "stack.toml"
    stack_file.write_text(TOML.replace('contract = "AAPL"', ""))
    parser = settings_parser("harness run")
    assert "--stack-file PATH" in parser.format_help()
    cfg = config_from_args(parser, ["--stack-file", str(stack_file)], env={})
    assert [ep.name for ep in cfg.stack] == ["dash-sse", "dash-page"]
    stack_file.write_text(TOML.replace('contract = "AAPL"', "").replace('"sse"', '"grpc"'))
    with pytest.raises(ConfigError) as err:
        config_from_args(parser, ["--stack-file", str(stack_file)], env={})
    where = f"--stack-file {stack_file}"
    assert str(err.value).startswith(f"invalid stack[0].kind from {where}: 'grpc' ("), err
    assert err.value.key == "stack[0].kind" and err.value.source == where


def test_header_values_never_reach_an_error(tmp_path: Path) -> None:
    path = tmp_path / "harness.toml"
    path.write_text(TOML.replace(f'Bearer {TOKEN}"', f'Bearer {TOKEN}\\nX"'))
    with pytest.raises(ConfigError) as err:
        load_config(env={}, config_path=path)
    assert "stack[0].headers.Authorization" in str(err.value)
    assert TOKEN not in str(err.value)


def test_config_round_trips_endpoints() -> None:
    cfg = HarnessConfig()
    assert cfg.stack == ()
    decl = [{"name": "d", "kind": "http", "url": "http://x/", "trades": {"ids": "i"}}]
    loaded = load_config(env={"HARNESS_STACK": json.dumps(decl)})
    again = HarnessConfig(stack=loaded.stack)  # already-parsed endpoints pass through
    assert again.stack[0].name == "d"
