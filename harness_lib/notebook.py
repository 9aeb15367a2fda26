"""What the three notebooks share to run as apps and as scripts: their command-line
arguments (one parser per notebook, exit 4 on bad input), the connection form of the two
live notebooks, and the round-trip notebook's run configuration.

Imports nothing heavy (no pandas, no ib_async, marimo only inside :func:`connection_form`),
so the read-only post-mortem uses it without pulling in the live feed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness_lib.config import (
    SETTINGS,
    ConfigError,
    HarnessConfig,
    add_setting_options,
    load_config,
    setting_flags,
)
from harness_lib.constants import DEFAULT_STORE
from harness_lib.live import LIVE_CLIENT_ID
from harness_lib.models import Verdict
from harness_lib.sim.scenarios import Scenario, parse_scenario

if TYPE_CHECKING:
    import marimo as mo

__all__ = [
    "CONTRACT_CHOICES",
    "ScriptArgumentParser",
    "connection_form",
    "live_config",
    "notebook_args",
    "postmortem_args",
    "round_trip_config",
    "script_argv",
]

CONTRACT_CHOICES: tuple[str, ...] = ("AAPL", "EUR.USD", "MES", "ILLQ", "NOSUB")
"""Contracts offered by the notebooks' pickers: the simulator's catalogue (ILLQ never
ticks, NOSUB is not subscribed), which are also ordinary specs for a real gateway."""


# ------------------------------------------------------------------ notebooks as scripts


class ScriptArgumentParser(argparse.ArgumentParser):
    """argparse with the harness's exit code for bad arguments (4), not argparse's 2,
    which would read as STALLED to a scheduler."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print usage and a one-line error, then exit 4 (bad input)."""
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(Verdict.BAD_INPUT.exit_code)


def script_argv(argv: Sequence[str] | None = None) -> list[str]:
    """The notebook's own arguments: ``sys.argv[1:]`` without a leading ``--``.

    ``python nb.py -- --sim`` keeps the ``--``; ``marimo run/edit/export nb.py -- --sim``
    strips it. Both give ``["--sim"]`` here.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return args[1:] if args[:1] == ["--"] else args


_CONNECTION_SETTINGS = ("sim", "scenario", "host", "port", "contract", "client_id",
                        "tick_deadline", "stack")  # fmt: skip
"""The settings both live notebooks take as flags, declared once in :mod:`harness_lib.config`."""
_ROUND_TRIP_SETTINGS = ("store", "fill_deadline")
_CONNECTION_FORM = ("sim", "scenario", "host", "port", "client_id", "contract")
"""Settings the connection form decides (its widgets start from the flags' values)."""


def notebook_args(notebook: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the arguments of ``live_ticks`` or ``round_trip`` (see ``--help``). ``argv``
    defaults to :func:`script_argv`.

    The setting flags (``--host``, ``--port``, ``--deadline``, ``--stack-file`` ...) are
    derived from the settings declaration, so they mean, and are checked, exactly as for
    ``harness run``; only ``--seconds`` (live_ticks) and ``--yes`` (round_trip) are the
    notebooks' own. Without ``--port`` the embedded simulator is used (``--sim`` says so
    explicitly); ``--port`` alone means a real gateway.

    The result carries ``flags`` (the settings given, for :func:`load_config`), ``cfg``
    (the flags' typed values over the defaults, for the connection form; harness.toml and
    HARNESS_* are applied later by :func:`live_config` / :func:`round_trip_config`, whose
    errors the notebooks show), ``gateway`` (bool) and ``exit_at_end`` (True: a script run
    ends with ``sys.exit(verdict code)``; tests calling ``app.run`` set it to False).
    """
    if notebook not in ("live_ticks", "round_trip"):
        raise ValueError(f"unknown notebook {notebook!r}")
    p = ScriptArgumentParser(
        prog=f"notebooks/{notebook}.py",
        description="Exit codes: 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.",
    )
    names = _CONNECTION_SETTINGS + (_ROUND_TRIP_SETTINGS if notebook == "round_trip" else ())
    add_setting_options(p, names)
    if notebook == "live_ticks":
        p.add_argument("--seconds", type=float, default=5.0, help="script mode: how long to watch")
    else:
        p.add_argument("--yes", action="store_true", help="script mode: really place the trade")
    ns = p.parse_args(script_argv() if argv is None else argv)
    flags = setting_flags(ns)
    if notebook == "live_ticks":
        # Not the runner's 917, so the live view never collides with a run (IB 326).
        flags.setdefault("client_id", str(LIVE_CLIENT_ID))
    if flags.get("sim") and "port" in flags:
        p.error("--sim and --port exclude each other (--port means a real gateway)")
    typed: dict[str, Any] = {}
    for name, value in flags.items():
        if name == "stack":
            continue  # a file, read by load_config with the rest of the settings
        try:
            typed[name] = SETTINGS[name].read(value, SETTINGS[name].option)
        except ConfigError as exc:
            p.error(str(exc))
    if "scenario" in typed:
        try:
            typed["scenario"] = parse_scenario(typed["scenario"]).value
        except ValueError as exc:
            p.error(f"--scenario: {exc}")
    ns.flags = flags
    ns.cfg = HarnessConfig(**typed)
    ns.gateway = "port" in flags
    ns.exit_at_end = True
    return ns


def postmortem_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``notebooks/postmortem.py`` arguments: ``--run ID`` and ``--store PATH``.

    ``argv`` defaults to the notebook's own arguments (``sys.argv`` after ``--``). Bad
    arguments exit 4 (bad input). The result also carries ``exit_at_end`` (True), which
    tests running ``app.run`` set to False.
    """
    p = ScriptArgumentParser(
        prog="notebooks/postmortem.py",
        description="Post-mortem of stored runs. Script mode prints the run's findings and "
        "exits with its code: 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.",
    )
    p.add_argument("--run", default=None, help="run id to drill into (default: the latest)")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="run store (SQLite file)")
    args = p.parse_args(script_argv(argv))
    args.exit_at_end = True
    return args


