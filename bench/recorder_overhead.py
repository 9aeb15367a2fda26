"""Section 1: tick ingest and overhead of the harness against bare ib_async.

Live: for 1, 10 and 50 subscribed contracts the simulator (its own process, top rate)
streams ticks for a fixed window to:

(a) a bare ib_async client that only counts ``pendingTickersEvent`` TickData, the
    baseline a user would write by hand;
(b) the harness: ``RunContext`` + the real ``health``, ``ticks`` and ``cleanup`` phases on
    a real ``Connection``, with its ``Recorder`` attached (as ``run_harness`` does): the
    wire tap records every byte to ``<run_id>.lfwire.gz`` and the store's ticks are
    derived from it off the event loop. The ticks phase watches the first contract for the window
    (``observe_seconds``); the other contracts are subscribed on the same connection and
    recorded by the same Recorder.

The variants alternate (order rotated each round) on one simulator process per size,
for ``--rounds`` rounds. Printed: ticks/s received by each, the ratio b/a (median of the
per-round ratios), each as a share of the ticks the simulator sent in the window, the
client CPU per tick, the CPU other processes took ("others": this box is shared), and
the zero-loss check: after the stream is cancelled and drained, ticks sent (ground
truth) = TickData received (counted in the same client) = rows in the store.

Replay (client capacity): the simulator writes one syscall per tick message and tops out
near the rate a bare client absorbs, so the live ratio can pass only because neither
side is saturated. The replay hands both clients the same pre-encoded frames (the
simulator's encoder and message mix, socket-sized chunks) as fast as they take them,
through ib_async's own socket event (``Connection.hasData``): the ratio of their
capacities is the overhead with the client saturated. (b)'s window ends when the
recording is complete on disk (the writer thread's last flush); deriving the ticks that
the worker had not yet derived is post-processing, timed and printed separately as the
derive time, with the recording's size per 1,000,000 ticks.

``--cork`` runs the simulator with the proposed one-write-per-loop-turn patch
(bench/proposals.py; live ticks then arrive in batches, as from a real gateway).

    uv run python bench/recorder_overhead.py [--seconds 2] [--sizes 1 10 50] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

from common import (
    OUT_DIR,
    Row,
    base_parser,
    fmt_rate,
    load_average,
    median,
    print_table,
    write_json,
)
from ib_async import IB
from simproc import SimProcess, synth_symbol
from streaming import (
    StreamResult,
    TickCounter,
    Window,
    bare_client_run,
    build_replay,
    feed_measured,
    req_ids_of,
    synth_contracts,
    wait_all_ticking,
)

from harness_lib.config import HarnessConfig
from harness_lib.phases import RunContext, cleanup, health, ticks
from harness_lib.store import Store

SECTION = "1 ingest"
RATIO_GOAL = 0.90
WARMUP = 0.2


def stored_count(path: Path, run_id: str) -> int:
    """Ticks stored for a run, read on a separate connection (what is on disk, not what
    the Recorder believes it wrote)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM ticks WHERE run_id = ?",
                                (run_id,)).fetchone()[0])  # fmt: skip


LABELS = {"a": "bare ib_async", "current": "harness + wire tap"}


