"""The ``harness`` command."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from harness_lib.config import (
    SETTINGS,
    ConfigError,
    HarnessConfig,
    SettingsArgumentParser,
    load_config,
    settings_parser,
)
from harness_lib.models import Verdict
from harness_lib.runcli import (
    EXIT_BAD_INPUT,
    BadInput,
    err,
    load_or_bad_input,
    out,
    print_error,
    run_parser,
    setup_logging,
    until_signal,
)
from harness_lib.runcli import run as run_command
from harness_lib.safety import LIVE_PORTS, PAPER_PORTS
from harness_lib.sim import DEFAULT_PORT, PaperGateway
from harness_lib.sim.scenarios import describe, parse_scenario
from harness_lib.store import Store, StoreError


class _Group(typer.core.TyperGroup):
    """The root group, with one start-up fix: typer builds a pydantic validator (~150 ms of
    imports) for every option whose value is not already a bool, and an unset ``--help``
    is None. A False default makes it a bool, so `harness run` never pays for pydantic."""

    def get_help_option(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        """The help option, defaulting to False instead of None (see the class doc)."""
        option = super().get_help_option(ctx)
        if option is not None:
            option.default = False
        return option


app = typer.Typer(
    cls=_Group,
    name="harness",
    help="livefire: does the real broker path work right now?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is plain text: "[round trip]" must not be taken as rich markup, and
    # docstring paragraphs are re-flowed to the terminal instead of keeping their breaks.
    rich_markup_mode=None,
)


def bad_input(message: str) -> typer.Exit:
    """Print a one-line error (problem and fix) and return the exit to raise."""
    return typer.Exit(print_error(message))


# The settings commands take their flags from the one settings declaration (config.py),
# parsed by argparse: typer would build a pydantic adapter per option on every start
# (~150 ms of the time to a verdict), and its flags would be a second declaration.
_SETTINGS_COMMAND = {
    "context_settings": {
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
}
_CLEANUP_SETTINGS = ["sim", "scenario", "sim_seed", "host", "port", "client_id", "account",
                     "connect_timeout", "store"]  # fmt: skip


def _config_from(parser: SettingsArgumentParser, argv: list[str]) -> HarnessConfig:
    """Load the config from ``argv`` or exit 4 with the one-line error."""
    try:
        return load_or_bad_input(parser, argv)
    except BadInput as exc:
        raise bad_input(str(exc)) from None


@app.command(**_SETTINGS_COMMAND)
def run(ctx: typer.Context) -> None:
    """The main job: health, ticks, [round trip], cleanup.

    Runs health, ticks, the optional paper round trip (--trade) and cleanup, then exits
    0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input. Every setting has a flag: see
    `harness run --help`. (The `harness` script runs this without loading typer:
    harness_lib.runcli.)"""
    raise typer.Exit(run_command(ctx.args))


StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help=f"{SETTINGS['store'].help} [{SETTINGS['store'].env}]", show_default=False
    ),
]


def _store_path(store: Path | None) -> Path:
    try:
        return load_config({"store": store}).store
    except ConfigError as exc:
        raise bad_input(str(exc)) from None


def _open_store(store: Path | None, *, readonly: bool = True) -> Store:
    path = _store_path(store)
    if readonly and not path.exists():
        raise bad_input(f"no run store at {path}; run `harness run` first or pass --store")
    try:
        return Store(path, readonly=readonly)
    except StoreError as exc:
        raise bad_input(f"{exc} (pass --store PATH)") from None


@app.command(**_SETTINGS_COMMAND)
def cleanup(ctx: typer.Context) -> None:
    """Cancel and flatten what earlier runs left.

    Sweeps orphans: cancels open harness orders and flattens positions that harness-tagged
    executions of any earlier run left, then reports what was done."""
    parser = settings_parser(
        "harness cleanup",
        _CLEANUP_SETTINGS,
        description="Cancel open harness orders and flatten positions that harness-tagged "
        "executions of any earlier run left, then report what was done.",
    )
    cfg = _config_from(parser, ctx.args)
    from harness_lib.runner import run_sweep

    rep = asyncio.run(run_sweep(cfg))
    result = rep.phases[0]
    if result.verdict == Verdict.BAD_INPUT:
        raise bad_input(result.reason)
    color = "green" if result.ok else "red"
    line = f"{escape(rep.target.label)}: {escape(result.reason)}"
    out.print(f"[{color}]{result.verdict}[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(rep.exit_code)


@app.command()
def runs(
    last: Annotated[int, typer.Option(help="How many recent runs to list.")] = 20,
    store: StoreOpt = None,
) -> None:
    """List recorded runs.

    Time, run id, target, contract, verdict, first bid/ask latency, cost and reason."""
    if last < 1:
        raise bad_input(f"--last {last} must be at least 1")
    import pandas as pd

    with _open_store(store) as st:
        df = st.runs(last=last)
    rows = []
    for r in df.itertuples():
        fb, fa = r.first_bid_s, r.first_ask_s
        ticks_s = "-" if pd.isna(fb) else f"{fb * 1000:.0f}/{fa * 1000:.0f} ms"
        cost = "-" if pd.isna(r.total_cost) else f"{r.total_cost:.2f}"
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if not pd.isna(r.started_at) else ""
        rows.append([started, r.run_id, r.target_label, r.contract, str(r.verdict or r.status),
                     ticks_s, cost, str(r.reason or "")])  # fmt: skip
    from harness_lib.output import print_table  # rich.table: not on the `harness run` path

    # In a narrow terminal the columns without a star are dropped (right to left) first.
    print_table(
        out,
        f"last {min(last, len(df))} run(s) in {st.path}",
        [
            "started (UTC)*",
            "run*",
            "target",
            "contract",
            "verdict*",
            "first bid/ask",
            "cost",
            "reason*",
        ],
        rows,
    )


def _since(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+)\s*([dhw])\s*", text)
    if not m:
        raise bad_input(f"--since {text!r} is not a duration; use e.g. 30d, 12h or 2w")
    n, unit = int(m.group(1)), m.group(2)
    return {"d": timedelta(days=n), "h": timedelta(hours=n), "w": timedelta(weeks=n)}[unit]


@app.command()
def costs(
    since: Annotated[str, typer.Option(help="How far back: 30d, 12h, 2w.")] = "30d",
    csv: Annotated[Path | None, typer.Option(help="Also write the ledger as CSV.")] = None,
    store: StoreOpt = None,
) -> None:
    """The test-trade cost ledger.

    Every harness trade (found by its harness: orderRef), so test trades can be
    subtracted from strategy P&L."""
    window = _since(since)
    with _open_store(store) as st:
        ledger = st.costs(since=window)
    cols = ["time", "run_id", "symbol", "quantity", "entry_price", "exit_price", "commission",
            "slippage", "total_cost", "realized_pnl", "currency"]  # fmt: skip
    essential = {"time", "run_id", "symbol", "quantity", "total_cost"}
    from harness_lib.output import print_table

    print_table(
        out,
        f"harness test trades, last {since}",
        [c + "*" if c in essential else c for c in cols],
        [[_cell(getattr(r, c)) for c in cols] for r in ledger.itertuples()],
    )
    n = len(ledger)
    tot = ledger["total_cost"].sum() if n else 0.0
    com = ledger["commission"].sum() if n else 0.0
    pnl = ledger["realized_pnl"].sum(min_count=1) if n else float("nan")
    out.print(
        f"{n} test trade(s): commission {com:.2f}, total cost {tot:.2f}, realized P&L "
        f"{_cell(pnl)} — subtract these from strategy P&L",
        highlight=False,
        soft_wrap=True,
    )
    if csv is not None:
        try:
            ledger.to_csv(csv, index=False)
        except OSError as exc:
            raise bad_input(f"cannot write {csv}: {exc.strerror}") from None
        out.print(f"wrote {csv}", highlight=False)


def _cell(v: Any) -> str:
    import pandas as pd

    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".")
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


@app.command()
def report(
    run_id: Annotated[str, typer.Option("--run", help="Run id (see `harness runs`).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")],
    store: StoreOpt = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Plain summary instead of the notebook export.")
    ] = False,
) -> None:
    """Write the HTML post-mortem of one run.

    The post-mortem notebook exported, or a plain summary from the same data."""
    with _open_store(store) as st:
        run_row = st.run(run_id)
        if run_row is None:
            raise bad_input(f"no run {run_id!r} in {st.path}; see `harness runs`")
        phases_df, cps, evs = st.phases(run_id), st.checkpoints(run_id), st.events(run_id)
        path = st.path
    if not plain:
        try:
            from harness_lib.postmortem import export_html
        except ImportError:
            export_html = None  # type: ignore[assignment]
        if export_html is not None:
            try:
                export_html(run_id, output, path)
                out.print(f"wrote {output} (post-mortem notebook export)", highlight=False)
                return
            except Exception as exc:  # fall back: a report is better than none
                err.print(f"notebook export failed ({escape(str(exc))}); writing the plain summary")
    from harness_lib.report import html_summary

    html = html_summary(run_row, phases_df.to_dict("records"), cps.to_dict("records"),
                        evs.to_dict("records"))  # fmt: skip
    try:
        output.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise bad_input(f"cannot write {output}: {exc.strerror}") from None
    out.print(f"wrote {output} (plain summary)", highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def schedule(
    ctx: typer.Context,
    at: Annotated[str, typer.Option(help="Local time HH:MM, e.g. 08:05.")],
    tz: Annotated[str, typer.Option(help="IANA time zone, e.g. America/Chicago.")],
    weekdays: Annotated[bool, typer.Option("--weekdays", help="Monday to Friday only.")] = False,
    print_kind: Annotated[
        str | None, typer.Option("--print", help="launchd | cron | systemd: print only.")
    ] = None,
    install: Annotated[
        bool, typer.Option("--install", help="Write the files to their user locations.")
    ] = False,
) -> None:
    """Schedule a daily `harness run`. Arguments after `--` are passed to `harness run`,
    e.g. `harness schedule --at 08:05 --tz America/Chicago --weekdays --print cron --
    --contract MES --notify tgram://TOKEN/CHAT`."""
    from harness_lib import schedule as sched

    run_args = [a for a in ctx.args if a != "--"]
    # Validate the run arguments now, not at 08:05 tomorrow.
    try:
        run_parser().parse_args(run_args)
    except ConfigError as exc:
        raise bad_input(f"invalid `harness run` arguments after --: {exc}") from None
    kind = print_kind or sched.default_kind()
    if kind not in sched.KINDS:
        raise bad_input(f"--print {kind!r}: choose one of {', '.join(sched.KINDS)}")
    try:
        command = sched.build_command(run_args)
        spec = sched.ScheduleSpec(at=at, tz=tz, weekdays=weekdays, command=command,
                                  workdir=Path.cwd())  # fmt: skip
    except sched.ScheduleError as exc:
        raise bad_input(str(exc)) from None
    if install:
        done = sched.install(spec, kind)
        for pth in done.paths:
            out.print(f"wrote {pth}", highlight=False)
        out.print(done.how_to_enable, highlight=False)
        if done.warning:
            err.print(f"warning: {escape(done.warning)}", highlight=False)
        return
    text, warning = sched.render(spec, kind)
    out.print(text, highlight=False, markup=False, soft_wrap=True)
    if warning:
        err.print(f"warning: {escape(warning)}", highlight=False)


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
    replay: Annotated[
        Path | None, typer.Option("--replay", help="Serve this wire recording instead.")
    ] = None,
    control: Annotated[
        int | None,
        typer.Option(help="Also serve the HTTP/JSON control channel on this port (0: free one)."),
    ] = None,
    control_host: Annotated[
        str, typer.Option(help="Interface of the control channel; not loopback needs a token.")
    ] = "127.0.0.1",
    control_token: Annotated[
        str | None,
        typer.Option(
            envvar="HARNESS_CONTROL_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on the control channel "
            "[HARNESS_CONTROL_TOKEN].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the paper-gateway simulator.

    Serves until interrupted. Point any TWS API client at it. With --control PORT, faults
    can be triggered and cleared while it runs (`harness drill` uses it); with --replay, it
    serves a wire recording instead."""
    if replay is not None:
        if control is not None:
            raise bad_input("--replay and --control exclude each other: a replay has no faults")
        from harness_lib.wire import commands

        _wire(commands.replay, replay, host=host, port=port, speed=1.0, json_path=None)
    if list_scenarios:
        for name, text in describe():
            out.print(f"[bold]{name:<20}[/] {escape(text)}", highlight=False, soft_wrap=True)
        return
    try:
        scen = parse_scenario(scenario)
    except ValueError as exc:
        raise bad_input(f"{exc} (see `harness sim --list`)") from None
    if not 0 <= port <= 65535:
        raise bad_input(f"--port {port} is out of range; use 1-65535, or 0 for a free port")
    if port in {**PAPER_PORTS, **LIVE_PORTS}:
        raise bad_input(
            f"--port {port} is one of IB's own ports; pick another so the simulator is never "
            "mistaken for a gateway"
        )

    if control is not None and not 0 <= control <= 65535:
        raise bad_input(f"--control {control} is out of range; use 1-65535, or 0 for a free port")
    from harness_lib.sim.control import ControlServer, is_loopback

    if control is not None and not is_loopback(control_host) and not control_token:
        raise bad_input(
            f"--control-host {control_host} is not loopback; pass --control-token "
            "(or HARNESS_CONTROL_TOKEN) so only you can trigger faults"
        )

    async def serve() -> None:
        gw = PaperGateway(host=host, port=port, scenario=scen, seed=seed, accounts=account)
        try:
            await gw.start()
        except OSError as exc:
            raise bad_input(
                f"cannot listen on {host}:{port} ({exc.strerror}); try --port 0"
            ) from None
        ctl: ControlServer | None = None
        if control is not None:
            ctl = ControlServer(gw, host=control_host, port=control, token=control_token)
            try:
                await ctl.start()
            except OSError as exc:
                await gw.stop()
                raise bad_input(
                    f"cannot serve the control channel on {control_host}:{control} "
                    f"({exc.strerror}); try --control 0"
                ) from None
        out.print(
            f"livefire simulator listening on {host}:{gw.port} "
            f"(scenario {scen.value}, account {','.join(gw.accounts)}, server version 178)",
            highlight=False,
        )
        out.print(f"PORT={gw.port}", highlight=False)
        if ctl is not None:
            out.print(f"CONTROL={ctl.url}", highlight=False)
        sys.stdout.flush()
        await until_signal()
        if ctl is not None:
            await ctl.stop()
        await gw.stop()
        out.print("simulator stopped", highlight=False)

    asyncio.run(serve())


