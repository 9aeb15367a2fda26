"""Section 3: time to verdict for healthy, never_ticks and slow_first_tick.

Measured in the same run, ``--repeat`` times each (medians printed):

* ``harness run --sim``: process start to exit, the simulator embedded (what a user runs);
* ``harness run --port P`` and the hand-written ib_async script (``baseline_check.py``),
  both against the same external simulator process: process start to exit, like for like;
* within the process, connect to verdict: ``run_harness`` in this process (progress
  callbacks time the health phase start, the ``subscribed`` checkpoint and the ticks
  verdict) against the script's own timings.

Goals: healthy, verdict within 1.5 s plus the scenario's first-tick delay; never_ticks,
STALLED no later than 100 ms after the deadline (counted from the subscription, where the
deadline starts).

    uv run python bench/time_to_verdict.py [--repeat 2] [--deadline 5]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from common import (
    BENCH_DIR,
    OUT_DIR,
    VENV_BIN,
    Row,
    base_parser,
    child_env,
    load_average,
    median,
    print_table,
    run_child,
    write_json,
)
from simproc import SimProcess

from harness_lib.config import HarnessConfig
from harness_lib.runner import run_harness
from harness_lib.sim.scenarios import DEFAULT_PARAMS, Scenario, ScenarioParams

SECTION = "3 verdict"
SCENARIOS = ("healthy", "slow_first_tick", "never_ticks")
EXPECTED = {"healthy": "PASS", "slow_first_tick": "PASS", "never_ticks": "STALLED"}
EXIT_VERDICT = {0: "PASS", 1: "FAIL", 2: "STALLED", 3: "REFUSED", 4: "BAD_INPUT"}
HEALTHY_BUDGET = 1.5
STALL_SLACK = 0.1
STARTUP_RATIO = 1.2


def first_tick_delay(scenario: str) -> float:
    """The scenario's default first-tick delay (the goal adds it to the 1.5 s budget)."""
    return DEFAULT_PARAMS.get(Scenario(scenario), ScenarioParams()).first_tick_delay


@dataclass
class Times:
    """Samples of one method on one scenario."""

    wall: list[float] = field(default_factory=list)
    connect_to_verdict: list[float] = field(default_factory=list)
    subscribe_to_verdict: list[float] = field(default_factory=list)
    connect_to_report: list[float] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)


async def in_process(port: int, deadline: float, store: str) -> dict[str, Any]:
    """run_harness in this process against the external simulator, timed by its progress
    callbacks: connect starts at the health phase, the verdict is the ticks phase's end."""
    marks: dict[str, float] = {}

    def progress(kind: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        if kind == "phase_start" and data["phase"] == "health":
            marks.setdefault("connect", now)
        elif kind == "checkpoint" and data["cp"].name == "subscribed":
            marks["subscribed"] = data["cp"].t_mono
        elif kind == "phase_end" and data["phase"] == "ticks":
            marks["verdict"] = now
            marks["verdict_name"] = str(data["result"].verdict)  # type: ignore[assignment]

    cfg = HarnessConfig(port=port, store=store, tick_deadline=deadline,
                        reports_dir=OUT_DIR / "verdict" / "reports")  # fmt: skip
    rep = await run_harness(cfg, on_progress=progress)
    done = time.monotonic()
    return {
        "verdict": str(rep.verdict),
        "connect_to_verdict": marks["verdict"] - marks["connect"],
        "subscribe_to_verdict": marks["verdict"] - marks["subscribed"],
        "connect_to_report": done - marks["connect"],
    }


def _verdict_of(code: int) -> str:
    return EXIT_VERDICT.get(code, f"exit {code}")


def measure(scenario: str, repeat: int, deadline: float) -> dict[str, Times]:
    """Every method on one scenario, interleaved ``repeat`` times."""
    work = OUT_DIR / "verdict"
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / "verdict.sqlite")
    harness = str(VENV_BIN / "harness")
    out = {k: Times() for k in ("cli_sim", "cli_port", "script", "inproc")}
    with SimProcess(scenario) as sim:
        for _ in range(repeat):
            # The CLI writes its report under ./data/reports: run it in a scratch dir.
            r = run_child([harness, "run", "--sim", "--scenario", scenario, "--store", store,
                           "--deadline", str(deadline)], cwd=work)  # fmt: skip
            out["cli_sim"].wall.append(r.wall_s)
            out["cli_sim"].verdicts.append(_verdict_of(r.returncode))
            r = run_child([harness, "run", "--port", str(sim.port), "--store", store,
                           "--deadline", str(deadline)], cwd=work)  # fmt: skip
            out["cli_port"].wall.append(r.wall_s)
            out["cli_port"].verdicts.append(_verdict_of(r.returncode))
            r = run_child([sys.executable, str(BENCH_DIR / "baseline_check.py"), "--port",
                           str(sim.port), "--deadline", str(deadline)], cwd=work)  # fmt: skip
            s = out["script"]
            s.wall.append(r.wall_s)
            s.verdicts.append(_verdict_of(r.returncode))
            try:
                info = json.loads(r.stdout.strip().splitlines()[-1])
                s.connect_to_verdict.append(float(info["connect_to_verdict_s"]))
                s.subscribe_to_verdict.append(float(info["subscribe_to_verdict_s"]))
            except (ValueError, KeyError, IndexError):
                print(f"baseline script output not understood: {r.stdout!r} {r.stderr[-500:]!r}")
            got = asyncio.run(in_process(sim.port, deadline, store))
            h = out["inproc"]
            h.verdicts.append(got["verdict"])
            h.connect_to_verdict.append(got["connect_to_verdict"])
            h.subscribe_to_verdict.append(got["subscribe_to_verdict"])
            h.connect_to_report.append(got["connect_to_report"])
    return out


