"""``run_harness(config)``: the phases in order, cleanup always last, a RunReport out.

Also what happens around a run: the embedded simulator for ``--sim``, finding the
gateway on the standard paper ports, the JSON/JUnit reports, the dead-man heartbeat and
the notification. The store is written only through the run's Recorder (run record,
phases, notifications, observations). ``run_sweep`` is `harness cleanup` through the
same plumbing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness_lib import notify, report
from harness_lib.config import HarnessConfig
from harness_lib.models import Phase, PhaseResult, RunReport, Target, Verdict, utcnow
from harness_lib.phases import RunContext, cleanup, health, round_trip, sweep, ticks
from harness_lib.phases.base import new_run_id
from harness_lib.recorder import Recorder
from harness_lib.sim import PaperGateway
from harness_lib.store import Store, StoreError

log = logging.getLogger("harness_lib.runner")

PHASES = {
    Phase.HEALTH: health,
    Phase.TICKS: ticks,
    Phase.ROUND_TRIP: round_trip,
}

Progress = Callable[[str, dict[str, Any]], None]
"""Called with ('phase_start', {...}), ('checkpoint', {...}), ('phase_end', {...})."""


async def find_gateway(host: str, ports: tuple[int, ...], timeout: float = 1.0) -> int | None:
    """The first of ``ports`` that accepts a TCP connection on ``host``, or None."""
    for port in ports:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return port
    return None


def _bad_input_report(cfg: HarnessConfig, run_id: str, reason: str, port: int) -> RunReport:
    target = Target(host=cfg.host, port=port, client_id=cfg.client_id, simulated=cfg.sim)
    result = PhaseResult(phase=Phase.HEALTH, verdict=Verdict.BAD_INPUT, reason=reason)
    rep = RunReport(run_id=run_id, target=target, contract=cfg.contract, phases=[result])
    rep.finished_at = utcnow()
    return rep


async def run_harness(
    cfg: HarnessConfig,
    *,
    on_progress: Progress | None = None,
    gateway: PaperGateway | None = None,
    run_id: str | None = None,
) -> RunReport:
    """Run the configured phases against the gateway (or the embedded simulator) and return
    the report. Cleanup runs last whatever happens: a failed phase, an exception, or
    cancellation (Ctrl-C), after which the run is reported ABORTED.

    ``gateway`` lets a caller pass a simulator it already runs (tests, notebooks).
    """
    emit = on_progress or (lambda kind, data: None)

    async def body(ctx: RunContext, store: Store) -> RunReport:
        return await _run(cfg, ctx, store, emit)

    return await _with_target(cfg, gateway, run_id or new_run_id(), body)


async def run_sweep(
    cfg: HarnessConfig, *, gateway: PaperGateway | None = None, run_id: str | None = None
) -> RunReport:
    """`harness cleanup`: sweep what ANY harness run left (see ``phases.cleanup.sweep``),
    recorded as a run of its own, through the same target, store and Recorder plumbing
    as :func:`run_harness`. The report has one phase, cleanup."""

    async def body(ctx: RunContext, store: Store) -> RunReport:
        rep = RunReport(run_id=ctx.run_id, target=ctx.target, contract=SWEEP_CONTRACT,
                        store_path=str(store.path))  # fmt: skip
        ctx.rec.start_run(ctx.target, contract=SWEEP_CONTRACT, phases=[str(Phase.CLEANUP)],
                          config=cfg.redacted(), started_at=rep.started_at)  # fmt: skip
        ctx.rec.attach(ctx.conn)
        try:
            rep.phases.append(await sweep(ctx, store.harness_executions()))
        finally:
            await ctx.rec.close()
            ctx.rec.detach(ctx.conn)
            ctx.conn.disconnect()
            rep.finished_at = utcnow()
            ctx.rec.finish_run(rep)
        return rep

    return await _with_target(cfg, gateway, run_id or new_run_id(), body)


SWEEP_CONTRACT = "(sweep)"
"""What a `harness cleanup` run records as its contract: it has none of its own."""


async def _with_target(
    cfg: HarnessConfig,
    gateway: PaperGateway | None,
    rid: str,
    body: Callable[[RunContext, Store], Awaitable[RunReport]],
) -> RunReport:
    """Start the embedded simulator if asked, find the gateway, open the store, build the
    run context, and call ``body``; BAD_INPUT when there is no gateway or store."""
    own_sim: PaperGateway | None = None
    if cfg.sim and gateway is None:
        own_sim = PaperGateway(port=0, scenario=cfg.scenario, seed=cfg.sim_seed)
        await own_sim.start()
        gateway = own_sim
    try:
        if gateway is not None:
            host, port = "127.0.0.1", gateway.port
        elif cfg.port is not None:
            host, port = cfg.host, cfg.port
        else:
            found = await find_gateway(cfg.host, cfg.candidate_ports, cfg.connect_timeout / 2)
            if found is None:
                tried = " or ".join(f"{cfg.host}:{p}" for p in cfg.candidate_ports)
                return _bad_input_report(
                    cfg, rid,
                    f"no gateway is listening on {tried}; start IB Gateway/TWS (paper) with "
                    "the API enabled, pass --port, or use --sim for the simulator",
                    cfg.candidate_ports[0],
                )  # fmt: skip
            host, port = cfg.host, found
        try:
            store = Store(cfg.store)
        except StoreError as exc:
            return _bad_input_report(cfg, rid, f"{exc} (set --store or HARNESS_STORE)", port)
        try:
            ctx = RunContext.create(cfg, host=host, port=port, store=store, run_id=rid,
                                    simulated=gateway is not None)  # fmt: skip
            return await body(ctx, store)
        finally:
            store.close()
    finally:
        if own_sim is not None:
            await own_sim.stop()


async def _run(cfg: HarnessConfig, ctx: RunContext, store: Store, emit: Progress) -> RunReport:
    rid = ctx.run_id
    ctx.on_checkpoint = lambda phase, cp: emit("checkpoint", {"phase": phase, "cp": cp})
    rep = RunReport(run_id=rid, target=ctx.target, contract=cfg.contract,
                    store_path=str(store.path))  # fmt: skip
    ctx.rec.start_run(ctx.target, contract=cfg.contract, phases=[str(p) for p in cfg.phases],
                      config=cfg.redacted(), started_at=rep.started_at)  # fmt: skip
    hb = notify.heartbeat(cfg.heartbeat, "start") if cfg.heartbeat else None
    if hb is not None and not hb.ok:
        _warn(f"heartbeat /start not delivered to {hb.channel}: {hb.detail}")
    ctx.rec.attach(ctx.conn)
    if cfg.stack:
        from harness_lib.stack.watch import preload

        preload(ep.kind for ep in cfg.stack)  # now, not on the loop while stamping
    aborted: BaseException | None = None
    try:
        for phase in cfg.phases:
            if phase in (Phase.CLEANUP, Phase.STACK):
                continue
            emit("phase_start", {"phase": str(phase)})
            try:
                result = await PHASES[phase](ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an IB surprise must still end in cleanup
                log.exception("phase %s raised", phase)
                why = f"unexpected error: {exc.__class__.__name__}: {exc}"
                result = PhaseResult(phase=phase, verdict=Verdict.FAIL, reason=why)
                ctx.rec.phase(result)
            rep.phases.append(result)
            emit("phase_end", {"phase": str(phase), "result": result})
            if not result.ok and phase == Phase.HEALTH:
                break
            if phase == Phase.TICKS and cfg.stack:
                _start_stack(ctx)
        if cfg.stack:
            emit("phase_start", {"phase": str(Phase.STACK)})
            ctx.rec.phase_started(str(Phase.STACK))
            result = await _stack_phase(ctx)
            rep.phases.append(result)
            emit("phase_end", {"phase": str(Phase.STACK), "result": result})
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        aborted = exc
        running = next((p for p in cfg.phases if p not in {r.phase for r in rep.phases}),
                       Phase.HEALTH)  # fmt: skip
        result = PhaseResult(phase=running, verdict=Verdict.ABORTED,
                             reason="interrupted (Ctrl-C); cleanup ran")  # fmt: skip
        ctx.rec.phase(result)
        rep.phases.append(result)
    finally:
        if ctx.stack is not None:
            await ctx.stack.stop()  # idempotent; the watchers never outlive the run
        emit("phase_start", {"phase": "cleanup"})
        # Shielded: a second Ctrl-C must not stop us from cancelling and flattening.
        cleanup_task = asyncio.ensure_future(_safe_cleanup(ctx))
        while not cleanup_task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup_task)
        result = cleanup_task.result()
        rep.phases.append(result)
        emit("phase_end", {"phase": "cleanup", "result": result})
        await ctx.rec.close()
        ctx.rec.detach(ctx.conn)
        rep.finished_at = utcnow()
        _finish(cfg, ctx.rec, store, rep)
    if aborted is not None and isinstance(aborted, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    return rep


def _start_stack(ctx: RunContext) -> None:
    """Start watching the declared stack once the contract is qualified (the expressions
    name its symbol and conId). Imported here so a run without a stack never loads it."""
    if ctx.contract is None:
        return
    from harness_lib.stack.monitor import StackMonitor

    ctx.stack = StackMonitor(ctx, ctx.cfg.stack)
    ctx.stack.start()


async def _stack_phase(ctx: RunContext) -> PhaseResult:
    """The stack phase: judge what the user's stack showed (SKIPPED if it never started)."""
    if ctx.stack is None:
        why = "no qualified contract to look for (health or ticks did not get that far)"
        result = PhaseResult(phase=Phase.STACK, verdict=Verdict.SKIPPED, reason=why)
        ctx.rec.phase(result)
        return result
    try:
        return await ctx.stack.finish(trade_checks=Phase.ROUND_TRIP in ctx.cfg.phases)
    except Exception as exc:  # a bug here must not skip cleanup or hide the verdict
        log.exception("stack checks raised")
        from harness_lib.stack.spec import scrub

        secrets = [v for ep in ctx.cfg.stack for v in ep.secrets]
        why = f"stack checks raised {exc.__class__.__name__}: {scrub(str(exc), secrets)}"
        result = PhaseResult(phase=Phase.STACK, verdict=Verdict.FAIL, reason=why)
        ctx.rec.phase(result)
        return result