async def harness_run(sim: SimProcess, n: int, seconds: float, client_id: int,
                      store_path: Path, variant: str = "current") -> StreamResult:  # fmt: skip
    """(b): the real phases and Recorder, with n subscriptions, for one window."""
    res = StreamResult(LABELS[variant], n)
    cfg = HarnessConfig(
        contract=synth_symbol(0), client_id=client_id, port=sim.port, store=store_path,
        tick_deadline=30.0, observe_seconds=WARMUP + seconds, stale_after=30.0,
    )  # fmt: skip
    store = Store(store_path)
    ctx = RunContext.create(cfg, host="127.0.0.1", port=sim.port, store=store, simulated=True)
    store.start_run(ctx.run_id, target=ctx.target, contract=cfg.contract,
                    phases=[str(p) for p in cfg.phases], config=cfg.redacted())  # fmt: skip
    # As run_harness does: the Recorder listens before the first phase.
    ctx.rec.attach(ctx.conn)
    ib = ctx.conn.ib
    counter = TickCounter()
    ib.pendingTickersEvent += counter
    h = await health(ctx)
    if not h.ok:
        raise RuntimeError(f"health failed: {h.reason}")
    extra = [ib.reqMktData(c, "", False, False) for c in synth_contracts(n)[1:]]
    ctx.tickers.extend(extra)  # cleanup unsubscribes them with the phase's own ticker
    await wait_all_ticking(extra)
    win = Window(sim, counter, client_id)
    loop = asyncio.get_running_loop()

    def on_checkpoint(phase: str, cp: object) -> None:
        # The window opens WARMUP after bid/ask are live, like (a)'s warm-up, and closes
        # when the phase returns (observe_seconds = WARMUP + seconds).
        if getattr(cp, "name", "") == "bid_ask_live":
            loop.call_later(WARMUP, win.start)

    ctx.on_checkpoint = on_checkpoint
    t = await ticks(ctx)
    win.stop(res)
    if not t.ok:
        raise RuntimeError(f"ticks phase did not pass: {t.verdict} {t.reason}")
    # cleanup: cancels every subscription, then round trips (reqAllOpenOrders,
    # reqExecutions) that arrive after every tick sent before the cancel: a full drain.
    c = await cleanup(ctx)
    if c.verdict != "PASS" or ib.isConnected():
        # Cleanup gave up (a round trip timed out behind the tick backlog): unsubscribe
        # and drain here, so the zero-loss count is still complete. Reported in detail.
        res.extra["cleanup_problem"] = f"{c.verdict}: {c.reason}"
        print(f"    cleanup {c.verdict}: {c.reason}; connected {ib.isConnected()}", flush=True)
        if ib.isConnected():
            for tk in list(ib.wrapper.reqId2Ticker.values()):
                ib.cancelMktData(tk.contract)
            await asyncio.wait_for(ib.reqCurrentTimeAsync(), 300)
            ib.disconnect()
    t_close = time.perf_counter()
    await ctx.rec.close()
    res.extra["final_flush_ms"] = (time.perf_counter() - t_close) * 1000
    ctx.rec.detach(ctx.conn)
    store.finish_run(ctx.run_id, verdict="PASS", reason="bench", exit_code=0,
                     summary={"target": ctx.target.to_dict()})  # fmt: skip
    store.close()
    res.extra["cleanup"] = f"{c.verdict} {c.reason}"
    res.received_total = counter.count
    res.recorder_total = ctx.rec.recorded_ticks
    res.sent_total = sim.tick_count(client_id)
    res.stored_total = stored_count(store_path, ctx.run_id)
    _wire_figures(ctx, res)
    return res


def _wire_figures(ctx: RunContext, res: StreamResult) -> None:
    """The recording's size and how long deriving its ticks took (worker + close)."""
    wire = ctx.rec.wire
    if wire is None:
        return
    res.extra["wire_bytes"] = wire.path.stat().st_size
    res.extra["derive_s"] = wire.derive_seconds
    wire.path.unlink(missing_ok=True)