def _wire(fn: Any, *args: Any, **kw: Any) -> None:
    """Run a wire command (harness_lib/wire/commands.py), mapping BadInput to exit 4."""
    try:
        code = fn(*args, say=lambda line: out.print(line, highlight=False, soft_wrap=True), **kw)
    except BadInput as exc:
        raise bad_input(str(exc)) from None
    raise typer.Exit(code)


@app.command("replay")
def replay_cmd(
    recording: Annotated[
        Path, typer.Argument(help="A wire recording (data/wire/<run>.lfwire.gz).")
    ],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one.")] = 0,
    speed: Annotated[float, typer.Option(help="1 = recorded timing; 10 = ten times faster.")] = 1.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the replay report.")
    ] = None,
) -> None:
    """Serve a recorded session to any TWS client until interrupted."""
    from harness_lib.wire import commands

    _wire(commands.replay, recording, host=host, port=port, speed=speed, json_path=json_path)


@app.command("drift")
def drift_cmd(
    recording: Annotated[Path, typer.Argument(help="A wire recording to compare.")],
    scenario: Annotated[
        str | None, typer.Option(help="Simulator scenario (default: the recording's).")
    ] = None,
    speed: Annotated[float, typer.Option(help="Play the client side this much faster.")] = 1.0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the drift report.")
    ] = None,
) -> None:
    """Compare a recording with the simulator.

    Structure only (message types and order, field counts and shapes, error codes), never
    values; exits 1 on drift."""
    from harness_lib.wire import commands

    _wire(commands.drift_command, recording, scenario=scenario, speed=speed, json_path=json_path)


