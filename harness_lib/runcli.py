"""``harness run`` without typer, and the ``harness`` console script's front door.

``harness run`` is the command a scheduler starts every morning, and its start-up counts
against the time to a verdict. Everything it needs (its flags come from the settings
declaration, parsed by argparse) lives here, free of typer: :func:`main` sends ``harness
[-v] run ...`` straight to :func:`run` and every other command to the typer app in
:mod:`harness_lib.cli` (imported only then, ~70 ms). ``harness_lib.cli``'s ``run`` command
calls the same :func:`run`, so ``python -m harness_lib.cli run`` behaves identically.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

from harness_lib.config import (
    SETTINGS,
    ConfigError,
    HarnessConfig,
    config_from_args,
    settings_parser,
)
from harness_lib.models import Verdict

__all__ = [
    "EXIT_BAD_INPUT",
    "BadInput",
    "err",
    "load_or_bad_input",
    "main",
    "out",
    "print_error",
    "progress",
    "run",
    "run_parser",
    "setup_logging",
    "until_signal",
]

EXIT_BAD_INPUT = Verdict.BAD_INPUT.exit_code

# soft_wrap: a line is never wrapped or cropped by rich (the terminal wraps it), so a piped
# or logged message arrives whole; tables go through output.print_table instead.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class BadInput(Exception):
    """Bad input found before anything ran; ``str()`` is the one-line message."""


def print_error(message: str) -> int:
    """Print the one-line error (problem and fix) on stderr; return exit code 4."""
    # escape(): a message may quote "[harness]" or "[round trip]", which is not markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return EXIT_BAD_INPUT


def progress(kind: str, data: dict[str, Any]) -> None:
    """Live progress lines while a run works (stderr, so stdout stays the summary)."""
    if kind == "phase_start":
        err.print(f"[bold]▶ {data['phase']}[/]", highlight=False)
    elif kind == "checkpoint":
        cp = data["cp"]
        err.print(f"   · {cp.name:<20} {escape(cp.detail)}", highlight=False, soft_wrap=True)
    elif kind == "phase_end":
        r = data["result"]
        color = "green" if r.ok else "red"
        err.print(
            f"   [{color}]{r.verdict}[/] {escape(r.reason)} [dim]({r.duration_s:.2f}s)[/]",
            highlight=False,
            soft_wrap=True,
        )


_RUN_SETTINGS = [name for name in SETTINGS if name != "phases"] + ["phases"]


def run_parser() -> Any:
    """The ``harness run`` flags: one per setting, from the declaration, plus --config."""
    return settings_parser(
        "harness run",
        _RUN_SETTINGS,
        description="Run health, ticks, the optional paper round trip (--trade) and cleanup, "
        "then exit 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.",
    )


def load_or_bad_input(parser: Any, argv: list[str]) -> HarnessConfig:
    """The config ``argv`` selects, or :class:`BadInput` with the one-line error."""
    try:
        return config_from_args(parser, argv)
    except ConfigError as exc:
        see = f" ({exc.hint})" if exc.source == "flags" and exc.hint else ""
        raise BadInput(f"{exc}{see}") from None


def run(argv: list[str]) -> int:
    """``harness run ARGV``: run the phases, print the summary, return the exit code
    (0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input). ``--help`` exits 0."""
    from harness_lib.sim.scenarios import parse_scenario

    try:
        cfg = load_or_bad_input(run_parser(), argv)
        if cfg.sim and cfg.scenario:
            try:
                parse_scenario(cfg.scenario)
            except ValueError as exc:
                raise BadInput(f"{exc} (see `harness sim --list`)") from None
    except BadInput as exc:
        return print_error(str(exc))
    from harness_lib.report import print_console_summary
    from harness_lib.runner import run_harness

    rep = asyncio.run(run_harness(cfg, on_progress=progress))
    if rep.verdict == Verdict.BAD_INPUT and len(rep.phases) <= 2:
        # Nothing ran: one line naming the problem and the fix, as for any bad input.
        bad = rep.failing_phase
        return print_error(bad.reason if bad else rep.reason)
    print_console_summary(rep, out)
    if rep.report_path:
        out.print(f"report: {rep.report_path}", highlight=False, soft_wrap=True)
    return rep.exit_code


def setup_logging(verbose: bool) -> None:
    """The ``-v`` switch: show ib_async and harness logs, else only our own warnings."""
    # ib_async logs every IB error at ERROR; the harness already records and reports them,
    # so by default only our own warnings reach the terminal.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not verbose:
        logging.getLogger("ib_async").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``harness`` console script: ``harness [-v] run ...`` runs here
    without importing typer; anything else goes to :func:`harness_lib.cli.main`."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = args[:1] in (["-v"], ["--verbose"])
    if args[verbose : verbose + 1] != ["run"]:
        from harness_lib.cli import main as typer_main

        typer_main(args)
        return
    ib_logger = logging.getLogger("ib_async")
    saved_level = ib_logger.level
    try:
        setup_logging(verbose)
        code = run(args[verbose + 1 :])
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    finally:
        # In-process callers (tests, notebooks) get their logging back as it was.
        ib_logger.setLevel(saved_level)
    sys.exit(code)


if __name__ == "__main__":
    main()


async def until_signal() -> None:
    """Wait for Ctrl-C or SIGTERM: how the serving commands (`harness sim`, `replay`,
    `record`) stay up until they are stopped, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
