"""`harness drill`: the command's body (typer's declaration is in harness_lib/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from harness_lib.config import ConfigError, load_config
from harness_lib.models import Verdict
from harness_lib.runcli import err, out, print_error

from .catalog import (
    DRILLS,
    DrillConfigError,
    apply_deadlines,
    load_drill_config,
    parse_deadline_flags,
    select,
)
from .run import ControlClient, ControlUnreachable, DrillOutcome, DrillRefused, DrillSession

log = logging.getLogger("harness_lib.drill")

__all__ = ["bind_endpoints", "list_text", "main", "overall"]


def list_text() -> str:
    """Every drill and its reactions, as `harness drill --list` prints them."""
    lines = []
    for d in DRILLS.values():
        lines.append(f"{d.name:<16} {d.text}")
        for r in d.reactions:
            lines.append(f"{'':<16}   - {r.name}: {r.describe()}")
    return "\n".join(lines)


def bind_endpoints(endpoints: Any, symbol: str) -> list[Any]:
    """The declared endpoints bound to the symbol (conId and localSymbol from the simulator's
    own catalogue: drills run only against it)."""
    from harness_lib.sim.market import build_catalogue

    inst = next(
        (i for i in build_catalogue() if symbol in (i.symbol, i.local_symbol)),
        None,
    )
    if inst is None:
        raise ValueError(f"the simulator does not know {symbol!r}; pick a symbol it serves")
    return [ep.bind(symbol=inst.symbol, con_id=inst.con_id, local_symbol=inst.local_symbol)
            for ep in endpoints]  # fmt: skip


def overall(outcomes: list[DrillOutcome]) -> Verdict:
    """FAIL over STALLED over PASS."""
    vs = [o.verdict for o in outcomes]
    if Verdict.FAIL in vs:
        return Verdict.FAIL
    if Verdict.STALLED in vs or not vs:
        return Verdict.STALLED
    return Verdict.PASS


def lines(outcomes: list[DrillOutcome]) -> list[str]:
    """One line per drill x reaction x endpoint: verdict, latency against deadline, detail."""
    rows = []
    for o in outcomes:
        for r in o.results:
            lat = "-" if r.latency is None else f"{r.latency * 1000:.0f} ms"
            dl = "-" if r.deadline is None else f"{r.deadline:g} s"
            rows.append(
                f"{r.verdict.mark} {r.verdict.value:<8} {o.drill:<15} {r.reaction:<24} "
                f"{r.endpoint:<12} {lat:>9} / {dl:<5} {r.detail}"
            )
    return rows


async def run_drills(
    control: ControlClient, endpoints: list[Any], symbol: str, drills: list[Any]
) -> tuple[list[DrillOutcome], dict[str, Any], list[Any]]:
    """Run the drills in sequence on one session; the watchers stop and faults clear at the
    end whatever happens."""
    session = DrillSession(control, endpoints, symbol)
    outcomes: list[DrillOutcome] = []
    try:
        await session.start()
        for d in drills:
            log.info("drill %s", d.name)
            outcomes.append(await session.run(d))
    finally:
        await session.stop()
        await control.close()
    seen = sorted((o for obs in session.obs.values() for o in obs), key=lambda o: o.t_wall)
    return outcomes, session.identity, seen


def main(
    names: list[str],
    *,
    control: str | None,
    token: str | None,
    stack_file: Path | None,
    symbol: str | None,
    drill_config: Path | None,
    deadlines: list[str],
    json_path: Path | None,
    store: Path | None,
    list_only: bool,
) -> int:
    """Run `harness drill`; returns the exit code."""
    if list_only:
        out.print(list_text(), highlight=False, markup=False, soft_wrap=True)
        return 0
    try:
        drills = select(names)
        configs = [load_drill_config(drill_config)] if drill_config else []
        configs.append(parse_deadline_flags(deadlines))
        drills = [apply_deadlines(d, *configs) for d in drills]
        if not control:
            raise ValueError(
                "no --control URL; start the simulator with `harness sim --control PORT` and "
                "pass the CONTROL=... URL it prints"
            )
        cfg = load_config({"stack": stack_file, "store": store})
        if not cfg.stack:
            raise ValueError(
                "no stack declared; pass --stack-file with the [[stack]] endpoints to watch"
            )
        sym = symbol or cfg.contract.split(":")[-1].split(".")[0]
        endpoints = bind_endpoints(cfg.stack, sym)
    except (ValueError, ConfigError, DrillConfigError) as exc:
        return print_error(str(exc))
    started = time.time()
    try:
        outcomes, identity, observations = asyncio.run(
            run_drills(ControlClient(control, token), endpoints, sym, drills)
        )
    except DrillRefused as exc:
        err.print(f"[bold red]refused:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return Verdict.REFUSED.exit_code
    except ControlUnreachable as exc:
        return print_error(f"{exc}; is `harness sim --control PORT` running?")
    for line in lines(outcomes):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    verdict = overall(outcomes)
    from .report import drill_report, record, write_json

    report = drill_report(outcomes, identity, verdict, started_at=started)
    if json_path is not None:
        write_json(report, json_path)
    for lost in record(report, cfg.store, observations):
        err.print(f"warning: {escape(lost)}", highlight=False, soft_wrap=True)
    out.print(f"run {report.run_id} stored in {cfg.store}", highlight=False)
    out.print(f"{verdict.mark} drills {verdict.value}", highlight=False)
    return verdict.exit_code
