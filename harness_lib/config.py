"""Run configuration: defaults < ``harness.toml`` < ``HARNESS_*`` environment < CLI flags.

:func:`load_config` merges the sources and validates every value. Anything wrong
raises :class:`ConfigError` whose message is one line naming the key, where the
value came from (``harness.toml``, ``HARNESS_PORT``, ``--port``), the value and
what is allowed, e.g.::

    invalid port from HARNESS_PORT: 'abc' (expected an integer 1-65535, or 'auto')

Notification and heartbeat URLs carry secrets; :func:`harness_lib.redact.redact_url`
hides them and both ``HarnessConfig.redacted()`` and ``repr(config)`` use it, so a
config can be logged or stored with a report.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_lib.constants import DEFAULT_STORE, NOTIFY_ON
from harness_lib.contracts import ACCEPTED_FORMS, SpecError, parse_spec
from harness_lib.models import Phase
from harness_lib.redact import MASK, redact_url
from harness_lib.safety import PAPER_PORTS

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_PHASES",
    "ENV_PREFIX",
    "NOTIFY_ON",
    "ConfigError",
    "HarnessConfig",
    "env_var",
    "flag_name",
    "load_config",
    "normalize_phases",
]

CONFIG_FILE = "harness.toml"
"""Looked up in the current directory when no path is given."""
ENV_PREFIX = "HARNESS_"
"""Environment variables are ``HARNESS_<FIELD_UPPER>``; ``HARNESS_CONFIG`` names the file."""
DEFAULT_PHASES = (Phase.HEALTH, Phase.TICKS, Phase.CLEANUP)

# CLI flags are --field-name except where the CLI chose a shorter name.
_FLAG_NAMES = {"tick_deadline": "--deadline", "stack": "--stack-file"}


class ConfigError(ValueError):
    """Invalid configuration. ``str()`` is always one line; ``hint`` may add advice."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        hint: str = "",
    ) -> None:
        # Values are shown with repr() (newlines escaped); this also flattens file
        # names or OS messages that might carry a line break.
        message = " ".join(str(message).splitlines())
        super().__init__(message)
        self.key = key
        self.source = source
        self.hint = hint


def env_var(name: str) -> str:
    """The environment variable for a field, e.g. ``port`` -> ``HARNESS_PORT``."""
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    """The CLI flag for a field, e.g. ``client_id`` -> ``--client-id``."""
    return _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


# ---------------------------------------------------------------------------
# Value parsers: accept typed values (flags, toml) and strings (env, toml, flags)
# ---------------------------------------------------------------------------


class _Invalid(ValueError):
    """A parser's refusal, optionally saying what exactly is wrong."""

    def __init__(self, why: str = "") -> None:
        super().__init__(why)
        self.why = why


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"", "none", "null"}


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise _Invalid()


# int()/float() also take non-ASCII digits; config values should be plain ASCII.
_ASCII_INT = re.compile(r"[+-]?[0-9]+")


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(v: Any) -> int:
        if isinstance(v, bool):
            raise _Invalid()
        if isinstance(v, int):
            n = v
        elif isinstance(v, float) and v.is_integer():
            n = int(v)
        elif isinstance(v, str) and _ASCII_INT.fullmatch(v.strip()):
            n = int(v.strip(), 10)
        else:
            raise _Invalid()
        if not lo <= n <= hi:
            raise _Invalid()
        return n

    return parse


def _float(*, hi: float | None) -> Callable[[Any], float]:
    """A finite number > 0 (and <= hi when given)."""

    def parse(v: Any) -> float:
        if isinstance(v, bool):
            raise _Invalid()
        if isinstance(v, (int, float)):
            x = float(v)
        elif isinstance(v, str) and v.isascii():
            x = float(v.strip())
        else:
            raise _Invalid()
        if not (math.isfinite(x) and x > 0 and (hi is None or x <= hi)):
            raise _Invalid()
        return x

    return parse


def _nullable(parse: Callable[[Any], Any], *words: str) -> Callable[[Any], Any]:
    """Also accept None, '', 'none', 'null' (and ``words``) for "not set"."""

    def wrapped(v: Any) -> Any:
        if v is None or (isinstance(v, str) and v.strip().lower() in _NONE | set(words)):
            return None
        return parse(v)

    return wrapped


def _regex_str(pattern: str) -> Callable[[Any], str]:
    rx = re.compile(pattern)

    def parse(v: Any) -> str:
        if not isinstance(v, str) or not rx.fullmatch(v.strip()):
            raise _Invalid()
        return v.strip()

    return parse


def _path(v: Any) -> Path:
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, str) or not v.strip() or "\0" in v:
        raise _Invalid()
    p = Path(v.strip())
    try:
        return p.expanduser()
    except RuntimeError:  # ~user that does not exist: keep it literal
        return p


