"""The plugin's command-line options, validated once with the harness's own field rules,
and the target labels. Pure code: no sockets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from harness_lib.config import ConfigError, HarnessConfig, env_var
from harness_lib.safety import mask_account

GATEWAY_FLAG = "--livefire-gateway"
GATEWAY_INI = "livefire_gateway"
GATEWAY_ENV = env_var("pytest_gateway")
"""``HARNESS_PYTEST_GATEWAY``: the gateway for CI jobs that cannot change the command line."""

SIM_FIXTURES = ("paper_gateway", "threaded_gateway", "livefire_drill")
"""Fixtures that need an in-process simulator (drills: its control channel); tests using them
are skipped against a gateway."""

_DEFAULTS = HarnessConfig()


@dataclass(frozen=True, slots=True)
class PluginOptions:
    """What the user asked for on the command line, ini file or environment."""

    gateway: tuple[str, int] | None = None
    """HOST, PORT of the gateway to test against; None starts a simulator per test."""
    gateway_source: str = GATEWAY_FLAG
    account: str | None = None
    allow_live_port: bool = False
    client_id: int = _DEFAULTS.client_id
    max_quantity: int = _DEFAULTS.max_quantity
    connect_timeout: float = _DEFAULTS.connect_timeout
    fill_deadline: float = _DEFAULTS.fill_deadline


def add_options(parser: pytest.Parser) -> None:
    """Register the ``--livefire-*`` options and the ``livefire_gateway`` ini key."""
    group = parser.getgroup("livefire", "livefire: the simulator or your paper gateway")
    group.addoption(
        GATEWAY_FLAG,
        metavar="HOST:PORT",
        default=None,
        help="run the `livefire` fixture against this paper gateway instead of a simulator "
        f"per test (also ini `{GATEWAY_INI}`, env {GATEWAY_ENV})",
    )
    group.addoption(
        "--livefire-account",
        metavar="ACCOUNT",
        default=None,
        help="the paper account orders go to (default: the gateway's first managed account)",
    )
    group.addoption(
        "--livefire-allow-live-port",
        action="store_true",
        default=False,
        help="allow 4001/7496 (live default ports); the paper-account check still applies",
    )
    group.addoption(
        "--livefire-client-id",
        metavar="N",
        default=None,
        help=f"API client id of the fixture's connections (default {_DEFAULTS.client_id})",
    )
    group.addoption(
        "--livefire-max-quantity",
        metavar="N",
        default=None,
        help=f"largest order `livefire.place` sends (default {_DEFAULTS.max_quantity}, max 100)",
    )
    parser.addini(GATEWAY_INI, "HOST:PORT of a paper gateway (see --livefire-gateway)", default="")


def parse_gateway(value: str, source: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:4002``) into (host, port), validated by the harness's
    own host and port rules. Raises ``pytest.UsageError`` with one line naming the fix."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    usage = f"expected HOST:PORT, e.g. {GATEWAY_FLAG} 127.0.0.1:4002"
    if not sep or not host or not port_text.strip().isdigit():
        raise pytest.UsageError(f"invalid {source} value {value!r}: {usage}")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        cfg = _validated(source, host=host, port=int(port_text))
    except pytest.UsageError as exc:
        raise pytest.UsageError(f"{exc}; {usage}") from None
    assert cfg.port is not None
    return cfg.host, cfg.port


def read_options(config: pytest.Config, env: dict[str, str] | None = None) -> PluginOptions:
    """Merge flag > environment > ini for the gateway; validate every value.

    Raises ``pytest.UsageError`` (one line, no traceback) for anything invalid.
    """
    env = dict(os.environ) if env is None else env
    gateway: tuple[str, int] | None = None
    raw, source = config.getoption(GATEWAY_FLAG), GATEWAY_FLAG
    if raw is None and env.get(GATEWAY_ENV, "").strip():
        raw, source = env[GATEWAY_ENV], GATEWAY_ENV
    if raw is None and str(config.getini(GATEWAY_INI)).strip():
        raw, source = str(config.getini(GATEWAY_INI)), f"ini {GATEWAY_INI}"
    if raw is not None:
        gateway = parse_gateway(str(raw), source)
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("--livefire-account", "account"),
        ("--livefire-client-id", "client_id"),
        ("--livefire-max-quantity", "max_quantity"),
    ):
        value = config.getoption(flag)
        if value is not None:
            cfg = _validated(flag, **{key: value})
            overrides[key] = getattr(cfg, key)
    return PluginOptions(
        gateway=gateway,
        gateway_source=source,
        allow_live_port=bool(config.getoption("--livefire-allow-live-port")),
        **overrides,
    )


def _validated(source: str, **values: Any) -> HarnessConfig:
    """Check values with the harness's own field rules (one rule, one place); the error
    names the pytest option instead of HarnessConfig."""
    try:
        return HarnessConfig(**values)
    except ConfigError as exc:
        text = str(exc).replace("from HarnessConfig", f"from {source}")
        hint = f" ({exc.hint})" if exc.hint and "port" not in values else ""
        raise pytest.UsageError(text + hint) from None


def target_label(
    *, simulated: bool, host: str, port: int, account: str | None, scenario: str | None = None
) -> str:
    """``SIMULATOR 127.0.0.1:7599 (scenario healthy, account DU****567)`` or
    ``GATEWAY 10.0.0.5:4002 (account DU****567)``: what a test really ran against, with the
    account masked. A simulator reached over HOST:PORT is still SIMULATOR."""
    kind = "SIMULATOR" if simulated else "GATEWAY"
    extra = [f"scenario {scenario}"] if scenario else []
    if account:
        extra.append(f"account {mask_account(account)}")
    return f"{kind} {host}:{port}" + (f" ({', '.join(extra)})" if extra else "")
