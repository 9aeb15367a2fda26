"""Section 4: history scale, one year of daily runs.

Generates (``gen_history.py``) a store with 365 runs of about 10,000 ticks each plus
orders, executions and commissions, then times, each as a child process with its peak
memory (``os.wait4``):

* ``harness runs --store PATH`` (and ``--last 1000``, the whole year);
* the post-mortem notebook run as a script,
  ``python notebooks/postmortem.py -- --store PATH --run ID``;
* the HTML export, ``marimo export html notebooks/postmortem.py -o OUT -- --store PATH
  --run ID``, whose embedded session is checked for cell errors (marimo exits 0 even
  when a chart fails), and ``harness report`` when it exists;
* in a child process too: ``Store.runs()``, ``Store.costs()``, the ticks of one run and
  of the 20 runs a history view loads, and every chart builder over them, each chart
  checked to validate (``to_dict``) and to carry at most ``charts.MAX_ROWS`` data rows.

Commands that do not exist yet print "n/a (not built yet)".

    uv run python bench/history_scale.py [--reuse] [--runs 365] [--ticks 10000]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH_DIR,
    OUT_DIR,
    ROOT,
    VENV_BIN,
    Row,
    base_parser,
    command_exists,
    load_average,
    print_table,
    run_child,
    write_json,
)

SECTION = "4 history"
POSTMORTEM_GOAL_S = 5.0
POSTMORTEM_GOAL_MB = 1024.0
NOTEBOOK = ROOT / "notebooks" / "postmortem.py"
NA = "n/a (not built yet)"


def _spec_rows(spec: Any) -> int:
    """Inline data rows in a Vega-Lite spec: top-level datasets plus any inline values."""
    n = 0
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "datasets" and isinstance(value, dict):
                n += sum(len(v) for v in value.values() if isinstance(v, list))
            elif key == "values" and isinstance(value, list):
                n += len(value)
            else:
                n += _spec_rows(value)
    elif isinstance(spec, list):
        n += sum(_spec_rows(v) for v in spec)
    return n


def inproc(path: Path) -> dict[str, Any]:
    """The library calls a post-mortem makes, timed, with every chart checked."""
    from harness_lib import charts
    from harness_lib.store import Store

    out: dict[str, Any] = {"timings": {}, "charts": {}}
    t = out["timings"]

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        t[name] = time.perf_counter() - t0
        return value

    store = timed("Store open (read-only)", Store, path, readonly=True)
    runs = timed("Store.runs()", store.runs)
    costs = timed("Store.costs()", store.costs)

    passed = runs[runs["verdict"] == "PASS"]
    run_id = str(passed["run_id"].iloc[0])
    out["run_id"] = run_id
    out["runs"] = len(runs)
    ticks = timed("Store.ticks(one run)", store.ticks, run_id)
    out["ticks_one_run"] = len(ticks)
    ids = [str(r) for r in runs["run_id"].head(20)]
    many = timed(
        "Store.ticks(20 runs)",
        lambda: __import__("pandas").concat([store.ticks(r) for r in ids], ignore_index=True),
    )
    out["ticks_20_runs"] = len(many)
    cps = timed("Store.checkpoints(one run)", store.checkpoints, run_id)
    sub = cps[cps["name"] == "subscribed"]
    t0 = float(sub["t_mono"].iloc[0]) if len(sub) else None
    builders = {
        "verdict_history (365 runs)": lambda: charts.verdict_history_chart(runs),
        "first_tick_latency (365 runs)": lambda: charts.first_tick_latency_chart(runs),
        "cost (year of trades)": lambda: charts.cost_chart(costs),
        "interarrival (20 runs)": lambda: charts.interarrival_chart(many),
        "interarrival_ecdf (20 runs)": lambda: charts.interarrival_ecdf_chart(many),
        "price_spread (one run)": lambda: charts.price_spread_chart(ticks),
        "time_to_first_value (one run)": lambda: charts.time_to_first_value_chart(ticks, t0),
        "checkpoint_timeline (one run)": lambda: charts.checkpoint_timeline_chart(cps),
    }
    for name, build in builders.items():
        t_start = time.perf_counter()
        try:
            spec = build().to_dict()  # validates against the Vega-Lite schema
            rows = _spec_rows(spec)
            ok, err = rows <= charts.MAX_ROWS, ""
        except Exception as exc:  # report, do not stop: every chart gets a line
            rows, ok, err = -1, False, f"{type(exc).__name__}: {exc}"[:200]
        out["charts"][name] = {"seconds": time.perf_counter() - t_start, "rows": rows,
                               "ok": ok, "error": err}  # fmt: skip
    store.close()
    return out


def _rows_inproc(res: dict[str, Any], rss: float, wall: float) -> list[Row]:
    from harness_lib.charts import MAX_ROWS

    rows = [
        Row(SECTION, f"in-process: {k}", f"{v:.3f} s", "", None) for k, v in res["timings"].items()
    ]
    rows.append(Row(SECTION, "in-process: rows loaded", f"{res['runs']} runs, "
                    f"{res['ticks_one_run']:,} ticks (one run), {res['ticks_20_runs']:,} "
                    "(20 runs)", "", None))  # fmt: skip
    all_ok = True
    for name, c in res["charts"].items():
        all_ok &= c["ok"]
        value = f"{c['rows']:,} rows, {c['seconds']:.3f} s" if c["rows"] >= 0 else "error"
        rows.append(Row(SECTION, f"chart {name}", value, f"<= {MAX_ROWS:,} rows, valid",
                        c["ok"], note=c["error"]))  # fmt: skip
    rows.append(Row(SECTION, "in-process: every chart renders", "yes" if all_ok else "no",
                    "all", all_ok))  # fmt: skip
    rows.append(Row(SECTION, "in-process: queries + charts, wall / peak RSS",
                    f"{wall:.2f} s / {rss:.0f} MB", "", None,
                    note="a child process: interpreter start and imports included"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    """Generate or reuse the store, time everything, print the table, return the rows."""
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=OUT_DIR / "history.sqlite")
    p.add_argument("--reuse", action="store_true", help="reuse an existing generated store")
    p.add_argument("--runs", type=int, default=365)
    p.add_argument("--ticks", type=int, default=10_000)
    p.add_argument("--inproc", action="store_true", help=argparse_hidden())
    args = p.parse_args(argv)
    if args.inproc:
        print(json.dumps(inproc(args.store)))
        return []
    print(f"history scale: {args.runs} runs x ~{args.ticks:,} ticks, load {load_average()}")
    rows: list[Row] = []
    py = sys.executable
    if not (args.reuse and args.store.exists()):
        r = run_child([py, str(BENCH_DIR / "gen_history.py"), "--store", str(args.store),
                       "--runs", str(args.runs), "--ticks", str(args.ticks)])  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"generator failed: {r.stderr[-2000:]}")
        print(r.stdout.strip())
        rows.append(Row(SECTION, "generate the store", f"{r.wall_s:.1f} s", "", None,
                        note=r.stdout.strip()))  # fmt: skip
    size_mb = sum(Path(f"{args.store}{s}").stat().st_size for s in ("", "-wal")
                  if Path(f"{args.store}{s}").exists()) / 1e6  # fmt: skip
    rows.append(Row(SECTION, "store size", f"{size_mb:.0f} MB", "", None))

    r = run_child([py, str(Path(__file__).resolve()), "--inproc", "--store", str(args.store)])
    if r.returncode != 0:
        raise RuntimeError(f"in-process part failed: {r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    run_id = res["run_id"]
    rows += _rows_inproc(res, r.max_rss_mb, r.wall_s)

    harness = str(VENV_BIN / "harness")
    if command_exists([harness, "runs", "--help"]):
        for extra in ([], ["--last", "1000"]):
            r = run_child([harness, "runs", "--store", str(args.store), *extra])
            label = "`harness runs`" + (" --last 1000" if extra else " (default 20)")
            rows.append(Row(SECTION, label, f"{r.wall_s:.2f} s, {r.max_rss_mb:.0f} MB peak",
                            "exit 0", r.returncode == 0,
                            note=f"{len(r.stdout.splitlines())} lines printed"))  # fmt: skip
    else:
        rows.append(Row(SECTION, "`harness runs`", NA, "", None))

    if NOTEBOOK.exists():
        r = run_child([py, str(NOTEBOOK), "--", "--store", str(args.store), "--run", run_id])
        ok = r.returncode == 0 and r.wall_s < POSTMORTEM_GOAL_S
        rows.append(Row(SECTION, "post-mortem as a script: wall", f"{r.wall_s:.2f} s",
                        f"< {POSTMORTEM_GOAL_S:g} s", ok,
                        note=f"exit {r.returncode} (the run's code; PASS run chosen); "
                             f"{_tail(r.stdout + r.stderr)}"))  # fmt: skip
        rows.append(Row(SECTION, "post-mortem as a script: peak RSS", f"{r.max_rss_mb:.0f} MB",
                        f"< {POSTMORTEM_GOAL_MB:g} MB", r.max_rss_mb < POSTMORTEM_GOAL_MB,
                        ))  # fmt: skip
        rows += _export_rows(args.store, run_id)
    else:
        rows.append(Row(SECTION, "post-mortem as a script", NA, f"< {POSTMORTEM_GOAL_S:g} s",
                        None))  # fmt: skip
        rows.append(Row(SECTION, "HTML export", NA, "", None))
    print_table(rows, "history scale (one year of daily runs)")
    write_json(rows, args.json)
    return rows


def _tail(text: str, n: int = 160) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1][:n] if lines else "no output").replace("|", "/")


def _export_rows(store: Path, run_id: str) -> list[Row]:
    """Time the marimo export (and `harness report`), then check the page for errors."""
    rows: list[Row] = []
    out = OUT_DIR / "postmortem.html"
    out.unlink(missing_ok=True)
    marimo = str(VENV_BIN / "marimo")
    r = run_child([marimo, "export", "html", str(NOTEBOOK), "-o", str(out), "-f", "--",
                   "--store", str(store), "--run", run_id])  # fmt: skip
    rows.append(Row(SECTION, "HTML export (marimo export html)",
                    f"{r.wall_s:.2f} s, {r.max_rss_mb:.0f} MB peak", "", None,
                    note=f"exit {r.returncode}; {_tail(r.stderr)}"))  # fmt: skip
    rows.append(_page_row("HTML export: every cell and chart renders", out))
    harness = str(VENV_BIN / "harness")
    if command_exists([harness, "report", "--help"]):
        out2 = OUT_DIR / "report.html"
        out2.unlink(missing_ok=True)
        r = run_child([harness, "report", "--run", run_id, "-o", str(out2), "--store",
                       str(store)])  # fmt: skip
        rows.append(Row(SECTION, "`harness report` (export + checks)",
                        f"{r.wall_s:.2f} s, {r.max_rss_mb:.0f} MB peak", "exit 0",
                        r.returncode == 0, note=_tail(r.stdout + r.stderr)))  # fmt: skip
    return rows


def _page_row(label: str, page: Path) -> Row:
    if not page.exists():
        return Row(SECTION, label, "no page written", "no cell errors", False)
    text = page.read_text(encoding="utf-8", errors="replace")
    charts = text.count("vnd.vegalite")
    try:
        from harness_lib.postmortem import session_errors

        problems = session_errors(text)
    except ImportError:
        return Row(SECTION, label, f"{page.stat().st_size / 1e6:.1f} MB page", "", None,
                   note="harness_lib.postmortem.session_errors not available to check")  # fmt: skip
    except Exception as exc:
        return Row(SECTION, label, "unreadable session", "no cell errors", False, note=str(exc))
    value = (f"{len(problems)} errors, ~{charts} chart outputs, "
             f"{page.stat().st_size / 1e6:.1f} MB page")  # fmt: skip
    return Row(SECTION, label, value, "no cell errors", not problems,
               note="; ".join(problems[:3]))  # fmt: skip


def argparse_hidden() -> str:
    """Help text of the internal --inproc flag (argparse.SUPPRESS hides it)."""
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main(sys.argv[1:])