def _contract(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid()
    try:
        parse_spec(v)
    except SpecError as err:
        raise _Invalid(err.why) from None
    return v.strip()


_PHASE_NAMES = ", ".join(p.value for p in Phase)


def _phases(v: Any) -> tuple[Phase, ...]:
    if isinstance(v, str):
        items: list[Any] = [s for s in re.split(r"[\s,]+", v) if s]
    elif isinstance(v, (list, tuple)):
        items = list(v)
    else:
        raise _Invalid()
    out: list[Phase] = []
    for item in items:
        if not isinstance(item, str):
            raise _Invalid()
        try:
            phase = Phase(item.strip().lower().replace("-", "_"))
        except ValueError:
            raise _Invalid() from None
        if phase not in out:
            out.append(phase)
    if not out:
        raise _Invalid()
    return tuple(out)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
# Split on whitespace, and on commas only where a new URL starts: apprise URLs may
# themselves contain commas (e.g. mailto://...?to=a@x.com,b@y.com).
_URL_SPLIT = re.compile(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def _url(v: Any) -> str:
    if not isinstance(v, str) or not _URL.fullmatch(v.strip()):
        raise _Invalid()
    return v.strip()


def _notify(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        items: list[Any] = [s.strip(",") for s in _URL_SPLIT.split(v)]
        items = [s for s in items if s]
    elif isinstance(v, (list, tuple)):
        items = list(v)
    else:
        raise _Invalid()
    return tuple(_url(item) for item in items)


def _notify_on(v: Any) -> str:
    if not isinstance(v, str) or v.strip().lower() not in NOTIFY_ON:
        raise _Invalid()
    return v.strip().lower()


def _stack(v: Any, source: str = "stack") -> tuple[Any, ...]:
    """``[[stack]]`` tables, ``HARNESS_STACK`` JSON, or a ``--stack-file`` path (TOML).

    Validated by harness_lib.stack.spec, imported here lazily: a run without a stack
    never loads it (or jmespath).
    """
    from harness_lib.stack.spec import Endpoint, parse_stack

    if isinstance(v, tuple) and all(isinstance(e, Endpoint) for e in v):
        return v
    if isinstance(v, os.PathLike):
        path = Path(v)
        try:
            doc = tomllib.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise _Invalid(f"cannot read stack file {path}: {err}") from None
        unknown = [k for k in doc if k != "stack"]
        if unknown:
            raise _Invalid(f"{path} may hold only [[stack]] tables, not {unknown[0]!r}")
        return parse_stack(doc.get("stack", []), str(path))
    return parse_stack(v, source)


_TIMEOUT = _float(hi=3600.0)
_TIMEOUT_EXPECTED = "a number of seconds > 0 and <= 3600"


@dataclass(frozen=True, slots=True)
class _Field:
    parse: Callable[[Any], Any]
    expected: str
    hint: str = ""
    secret: bool = False
    """Show the value redacted in error messages."""


_FIELDS: dict[str, _Field] = {
    "sim": _Field(_bool, "a boolean (1/0, true/false, yes/no, on/off)"),
    "scenario": _Field(
        _regex_str(r"[A-Za-z_][A-Za-z0-9_-]{0,63}"),
        "a scenario name: letters, digits, '_' or '-', not starting with a digit",
        "the simulator lists its scenarios; 'healthy' is the default",
    ),
    "sim_seed": _Field(_int(0, 2**32 - 1), "an integer 0-4294967295"),
    "host": _Field(
        _regex_str(r"[A-Za-z0-9._:%\[\]-]{1,253}"),
        "a host name or IP address, without scheme or port",
    ),
    "port": _Field(
        _nullable(_int(1, 65535), "auto"),
        "an integer 1-65535, or 'auto'",
        "IB Gateway paper listens on 4002, TWS paper on 7497; leave unset to try both",
    ),
    "client_id": _Field(
        _int(0, 2**31 - 1),
        "an integer 0-2147483647",
        "each API connection to one gateway needs its own client id",
    ),
    "account": _Field(
        _nullable(_regex_str(r"[A-Za-z0-9]{1,32}")), "an IB account id like DU1234567"
    ),
    "contract": _Field(_contract, "one of " + ACCEPTED_FORMS),
    "phases": _Field(
        _phases,
        f"a comma-separated list of {_PHASE_NAMES}",
        "health always runs first and cleanup last; round_trip needs trade",
    ),
    "trade": _Field(_bool, "a boolean (1/0, true/false, yes/no, on/off)"),
    "allow_delayed": _Field(_bool, "a boolean (1/0, true/false, yes/no, on/off)"),
    "market_data_type": _Field(
        _int(1, 4), "1 (live), 2 (frozen), 3 (delayed) or 4 (delayed-frozen)"
    ),
    "connect_timeout": _Field(_TIMEOUT, _TIMEOUT_EXPECTED),
    "tick_deadline": _Field(_TIMEOUT, _TIMEOUT_EXPECTED),
    "fill_deadline": _Field(_TIMEOUT, _TIMEOUT_EXPECTED),
    "stale_after": _Field(_TIMEOUT, _TIMEOUT_EXPECTED),
    "observe_seconds": _Field(
        _TIMEOUT,
        _TIMEOUT_EXPECTED,
        "how long the ticks phase keeps watching after bid/ask are live, to measure "
        "inter-arrival times and catch a stream that goes stale",
    ),
    "quantity": _Field(
        _int(1, 2**63 - 1),
        "an integer >= 1",
        "quantities above max_quantity are refused when the order would be placed",
    ),
    "max_quantity": _Field(_int(1, 100), "an integer 1-100"),
    "max_notional": _Field(
        _nullable(_float(hi=None)), "a number > 0 (in the contract's currency), or unset"
    ),
    "allow_live_port": _Field(_bool, "a boolean (1/0, true/false, yes/no, on/off)"),
    "store": _Field(_path, "a file path"),
    "reports_dir": _Field(_path, "a directory path"),
    "json_path": _Field(_nullable(_path), "a file path, or unset"),
    "junit_path": _Field(_nullable(_path), "a file path, or unset"),
    "notify": _Field(
        _notify,
        "apprise URLs like 'ntfy://my-topic', separated by commas or spaces",
        secret=True,
    ),
    "notify_on": _Field(_notify_on, " | ".join(NOTIFY_ON)),
    "heartbeat": _Field(
        _nullable(_url), "a URL like 'https://hc-ping.com/<uuid>', or unset", secret=True
    ),
    "stack": _Field(
        _stack,
        "[[stack]] tables (see README: Stack checks)",
        "declare endpoints of your own stack for the harness to watch",
        secret=True,
    ),
}


def _show(value: Any, secret: bool) -> str:
    """A one-line, bounded, secret-free rendering of a bad value."""
    if secret:
        if isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, (list, tuple)):
            value = [redact_url(str(v)) for v in value]
        else:
            value = MASK
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _parse_field(name: str, value: Any, source: str) -> Any:
    spec = _FIELDS[name]
    if name == "stack":
        # Its own one-line errors name the nested key: invalid stack[0].quote.bid in ...
        from harness_lib.stack.spec import StackSpecError

        try:
            return _stack(value, source)
        except StackSpecError as err:
            raise ConfigError(str(err), key=err.key, source=err.source) from None
        except _Invalid as err:
            raise ConfigError(f"invalid stack from {source}: {err.why}", key=name,
                              source=source) from None  # fmt: skip
    try:
        return spec.parse(value)
    except (ValueError, TypeError, OverflowError) as err:
        why = f"{err.why}; " if isinstance(err, _Invalid) and err.why else ""
        raise ConfigError(
            f"invalid {name} from {source}: {_show(value, spec.secret)} "
            f"({why}expected {spec.expected})",
            key=name,
            source=source,
            hint=spec.hint,
        ) from None


def _unknown_key(key: Any, source: str, what: str = "key") -> ConfigError:
    close = difflib.get_close_matches(str(key), list(_FIELDS), n=3)
    if close:
        tail = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        tail = "known keys: " + ", ".join(_FIELDS)
    return ConfigError(
        f"unknown {what} {_show(key, False)} in {source} ({tail})",
        key=str(key),
        source=source,
        hint="known keys: " + ", ".join(_FIELDS),
    )


def normalize_phases(phases: tuple[Phase, ...], *, trade: bool) -> tuple[Phase, ...]:
    """Phases in execution order: health first, cleanup last, round_trip iff ``trade``."""
    wanted = {*phases, Phase.HEALTH, Phase.CLEANUP}
    if trade:
        wanted.add(Phase.ROUND_TRIP)
    else:
        wanted.discard(Phase.ROUND_TRIP)
    return tuple(p for p in Phase if p in wanted)


# ---------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class HarnessConfig:
    """Everything a run needs to know. Immutable; use ``dataclasses.replace`` to vary.

    Constructing one validates and normalises every field (strings become Paths,
    phases get health first and cleanup last, round_trip follows ``trade``), so an
    instance is always valid. Invalid values raise :class:`ConfigError`.
    """

    sim: bool = False
    scenario: str = "healthy"
    sim_seed: int = 7
    host: str = "127.0.0.1"
    port: int | None = None
    """None: try the standard paper ports 4002 then 7497 (see ``candidate_ports``)."""
    client_id: int = 917
    account: str | None = None
    contract: str = "AAPL"
    phases: tuple[Phase, ...] = DEFAULT_PHASES
    trade: bool = False
    allow_delayed: bool = False
    market_data_type: int = 1
    """1 live, 2 frozen, 3 delayed, 4 delayed-frozen."""
    connect_timeout: float = 4.0
    tick_deadline: float = 5.0
    fill_deadline: float = 10.0
    stale_after: float = 2.0
    """Seconds without a tick, after the first ticks, before the stream counts as stale."""
    observe_seconds: float = 0.5
    """How long the ticks phase keeps watching after bid/ask are live (inter-arrival, staleness).
    Kept short so a healthy run reaches its verdict fast; raise it to catch slow staleness."""
    quantity: int = 1
    max_quantity: int = 1
    """Hard limit checked by ``safety.check_order``; quantity above it is refused at run time."""
    max_notional: float | None = None
    allow_live_port: bool = False
    store: Path = DEFAULT_STORE
    reports_dir: Path = Path("data/reports")
    json_path: Path | None = None
    junit_path: Path | None = None
    notify: tuple[str, ...] = field(default=())
    notify_on: str = "fail"
    heartbeat: str | None = None
    stack: tuple[Any, ...] = ()
    """Endpoints of the user's own stack to watch (``harness_lib.stack.spec.Endpoint``)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _parse_field(f.name, getattr(self, f.name), "HarnessConfig")
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "phases", normalize_phases(self.phases, trade=self.trade))

    @property
    def candidate_ports(self) -> tuple[int, ...]:
        """The ports to try, in order: the configured one, or the paper defaults."""
        return (self.port,) if self.port is not None else tuple(PAPER_PORTS)

    def redacted(self) -> dict[str, Any]:
        """JSON-ready dict of every field, with secrets in notify/heartbeat URLs hidden."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "notify":
                value = [redact_url(u) for u in value]
            elif f.name == "heartbeat" and value is not None:
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            elif f.name == "phases":
                value = [str(p) for p in value]
            elif f.name == "stack":
                value = [ep.public() for ep in value]  # header values hidden
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        # Never print secrets, even by accident in a log line or a traceback.
        inner = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"HarnessConfig({inner})"


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    """The field values in a harness.toml (top level or under [harness])."""
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {source} not found", source=source) from None
    except OSError as err:
        raise ConfigError(
            f"cannot read config file {source}: {err.strerror or err}", source=source
        ) from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"malformed {source}: not UTF-8 text (at line {line})", source=source
        ) from None
    except tomllib.TOMLDecodeError as err:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(f"malformed {source}: {err}", source=source) from None

    table = doc.pop("harness", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"invalid harness in {source}: expected a [harness] table", key="harness", source=source
        )
    values: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in _FIELDS:
            raise _unknown_key(key, source)
        values[key] = value
    for key, value in table.items():
        if key not in _FIELDS:
            raise _unknown_key(key, f"{source} [harness]")
        if key in values:
            raise ConfigError(
                f"duplicate key {key!r} in {source}: set both at top level and in [harness]",
                key=key,
                source=source,
            )
        values[key] = value
    return values


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> HarnessConfig:
    """Merge defaults, the config file, ``HARNESS_*`` variables and flags; validate.

    ``flags`` keys are field names; a None value (and an empty list for ``phases`` or
    ``notify``) means the flag was not given. ``env`` defaults to ``os.environ``;
    empty variables count as unset. The config file is ``config_path``, else
    ``$HARNESS_CONFIG``, else ``./harness.toml`` if it exists (a named file must exist).

    Raises :class:`ConfigError` (one-line message) for anything invalid.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, str]] = {}

    path = config_path
    if path is None and env.get(ENV_PREFIX + "CONFIG", "").strip():
        path = Path(env[ENV_PREFIX + "CONFIG"].strip())
    if path is None and Path(CONFIG_FILE).is_file():
        path = Path(CONFIG_FILE)
    if path is not None:
        path = Path(path)
        for key, value in _read_toml(path).items():
            raw[key] = (value, str(path))

    for name in _FIELDS:
        var = env_var(name)
        value = env.get(var)
        if value is not None and value.strip():
            raw[name] = (value, var)

    for key, value in (flags or {}).items():
        if key not in _FIELDS:
            raise _unknown_key(key, "flags", "flag")
        if value is None or (key in ("phases", "notify", "stack") and value in ((), [])):
            continue
        raw[key] = (value, flag_name(key))

    values = {name: _parse_field(name, value, source) for name, (value, source) in raw.items()}

    # Checked here, not in HarnessConfig, so the message can name where phases came from.
    if Phase.ROUND_TRIP in values.get("phases", ()) and not values.get("trade", False):
        value, source = raw["phases"]
        raise ConfigError(
            f"invalid phases from {source}: {_show(value, False)} (round_trip places paper "
            f"orders and needs trade enabled: --trade or {env_var('trade')}=1)",
            key="phases",
            source=source,
            hint="add --trade, or drop round_trip (it is added automatically with --trade)",
        )
    return HarnessConfig(**values)