def _fresh(path: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


async def harness_replay(port: int, n: int, chunks: list[bytes], client_id: int,
                         store_path: Path, variant: str = "current") -> StreamResult:  # fmt: skip
    """Capacity of (b): the Recorder on a real Connection (health passed, n subscriptions on
    a never_ticks simulator), fed pre-encoded tick frames as fast as it takes them."""
    res = StreamResult(LABELS[variant], n)
    cfg = HarnessConfig(contract=synth_symbol(0), client_id=client_id, port=port,
                        store=store_path, scenario="never_ticks")  # fmt: skip
    store = Store(store_path)
    ctx = RunContext.create(cfg, host="127.0.0.1", port=port, store=store, simulated=True)
    store.start_run(ctx.run_id, target=ctx.target, contract=cfg.contract,
                    phases=[str(p) for p in cfg.phases], config=cfg.redacted())  # fmt: skip
    ctx.rec.attach(ctx.conn)
    ib = ctx.conn.ib
    counter = TickCounter()
    ib.pendingTickersEvent += counter
    h = await health(ctx)
    if not h.ok:
        raise RuntimeError(f"health failed: {h.reason}")
    tickers = [ib.reqMktData(c, "", False, False) for c in synth_contracts(n)]
    ctx.tickers.extend(tickers)
    await asyncio.wait_for(ib.reqCurrentTimeAsync(), 30)  # subscriptions registered
    await feed_measured(ib, chunks, counter, res)
    t_close, p_close = time.perf_counter(), time.process_time()
    # The window counts the time until every byte is in the recording on disk.
    await asyncio.to_thread(ctx.rec.wire.writer.close)
    flush = time.perf_counter() - t_close
    res.window_s += flush
    res.client_cpu_s += time.process_time() - p_close
    res.extra["final_flush_ms"] = flush * 1000
    # Deriving the ticks the worker has not reached yet: post-processing, timed apart.
    t_derive = time.perf_counter()
    await ctx.rec.close()
    res.extra["derive_close_s"] = time.perf_counter() - t_derive
    await cleanup(ctx)
    ctx.rec.detach(ctx.conn)
    store.close()
    res.received_total = counter.count
    res.recorder_total = ctx.rec.recorded_ticks
    res.stored_total = stored_count(store_path, ctx.run_id)
    _wire_figures(ctx, res)
    return res


async def bare_replay(port: int, n: int, chunks: list[bytes], client_id: int) -> StreamResult:
    """Capacity of (a): the counting-only ib_async client fed the same frames."""
    res = StreamResult("bare ib_async", n)
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=10)
    counter = TickCounter()
    ib.pendingTickersEvent += counter
    tickers = [ib.reqMktData(c, "", False, False) for c in synth_contracts(n)]
    await asyncio.wait_for(ib.reqCurrentTimeAsync(), 30)
    await feed_measured(ib, chunks, counter, res)
    res.received_total = counter.count
    for t in tickers:
        ib.cancelMktData(t.contract)
    ib.disconnect()
    return res


def _replay_chunks(port: int, n: int, n_ticks: int) -> list[bytes]:
    """Frames addressed to the reqIds ib_async will use: it numbers requests from the
    nextValidId the simulator announces, identically for every fresh connection, so one
    probe connection tells us the ids."""

    async def probe() -> list[int]:
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=99, timeout=10)
        tickers = [ib.reqMktData(c, "", False, False) for c in synth_contracts(n)]
        ids = req_ids_of(ib, tickers)
        ib.disconnect()
        return ids

    ids = asyncio.run(probe())
    chunks, _ = build_replay(ids, n_ticks)
    return chunks


def _detail(n: int, r: int, res: StreamResult, live: bool) -> str:
    text = (f"  n={n:<3} round {r} {res.label:<22} recv {fmt_rate(res.recv_rate):>10} "
            f"client CPU {res.client_util:4.0%} ({res.cpu_us_per_tick:5.1f} us/tick) "
            f"others {res.other_util:4.0%}")  # fmt: skip
    if live:
        text += f" sent {fmt_rate(res.sent_rate):>10} sim CPU {res.sim_util:4.0%}"
    if res.stored_total is not None:
        text += (f"  recv {res.received_total:,} stored {res.stored_total:,} "
                 f"final flush {res.extra['final_flush_ms']:.1f} ms")  # fmt: skip
    return text


def _rotate(kinds: list[str], r: int) -> list[str]:
    """Round r's order: rotated each round so drift (other load on the box) hits every
    variant at every position."""
    k = r % len(kinds)
    return kinds[k:] + kinds[:k]


