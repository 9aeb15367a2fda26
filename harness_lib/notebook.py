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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness_lib.config import HarnessConfig, load_config
from harness_lib.live import LIVE_CLIENT_ID
from harness_lib.models import Verdict
from harness_lib.sim.scenarios import Scenario
from harness_lib.store import DEFAULT_STORE

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


def notebook_args(notebook: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the arguments of ``live_ticks`` or ``round_trip`` (both share the connection
    options; see ``--help``). ``argv`` defaults to :func:`script_argv`.

    Without ``--port`` the embedded simulator is used (``--sim`` says so explicitly);
    ``--port`` alone means a real gateway. The result also carries ``gateway`` (bool) and
    ``exit_at_end`` (True: a script run ends with ``sys.exit(verdict code)``; tests that
    call ``app.run`` set it to False to read the notebook's definitions instead).
    """
    if notebook not in ("live_ticks", "round_trip"):
        raise ValueError(f"unknown notebook {notebook!r}")
    scenarios = [s.value for s in Scenario]
    p = ScriptArgumentParser(
        prog=f"notebooks/{notebook}.py",
        description="Exit codes: 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.",
    )
    p.add_argument("--sim", action="store_true", help="use the embedded simulator (default)")
    p.add_argument("--scenario", default="healthy", choices=scenarios, help="simulator scenario")
    p.add_argument("--host", default="127.0.0.1", help="gateway host (with --port)")
    p.add_argument("--port", type=int, default=None, help="gateway port: use a real gateway")
    p.add_argument("--contract", default="AAPL", help="AAPL, EUR.USD, MES, FUT:MES:202612 ...")
    p.add_argument(
        "--stack-file", type=Path, default=None, help="TOML file of [[stack]] endpoints to watch"
    )
    if notebook == "live_ticks":
        p.add_argument("--deadline", type=float, default=5.0, help="seconds to wait for bid/ask")
        p.add_argument("--client-id", type=int, default=LIVE_CLIENT_ID, help="API client id")
        p.add_argument("--seconds", type=float, default=5.0, help="script mode: how long to watch")
    else:
        p.add_argument("--client-id", type=int, default=None, help="API client id")
        p.add_argument("--deadline", type=float, default=None, help="seconds to wait for bid/ask")
        p.add_argument("--yes", action="store_true", help="script mode: really place the trade")
        p.add_argument("--store", default=None, help="run store (default data/harness.sqlite)")
        p.add_argument("--fill-deadline", type=float, default=None, help="seconds per fill")
    args = p.parse_args(script_argv() if argv is None else argv)
    if args.sim and args.port is not None:
        p.error("--sim and --port exclude each other (--port means a real gateway)")
    args.gateway = args.port is not None
    args.exit_at_end = True
    return args


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
    flags: dict[str, Any] = {
        "sim": True if simulated else None,
        "scenario": scenario if simulated else None,
        "host": None if simulated else host,
        "port": None if simulated else port,
        "client_id": client_id if client_id is not None else args.client_id,
        "contract": contract or args.contract,
        "trade": True,
        "tick_deadline": args.deadline,
        "fill_deadline": args.fill_deadline,
        "store": args.store,
        "stack": args.stack_file,
    }
    return load_config(flags)


def live_config(args: argparse.Namespace) -> HarnessConfig:
    """The live notebook's settings, loaded like ``harness run`` (defaults < harness.toml <
    HARNESS_* < these values): its tick deadline and the declared stack, if any (the
    connection itself comes from the form). Raises ConfigError (one line).
    """
    return load_config({"tick_deadline": args.deadline, "stack": args.stack_file})


# ------------------------------------------------------------------------ the form


def connection_form(args: argparse.Namespace, *, client_id: int) -> mo.ui.dictionary:
    """The connection widgets both live notebooks show, from their parsed arguments, as
    one ``mo.ui.dictionary`` with the keys ``source`` (simulator or gateway), ``scenario``,
    ``host``, ``port``, ``client_id`` and ``contract``.

    A cell reads ``form.value["port"]`` and shows single widgets as ``form["port"]``.
    """
    import marimo as mo

    contract = args.contract.upper()
    return mo.ui.dictionary(
        {
            "source": mo.ui.radio(
                options=["simulator", "gateway"],
                value="gateway" if args.gateway else "simulator",
                label="connect to",
                inline=True,
            ),
            "scenario": mo.ui.dropdown(
                options=[s.value for s in Scenario], value=args.scenario, label="scenario"
            ),
            "host": mo.ui.text(value=args.host, label="host"),
            "port": mo.ui.number(start=1, stop=65535, value=args.port or 4002, label="port"),
            "client_id": mo.ui.number(start=0, stop=2**31 - 1, value=client_id, label="clientId"),
            "contract": mo.ui.dropdown(
                options=list(dict.fromkeys([contract, *CONTRACT_CHOICES])),
                value=contract,
                label="contract",
            ),
        }
    )
