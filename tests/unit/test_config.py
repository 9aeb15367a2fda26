"""Config loading: precedence, validation messages, phases, and secret redaction."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness_lib.config import (
    ConfigError,
    HarnessConfig,
    env_var,
    flag_name,
    load_config,
    normalize_phases,
)
from harness_lib.models import Phase

H, T, R, C = Phase.HEALTH, Phase.TICKS, Phase.ROUND_TRIP, Phase.CLEANUP
FIELDS = [f.name for f in dataclasses.fields(HarnessConfig)]


@pytest.fixture
def no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so no stray ./harness.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and precedence ---------------------------------------------------------


def test_defaults(no_file: Path) -> None:
    cfg = load_config(env={})
    assert cfg == HarnessConfig()
    assert cfg.sim is False and cfg.scenario == "healthy" and cfg.sim_seed == 7
    assert (cfg.host, cfg.port, cfg.client_id, cfg.account) == ("127.0.0.1", None, 917, None)
    assert cfg.contract == "AAPL"
    assert cfg.phases == (H, T, C)
    assert cfg.trade is False and cfg.allow_delayed is False and cfg.market_data_type == 1
    assert (cfg.connect_timeout, cfg.tick_deadline, cfg.fill_deadline, cfg.stale_after) == (
        4.0,
        5.0,
        10.0,
        2.0,
    )
    assert (cfg.quantity, cfg.max_quantity, cfg.max_notional) == (1, 1, None)
    assert cfg.allow_live_port is False
    assert cfg.store == Path("data/harness.sqlite") and cfg.reports_dir == Path("data/reports")
    assert cfg.json_path is None and cfg.junit_path is None
    assert cfg.notify == () and cfg.notify_on == "fail" and cfg.heartbeat is None
    assert cfg.candidate_ports == (4002, 7497)


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "harness.toml",
        'port = 4010\nclient_id = 5\ncontract = "MES"\nstore = "x/y.sqlite"\ntrade = true\n',
    )
    assert load_config(env={}, config_path=toml).port == 4010
    cfg = load_config(env={"HARNESS_PORT": "4020", "HARNESS_CLIENT_ID": "6"}, config_path=toml)
    assert (cfg.port, cfg.client_id) == (4020, 6)
    cfg = load_config(
        {"port": 4030, "client_id": None, "trade": None},
        env={"HARNESS_PORT": "4020"},
        config_path=toml,
    )
    assert cfg.port == 4030  # flag beats env beats file
    assert cfg.client_id == 5  # None flag means "not given": the file value stays
    assert cfg.trade is True and cfg.phases == (H, T, R, C)
    assert cfg.contract == "MES" and cfg.store == Path("x/y.sqlite")
    assert cfg.candidate_ports == (4030,)
    # Flags may be strings too; a False flag is a real value and overrides the file.
    cfg = load_config({"port": "4040", "trade": False}, env={}, config_path=toml)
    assert cfg.port == 4040 and cfg.trade is False and R not in cfg.phases


def test_harness_table_and_cwd_discovery(no_file: Path) -> None:
    write(no_file / "harness.toml", '[harness]\nport = 7497\nnotify = ["ntfy://topic"]\n')
    cfg = load_config(env={})
    assert cfg.port == 7497 and cfg.notify == ("ntfy://topic",)


def test_harness_config_env_names_the_file(tmp_path: Path, no_file: Path) -> None:
    toml = write(tmp_path / "other.toml", "client_id = 42\n")
    assert load_config(env={"HARNESS_CONFIG": str(toml)}).client_id == 42


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(env={}, config_path=tmp_path / "missing.toml")


def test_empty_env_values_count_as_unset(tmp_path: Path) -> None:
    toml = write(tmp_path / "h.toml", "port = 4010\n")
    assert load_config(env={"HARNESS_PORT": "  "}, config_path=toml).port == 4010


def test_empty_list_flags_do_not_override(tmp_path: Path) -> None:
    toml = write(tmp_path / "h.toml", 'notify = ["ntfy://a"]\nphases = ["ticks"]\n')
    cfg = load_config({"notify": [], "phases": ()}, env={}, config_path=toml)
    assert cfg.notify == ("ntfy://a",) and cfg.phases == (H, T, C)


def test_env_parsing_of_every_kind(no_file: Path) -> None:
    env = {
        "HARNESS_SIM": "yes",
        "HARNESS_SCENARIO": "farm-down",
        "HARNESS_SIM_SEED": "0",
        "HARNESS_HOST": "gateway.local",
        "HARNESS_PORT": "auto",
        "HARNESS_CLIENT_ID": "0",
        "HARNESS_ACCOUNT": "DU1234567",
        "HARNESS_CONTRACT": "eur.usd",
        "HARNESS_PHASES": "ticks, health",
        "HARNESS_TRADE": "on",
        "HARNESS_ALLOW_DELAYED": "TRUE",
        "HARNESS_MARKET_DATA_TYPE": "3",
        "HARNESS_CONNECT_TIMEOUT": "2.5",
        "HARNESS_TICK_DEADLINE": "3600",
        "HARNESS_FILL_DEADLINE": "1e1",
        "HARNESS_STALE_AFTER": "0.5",
        "HARNESS_OBSERVE_SECONDS": "1.5",
        "HARNESS_QUANTITY": "3",
        "HARNESS_MAX_QUANTITY": "100",
        "HARNESS_MAX_NOTIONAL": "25000",
        "HARNESS_ALLOW_LIVE_PORT": "0",
        "HARNESS_STORE": "/tmp/s.sqlite",
        "HARNESS_REPORTS_DIR": "out",
        "HARNESS_JSON_PATH": "r.json",
        "HARNESS_JUNIT_PATH": "none",
        "HARNESS_NOTIFY": "ntfy://a,tgram://123456789:AAH/1 mailto://u:p@x.com?to=a@b.c,d@e.f",
        "HARNESS_NOTIFY_ON": "Change",
        "HARNESS_HEARTBEAT": "https://hc-ping.com/abc",
        "HARNESS_STACK": json.dumps(
            [{"name": "d", "kind": "http", "url": "http://x/s", "trades": {"ids": "ids"}}]
        ),
    }
    assert {n.removeprefix("HARNESS_").lower() for n in env} == set(FIELDS)
    cfg = load_config(env=env)
    assert cfg.sim is True and cfg.scenario == "farm-down" and cfg.sim_seed == 0
    assert cfg.port is None and cfg.client_id == 0 and cfg.account == "DU1234567"
    assert cfg.phases == (H, T, R, C)
    assert cfg.market_data_type == 3 and cfg.tick_deadline == 3600.0 and cfg.fill_deadline == 10
    assert (cfg.quantity, cfg.max_quantity, cfg.max_notional) == (3, 100, 25000.0)
    assert cfg.store == Path("/tmp/s.sqlite") and cfg.json_path == Path("r.json")
    assert cfg.junit_path is None
    assert cfg.notify == (
        "ntfy://a",
        "tgram://123456789:AAH/1",
        "mailto://u:p@x.com?to=a@b.c,d@e.f",  # a comma inside a URL does not split it
    )
    assert cfg.notify_on == "change"
    assert [(ep.name, ep.kind) for ep in cfg.stack] == [("d", "http")]


def test_quantity_above_max_is_not_a_config_error(no_file: Path) -> None:
    cfg = load_config({"quantity": 5, "max_quantity": 1}, env={})
    assert cfg.quantity == 5  # the safety guard refuses it at order time


# --- phases --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "trade", "expected"),
    [
        ("ticks", False, (H, T, C)),
        ("health", False, (H, C)),
        ("cleanup,ticks,health", False, (H, T, C)),
        ("cleanup", True, (H, R, C)),
        ("ticks ticks", True, (H, T, R, C)),
        ("round-trip", True, (H, R, C)),
        (["TICKS"], False, (H, T, C)),
        ((Phase.TICKS, Phase.ROUND_TRIP), True, (H, T, R, C)),
    ],
)
def test_phases_normalised(
    no_file: Path, given: str | list[str], trade: bool, expected: tuple[Phase, ...]
) -> None:
    assert load_config({"phases": given, "trade": trade}, env={}).phases == expected


def test_round_trip_needs_trade(no_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"HARNESS_PHASES": "ticks,round_trip"})
    msg = str(info.value)
    assert msg.startswith("invalid phases from HARNESS_PHASES:") and "--trade" in msg
    assert info.value.key == "phases" and info.value.source == "HARNESS_PHASES"


def test_direct_construction_validates_and_normalises() -> None:
    cfg = HarnessConfig(trade=True, store="a.sqlite", phases=("ticks",))  # type: ignore[arg-type]
    assert cfg.phases == (H, T, R, C) and cfg.store == Path("a.sqlite")
    assert dataclasses.replace(cfg, trade=False).phases == (H, T, C)
    with pytest.raises(ConfigError, match="invalid port from HarnessConfig"):
        HarnessConfig(port=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.port = 1  # type: ignore[misc]


def test_normalize_phases() -> None:
    assert normalize_phases((), trade=False) == (H, C)
    assert normalize_phases((C, R, T), trade=False) == (H, T, C)


# --- validation messages -------------------------------------------------------------

BAD_VALUES = [
    ("port", "abc"),
    ("port", "0"),
    ("port", "65536"),
    ("port", "4002.5"),
    ("client_id", "-1"),
    ("client_id", "2147483648"),
    ("sim", "maybe"),
    ("trade", "2"),
    ("scenario", "9lives"),
    ("scenario", "a b"),
    ("host", "http://x y"),
    ("sim_seed", "-3"),
    ("account", "DU-1"),
    ("contract", "OPT:AAPL"),
    ("phases", "ticks,launch"),
    ("market_data_type", "5"),
    ("connect_timeout", "0"),
    ("tick_deadline", "-1"),
    ("fill_deadline", "3601"),
    ("stale_after", "nan"),
    ("connect_timeout", "inf"),
    ("quantity", "0"),
    ("max_quantity", "0"),
    ("max_quantity", "101"),
    ("max_notional", "0"),
    ("max_notional", "-5"),
    ("notify", "not a url"),
    ("notify_on", "sometimes"),
    ("heartbeat", "hc-ping.com/abc"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_env_errors_are_one_line_naming_key_source_value(
    no_file: Path, key: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={env_var(key): value})
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"invalid {key} from {env_var(key)}: {value!r} (")
    assert "expected" in msg
    assert info.value.key == key and info.value.source == env_var(key)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_flag_errors_name_the_flag(no_file: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({key: value}, env={})
    assert str(info.value).startswith(f"invalid {key} from {flag_name(key)}: ")


def test_flag_names() -> None:
    assert flag_name("tick_deadline") == "--deadline"
    assert flag_name("client_id") == "--client-id"
    assert flag_name("port") == "--port"


def test_exact_port_message(no_file: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"HARNESS_PORT": "abc"})
    assert str(info.value) == (
        "invalid port from HARNESS_PORT: 'abc' (expected an integer 1-65535, or 'auto')"
    )
    assert "4002" in info.value.hint


def test_toml_value_error_names_the_file(tmp_path: Path) -> None:
    toml = write(tmp_path / "harness.toml", "[harness]\nmax_quantity = 500\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, config_path=toml)
    assert str(info.value) == (f"invalid max_quantity from {toml}: 500 (expected an integer 1-100)")


@pytest.mark.parametrize("bad", ["port = true", "phases = 3", "notify = {a = 1}", "store = ''"])
def test_toml_wrong_types(tmp_path: Path, bad: str) -> None:
    toml = write(tmp_path / "harness.toml", bad + "\n")
    with pytest.raises(ConfigError, match=r"^invalid \w+ from .*harness\.toml: "):
        load_config(env={}, config_path=toml)


def test_unknown_toml_key_suggests_close_matches(tmp_path: Path) -> None:
    toml = write(tmp_path / "harness.toml", "prot = 4002\n")
    with pytest.raises(ConfigError) as info:
        load_config(env={}, config_path=toml)
    msg = str(info.value)
    assert "unknown key 'prot'" in msg and "did you mean 'port'" in msg and str(toml) in msg
    assert "\n" not in msg

    write(toml, "[harness]\nzzzzzz = 1\n")
    with pytest.raises(ConfigError, match="known keys: sim, scenario"):
        load_config(env={}, config_path=toml)


def test_unknown_flag_key_is_an_error(no_file: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'tick_deadline'"):
        load_config({"deadline": 3}, env={})


def test_duplicate_key_in_toml(tmp_path: Path) -> None:
    toml = write(tmp_path / "harness.toml", "port = 1\n[harness]\nport = 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_config(env={}, config_path=toml)


@pytest.mark.parametrize(
    "text", ["port = \n", 'a = "unterminated\n', "port = 1\nport = 2\n", "[harness\n"]
)
def test_malformed_toml_names_file_and_line(tmp_path: Path, text: str) -> None:
    toml = write(tmp_path / "harness.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(env={}, config_path=toml)
    msg = str(info.value)
    assert msg.startswith(f"malformed {toml}:")
    assert re.search(r"line \d+", msg)
    assert "\n" not in msg


def test_non_utf8_toml(tmp_path: Path) -> None:
    toml = tmp_path / "harness.toml"
    toml.write_bytes(b"port = 1\nhost = '\xff'\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_config(env={}, config_path=toml)


def test_error_values_are_redacted_for_secret_fields(no_file: Path) -> None:
    secret = "s3cr3tS3CR3Ts3cr3tS3CR3T"
    with pytest.raises(ConfigError) as info:
        load_config(env={"HARNESS_NOTIFY": f"ntfy://x/{secret} oops"})
    assert secret not in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config({"heartbeat": f"nope token={secret[:6]}"}, env={})
    assert secret[:6] not in str(info.value)


@pytest.fixture(scope="module")
def empty_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("cfg") / "harness.toml", "")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(name=st.sampled_from(FIELDS), value=st.text(max_size=30))
def test_arbitrary_env_values_load_or_fail_cleanly(empty_toml: Path, name: str, value: str) -> None:
    var = env_var(name)
    try:
        cfg = load_config(env={var: value}, config_path=empty_toml)
    except ConfigError as err:
        msg = str(err)
        assert len(msg.splitlines()) == 1
        assert name in msg and var in msg
        assert err.key == name and err.source == var
    else:
        assert isinstance(cfg, HarnessConfig)
        json.dumps(cfg.redacted())


# --- redacted config (the URL rules themselves: tests/unit/test_redact.py) ----------


def test_redacted_config_is_json_ready_and_secret_free(no_file: Path) -> None:
    secret = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    cfg = load_config(
        {
            "notify": [f"tgram://123456789:{secret}/1", "ntfys://u:hunter2@ntfy.sh/t"],
            "heartbeat": "https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa",
            "json_path": Path("r.json"),
            "trade": True,
        },
        env={},
    )
    data = cfg.redacted()
    text = json.dumps(data)
    assert set(data) == set(FIELDS)
    for leaked in (secret, "hunter2", "eb095278"):
        assert leaked not in text and leaked not in repr(cfg)
    assert data["notify"] == ["tgram://***/1", "ntfys://u:***@ntfy.sh/t"]
    assert data["heartbeat"] == "https://hc-ping.com/***"
    assert data["phases"] == ["health", "ticks", "round_trip", "cleanup"]
    assert data["json_path"] == "r.json" and data["store"] == "data/harness.sqlite"
