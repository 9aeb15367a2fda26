"""Run every benchmark and print every figure with its goal and a pass/short mark.

Each benchmark runs as its own process (a clean interpreter, so one benchmark's memory
and threads never colour the next), prints its detailed table as it goes, and leaves its
rows as JSON in ``bench/out/results``; the summary at the end repeats every figure.

    uv run python bench/run_all.py [--seconds 2] [--proposals] [--markdown out.md]

Order: simulator throughput (foundation), 1 ingest and overhead, 2 latency accuracy,
3 time to verdict, 4 history scale.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import (
    BENCH_DIR,
    OUT_DIR,
    ROOT,
    Row,
    machine,
    markdown_table,
    print_table,
    read_json,
)
from streaming import system_busy_seconds

RESULTS = OUT_DIR / "results"


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to ``max_wait`` s) until other processes use under ``threshold`` of a core
    over one second: this 2-core box is shared, and a concurrent test suite would show up
    as noise in every figure. Returns the load seen last (cores)."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = system_busy_seconds()
        time.sleep(1.0)
        busy = system_busy_seconds() - b0
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"  (machine busy: {busy:.2f} cores in use by others; waiting)", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks in order; print the summary; return 0."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="window per case for the streaming benchmarks (their defaults if unset)",
    )
    p.add_argument(
        "--proposals", action="store_true", help="also measure the prototypes in bench/proposals.py"
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only these (sim_throughput recorder_overhead latency_accuracy "
        "time_to_verdict history_scale)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each benchmark wait up to this many seconds for the machine to be idle",
    )
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="also write the summary as Markdown (for RESULTS.md)",
    )
    args = p.parse_args(argv)  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    secs = ["--seconds", str(args.seconds)] if args.seconds else []
    plan: list[tuple[str, list[str]]] = [
        ("sim_throughput", secs + (["--cork"] if args.proposals else [])),
        ("recorder_overhead", secs),
        # With the proposals: the same live test against the corked simulator, whose ticks
        # arrive batched as from a real gateway, so the client (not the simulator) limits.
        *(
            [
                (
                    "recorder_overhead_corked",
                    [*secs, "--cork", "--rounds", "2", "--replay-ticks", "0"],
                )
            ]
            if args.proposals
            else []
        ),
        ("latency_accuracy", secs),
        ("time_to_verdict", []),
        ("history_scale", []),
    ]
    rows: list[Row] = []
    failed: list[str] = []
    t_all = time.perf_counter()
    for name, extra in plan:
        if args.only and name not in args.only:
            continue
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        out = RESULTS / f"{name}.json"
        out.unlink(missing_ok=True)
        print(f"\n##### {name} #####", flush=True)
        t0 = time.perf_counter()
        script = name.removesuffix("_corked")
        code = subprocess.call([sys.executable, str(BENCH_DIR / f"{script}.py"), "--json",
                                str(out), *extra], cwd=ROOT)  # fmt: skip
        print(f"({name}: {time.perf_counter() - t0:.0f} s, exit {code})", flush=True)
        if code != 0 or not out.exists():
            failed.append(name)
            rows.append(Row(name, "benchmark", f"crashed (exit {code})", "runs", False))
            continue
        rows += read_json(out)
    print("\n" + "=" * 100)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"total {time.perf_counter() - t_all:.0f} s")
    print_table(rows, "SUMMARY: every figure, its goal and mark", sections=True)
    short = [r for r in rows if r.ok is False]
    print(f"\n{len([r for r in rows if r.ok])} pass, {len(short)} short, "
          f"{len([r for r in rows if r.ok is None])} informational")  # fmt: skip
    for r in short:
        print(f"  SHORT: [{r.section}] {r.figure}: {r.value} (goal {r.goal})")
    if args.markdown:
        head = "\n".join(f"- **{k}**: {v}" for k, v in info.items())
        args.markdown.write_text(head + "\n\n" + markdown_table(rows) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
