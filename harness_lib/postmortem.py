"""Post-mortems of stored runs: the queries behind ``notebooks/postmortem.py`` and
``notebooks/round_trip.py``, and the self-contained HTML export (``harness report``).

Everything here reads the store read-only (a notebook may be open while a run records)
and returns plain pandas frames that :mod:`harness_lib.charts` draws. The notebooks only
wire these to widgets, so what a post-mortem says is tested here, once.

:func:`export_html` runs ``marimo export html`` on the post-mortem notebook in a
subprocess and then reads the exported page's embedded session: ``marimo export`` exits 0
when a chart fails to render, so its exit code alone cannot be trusted.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from harness_lib.models import Verdict
from harness_lib.store import Store, StoreError

__all__ = [
    "NOTEBOOK",
    "PostmortemError",
    "cost_breakdown",
    "cost_totals",
    "export_html",
    "failed_stack_checks",
    "filter_runs",
    "lifecycle_steps",
    "load_runs",
    "open_store",
    "order_lifecycle",
    "run_exit_code",
    "run_findings",
    "run_ticks",
    "session_errors",
    "stack_check_table",
    "subscribed_at",
]

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "postmortem.py"
"""The post-mortem notebook (in the source checkout, next to the package)."""

EXPORT_TIMEOUT = 300.0
"""Seconds an HTML export may take before it is killed (it runs every cell once)."""

MAX_TICK_RUNS = 20
"""Most runs whose ticks a history view loads for inter-arrival distributions."""

_TRACEBACK_MIME = "application/vnd.marimo+traceback"
_ERROR_MIMES = ("application/vnd.marimo+error", _TRACEBACK_MIME)
_SESSION_KEY = re.compile(r'"session"\s*:\s*')


class PostmortemError(Exception):
    """A post-mortem could not be produced. ``str()`` is one line (problem and where)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# ----------------------------------------------------------------------------- reading


def open_store(path: str | Path) -> tuple[Store | None, str]:
    """Open a store read-only; on failure return (None, one-line reason) instead of raising,
    so a notebook can say "no runs recorded yet at ..." rather than show a traceback."""
    try:
        return Store(path, readonly=True), ""
    except StoreError as exc:
        return None, str(exc)


_RUN_COLUMNS = (
    "run_id", "started_at", "finished_at", "status", "verdict", "reason", "exit_code",
    "simulated", "scenario", "target_label", "contract", "first_bid_s", "first_ask_s",
    "total_cost",
)  # fmt: skip


def load_runs(store: Store | None) -> pd.DataFrame:
    """The run history (newest first), or an empty frame with the same columns when there
    is no store, so filters and charts need no special case."""
    if store is not None:
        return store.runs()
    frame = pd.DataFrame(columns=list(_RUN_COLUMNS))
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame


def filter_runs(
    runs: pd.DataFrame,
    *,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
    targets: Iterable[str] | None = None,
    contracts: Iterable[str] | None = None,
    verdicts: Iterable[str] | None = None,
) -> pd.DataFrame:
    """The runs started within [start, end] (dates are whole UTC days, inclusive) whose
    target label, contract and verdict are among the given ones (None or empty: any)."""
    if runs.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    started = pd.to_datetime(runs["started_at"], utc=True)
    if start is not None:
        keep &= started >= _utc_ts(start)
    if end is not None:
        end_ts = _utc_ts(end)
        if not isinstance(end, datetime):
            end_ts += pd.Timedelta(days=1)  # a date means "through the end of that day"
            keep &= started < end_ts
        else:
            keep &= started <= end_ts
    for column, wanted in (("target_label", targets), ("contract", contracts)):
        values = [str(v) for v in wanted or []]
        if values:
            keep &= runs[column].astype(str).isin(values)
    wanted_verdicts = [str(v).upper() for v in verdicts or []]
    if wanted_verdicts:
        keep &= runs["verdict"].fillna("").astype(str).str.upper().isin(wanted_verdicts)
    return runs[keep]


def _utc_ts(value: date | datetime) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def run_ticks(store: Store, run_ids: Iterable[str], max_runs: int = MAX_TICK_RUNS) -> pd.DataFrame:
    """The ticks of up to ``max_runs`` runs, concatenated (charts keep runs apart by run_id)."""
    frames = [store.ticks(rid) for rid in list(run_ids)[:max_runs]]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return store.ticks("")
    return pd.concat(frames, ignore_index=True)


def subscribed_at(checkpoints: pd.DataFrame) -> float | None:
    """The ``subscribed`` checkpoint's t_mono: t0 for time-to-first-value charts."""
    if checkpoints.empty or "name" not in checkpoints.columns:
        return None
    hit = checkpoints[checkpoints["name"] == "subscribed"]
    return None if hit.empty else float(hit["t_mono"].iloc[0])


