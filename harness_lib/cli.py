"""The ``harness`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from harness_lib.config import ConfigError, HarnessConfig, load_config
from harness_lib.models import Verdict
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


def _progress(kind: str, data: dict[str, Any]) -> None:
    """Live progress lines while a run works (stderr, so stdout stays the summary)."""
    if kind == "phase_start":
        err.print(f"[bold]▶ {data['phase']}[/]", highlight=False)
    elif kind == "checkpoint":
        cp = data["cp"]
        err.print(f"   · {cp.name:<20} {cp.detail}", highlight=False, soft_wrap=True)
    elif kind == "phase_end":
        r = data["result"]
        color = "green" if r.ok else "red"
        err.print(
            f"   [{color}]{r.verdict}[/] {r.reason} [dim]({r.duration_s:.2f}s)[/]",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def run(
    sim: Annotated[
        bool | None, typer.Option("--sim", help="Run against the embedded simulator.")
    ] = None,
    scenario: Annotated[str | None, typer.Option(help="Simulator scenario (with --sim).")] = None,
    host: Annotated[str | None, typer.Option(help="Gateway host.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Gateway port (default: try 4002, then 7497).")
    ] = None,
    client_id: Annotated[int | None, typer.Option(help="API client id.")] = None,
    account: Annotated[str | None, typer.Option(help="Paper account to use.")] = None,
    contract: Annotated[
        str | None, typer.Option(help="AAPL, EUR.USD, MES, FUT:MES:202612:CME ...")
    ] = None,
    trade: Annotated[
        bool | None, typer.Option("--trade", help="Add the 1-contract paper round trip.")
    ] = None,
    allow_delayed: Annotated[
        bool | None, typer.Option("--allow-delayed", help="Accept delayed data as a pass.")
    ] = None,
    phases: Annotated[
        str | None, typer.Option(help="Comma list: health,ticks,round_trip,cleanup.")
    ] = None,
    deadline: Annotated[float | None, typer.Option(help="Seconds to wait for bid/ask.")] = None,
    fill_deadline: Annotated[
        float | None, typer.Option(help="Seconds to wait for each fill.")
    ] = None,
    observe: Annotated[
        float | None, typer.Option(help="Seconds to keep watching after bid/ask are live.")
    ] = None,
    market_data_type: Annotated[
        int | None, typer.Option(help="1 live, 2 frozen, 3 delayed, 4 delayed-frozen.")
    ] = None,
    quantity: Annotated[int | None, typer.Option(help="Round-trip quantity.")] = None,
    max_quantity: Annotated[int | None, typer.Option(help="Hard quantity limit.")] = None,
    max_notional: Annotated[float | None, typer.Option(help="Hard notional limit.")] = None,
    allow_live_port: Annotated[
        bool | None,
        typer.Option("--allow-live-port", help="Allow 4001/7496 (paper accounts still required)."),
    ] = None,
    store: Annotated[Path | None, typer.Option(help="Run store (HARNESS_STORE).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML here.")] = None,
    notify_url: Annotated[
        list[str] | None, typer.Option("--notify", help="Apprise URL (repeatable).")
    ] = None,
    notify_on: Annotated[str | None, typer.Option(help="fail | always | change.")] = None,
    heartbeat: Annotated[str | None, typer.Option(help="Healthchecks-style ping URL.")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Config file (default ./harness.toml).")
    ] = None,
) -> None:
    """Run health → ticks → [round trip] → cleanup and exit 0 pass, 1 fail, 2 stalled,
    3 refused, 4 bad input."""
    flags = {
        "sim": sim, "scenario": scenario, "host": host, "port": port, "client_id": client_id,
        "account": account, "contract": contract, "trade": trade,
        "allow_delayed": allow_delayed, "phases": phases, "tick_deadline": deadline,
        "fill_deadline": fill_deadline, "observe_seconds": observe,
        "market_data_type": market_data_type, "quantity": quantity,
        "max_quantity": max_quantity, "max_notional": max_notional,
        "allow_live_port": allow_live_port, "store": store, "json_path": json_path,
        "junit_path": junit, "notify": notify_url or None, "notify_on": notify_on,
        "heartbeat": heartbeat, "sim_seed": seed,
    }  # fmt: skip
    cfg = _load(flags, config)
    if cfg.sim and cfg.scenario:
        try:
            parse_scenario(cfg.scenario)
        except ValueError as exc:
            raise bad_input(f"{exc} (see `harness sim --list`)") from None
    from harness_lib.report import console_summary
    from harness_lib.runner import run_harness

    rep = asyncio.run(run_harness(cfg, on_progress=_progress))
    if rep.verdict == Verdict.BAD_INPUT and len(rep.phases) <= 2:
        # Nothing ran: one line naming the problem and the fix, as for any bad input.
        bad = rep.failing_phase
        raise bad_input(bad.reason if bad else rep.reason)
    out.print(console_summary(rep))
    if rep.report_path:
        out.print(f"report: {rep.report_path}", highlight=False)
    raise typer.Exit(rep.exit_code)


def _load(flags: dict[str, Any], config: Path | None) -> HarnessConfig:
    """Load the config or exit 4 with the one-line error."""
    try:
        return load_config(flags, config_path=config)
    except ConfigError as exc:
        raise bad_input(str(exc)) from None


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
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show ib_async and harness logs on stderr.")
    ] = False,
) -> None:
    """livefire: does the real broker path work right now?"""
    # ib_async logs every IB error at ERROR; the harness already records and reports them,
    # so by default only our own warnings reach the terminal.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not verbose:
        logging.getLogger("ib_async").setLevel(logging.CRITICAL)


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
