"""Phase 1, health: connect, identify the target, and refuse anything but paper."""

from __future__ import annotations

import asyncio
import time

from harness_lib.connection import (
    BAD_FARM_CODES,
    GOOD_FARM_CODES,
    GatewayUnreachable,
    HandshakeTimeout,
)
from harness_lib.models import Phase, PhaseResult, Verdict
from harness_lib.safety import GuardRefusal, check_accounts, check_port, mask_account

from .base import PhaseRun, RunContext

FARM_SETTLE_SECONDS = 0.05
"""Farm notices arrive with the connect burst; a short settle catches stragglers."""


async def health(ctx: RunContext) -> PhaseResult:
    """Connect within the timeout, record server version, accounts, clock skew and farm
    notices, and run the paper guard. Nothing is subscribed or ordered here.

    REFUSED when a managed account is not paper or the port is a live default without
    the explicit override; BAD_INPUT when nothing listens (the message suggests --sim).
    """
    p = PhaseRun(ctx, Phase.HEALTH)
    cfg, conn, target = ctx.cfg, ctx.conn, ctx.target
    where = f"{conn.host}:{conn.port}"
    # The port guard runs before anything is sent.
    try:
        allowed = check_port(conn.port, cfg.allow_live_port)
    except GuardRefusal as exc:
        return p.result(Verdict.REFUSED, str(exc), evidence={"guard": exc.guard, "port": conn.port})
    if allowed:
        ctx.rec.note("warning", allowed)
    try:
        seconds = await conn.connect()
    except GatewayUnreachable as exc:
        return p.result(
            Verdict.BAD_INPUT,
            f"{exc}; start IB Gateway or TWS with the API enabled, or use --sim to run "
            "against the simulator",
            evidence={"host": conn.host, "port": conn.port},
        )
    except HandshakeTimeout as exc:
        verdict = Verdict.FAIL if 326 in conn.codes() else Verdict.STALLED
        return p.result(verdict, str(exc), evidence={"host": conn.host, "port": conn.port})
    p.cp("connected", f"{where} in {seconds * 1000:.0f} ms")
    ib = conn.ib
    await asyncio.sleep(FARM_SETTLE_SECONDS)
    accounts = list(ib.managedAccounts())
    target.accounts = accounts
    target.server_version = ib.client.serverVersion()
    target.simulated = target.simulated or conn.simulated
    if conn.simulated and target.scenario is None:
        target.scenario = "unknown (external simulator)"
    account = cfg.account or (accounts[0] if accounts else None)
    target.account = account
    ctx.account = account
    metrics: dict[str, object] = {
        "connect_s": round(seconds, 6),
        "server_version": target.server_version,
        "accounts": [mask_account(a) for a in accounts],
        "simulated": target.simulated,
    }
    try:
        check_accounts(accounts)
    except GuardRefusal as exc:
        return p.result(Verdict.REFUSED, str(exc), metrics, {"guard": exc.guard})
    if cfg.account and cfg.account not in accounts:
        return p.result(
            Verdict.BAD_INPUT,
            f"account {cfg.account} is not managed by {where} (managed: "
            f"{', '.join(mask_account(a) for a in accounts)}); fix --account",
            metrics,
        )
    p.cp("accounts_verified", ", ".join(mask_account(a) for a in accounts) + " (paper)")
    before = time.time()
    try:
        gateway_time = await asyncio.wait_for(ib.reqCurrentTimeAsync(), cfg.connect_timeout)
    except TimeoutError:
        return p.result(
            Verdict.STALLED,
            f"{where} did not answer reqCurrentTime within {cfg.connect_timeout:g}s",
            metrics,
        )
    after = time.time()
    # IB reports whole seconds, so the skew is only known to within about one second.
    skew = gateway_time.timestamp() - (before + after) / 2
    metrics["gateway_time"] = gateway_time.isoformat()
    metrics["clock_skew_s"] = round(skew, 3)
    p.cp("clock_checked", f"skew {skew:+.1f} s")
    good = sorted({m.code for m in conn.messages if m.code in GOOD_FARM_CODES})
    bad = [m for m in conn.messages if m.code in BAD_FARM_CODES]
    metrics["farm_ok"] = good
    metrics["farm_bad"] = sorted({m.code for m in bad})
    if bad:
        worst = bad[-1]
        return p.result(
            Verdict.FAIL, f"data farm problem: IB {worst.code}: {worst.message}", metrics
        )
    if abs(skew) > 30:
        ctx.rec.note("warning", f"clock skew {skew:+.0f} s against the gateway")
    ctx.health_passed = True
    label = "SIMULATOR" if target.simulated else "gateway"
    return p.result(
        Verdict.PASS,
        f"connected to {label} {where} (server {target.server_version}) in "
        f"{seconds * 1000:.0f} ms; {len(accounts)} paper account(s); skew {skew:+.1f} s",
        metrics,
    )