# ------------------------------------------------------------------------ round trips

# Which lane of the lifecycle timeline each round-trip checkpoint goes to.
_LANES = (("entry_", "entry"), ("exit_", "exit"), ("flatten_", "cleanup"))


def order_lifecycle(store: Store, run_id: str) -> pd.DataFrame:
    """The order lifecycle of a run's round trip, one row per step, in time order.

    Steps are the round-trip checkpoints (entry submitted → filled → commission, exit
    the same, flat), each execution as the gateway reported it, cleanup's checkpoints,
    and the stack's moments: each passed stack check (``<endpoint>.<check>``) at the
    moment the user's stack showed it, so the stack lane sits beside the fills.
    Columns: run_id, phase (the timeline lane: round_trip, entry, exit, stack, cleanup),
    name, t_mono, t_wall, detail; :func:`charts.checkpoint_timeline_chart` draws it.
    """
    cps = store.checkpoints(run_id)
    cps = cps[cps["phase"].isin(["round_trip", "stack", "cleanup"])].copy()
    lanes = []
    for phase, name in zip(cps["phase"], cps["name"], strict=True):
        lane = next((lane for prefix, lane in _LANES if str(name).startswith(prefix)), phase)
        lanes.append(lane)
    cps["phase"] = lanes
    trades = store.trades(run_id)
    execs = pd.DataFrame(
        {
            "run_id": trades["run_id"],
            "phase": trades["leg"].fillna("round_trip").replace({"flatten": "cleanup"}),
            "name": trades["leg"].fillna("order").astype(str) + "_execution",
            "t_mono": pd.to_numeric(trades["t_mono"]).astype(float),
            "t_wall": trades["t_wall"],
            "detail": [
                f"{side} {shares:g} @ {price:g} (execId {eid})"
                for side, shares, price, eid in zip(
                    trades["side"], trades["shares"], trades["price"], trades["exec_id"],
                    strict=True,
                )
            ],
        }
    )  # fmt: skip
    frames = [f for f in (cps, execs) if not f.empty]
    if not frames:
        return cps.reset_index(drop=True)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["t_mono", "t_wall"], kind="stable").reset_index(drop=True)


def lifecycle_steps(lifecycle: pd.DataFrame) -> pd.DataFrame:
    """The lifecycle as a readable table: step, lane, ms since the first step, UTC time,
    detail."""
    if lifecycle.empty:
        return pd.DataFrame(columns=["step", "lane", "ms", "at (UTC)", "detail"])
    t = pd.to_numeric(lifecycle["t_mono"]).astype(float)
    return pd.DataFrame(
        {
            "step": lifecycle["name"],
            "lane": lifecycle["phase"],
            "ms": ((t - t.min()) * 1000).round(1),
            "at (UTC)": pd.to_datetime(lifecycle["t_wall"], utc=True).dt.strftime("%H:%M:%S.%f"),
            "detail": lifecycle["detail"],
        }
    )


_STACK_TABLE = ["check", "verdict", "latency (ms)", "shown at (UTC)", "reason"]


def stack_check_table(checks: pd.DataFrame) -> pd.DataFrame:
    """Stack checks (``Store.stack_checks``) as a readable table: check
    (``endpoint.name``), verdict, broker→stack latency in ms, when the stack showed it,
    and the reason. Empty (with the columns) when the run watched no stack."""
    if checks.empty:
        return pd.DataFrame(columns=_STACK_TABLE)
    latency = pd.to_numeric(checks["latency_s"], errors="coerce")
    at = pd.to_datetime(checks["at_wall"], utc=True)
    return pd.DataFrame(
        {
            "check": checks["endpoint"].astype(str) + "." + checks["name"].astype(str),
            "verdict": checks["verdict"],
            "latency (ms)": (latency * 1000).round(1),
            "shown at (UTC)": at.dt.strftime("%H:%M:%S.%f").str[:-3],
            "reason": checks["reason"],
        }
    ).reset_index(drop=True)


_FAILED_COLUMNS = ["run_id", "check", "verdict", "reason", "expected", "observed"]