def main(argv: list[str] | None = None) -> list[Row]:
    """Run every size, print the table, return the rows."""
    p = base_parser(__doc__.splitlines()[0], seconds=2.0)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per size; the order of the variants rotates (default 3)",
    )
    p.add_argument("--burst", type=int, default=8, help="simulator burst at top rate")
    p.add_argument(
        "--replay-ticks",
        type=int,
        default=600_000,
        help="ticks per replay case (client capacity); 0 skips the replay. 600,000 is "
        "about a second at a bare client's capacity, long against the recording's 0.1 s "
        "flush period whose last flush ends (b)'s window",
    )
    p.add_argument(
        "--cork",
        action="store_true",
        help="run the simulator with the proposed one-write-per-turn patch",
    )
    args = p.parse_args(argv)  # fmt: skip
    section = "1 ingest, corked sim" if args.cork else SECTION
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    kinds = ["a", "current"]
    print(f"recorder overhead: {args.seconds:g}s window, {args.rounds} round(s), "
          f"burst {args.burst}, cork {args.cork}, load {load_average()}")  # fmt: skip
    rows: list[Row] = []
    detail: list[str] = []

    def log(line: str) -> None:
        detail.append(line)
        print(line, flush=True)

    cid = 100
    for n in args.sizes:
        live: dict[str, list[StreamResult]] = {k: [] for k in kinds}
        # One simulator process per size (same seed); the variants alternate on it with
        # fresh client ids, so all see the same simulator, warmed up the same way.
        with SimProcess(tick_interval=0, burst=args.burst, n_synth=n, seed=7,
                        cork=args.cork) as sim:  # fmt: skip
            for r in range(args.rounds):
                for kind in _rotate(kinds, r):
                    cid += 1
                    if kind == "a":
                        res = asyncio.run(bare_client_run(sim, n, args.seconds, cid, WARMUP))
                    else:
                        path = _fresh(OUT_DIR / f"recorder-live-{n}.sqlite")
                        res = asyncio.run(harness_run(sim, n, args.seconds, cid, path, kind))
                        _fresh(path)
                    live[kind].append(res)
                    log(_detail(n, r, res, live=True))
        replay: dict[str, list[StreamResult]] = {k: [] for k in kinds}
        if args.replay_ticks:
            with SimProcess("never_ticks", n_synth=n, seed=7) as sim:
                chunks = _replay_chunks(sim.port, n, args.replay_ticks)
                for r in range(args.rounds):
                    for kind in _rotate(kinds, r):
                        cid += 1
                        if kind == "a":
                            res = asyncio.run(bare_replay(sim.port, n, chunks, cid))
                        else:
                            path = _fresh(OUT_DIR / f"recorder-replay-{n}.sqlite")
                            res = asyncio.run(harness_replay(sim.port, n, chunks, cid, path, kind))
                            _fresh(path)
                        replay[kind].append(res)
                        log("  replay" + _detail(n, r, res, live=False)[1:])
        rows += _rows(n, live, replay, section)
    print_table(rows, "tick ingest and overhead (simulator top rate, separate process)")
    write_json(rows, args.json, {"detail": detail})
    return rows


def _lossless(runs: list[StreamResult], live: bool) -> bool:
    return all(r.received_total == r.stored_total == r.recorder_total
               and (not live or r.sent_total == r.received_total) for r in runs)  # fmt: skip


