"""Run configuration: defaults < ``harness.toml`` < ``HARNESS_*`` environment < CLI flags.

:func:`load_config` merges the sources and validates every value. Anything wrong
raises :class:`ConfigError` whose message is one line naming the key, where the
value came from (``harness.toml``, ``HARNESS_PORT``, ``--port``), the value and
what is allowed, e.g.::

    invalid port from HARNESS_PORT: 'abc' (expected an integer 1-65535, or 'auto')

Notification and heartbeat URLs carry secrets; :func:`harness_lib.redact.redact_url`
hides them and both ``HarnessConfig.redacted()`` and ``repr(config)`` use it, so a
config can be logged or stored with a report; stack endpoints show with their header
values hidden.

Each setting is declared once, as a field of :class:`HarnessConfig` made with
:func:`setting` (default, parser, allowed values, help, flag). Everything else derives
from that declaration: :data:`SETTINGS`, the ``HARNESS_*`` names, the TOML keys, the
``harness run`` flags and the notebooks' options (:func:`settings_parser`,
:func:`add_setting_options`). A nested setting's parser names the exact key path in its
refusal, so the one-line error does too: ``stack`` is validated by
:func:`harness_lib.stack.spec.parse_stack` (imported only when a stack is declared)::

    invalid stack[1].quote.bid from harness.toml: 'bid[' (not a JMESPath expression: ...)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

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
    "SETTINGS",
    "ConfigError",
    "HarnessConfig",
    "Setting",
    "SettingsArgumentParser",
    "add_setting_options",
    "config_from_args",
    "env_var",
    "flag_name",
    "load_config",
    "normalize_phases",
    "setting",
    "setting_flags",
    "settings_parser",
]

CONFIG_FILE = "harness.toml"
"""Looked up in the current directory when no path is given."""
ENV_PREFIX = "HARNESS_"
"""Environment variables are ``HARNESS_<FIELD_UPPER>``; ``HARNESS_CONFIG`` names the file."""
DEFAULT_PHASES = (Phase.HEALTH, Phase.TICKS, Phase.CLEANUP)


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
    """The CLI flag for a field, e.g. ``client_id`` -> ``--client-id``, as declared."""
    return SETTINGS[name].option


# ---------------------------------------------------------------------------
# Value parsers: accept typed values (flags, toml) and strings (env, toml, flags)
# ---------------------------------------------------------------------------


_WHOLE = object()
"""An :class:`_Invalid` without a ``value`` of its own: the whole value is shown."""


class _Invalid(ValueError):
    """A parser's refusal, optionally saying what exactly is wrong.

    A parser of a nested value (the stack's, :func:`_stack`) names the key inside it:
    ``path`` (``[1].quote.bid``), that key's ``value`` and, as ``expected``, what is
    allowed there ("" when ``why`` already says it; None: the setting's own
    ``expected``). :meth:`Setting.read` turns it into the one-line error, e.g.
    ``invalid stack[1].quote.bid from harness.toml: 'bid[' (...)``.
    """

    def __init__(
        self,
        why: str = "",
        *,
        path: str = "",
        value: Any = _WHOLE,
        expected: str | None = None,
    ) -> None:
        super().__init__(why)
        self.why = why
        self.path = path
        self.value = value
        self.expected = expected


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


def _stack(v: Any) -> tuple[Any, ...]:
    """``[[stack]]`` tables (TOML, or the JSON list ``HARNESS_STACK`` holds) as endpoints.

    harness_lib.stack.spec does the validation, imported here lazily: a run without a
    stack never loads it (or jmespath). Its refusal names the key inside the list.
    """
    if v == ():
        return ()  # the default: nothing to import
    from harness_lib.stack.spec import Endpoint, StackSpecError, parse_stack

    if isinstance(v, tuple) and all(isinstance(e, Endpoint) for e in v):
        return v  # already parsed (dataclasses.replace, HarnessConfig(stack=cfg.stack))
    try:
        return parse_stack(v)
    except StackSpecError as err:
        raise _Invalid(err.why, path=err.path, value=err.value, expected="") from None


def _read_stack_file(path: str) -> list[Any]:
    """``--stack-file PATH``: the ``[[stack]]`` tables of a TOML file holding only those."""
    try:
        doc = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read stack file: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ValueError("cannot read stack file: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"malformed stack file: {err}") from None
    unknown = [k for k in doc if k != "stack"]
    if unknown:
        raise ValueError(
            f"a stack file may hold only [[stack]] tables, not {unknown[0]!r}; "
            "other settings go in harness.toml"
        )
    return doc.get("stack", [])


_TIMEOUT = _float(hi=3600.0)
_TIMEOUT_EXPECTED = "a number of seconds > 0 and <= 3600"
_BOOL_EXPECTED = "a boolean (1/0, true/false, yes/no, on/off)"


# ---------------------------------------------------------------------------
# The one declaration of every setting
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """How one setting is read, checked and explained: declared once, in
    :class:`HarnessConfig` (see :func:`setting`); the environment variable, the CLI flag,
    the notebooks' options, ``--help`` and the error messages all derive from it."""

    parse: Callable[[Any], Any]
    """Turns a TOML value, an environment string or a flag string into the typed value."""
    expected: str
    """What is allowed, for error messages."""
    help: str
    """One line for ``--help``."""
    hint: str = ""
    secret: bool = False
    """Show the value redacted in error messages."""
    flag: str = ""
    """The CLI flag; empty means ``--field-name``."""
    switch: bool = False
    """A flag without a value (``--trade``) that sets the setting to True."""
    repeat: bool = False
    """The flag may be given several times; each adds one item (``--notify``)."""
    metavar: str | None = None
    flag_reader: Callable[[str], Any] | None = None
    """Turns the flag's text into the value to parse, e.g. reads the TOML file a
    ``--stack-file PATH`` names; None: the text itself is the value."""
    name: str = ""
    """Filled in from the field name when :data:`SETTINGS` is built."""

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``HARNESS_PORT``."""
        return env_var(self.name)

    @property
    def option(self) -> str:
        """The CLI flag, e.g. ``--client-id``."""
        return self.flag or "--" + self.name.replace("_", "-")

    def read(self, value: Any, source: str) -> Any:
        """The typed value, or :class:`ConfigError` with the one-line message naming the
        key (with its path inside a nested value), the source, the value and what is
        allowed, e.g. ``invalid stack[1].quote.bid from harness.toml: 'bid[' (...)``."""
        try:
            return self.parse(value)
        except (ValueError, TypeError, OverflowError) as err:
            path, why, expected = "", "", self.expected
            if isinstance(err, _Invalid):
                # A nested key: name it exactly and show only its own value.
                path, why = err.path, err.why
                if err.value is not _WHOLE:
                    value = err.value
                if err.expected is not None:
                    expected = err.expected
            detail = "; ".join(p for p in (why, expected and f"expected {expected}") if p)
            raise ConfigError(
                f"invalid {self.name}{path} from {source}: {_show(value, self.secret)} ({detail})",
                key=self.name + path,
                source=source,
                hint=self.hint,
            ) from None


_SPEC = "harness_setting"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    parse: Callable[[Any], Any],
    expected: str,
    help: str,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **more: Any,
) -> Any:
    """A :class:`HarnessConfig` field with its :class:`Setting` declaration attached."""
    spec = Setting(parse=parse, expected=expected, help=help, **more)
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={_SPEC: spec})
    return field(default=default, metadata={_SPEC: spec})


def normalize_phases(phases: tuple[Phase, ...], *, trade: bool) -> tuple[Phase, ...]:
    """Phases in execution order: health first, cleanup last, round_trip iff ``trade``."""
    wanted = {*phases, Phase.HEALTH, Phase.CLEANUP}
    if trade:
        wanted.add(Phase.ROUND_TRIP)
    else:
        wanted.discard(Phase.ROUND_TRIP)
    return tuple(p for p in Phase if p in wanted)


@dataclass(frozen=True, repr=False)
class HarnessConfig:
    """Everything a run needs to know. Immutable; use ``dataclasses.replace`` to vary.

    Each field is a setting, declared here once with :func:`setting`: its default, parser,
    allowed values and help. Constructing one validates and normalises every field
    (strings become Paths, phases get health first and cleanup last, round_trip follows
    ``trade``), so an instance is always valid. Invalid values raise :class:`ConfigError`.
    """

    sim: bool = setting(
        False,
        parse=_bool,
        expected=_BOOL_EXPECTED,
        switch=True,
        help="Run against the embedded simulator.",
    )
    scenario: str = setting(
        "healthy",
        parse=_regex_str(r"[A-Za-z_][A-Za-z0-9_-]{0,63}"),
        expected="a scenario name: letters, digits, '_' or '-', not starting with a digit",
        hint="the simulator lists its scenarios; 'healthy' is the default",
        help="Simulator scenario (with --sim; see `harness sim --list`).",
    )
    sim_seed: int = setting(
        7,
        parse=_int(0, 2**32 - 1),
        expected="an integer 0-4294967295",
        flag="--seed",
        help="Simulator seed.",
    )
    host: str = setting(
        "127.0.0.1",
        parse=_regex_str(r"[A-Za-z0-9._:%\[\]-]{1,253}"),
        expected="a host name or IP address, without scheme or port",
        help="Gateway host.",
    )
    port: int | None = setting(
        None,
        parse=_nullable(_int(1, 65535), "auto"),
        expected="an integer 1-65535, or 'auto'",
        hint="IB Gateway paper listens on 4002, TWS paper on 7497; leave unset to try both",
        help="Gateway port (default: try 4002, then 7497).",
    )
    """None: try the standard paper ports 4002 then 7497 (see ``candidate_ports``)."""
    client_id: int = setting(
        917,
        parse=_int(0, 2**31 - 1),
        expected="an integer 0-2147483647",
        hint="each API connection to one gateway needs its own client id",
        help="API client id.",
    )
    account: str | None = setting(
        None,
        parse=_nullable(_regex_str(r"[A-Za-z0-9]{1,32}")),
        expected="an IB account id like DU1234567",
        help="Paper account to use.",
    )
    contract: str = setting(
        "AAPL",
        parse=_contract,
        expected="one of " + ACCEPTED_FORMS,
        help="AAPL, EUR.USD, MES, FUT:MES:202612:CME ...",
    )
    phases: tuple[Phase, ...] = setting(
        DEFAULT_PHASES,
        parse=_phases,
        expected=f"a comma-separated list of {_PHASE_NAMES}",
        hint="health always runs first and cleanup last; round_trip needs trade",
        help="Comma list: health,ticks,round_trip,cleanup.",
    )
    trade: bool = setting(
        False,
        parse=_bool,
        expected=_BOOL_EXPECTED,
        switch=True,
        help="Add the 1-contract paper round trip.",
    )
    allow_delayed: bool = setting(
        False,
        parse=_bool,
        expected=_BOOL_EXPECTED,
        switch=True,
        help="Accept delayed data as a pass.",
    )
    market_data_type: int = setting(
        1,
        parse=_int(1, 4),
        expected="1 (live), 2 (frozen), 3 (delayed) or 4 (delayed-frozen)",
        help="1 live, 2 frozen, 3 delayed, 4 delayed-frozen.",
    )
    connect_timeout: float = setting(
        4.0, parse=_TIMEOUT, expected=_TIMEOUT_EXPECTED, help="Seconds to wait for the connection."
    )
    tick_deadline: float = setting(
        5.0,
        parse=_TIMEOUT,
        expected=_TIMEOUT_EXPECTED,
        flag="--deadline",
        help="Seconds to wait for bid/ask.",
    )
    fill_deadline: float = setting(
        10.0, parse=_TIMEOUT, expected=_TIMEOUT_EXPECTED, help="Seconds to wait for each fill."
    )
    stale_after: float = setting(
        2.0,
        parse=_TIMEOUT,
        expected=_TIMEOUT_EXPECTED,
        help="Seconds without a tick, after the first ticks, before the stream is stale.",
    )
    observe_seconds: float = setting(
        0.5,
        parse=_TIMEOUT,
        expected=_TIMEOUT_EXPECTED,
        hint="how long the ticks phase keeps watching after bid/ask are live, to measure "
        "inter-arrival times and catch a stream that goes stale",
        flag="--observe",
        help="Seconds to keep watching after bid/ask are live.",
    )
    """Kept short so a healthy run reaches its verdict fast; raise it to catch slow staleness."""
    quantity: int = setting(
        1,
        parse=_int(1, 2**63 - 1),
        expected="an integer >= 1",
        hint="quantities above max_quantity are refused when the order would be placed",
        help="Round-trip quantity.",
    )
    max_quantity: int = setting(
        1, parse=_int(1, 100), expected="an integer 1-100", help="Hard quantity limit."
    )
    """Hard limit checked by ``safety.check_order``; quantity above it is refused at run time."""
    max_notional: float | None = setting(
        None,
        parse=_nullable(_float(hi=None)),
        expected="a number > 0 (in the contract's currency), or unset",
        help="Hard notional limit.",
    )
    allow_live_port: bool = setting(
        False,
        parse=_bool,
        expected=_BOOL_EXPECTED,
        switch=True,
        help="Allow 4001/7496 (paper accounts still required).",
    )
    store: Path = setting(
        DEFAULT_STORE,
        parse=_path,
        expected="a file path",
        help="Run store (SQLite file).",
    )
    reports_dir: Path = setting(
        Path("data/reports"),
        parse=_path,
        expected="a directory path",
        help="Where JSON reports and latest.json go.",
    )
    json_path: Path | None = setting(
        None,
        parse=_nullable(_path),
        expected="a file path, or unset",
        flag="--json",
        help="Also write the JSON report here.",
    )
    junit_path: Path | None = setting(
        None,
        parse=_nullable(_path),
        expected="a file path, or unset",
        flag="--junit",
        help="Write JUnit XML here.",
    )
    notify: tuple[str, ...] = setting(
        (),
        parse=_notify,
        expected="apprise URLs like 'ntfy://my-topic', separated by commas or spaces",
        secret=True,
        repeat=True,
        metavar="URL",
        help="Apprise URL (repeatable).",
    )
    notify_on: str = setting(
        "fail",
        parse=_notify_on,
        expected=" | ".join(NOTIFY_ON),
        help="When to notify: " + " | ".join(NOTIFY_ON) + ".",
    )
    heartbeat: str | None = setting(
        None,
        parse=_nullable(_url),
        expected="a URL like 'https://hc-ping.com/<uuid>', or unset",
        secret=True,
        metavar="URL",
        help="Healthchecks-style ping URL.",
    )
    stack: tuple[Any, ...] = setting(
        (),
        parse=_stack,
        expected="[[stack]] tables (see README: Stack checks)",
        hint="declare endpoints of your own stack for the harness to watch",
        secret=True,
        flag="--stack-file",
        flag_reader=_read_stack_file,
        metavar="PATH",
        help="TOML file of [[stack]] endpoints to watch (only [[stack]] tables).",
    )
    """Endpoints of the user's own stack to watch (``harness_lib.stack.spec.Endpoint``);
    header values are secrets."""

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
        """JSON-ready dict of every field, with secrets in notify/heartbeat URLs and stack
        headers hidden."""
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


SETTINGS: dict[str, Setting] = {
    f.name: dataclasses.replace(f.metadata[_SPEC], name=f.name)
    for f in dataclasses.fields(HarnessConfig)
}
"""Every setting, by field name, in declaration order: derived from :class:`HarnessConfig`."""


def _show(value: Any, secret: bool) -> str:
    """A one-line, bounded, secret-free rendering of a bad value."""
    # Numbers and null are never secrets; showing them keeps "hold = -1" readable.
    if secret and not (value is None or isinstance(value, (bool, int, float))):
        if isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, (list, tuple)):
            value = [redact_url(str(v)) for v in value]
        else:
            value = MASK
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _parse_field(name: str, value: Any, source: str) -> Any:
    return SETTINGS[name].read(value, source)


def _unknown_key(key: Any, source: str, what: str = "key") -> ConfigError:
    close = difflib.get_close_matches(str(key), list(SETTINGS), n=3)
    if close:
        tail = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        tail = "known keys: " + ", ".join(SETTINGS)
    return ConfigError(
        f"unknown {what} {_show(key, False)} in {source} ({tail})",
        key=str(key),
        source=source,
        hint="known keys: " + ", ".join(SETTINGS),
    )


# ---------------------------------------------------------------------------
# Flags, derived from the declaration (the CLI and the notebooks use these)
# ---------------------------------------------------------------------------


class SettingsArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`ConfigError` (one line) instead of printing usage and
    exiting 2, which a scheduler would read as STALLED. Abbreviated flags are refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        """Raise the usage error as a one-line :class:`ConfigError` (source ``flags``)."""
        raise ConfigError(message, source="flags", hint=f"see `{self.prog} --help`")


def add_setting_options(
    parser: argparse.ArgumentParser, names: Iterable[str] | None = None
) -> argparse.ArgumentParser:
    """Add a flag for each named setting (default: all) to ``parser``, from its declaration.

    Values stay strings (validated later by :func:`load_config`, so a bad one gets the
    usual one-line error naming the flag); a flag not given is None; ``dest`` is the
    setting's name. Read them back with :func:`setting_flags`.
    """
    for name in SETTINGS if names is None else names:
        spec = SETTINGS[name]
        # argparse %-formats help text.
        text = f"{spec.help} [{spec.env}]".replace("%", "%%")
        if spec.switch:
            parser.add_argument(spec.option, dest=name, action="store_const", const=True,
                                default=None, help=text)  # fmt: skip
        else:
            parser.add_argument(
                spec.option,
                dest=name,
                action="append" if spec.repeat else "store",
                default=None,
                metavar=spec.metavar or name.upper(),
                help=text,
            )
    return parser


def setting_flags(namespace: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags in a namespace from :func:`add_setting_options`, as
    the ``flags`` mapping :func:`load_config` takes (other attributes are ignored)."""
    return {k: v for k, v in vars(namespace).items() if k in SETTINGS and v is not None}


def settings_parser(
    prog: str, names: Iterable[str] | None = None, *, description: str | None = None
) -> SettingsArgumentParser:
    """A parser with a flag per named setting (default: all) plus ``--config PATH``."""
    parser = SettingsArgumentParser(
        prog=prog,
        description=description,
        epilog="Precedence: defaults < harness.toml (or --config / HARNESS_CONFIG) < "
        "HARNESS_* environment < flags. Exit codes: 0 pass, 1 fail, 2 stalled, 3 refused, "
        "4 bad input.",
    )
    add_setting_options(parser, names)
    parser.add_argument("--config", default=None, metavar="PATH",
                        help="Config file (default ./harness.toml) [HARNESS_CONFIG].")  # fmt: skip
    return parser


def config_from_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
) -> HarnessConfig:
    """Parse ``argv`` with a :func:`settings_parser` and load the config they select.
    Raises :class:`ConfigError` (one line) for any bad flag or value."""
    ns = parser.parse_args(list(argv))
    config = getattr(ns, "config", None)
    if config is not None and not config.strip():
        raise ConfigError("--config needs a file path", source="--config")
    return load_config(setting_flags(ns), env=env, config_path=Path(config) if config else None)


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
        if key not in SETTINGS:
            raise _unknown_key(key, source)
        values[key] = value
    for key, value in table.items():
        if key not in SETTINGS:
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

    for name in SETTINGS:
        var = env_var(name)
        value = env.get(var)
        if value is not None and value.strip():
            raw[name] = (value, var)

    for key, value in (flags or {}).items():
        if key not in SETTINGS:
            raise _unknown_key(key, "flags", "flag")
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        spec = SETTINGS[key]
        if isinstance(value, str) and not value.strip():
            # An empty variable means "unset"; an empty flag (`--port=`) is a mistake.
            raise ConfigError(
                f"invalid {key} from {spec.option}: {value!r} (empty; expected {spec.expected})",
                key=key,
                source=spec.option,
                hint=spec.hint,
            )
        source = spec.option
        if spec.flag_reader is not None and isinstance(value, (str, os.PathLike)):
            # Errors inside the file name the file: "from --stack-file stack.toml".
            source = f"{spec.option} {os.fspath(value)}"
            try:
                value = spec.flag_reader(os.fspath(value))
            except (OSError, ValueError) as err:
                why = getattr(err, "strerror", None) or err
                # The flag's text says where the value is (a file path), not the secret.
                raise ConfigError(
                    f"invalid {key} from {spec.option}: {_show(os.fspath(value), False)} ({why})",
                    key=key,
                    source=spec.option,
                    hint=spec.hint,
                ) from None
        raw[key] = (value, source)

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