def import_overhead(warm: bool = True) -> tuple[float, float]:
    """(seconds to start Python and import the CLI's modules, seconds to start Python),
    with the bytecode cache (``warm``) or as this sandbox runs (no .pyc at all)."""
    py = sys.executable
    env = child_env(warm)
    bare = median([run_child([py, "-c", "pass"], env=env).wall_s for _ in range(3)])
    # What `harness run` imports before it connects (the console script is harness_lib.runcli).
    imports = "import harness_lib.runcli, harness_lib.runner, harness_lib.report"
    full = median([run_child([py, "-c", imports], env=env).wall_s for _ in range(3)])
    return full, bare


def main(argv: list[str] | None = None) -> list[Row]:
    """Measure every scenario, print the table, return the rows."""
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=2, help="runs per method and scenario")
    p.add_argument("--deadline", type=float, default=5.0, help="tick deadline (harness default)")
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    args = p.parse_args(argv)
    print(f"time to verdict: {args.repeat} run(s) per method, deadline {args.deadline:g}s, "
          f"load {load_average()}")  # fmt: skip
    rows: list[Row] = []
    for scen in args.scenarios:
        t = measure(scen, args.repeat, args.deadline)
        expect = EXPECTED[scen]
        right = all(v == expect for m in t.values() for v in m.verdicts)
        verdicts = "; ".join(f"{k}: {','.join(m.verdicts)}" for k, m in t.items())
        rows.append(Row(SECTION, f"{scen}: verdicts", expect if right else "MISMATCH",
                        f"all {expect}", right, note=verdicts))  # fmt: skip
        inproc, script = t["inproc"], t["script"]
        c2v = median(inproc.connect_to_verdict)
        if scen == "never_ticks":
            s2v = median(inproc.subscribe_to_verdict)
            over = s2v - args.deadline
            rows.append(
                Row(
                    SECTION,
                    f"{scen}: subscribe -> STALLED - deadline (harness)",
                    f"{over * 1000:+.0f} ms",
                    f"<= +{STALL_SLACK * 1000:.0f} ms",
                    over <= STALL_SLACK,
                    note="per run: "
                    + ", ".join(
                        f"{(x - args.deadline) * 1000:+.0f} ms" for x in inproc.subscribe_to_verdict
                    ),
                )
            )
            script_over = median(script.subscribe_to_verdict) - args.deadline
            rows.append(Row(SECTION, f"{scen}: same, hand-written script",
                            f"{script_over * 1000:+.0f} ms", "", None))  # fmt: skip
        else:
            budget = HEALTHY_BUDGET + first_tick_delay(scen)
            rows.append(Row(SECTION, f"{scen}: connect -> verdict (harness, in process)",
                            f"{c2v:.3f} s", f"<= {budget:.2f} s", c2v <= budget,
                            note=f"connect -> report returned (after cleanup) "
                                 f"{median(inproc.connect_to_report):.3f} s"))  # fmt: skip
            rows.append(Row(SECTION, f"{scen}: connect -> verdict (hand-written script)",
                            f"{median(script.connect_to_verdict):.3f} s", "", None))  # fmt: skip
        rows.append(Row(SECTION, f"{scen}: harness/script connect -> verdict",
                        f"{c2v / median(script.connect_to_verdict):.3f}x", "", None))  # fmt: skip
        wall_sim = median(t["cli_sim"].wall)
        if scen == "never_ticks":
            rows.append(Row(SECTION, f"{scen}: `harness run --sim` start -> exit",
                            f"{wall_sim:.3f} s", "", None,
                            note=f"{wall_sim - args.deadline:.3f} s beyond the deadline: "
                                 "interpreter start, imports, connect, cleanup, report",
                            ))  # fmt: skip
        else:
            budget = HEALTHY_BUDGET + first_tick_delay(scen)
            rows.append(Row(SECTION, f"{scen}: `harness run --sim` start -> exit",
                            f"{wall_sim:.3f} s", f"<= {budget:.2f} s", wall_sim <= budget,
                            ))  # fmt: skip
        rows.append(Row(SECTION, f"{scen}: process start -> exit, harness --port / script",
                        f"{median(t['cli_port'].wall):.3f} s / {median(script.wall):.3f} s", "",
                        None))  # fmt: skip
        if scen == "healthy":
            # Issue 13's start-up goal: the whole process, like for like, within 1.2x.
            ratio = median(t["cli_port"].wall) / median(script.wall)
            rows.append(Row(SECTION, f"{scen}: start -> exit ratio, harness --port / script",
                            f"{ratio:.2f}x", f"<= {STARTUP_RATIO:.1f}x",
                            ratio <= STARTUP_RATIO))  # fmt: skip
    full, bare = import_overhead()
    rows.append(
        Row(
            SECTION,
            "python start + CLI imports / bare python",
            f"{full:.3f} s / {bare:.3f} s",
            "",
            None,
            note="import cost every `harness run` pays before it connects (with .pyc)",
        )
    )
    cold, _ = import_overhead(warm=False)
    r = run_child(
        [
            str(VENV_BIN / "harness"),
            "run",
            "--sim",
            "--store",
            str(OUT_DIR / "verdict" / "verdict.sqlite"),
        ],
        cwd=OUT_DIR / "verdict",
        env=child_env(False),
    )
    rows.append(Row(SECTION, "same without .pyc (this sandbox's default)",
                    f"imports {cold:.3f} s; healthy `harness run --sim` {r.wall_s:.3f} s", "",
                    None, note="PYTHONDONTWRITEBYTECODE=1 and a venv without .pyc: every "
                    "process compiles its imports from source"))  # fmt: skip
    print_table(rows, "time to verdict")
    write_json(rows, args.json)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