def failed_stack_checks(checks: pd.DataFrame, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """The stack checks that did not pass (FAIL, STALLED...), newest run first, of the runs
    in ``run_ids`` (None: all): run_id, check (``endpoint.name``), verdict, reason, and
    what was expected and observed."""
    if checks.empty:
        return pd.DataFrame(columns=_FAILED_COLUMNS)
    bad = checks[~checks["verdict"].isin([str(Verdict.PASS), str(Verdict.SKIPPED)])]
    if run_ids is not None:
        bad = bad[bad["run_id"].isin(list(run_ids))]
    if bad.empty:
        return pd.DataFrame(columns=_FAILED_COLUMNS)
    out = bad.assign(check=bad["endpoint"].astype(str) + "." + bad["name"].astype(str))
    return out.sort_values("run_id", ascending=False, kind="stable")[_FAILED_COLUMNS].reset_index(
        drop=True
    )


_DRILL_TABLE = ["run_id", "drill", "reaction", "endpoint", "verdict", "latency (ms)",
                "deadline (ms)", "fault at (UTC)", "detail"]  # fmt: skip


def drill_table(results: pd.DataFrame) -> pd.DataFrame:
    """Drill results (``Store.drill_results``) as fault x reaction x latency x verdict, newest
    drill run first, failures first within a run. Empty (with the columns) when no drill ran."""
    if results.empty:
        return pd.DataFrame(columns=_DRILL_TABLE)
    latency = pd.to_numeric(results["latency_s"], errors="coerce")
    deadline = pd.to_numeric(results["deadline_s"], errors="coerce")
    fault = pd.to_datetime(results["t_fault"], utc=True)
    out = pd.DataFrame(
        {
            "run_id": results["run_id"],
            "drill": results["drill"],
            "reaction": results["reaction"],
            "endpoint": results["endpoint"],
            "verdict": results["verdict"],
            "latency (ms)": (latency * 1000).round(1),
            "deadline (ms)": (deadline * 1000).round(0),
            "fault at (UTC)": fault.dt.strftime("%Y-%m-%d %H:%M:%S"),
            "detail": results["detail"],
        }
    )
    rank = out["verdict"].map({str(Verdict.FAIL): 0, str(Verdict.STALLED): 1}).fillna(2)
    out = out.assign(_rank=rank).sort_values(
        ["run_id", "_rank"], ascending=[False, True], kind="stable"
    )
    return out.drop(columns="_rank").reset_index(drop=True)


def cost_breakdown(store: Store, run_id: str) -> pd.DataFrame:
    """What a run's test trade cost: commission, slippage against the decision mid, total,
    and the realized P&L of the flat round trip (for reconciliation, not a strategy result).

    Columns: item, amount, currency, note. Empty when the run placed no harness order.
    """
    ledger = store.costs()
    row = ledger[ledger["run_id"] == run_id]
    cols = ["item", "amount", "currency", "note"]
    if row.empty:
        return pd.DataFrame(columns=cols)
    r = row.iloc[0]
    cur = r["currency"]
    slip_note = "vs the mid at decision time" + (
        "" if bool(r["slippage_known"]) else " (some executions had no mid; counted as 0)"
    )
    comm_note = "both legs" + ("" if bool(r["commission_known"]) else " (a report is missing)")
    return pd.DataFrame(
        [
            ("commission", float(r["commission"]), cur, comm_note),
            ("slippage", float(r["slippage"]), cur, slip_note),
            ("total cost", float(r["total_cost"]), cur, "commission + slippage"),
            ("realized P&L", float(r["realized_pnl"]), cur, "flat round trip, after commission"),
        ],
        columns=cols,
    ).round({"amount": 6})


def cost_totals(costs: pd.DataFrame) -> pd.DataFrame:
    """Test-trade costs summed per currency: trades, commission, slippage, total_cost,
    realized_pnl. Subtract these from P&L to keep test trades out of strategy results."""
    cols = ["currency", "trades", "commission", "slippage", "total_cost", "realized_pnl"]
    if costs.empty:
        return pd.DataFrame(columns=cols)
    g = costs.assign(currency=costs["currency"].fillna("?")).groupby("currency", sort=True)
    out = g.agg(
        trades=("run_id", "size"),
        commission=("commission", "sum"),
        slippage=("slippage", "sum"),
        total_cost=("total_cost", "sum"),
        realized_pnl=("realized_pnl", "sum"),
    ).reset_index()
    # Sums of float cents (0.01 + 0.02 ...) print as 0.0299999; money reads to 1e-6.
    return out[cols].round(6)


def run_findings(store: Store, run_id: str) -> str:
    """Plain-text findings of one stored run for script mode: verdict, target, phases,
    first bid/ask, cost and the IB errors and warnings it saw."""
    run = store.run(run_id)
    if run is None:
        raise PostmortemError(f"no run {run_id!r} in {store.path}")
    lines = [
        f"run:      {run_id}",
        f"verdict:  {run['verdict'] or run['status']} — {run['reason'] or ''}",
        f"target:   {run['target']['label']}",
        f"contract: {run['contract']}",
        f"started:  {run['started_at']:%Y-%m-%d %H:%M:%S} UTC",
    ]
    for p in store.phases(run_id).itertuples():
        lines.append(f"  {p.phase:<10} {p.verdict:<9} {p.reason}")
    for key, label in (("first_bid_s", "first bid"), ("first_ask_s", "first ask")):
        value = run.get(key)
        if value is not None and math.isfinite(float(value)):
            lines.append(f"{label}: {float(value) * 1000:.0f} ms")
    for c in stack_check_table(store.stack_checks(run_id)).itertuples():
        lat = "" if pd.isna(c[3]) else f" {c[3]:g} ms"
        lines.append(f"  stack check {c.check} {c.verdict}{lat}: {c.reason}")
    costs = cost_breakdown(store, run_id)
    for c in costs.itertuples():
        lines.append(f"{c.item}: {c.amount:.4f} {c.currency}")
    events = store.events(run_id)
    bad = events[events["kind"].isin(["error", "warning"])]
    for e in bad.itertuples():
        code = "" if pd.isna(e.code) else f"IB {e.code}: "
        lines.append(f"  {e.kind}: {code}{e.message}")
    return "\n".join(lines)


def run_exit_code(run: dict[str, Any] | None) -> int:
    """The exit code a stored run reports (4 when it is unknown or never concluded)."""
    if run is None:
        return Verdict.BAD_INPUT.exit_code
    code = run.get("exit_code")
    if code is not None and not pd.isna(code):
        return int(code)
    try:
        return Verdict(str(run.get("verdict") or "")).exit_code
    except ValueError:
        # Still 'running', or aborted before a verdict: nothing concluded passes.
        return Verdict.ABORTED.exit_code


# ---------------------------------------------------------------------------- export


def session_errors(page: str) -> list[str]:
    """Cell errors and tracebacks recorded in an exported marimo HTML page.

    The export embeds its session as JSON (``"session": {"cells": [...]}``): a cell that
    raised has an output of type ``error``; a formatter failure (e.g. a chart that cannot
    be rendered) only leaves a traceback in the cell's console. Returns one line per
    problem, ``cell <id>: <what>``; raises :class:`PostmortemError` when the page has no
    session to check.
    """
    m = _SESSION_KEY.search(page)
    if m is None:
        raise PostmortemError("the exported page has no embedded marimo session to check")
    try:
        session, _ = json.JSONDecoder().raw_decode(page, m.end())
    except json.JSONDecodeError as exc:
        raise PostmortemError(f"the exported page's session is not valid JSON: {exc}") from None
    problems: list[str] = []
    for cell in session.get("cells", []):
        cid = cell.get("id", "?")
        for out in cell.get("outputs", []):
            if out.get("type") == "error":
                what = out.get("evalue") or out.get("ename") or "error"
                problems.append(f"cell {cid}: {what}")
            data = out.get("data")
            if isinstance(data, dict) and any(k in data for k in _ERROR_MIMES):
                problems.append(f"cell {cid}: error output")
        for entry in cell.get("console", []):
            if entry.get("mimetype") == _TRACEBACK_MIME:
                problems.append(f"cell {cid}: traceback: {_last_line(entry.get('text', ''))}")
    return problems


def _last_line(html_text: str) -> str:
    text = re.sub(r"<[^>]+>", "", html_text)
    text = text.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "traceback"


def export_html(
    run_id: str | None,
    out: Path,
    store: Path,
    *,
    notebook: Path = NOTEBOOK,
    include_code: bool = False,
    timeout: float = EXPORT_TIMEOUT,
) -> Path:
    """Export a self-contained HTML post-mortem of ``run_id`` (None: the latest run).

    Runs ``marimo export html notebooks/postmortem.py -- --run ID --store PATH`` in a
    subprocess, then checks the page's embedded session for cell errors and tracebacks.
    Returns ``out``; raises :class:`PostmortemError` with a one-line message when the
    export failed or any cell errored (the page is still written, for inspection).
    """
    out = Path(out)
    notebook = Path(notebook)
    if not notebook.is_file():
        raise PostmortemError(
            f"post-mortem notebook not found at {notebook} (export needs a source checkout)"
        )
    st, why = open_store(store)
    if st is None:
        raise PostmortemError(why)
    try:
        if run_id is not None and st.run(run_id) is None:
            raise PostmortemError(f"no run {run_id!r} in {store}")
    finally:
        st.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["--store", str(Path(store).resolve())]
    if run_id is not None:
        args = ["--run", run_id, *args]
    cmd = [
        sys.executable, "-m", "marimo", "export", "html", str(notebook),
        "-o", str(out), "-f", "--include-code" if include_code else "--no-include-code",
        "--", *args,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PostmortemError(f"marimo export html did not finish within {timeout:g}s") from None
    if not out.is_file():
        why = _last_line(proc.stderr) if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise PostmortemError(f"marimo export html wrote nothing to {out}: {why}")
    problems = session_errors(out.read_text(encoding="utf-8"))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PostmortemError(f"post-mortem export {out} has errors: {problems[0]}{more}")
    if proc.returncode != 0:
        why = _last_line(proc.stderr) if proc.stderr.strip() else "no message"
        raise PostmortemError(f"marimo export html exited {proc.returncode}: {why}")
    return out
