"""Phase 2, ticks: qualify, subscribe, and time when each ticker field becomes real.

This is the check mocks cannot make: ``reqMktData`` returns a Ticker full of ``nan`` and
the values arrive asynchronously, seconds later or never. No order is placed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time

from ib_async import Ticker

from harness_lib.contracts import ContractError, SpecError, parse_spec, resolve_contract
from harness_lib.models import Phase, PhaseResult, Verdict
from harness_lib.quotes import QUOTE_FIELDS as FIELDS
from harness_lib.quotes import is_real, market_data_name, note_first_real

from .base import PhaseRun, RunContext

NOT_SUBSCRIBED = {354, 10089, 10168}
DELAYED_WARNING = 10167


def req_id_of(ticker: Ticker, ib: object) -> int | None:
    """The request id ib_async used for a market data subscription."""
    wrapper = getattr(ib, "wrapper", None)
    ids = getattr(wrapper, "ticker2ReqId", {}).get("mktData", {}) if wrapper else {}
    return ids.get(ticker)


async def ticks(ctx: RunContext) -> PhaseResult:
    """Subscribe to the configured contract and judge the tick path within the deadline.

    PASS when bid and ask are real numbers in time; STALLED when nothing arrives; FAIL
    for not-subscribed data (354/10089/10168), delayed data unless allowed (10167 or
    marketDataType 3/4), frozen data (a closed market), an unknown contract (200), or a
    stream that goes stale after its first ticks.
    """
    p = PhaseRun(ctx, Phase.TICKS)
    cfg, conn = ctx.cfg, ctx.conn
    ib = conn.ib
    if not ib.isConnected():
        return p.result(Verdict.SKIPPED, "not connected (health did not pass)")
    try:
        spec = parse_spec(cfg.contract)
    except SpecError as exc:
        return p.result(Verdict.BAD_INPUT, str(exc))
    try:
        contract = await resolve_contract(ib, spec, timeout=cfg.tick_deadline * 2)
    except ContractError as exc:
        return p.result(Verdict.FAIL, str(exc), evidence={"ib_code": exc.code})
    except TimeoutError:
        return p.result(Verdict.STALLED, f"contract details for {spec} did not arrive")
    ctx.contract = contract
    p.cp("contract_qualified", f"{contract.localSymbol or contract.symbol} conId {contract.conId}")

    ib.reqMarketDataType(cfg.market_data_type)
    first: dict[str, float] = {}
    arrivals: list[float] = []
    wake = asyncio.Event()
    mark = conn.mark()
    t_sub = time.monotonic()

    def on_update(t: Ticker) -> None:
        # Runs inside ib_async's event dispatch: only record, never raise.
        now = time.monotonic()
        arrivals.append(now)
        note_first_real(first, t, now - t_sub)
        wake.set()

    ticker = ib.reqMktData(contract, "", False, False)
    ticker.updateEvent += on_update
    ctx.ticker = ticker
    ctx.tickers.append(ticker)
    req_id = req_id_of(ticker, ib)
    p.cp("subscribed", f"reqId {req_id}, market data type {cfg.market_data_type}")

    deadline = t_sub + cfg.tick_deadline
    verdict: Verdict | None = None
    reason = ""
    first_tick_seen = False
    while True:
        msgs = [m for m in conn.since(mark) if req_id is None or m.req_id in (req_id, -1)]
        refused = next((m for m in msgs if m.code in NOT_SUBSCRIBED), None)
        if refused is not None:
            verdict = Verdict.FAIL
            reason = f"not subscribed to market data: IB {refused.code}: {refused.message}"
            break
        delayed_msg = next((m for m in msgs if m.code == DELAYED_WARNING), None)
        delayed = delayed_msg is not None or ticker.marketDataType in (3, 4)
        if delayed and not cfg.allow_delayed:
            why = (
                f"IB {delayed_msg.code}: {delayed_msg.message}"
                if delayed_msg
                else f"marketDataType {ticker.marketDataType}"
            )
            verdict = Verdict.FAIL
            reason = (
                f"delayed data ({why}); delayed data does not prove a live tick path "
                "(use --allow-delayed to accept it)"
            )
            break
        if arrivals and not first_tick_seen:
            first_tick_seen = True
            p.cp("first_tick", f"{(arrivals[0] - t_sub) * 1000:.0f} ms")
        if "bid" in first and "ask" in first:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), min(remaining, 0.05))
        if not ib.isConnected():
            verdict = Verdict.FAIL
            reason = "connection lost while waiting for ticks"
            break

    mdt = ticker.marketDataType
    metrics: dict[str, object] = {
        "con_id": contract.conId,
        "symbol": contract.localSymbol or contract.symbol,
        "market_data_type": mdt,
        "market_data": market_data_name(mdt),
        "delayed": mdt in (3, 4),
        **{f"first_{f}_s": _r(first.get(f)) for f in FIELDS},
    }
    evidence: dict[str, object] = {f: _val(getattr(ticker, f)) for f in FIELDS}
    evidence["req_id"] = req_id

    if verdict is None and not ("bid" in first and "ask" in first):
        seen = {f: evidence[f] for f in FIELDS if f in first}
        verdict = Verdict.STALLED
        if not arrivals:
            reason = f"no tick within {cfg.tick_deadline:g}s: bid/ask still nan"
        else:
            reason = f"bid/ask not both real within {cfg.tick_deadline:g}s (saw {seen})"
    if verdict is None and mdt in (2, 4):
        verdict = Verdict.FAIL
        reason = (
            f"market closed: frozen data (marketDataType {mdt}), bid {evidence['bid']} "
            f"ask {evidence['ask']} are the last known quotes, not live ones"
        )
    if verdict is None:
        p.cp("bid_ask_live", f"bid {ticker.bid} ask {ticker.ask}")
        ctx.ticks_live = True
        # Keep watching briefly: inter-arrival times, and a stream that stops.
        watch_until = time.monotonic() + cfg.observe_seconds
        await asyncio.sleep(max(0.0, watch_until - time.monotonic()))
        last = arrivals[-1] if arrivals else t_sub
        stale = stale_reason(time.monotonic() - last, cfg.stale_after, len(arrivals))
        if stale is not None:
            verdict = Verdict.FAIL
            reason = stale
            ctx.ticks_live = False
        else:
            verdict = Verdict.PASS
            kind = market_data_name(mdt)
            reason = (
                f"bid/ask {kind} after {first['bid'] * 1000:.0f}/{first['ask'] * 1000:.0f} ms "
                f"on {metrics['symbol']}"
            )
            if mdt in (3, 4):
                reason += " (DELAYED data, allowed by --allow-delayed)"
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    metrics.update(
        {
            "updates": len(arrivals),
            "ticks_recorded": ctx.rec.tick_count,
            "interarrival_p50_s": _r(statistics.median(gaps)) if gaps else None,
            "interarrival_max_s": _r(max(gaps)) if gaps else None,
        }
    )
    ticker.updateEvent -= on_update
    return p.result(verdict, reason, metrics, evidence)


def stale_reason(quiet_s: float, stale_after: float, updates: int) -> str | None:
    """Why a stream is stale, or None while it is fresh: quiet for ``stale_after`` seconds
    or more after ``updates`` updates. The one staleness rule: the ticks phase judges its
    observation window with it and the live feed (:mod:`harness_lib.live`) every snapshot."""
    if quiet_s < stale_after:
        return None
    return f"stream went stale: no tick for {quiet_s:.1f}s after {updates} updates"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _val(x: float) -> float | None:
    return float(x) if is_real(x) or x == -1 else None
