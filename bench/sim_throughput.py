"""Simulator throughput: ticks/s sent to one ib_async client at the simulator's top rate.

The simulator must sustain at least 20,000 tick messages per second to one client on a
2-core machine, so it can load-test the recorder. It runs in its own process (see
``simproc``) so the client's work does not share the simulator's GIL. Both are measured
over the same window: ticks sent (the simulator's ground truth) and TickData received.
A raw-socket drain client shows the simulator's own ceiling, because it costs almost
nothing per tick; CPU use of each process says which side is the bottleneck.

    uv run python bench/sim_throughput.py [--seconds 3] [--burst 1 8]
"""

from __future__ import annotations

import asyncio
import sys

from common import Row, base_parser, fmt_rate, load_average, print_table, write_json
from simproc import SimProcess
from streaming import StreamResult, bare_client_run, raw_drain_run

GOAL = 20_000
SECTION = "0 sim throughput"


async def _one(kind: str, burst: int, seconds: float, cork: bool = False) -> StreamResult:
    # A fresh simulator per case, same seed: no case inherits another's state.
    with SimProcess(tick_interval=0, burst=burst, n_synth=1, cork=cork) as sim:
        if kind == "raw":
            return await raw_drain_run(sim, 1, seconds, client_id=11)
        return await bare_client_run(sim, 1, seconds, client_id=11)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the cases, print the table, return the rows."""
    p = base_parser(__doc__.splitlines()[0], seconds=3.0)
    p.add_argument(
        "--burst",
        type=int,
        nargs="+",
        default=[1, 8],
        help="quote updates per loop turn at top rate (default: 1 8)",
    )
    p.add_argument(
        "--cork",
        action="store_true",
        help="also measure the proposed one-write-per-loop-turn simulator "
        "(bench/proposals.py: cork_sessions)",
    )
    args = p.parse_args(argv)  # fmt: skip
    print(f"simulator throughput, {args.seconds:g}s per case, load {load_average()}")
    rows: list[Row] = []
    best = 0.0
    for burst in args.burst:
        bare = asyncio.run(_one("bare", burst, args.seconds))
        raw = asyncio.run(_one("raw", burst, args.seconds))
        best = max(best, bare.sent_rate)
        lost = bare.sent_total - bare.received_total
        rows += [
            Row(SECTION, f"burst={burst} sent to ib_async client", fmt_rate(bare.sent_rate),
                f">= {GOAL:,}/s", bare.sent_rate >= GOAL),
            Row(SECTION, f"burst={burst} received by ib_async client",
                fmt_rate(bare.recv_rate), "", None,
                note=f"client CPU {bare.client_util:.0%} of a core, simulator "
                     f"{bare.sim_util:.0%}, other processes {bare.other_util:.0%}; "
                     f"{bare.cpu_us_per_tick:.1f} us CPU/tick in the client; after drain sent "
                     f"{bare.sent_total:,} received {bare.received_total:,} (lost {lost})"),
            Row(SECTION, f"burst={burst} simulator ceiling (raw drain)",
                fmt_rate(raw.sent_rate), "", None,
                note=f"simulator CPU {raw.sim_util:.0%} of a core, other processes "
                     f"{raw.other_util:.0%}; a reader this fast keeps the socket empty, so "
                     "every tick message costs the simulator its own send() syscall"),
        ]  # fmt: skip
        if args.cork:
            cb = asyncio.run(_one("bare", burst, args.seconds, cork=True))
            cr = asyncio.run(_one("raw", burst, args.seconds, cork=True))
            rows += [
                Row(SECTION, f"burst={burst} proposal: corked sim to ib_async",
                    fmt_rate(cb.sent_rate), "", None,
                    note=f"simulator CPU {cb.sim_util:.0%}, client {cb.client_util:.0%} "
                         f"({cb.cpu_us_per_tick:.1f} us/tick), others {cb.other_util:.0%}; "
                         f"lost {cb.sent_total - cb.received_total}"),
                Row(SECTION, f"burst={burst} proposal: corked sim ceiling (raw drain)",
                    fmt_rate(cr.sent_rate), "", None,
                    note=f"simulator CPU {cr.sim_util:.0%}, others {cr.other_util:.0%}"),
            ]  # fmt: skip
    rows.append(Row(SECTION, "best sustained to one ib_async client", fmt_rate(best),
                    f">= {GOAL:,}/s", best >= GOAL))  # fmt: skip
    print_table(rows, "simulator throughput (1 client, 1 contract, top rate)")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