def round_trip_config(
    args: argparse.Namespace,
    *,
    simulated: bool,
    scenario: str = "healthy",
    host: str | None = None,
    port: int | None = None,
    client_id: int | None = None,
    contract: str | None = None,
) -> HarnessConfig:
    """The round-trip notebook's run configuration, loaded like ``harness run --trade``
    (defaults < harness.toml < HARNESS_* < these values), so a notebook run honours the
    same limits (max_quantity, max_notional) as the CLI. Raises ConfigError (one line).
    """
    flags: dict[str, Any] = {k: v for k, v in args.flags.items() if k not in _CONNECTION_FORM}
    flags.update({
        "sim": True if simulated else None,
        "scenario": scenario if simulated else None,
        "host": None if simulated else host,
        "port": None if simulated else port,
        "client_id": client_id if client_id is not None else args.cfg.client_id,
        "contract": contract or args.cfg.contract,
        "trade": True,
    })  # fmt: skip
    return load_config(flags)


def live_config(args: argparse.Namespace) -> HarnessConfig:
    """The live notebook's settings, loaded like ``harness run`` (defaults < harness.toml <
    HARNESS_* < these values): its tick deadline and the declared stack, if any (the
    connection itself comes from the form). Raises ConfigError (one line).
    """
    return load_config({k: v for k, v in args.flags.items() if k not in _CONNECTION_FORM})


# ------------------------------------------------------------------------ the form


def connection_form(args: argparse.Namespace, *, client_id: int) -> mo.ui.dictionary:
    """The connection widgets both live notebooks show, from their parsed arguments, as
    one ``mo.ui.dictionary`` with the keys ``source`` (simulator or gateway), ``scenario``,
    ``host``, ``port``, ``client_id`` and ``contract``.

    A cell reads ``form.value["port"]`` and shows single widgets as ``form["port"]``.
    """
    import marimo as mo

    cfg = args.cfg
    contract = cfg.contract.upper()
    return mo.ui.dictionary(
        {
            "source": mo.ui.radio(
                options=["simulator", "gateway"],
                value="gateway" if args.gateway else "simulator",
                label="connect to",
                inline=True,
            ),
            "scenario": mo.ui.dropdown(
                options=[s.value for s in Scenario], value=cfg.scenario, label="scenario"
            ),
            "host": mo.ui.text(value=cfg.host, label="host"),
            "port": mo.ui.number(start=1, stop=65535, value=cfg.port or 4002, label="port"),
            "client_id": mo.ui.number(start=0, stop=2**31 - 1, value=client_id, label="clientId"),
            "contract": mo.ui.dropdown(
                options=list(dict.fromkeys([contract, *CONTRACT_CHOICES])),
                value=contract,
                label="contract",
            ),
        }
    )