@app.command("record")
def record_cmd(
    upstream: Annotated[str, typer.Option(help="The gateway, HOST:PORT.")],
    listen: Annotated[int, typer.Option(help="Port clients connect to; 0 picks one.")] = 0,
    output: Annotated[
        Path | None, typer.Option("-o", "--out", help="Recording file (default data/wire/).")
    ] = None,
    no_mask: Annotated[
        bool, typer.Option("--no-mask", help="Keep real account ids in the recording.")
    ] = False,
) -> None:
    """Record a TWS session through a proxy.

    Transparent: point any TWS client at it instead of the gateway."""
    from datetime import UTC, datetime

    from harness_lib.wire import commands

    data = commands.wire_dir(_store_path(None))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = output or data / f"record-{stamp}.lfwire.gz"
    _wire(commands.record, listen=listen, upstream=upstream, out=out_path, mask=not no_mask,
          data_dir=data)  # fmt: skip


@app.command()
def drill(
    names: Annotated[
        list[str] | None, typer.Argument(help="Drills to run (default: all; see --list).")
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(help="URL of the simulator's control channel (`harness sim --control`)."),
    ] = None,
    control_token: Annotated[
        str | None,
        typer.Option(
            envvar="HARNESS_CONTROL_TOKEN",
            help="Token of the control channel [HARNESS_CONTROL_TOKEN].",
            show_default=False,
        ),
    ] = None,
    stack_file: Annotated[
        Path | None,
        typer.Option(help="TOML file of [[stack]] endpoints (default: harness.toml's stack)."),
    ] = None,
    symbol: Annotated[
        str | None, typer.Option(help="The symbol the stack shows (default: the contract).")
    ] = None,
    drill_config: Annotated[
        Path | None,
        typer.Option(help="TOML with [deadlines] and [drills.NAME] deadline overrides."),
    ] = None,
    deadline: Annotated[
        list[str] | None,
        typer.Option(help="Override one deadline: [DRILL.]REACTION=SECONDS (repeatable)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the drill report as JSON here.")
    ] = None,
    store: StoreOpt = None,
    list_drills: Annotated[
        bool, typer.Option("--list", help="List the drills and their reactions, and exit.")
    ] = False,
) -> None:
    """Fault drills against your stack, on a running simulator.

    Triggers each named fault through the simulator's control channel while watching your
    stack's declared endpoints, and judges its reactions (each with a deadline and a measured
    latency). Exits 0 all pass, 1 a reaction failed, 2 the stack never showed live, 3 the
    target is not the simulator, 4 bad input."""
    from harness_lib.drill import cli as drill_cli

    raise typer.Exit(
        drill_cli.main(
            names or [],
            control=control,
            token=control_token,
            stack_file=stack_file,
            symbol=symbol,
            drill_config=drill_config,
            deadlines=deadline or [],
            json_path=json_path,
            store=store,
            list_only=list_drills,
        )
    )


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show ib_async and harness logs on stderr.")
    ] = False,
) -> None:
    """livefire: does the real broker path work right now?"""
    setup_logging(verbose)


def main(argv: list[str] | None = None) -> None:
    """The typer app's entry point (``python -m harness_lib.cli``; the ``harness`` script
    comes here through :func:`harness_lib.runcli.main` for every command but ``run``).

    Usage errors become one line and exit 4 (bad input), instead of click's box and exit 2,
    because exit 2 means STALLED to the schedulers that read our codes.
    """
    ib_logger = logging.getLogger("ib_async")
    saved_level = ib_logger.level
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:
        # typer vendors click; its usage errors all derive from TyperException.
        if type(exc).__name__ == "NoArgsIsHelpError":  # `harness` alone: show the help
            print(exc.format_message() if hasattr(exc, "format_message") else exc)
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        name = ctx.command_path if ctx is not None else "harness"
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        text = " ".join(text.split())
        if not text:  # `harness` alone: help was printed, nothing went wrong
            sys.exit(0)
        err.print(
            f"[bold red]error:[/] {escape(text)} (see `{name} --help`)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_BAD_INPUT)
    finally:
        # In-process callers (tests, notebooks) get their logging back as it was.
        ib_logger.setLevel(saved_level)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
