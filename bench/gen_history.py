"""Generate a run store holding one year of daily runs, for the history-scale benchmark.

365 runs, one a day at 09:35 New York time, each with about 10,000 ticks (bid, ask,
last and sizes on a seeded random walk, bursty inter-arrival times), its four phases
with checkpoints, the farm notices, and a one-contract round trip (two orders, two
executions, two commission reports) so the cost ledger has a year of entries. Most runs
pass; some stall, fail or are refused, as a real year would have. Everything goes
through the public ``Store`` API, as the Recorder writes it.

    uv run python bench/gen_history.py --store bench/out/history.sqlite [--runs 365]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from harness_lib.models import Checkpoint, Phase, PhaseResult, Target, Verdict
from harness_lib.store import Store

FIELDS = ("bid", "ask", "last", "bidSize", "askSize", "lastSize", "volume")
TICK_TYPE = {"bid": 1, "ask": 2, "last": 4, "bidSize": 0, "askSize": 3, "lastSize": 5, "volume": 8}
CONTRACTS = [("AAPL", 265598, 230.0, 0.01, 1.0), ("MES", 7000001, 6000.0, 0.25, 5.0)]


def _verdict(rng: random.Random) -> Verdict:
    x = rng.random()
    if x < 0.90:
        return Verdict.PASS
    if x < 0.95:
        return Verdict.STALLED
    if x < 0.99:
        return Verdict.FAIL
    return Verdict.REFUSED


def _ticks(
    run_id: str,
    rng: np.random.Generator,
    n: int,
    con_id: int,
    symbol: str,
    price0: float,
    tick: float,
    t_mono0: float,
    t_wall0: float,
) -> list[tuple]:
    """~n tick rows in the Recorder's row layout."""
    # Bursty arrivals: most gaps a few ms (one socket read), some 250 ms (IB's cadence).
    gaps = np.where(rng.random(n) < 0.8, rng.exponential(0.004, n), rng.exponential(0.25, n))
    t_rel = np.cumsum(gaps)
    fields = rng.choice(len(FIELDS), size=n, p=[0.22, 0.22, 0.12, 0.12, 0.12, 0.1, 0.1])
    walk = price0 + tick * np.cumsum(rng.choice([-1, 0, 0, 1], size=n))
    spread = tick * rng.integers(1, 3, size=n)
    sizes = rng.integers(1, 10, size=n) * 100.0
    volume = np.cumsum(rng.integers(1, 5, size=n)) * 100.0
    rows = []
    for i in range(n):
        f = FIELDS[int(fields[i])]
        if f == "bid":
            price, size = float(walk[i]), float(sizes[i])
        elif f == "ask":
            price, size = float(walk[i] + spread[i]), float(sizes[i])
        elif f == "last":
            price, size = float(walk[i]), float(sizes[i] // 100)
        elif f == "volume":
            price, size = None, float(volume[i])
        else:
            price, size = None, float(sizes[i])
        rows.append(
            (
                run_id,
                con_id,
                symbol,
                f,
                TICK_TYPE[f],
                price,
                size,
                t_mono0 + float(t_rel[i]),
                t_wall0 + float(t_rel[i]),
                1,
                i + 1,
            )
        )
    return rows


def generate(
    path: Path,
    runs: int = 365,
    ticks_per_run: int = 10_000,
    seed: int = 7,
    end: datetime | None = None,
) -> list[str]:
    """Write the store; return the run ids, oldest first."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    end = end or datetime.now(UTC).replace(hour=13, minute=35, second=0, microsecond=0)
    store = Store(path)
    ids: list[str] = []
    t_mono = 10_000.0
    order_id = 1000
    try:
        for day in range(runs):
            started = end - timedelta(days=runs - 1 - day, seconds=-rng.uniform(0, 90))
            run_id = started.strftime("%Y%m%dT%H%M%SZ") + f"-{day:04x}"
            ids.append(run_id)
            symbol, con_id, price0, tick, mult = CONTRACTS[0 if day % 5 else 1]
            target = Target(
                host="127.0.0.1",
                port=4002,
                client_id=917,
                simulated=False,
                account="DU1234567",
                accounts=["DU1234567"],
                server_version=178,
            )
            store.start_run(
                run_id,
                target=target,
                contract=symbol,
                phases=["health", "ticks", "round_trip", "cleanup"],
                config={"contract": symbol, "trade": True},
                started_at=started,
            )
            verdict = _verdict(rng)
            first = rng.uniform(0.04, 0.4) if verdict != Verdict.STALLED else None
            t0 = t_mono
            t_mono += 86_400.0

            def cp(
                name: str, dt: float, detail: str = "", _t0: float = t0, _w: datetime = started
            ) -> Checkpoint:
                return Checkpoint(
                    name=name, t_mono=_t0 + dt, t_wall=_w + timedelta(seconds=dt), detail=detail
                )

            health_cps = [
                cp("connected", 0.004),
                cp("accounts_verified", 0.06),
                cp("clock_checked", 0.07),
            ]
            for c in health_cps:
                store.add_checkpoint(run_id, "health", c)
            for code, text in (
                (2104, "Market data farm connection is OK:usfarm"),
                (2106, "HMDS data farm connection is OK:ushmds"),
                (2158, "Sec-def data farm connection is OK:secdefnj"),
            ):
                store.add_event(
                    run_id,
                    kind="notice",
                    code=code,
                    message=text,
                    req_id=-1,
                    t_wall=started + timedelta(seconds=0.005),
                    t_mono=t0 + 0.005,
                )
            store.record_phase(
                run_id,
                PhaseResult(Phase.HEALTH, Verdict.PASS, "connected", started, 0.07, health_cps),
            )
            sub = 0.1
            tick_cps = [cp("contract_qualified", 0.09), cp("subscribed", sub)]
            n_ticks = 0
            if first is not None:
                tick_cps += [cp("first_tick", sub + first), cp("bid_ask_live", sub + first)]
                n_ticks = int(ticks_per_run * rng.uniform(0.9, 1.1))
                rows = _ticks(
                    run_id,
                    nrng,
                    n_ticks,
                    con_id,
                    symbol,
                    price0,
                    tick,
                    t0 + sub + first,
                    started.timestamp() + sub + first,
                )
                store.add_ticks(rows)
            for c in tick_cps:
                store.add_checkpoint(run_id, "ticks", c)
            tv = Verdict.PASS if first is not None else Verdict.STALLED
            store.record_phase(
                run_id,
                PhaseResult(
                    Phase.TICKS,
                    tv,
                    "bid/ask live" if first is not None else "no tick within 5s",
                    started + timedelta(seconds=0.08),
                    (first or 5.0) + 0.5,
                    tick_cps,
                    metrics={"first_bid_s": first, "first_ask_s": first, "updates": n_ticks},
                ),
            )
            cost = None
            if verdict in (Verdict.PASS, Verdict.FAIL):
                cost = _round_trip(
                    store, run_id, started, rng, symbol, con_id, price0, tick, mult, order_id
                )
                order_id += 2
            if verdict == Verdict.FAIL:
                store.add_event(
                    run_id,
                    kind="error",
                    code=201,
                    message="Order rejected - reason:simulated",
                    req_id=order_id,
                    t_wall=started + timedelta(seconds=2),
                    t_mono=t0 + 2,
                )
            store.record_phase(
                run_id,
                PhaseResult(
                    Phase.CLEANUP, Verdict.PASS, "flat", started + timedelta(seconds=3), 0.05
                ),
            )
            store.finish_run(
                run_id,
                verdict=str(verdict),
                reason=f"synthetic {verdict}",
                exit_code=verdict.exit_code,
                summary={
                    "first_bid_s": first,
                    "first_ask_s": first,
                    "total_cost": cost,
                    "target": target.to_dict(),
                },
                finished_at=started + timedelta(seconds=4),
            )
    finally:
        store.close()
    return ids


def _round_trip(
    store: Store,
    run_id: str,
    started: datetime,
    rng: random.Random,
    symbol: str,
    con_id: int,
    price0: float,
    tick: float,
    mult: float,
    order_id: int,
) -> float:
    """Two orders, two fills, two commissions; returns the total cost."""
    ref = f"harness:{run_id}"
    total = 0.0
    for leg, (action, side) in enumerate((("BUY", "BOT"), ("SELL", "SLD"))):
        oid = order_id + leg
        bid = price0 + tick * rng.randint(-20, 20)
        ask = bid + tick
        mid = (bid + ask) / 2
        fill = ask if action == "BUY" else bid
        store.upsert_order(
            run_id,
            order_id=oid,
            perm_id=10_000_000 + oid,
            client_id=917,
            account="DU1234567",
            con_id=con_id,
            symbol=symbol,
            sec_type="STK" if mult == 1 else "FUT",
            multiplier=mult,
            action=action,
            quantity=1.0,
            order_type="MKT",
            lmt_price=None,
            order_ref=ref,
            leg="entry" if leg == 0 else "exit",
            status="Filled",
            decision_bid=bid,
            decision_ask=ask,
            decision_mid=mid,
        )
        exec_id = f"0000e{oid:08d}.01"
        when = started + timedelta(seconds=1 + leg)
        store.add_execution(
            run_id,
            exec_id=exec_id,
            order_id=oid,
            perm_id=10_000_000 + oid,
            order_ref=ref,
            con_id=con_id,
            symbol=symbol,
            side=side,
            shares=1.0,
            price=fill,
            account="DU1234567",
            t_wall=when,
        )
        commission = 1.0 if mult == 1 else 0.62
        store.add_commission(
            run_id,
            exec_id=exec_id,
            commission=commission,
            currency="USD",
            realized_pnl=None,
            t_wall=when,
        )
        total += commission + abs(fill - mid) * mult
    return total


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--runs", type=int, default=365)
    p.add_argument("--ticks", type=int, default=10_000, help="ticks per run (about)")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    ids = generate(a.store, a.runs, a.ticks, a.seed)
    size = sum(
        Path(f"{a.store}{s}").stat().st_size for s in ("", "-wal") if Path(f"{a.store}{s}").exists()
    )
    print(
        f"wrote {len(ids)} runs to {a.store} ({size / 1e6:.0f} MB) in "
        f"{time.perf_counter() - t0:.1f} s; newest run {ids[-1]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
