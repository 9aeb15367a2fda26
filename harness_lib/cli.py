"""The ``harness`` command."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from harness_lib.sim import DEFAULT_PORT, PaperGateway
from harness_lib.sim.scenarios import describe, parse_scenario

app = typer.Typer(
    name="harness",
    help="livefire: does the real broker path work right now?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

EXIT_BAD_INPUT = 4


def bad_input(message: str) -> typer.Exit:
    """Print a one-line error (problem and fix) and return the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command()
def sim(
    host: Annotated[str, typer.Option(help="Interface to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(help=f"TCP port; 0 picks a free one. Default {DEFAULT_PORT}.")
    ] = DEFAULT_PORT,
    scenario: Annotated[str, typer.Option(help="Behaviour to simulate (see --list).")] = "healthy",
    seed: Annotated[int, typer.Option(help="Seed of the quote random walk.")] = 7,
    account: Annotated[
        list[str] | None, typer.Option(help="Managed account(s); default DU1234567.")
    ] = None,
    list_scenarios: Annotated[
        bool, typer.Option("--list", help="List the scenarios and exit.")
    ] = False,
) -> None:
    """Run the paper-gateway simulator until interrupted. Point any TWS API client at it."""
    if list_scenarios:
        for name, text in describe():
            out.print(f"[bold]{name:<20}[/] {text}", highlight=False)
        return
    try:
        scen = parse_scenario(scenario)
    except ValueError as exc:
        raise bad_input(f"{exc} (see `harness sim --list`)") from None
    if not 0 <= port <= 65535:
        raise bad_input(f"--port {port} is out of range; use 1-65535, or 0 for a free port")
    if port in (4001, 4002, 7496, 7497):
        raise bad_input(
            f"--port {port} is one of IB's own ports; pick another so the simulator is never "
            "mistaken for a gateway"
        )

    async def serve() -> None:
        gw = PaperGateway(host=host, port=port, scenario=scen, seed=seed, accounts=account)
        try:
            await gw.start()
        except OSError as exc:
            raise bad_input(
                f"cannot listen on {host}:{port} ({exc.strerror}); try --port 0"
            ) from None
        out.print(
            f"livefire simulator listening on {host}:{gw.port} "
            f"(scenario {scen.value}, account {','.join(gw.accounts)}, server version 178)",
            highlight=False,
        )
        out.print(f"PORT={gw.port}", highlight=False)
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gw.stop()
        out.print("simulator stopped", highlight=False)

    asyncio.run(serve())


@app.callback()
def _root() -> None:
    """livefire: does the real broker path work right now?"""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``harness`` console script.

    Usage errors become one line and exit 4 (bad input), instead of click's box and exit 2,
    because exit 2 means STALLED to the schedulers that read our codes.
    """
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:
        # typer vendors click; its usage errors all derive from TyperException.
        ctx = getattr(exc, "ctx", None)
        name = ctx.command_path if ctx is not None else "harness"
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        text = " ".join(text.split())
        if not text:  # `harness` alone: help was printed, nothing went wrong
            sys.exit(0)
        err.print(
            f"[bold red]error:[/] {text} (see `{name} --help`)", highlight=False, soft_wrap=True
        )
        sys.exit(EXIT_BAD_INPUT)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