def _rows(n: int, live: dict[str, list[StreamResult]],
          replay: dict[str, list[StreamResult]], section: str = SECTION) -> list[Row]:  # fmt: skip
    a_runs, b_runs = live["a"], live["current"]
    rows: list[Row] = []
    for kind, runs in live.items():
        share = median([x.received_window / x.sent_window for x in runs])
        rows.append(Row(
            section, f"n={n}: {LABELS[kind]} received",
            fmt_rate(median([x.recv_rate for x in runs])), "", None,
            note=f"{share:.1%} of the ticks the simulator sent in the window; client busy "
                 f"{median([x.client_util for x in runs]):.0%} of a core, "
                 f"{median([x.cpu_us_per_tick for x in runs]):.1f} us CPU per tick",
        ))  # fmt: skip
    ratios = [b.recv_rate / a.recv_rate for a, b in zip(a_runs, b_runs, strict=True)]
    ratio = median(ratios)
    sent = sum(b.sent_total for b in b_runs)
    recv = sum(b.received_total for b in b_runs)
    stored = sum(b.stored_total or 0 for b in b_runs)
    rows += [
        Row(section, f"n={n}: ratio b/a ticks/s (live)", f"{ratio:.3f}", f">= {RATIO_GOAL:.2f}",
            ratio >= RATIO_GOAL, note="per round: " + ", ".join(f"{x:.3f}" for x in ratios)),
        Row(section, f"n={n}: sent / received / stored (b)",
            f"{sent:,} / {recv:,} / {stored:,}", "all equal (0 lost)", _lossless(b_runs, True)),
    ]  # fmt: skip
    if replay["a"]:
        ra, rb = replay["a"], replay["current"]
        cap = [b.recv_rate / a.recv_rate for a, b in zip(ra, rb, strict=True)]
        cpu_ratio = median([a.cpu_us_per_tick for a in ra]) / median(
            [b.cpu_us_per_tick for b in rb]
        )
        rows += [
            Row(section, f"n={n}: capacity (a) / (b), client-bound",
                f"{fmt_rate(median([a.recv_rate for a in ra]))} / "
                f"{fmt_rate(median([b.recv_rate for b in rb]))}", "", None,
                note=f"CPU per tick {median([a.cpu_us_per_tick for a in ra]):.1f} / "
                     f"{median([b.cpu_us_per_tick for b in rb]):.1f} us"),
            Row(section, f"n={n}: capacity ratio b/a (replay)", f"{median(cap):.3f}",
                f">= {RATIO_GOAL:.2f}", median(cap) >= RATIO_GOAL,
                note="per round: " + ", ".join(f"{x:.3f}" for x in cap)
                     + f"; others used {median([x.other_util for x in ra + rb]):.0%} of a core"),
            # One thread does all the work in both, so the CPU cost per tick gives the same
            # ratio without depending on how much CPU other processes left us.
            Row(section, f"n={n}: capacity ratio from CPU/tick",
                f"{cpu_ratio:.3f}",
                f">= {RATIO_GOAL:.2f}", None, note="robust to other load on the machine"),
            Row(section, f"n={n}: replay received = stored (b)",
                f"{sum(b.received_total for b in rb):,} = "
                f"{sum(b.stored_total or 0 for b in rb):,}", "all equal (0 lost)",
                _lossless(rb, False)),
        ]  # fmt: skip
    rows += _wire_rows(n, b_runs + replay.get("current", []), section)
    return rows


def _wire_rows(n: int, runs: list[StreamResult], section: str) -> list[Row]:
    """Recording size per 1,000,000 ticks and derive rate, over every (b) run of a size."""
    runs = [r for r in runs if r.extra.get("wire_bytes") and r.stored_total]
    if not runs:
        return []
    ticks = sum(r.stored_total or 0 for r in runs)
    size = sum(r.extra["wire_bytes"] for r in runs) / ticks * 1_000_000
    derive = sum(r.extra["derive_s"] for r in runs)
    return [
        Row(section, f"n={n}: recording size per 1,000,000 ticks", f"{size / 1e6:.1f} MB", "",
            None, note=f"gzip level 1, both directions, over {ticks:,} ticks in {len(runs)} runs"),
        Row(section, f"n={n}: derive time per 1,000,000 ticks", f"{derive / ticks * 1e6:.2f} s",
            "", None, note=f"ib_async's decoder + SQLite insert, on the derive thread "
                           f"({fmt_rate(ticks / derive)} while it runs)"),
    ]  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