async def _safe_cleanup(ctx: RunContext) -> PhaseResult:
    try:
        return await cleanup(ctx)
    except Exception as exc:
        log.exception("cleanup raised")
        ctx.conn.disconnect()
        return PhaseResult(
            phase=Phase.CLEANUP,
            verdict=Verdict.FAIL,
            reason=f"cleanup raised {exc.__class__.__name__}: {exc}; harness positions may be "
            "open, run `harness cleanup`",
        )


def _finish(cfg: HarnessConfig, rec: Recorder, store: Store, rep: RunReport) -> None:
    """Store the verdict (a run that lost store writes is FAIL by now), write reports,
    ping the heartbeat and notify. A delivery failure cannot change the verdict: it is
    reported on stderr and in the store. A store write that fails after the verdict was
    delivered is reported on stderr."""
    rec.finish_run(rep)
    delivered = len(rec.losses)
    try:
        path = report.write_json_report(rep, Path(cfg.reports_dir))
        rep.report_path = str(path)
        if cfg.json_path:
            report.write_json(rep, Path(cfg.json_path))
        if cfg.junit_path:
            report.write_junit(rep, Path(cfg.junit_path))
    except OSError as exc:
        _warn(f"could not write the report: {exc}")
    if cfg.heartbeat:
        stage = "success" if rep.verdict == Verdict.PASS else "fail"
        hb = notify.heartbeat(cfg.heartbeat, stage)
        if hb is not None:
            rec.notification(hb.channel, ok=hb.ok, detail=f"heartbeat {stage}: {hb.detail}")
            if not hb.ok:
                _warn(f"heartbeat not delivered to {hb.channel}: {hb.detail}")
    if cfg.notify:
        prev_verdict = _previous_verdict(store, rep)
        if notify.should_notify(cfg.notify_on, rep.verdict, prev_verdict):
            title, body = notify.format_message(rep, report_location=rep.report_path)
            for d in notify.send(list(cfg.notify), title, body):
                rec.notification(d.channel, ok=d.ok, detail=d.detail)
                if not d.ok:
                    _warn(f"notification not delivered to {d.channel}: {d.detail}")
    for _phase, text in rec.losses[delivered:]:
        _warn(f"store write failed after the verdict, data lost: {text}")


def _previous_verdict(store: Store, rep: RunReport) -> str | None:
    """The verdict of the previous concluded run on the same target (``Target.key``)."""
    for r in store.runs(last=200).itertuples():
        if r.run_id == rep.run_id or r.status == "running":
            continue
        key = Target(host=r.host, port=int(r.port), client_id=0, simulated=bool(r.simulated),
                     account=r.account if isinstance(r.account, str) else None).key  # fmt: skip
        if key == rep.target.key:
            return str(r.verdict)
    return None


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


__all__ = ["SWEEP_CONTRACT", "find_gateway", "run_harness", "run_sweep"]
