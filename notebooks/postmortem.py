import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="livefire · post-mortem")

with app.setup:
    import sys

    import marimo as mo
    import pandas as pd

    from harness_lib import charts
    from harness_lib.models import Verdict
    from harness_lib.notebook import postmortem_args
    from harness_lib.postmortem import (
        MAX_TICK_RUNS,
        cost_totals,
        drill_table,
        failed_stack_checks,
        filter_runs,
        load_runs,
        open_store,
        run_exit_code,
        run_findings,
        run_ticks,
        stack_check_table,
        subscribed_at,
    )
    from harness_lib.wire.replay import replay_for_notebook


@app.cell
def _():
    mo.md(r"""
    # Post-mortem

    The run history from the store: verdicts over time, how long the first bid and ask
    took, how ticks were spaced, what test trades cost and how fast your own stack showed
    what the broker did, then one run in detail (checkpoints, stack checks, IB errors, ticks). Read-only: it is safe to open while runs record.

    As a script: `uv run python notebooks/postmortem.py -- --run ID [--store PATH]`
    prints that run's findings and exits with its code (0 pass, 1 fail, 2 stalled,
    3 refused, 4 bad input). As a shareable page:
    `uv run marimo export html notebooks/postmortem.py -o report.html -- --run ID`.
    """)
    return


@app.cell
def _():
    args = postmortem_args()
    return (args,)


@app.cell
def _(args):
    store, store_error = open_store(args.store)
    runs = load_runs(store)
    _msg = (
        f"No harness store at `{args.store}` yet ({store_error}). Run `harness run --sim` "
        "to record one."
        if store is None
        else f"No runs recorded yet in `{args.store}`."
        if runs.empty
        else f"{len(runs)} run(s) in `{args.store}`."
    )
    mo.callout(mo.md(_msg), kind="neutral" if store is not None and len(runs) else "warn")
    return runs, store


@app.cell
def _(runs):
    _today = pd.Timestamp.now(tz="UTC").date()
    _days = pd.to_datetime(runs["started_at"], utc=True).dt.date if len(runs) else []
    _first = min(_days) if len(runs) else _today
    _last = max(_days) if len(runs) else _today
    dates = mo.ui.date_range(start=_first, stop=_last, value=(_first, _last), label="dates")
    targets = mo.ui.multiselect(
        options=sorted(runs["target_label"].dropna().unique()) if len(runs) else [],
        label="target",
    )
    contracts = mo.ui.multiselect(
        options=sorted(runs["contract"].dropna().unique()) if len(runs) else [],
        label="contract",
    )
    verdicts = mo.ui.multiselect(options=[v.value for v in Verdict], label="verdict")
    mo.hstack([dates, targets, contracts, verdicts], justify="start", wrap=True)
    return contracts, dates, targets, verdicts


@app.cell
def _(contracts, dates, runs, targets, verdicts):
    filtered = filter_runs(
        runs,
        start=dates.value[0] if len(runs) else None,
        end=dates.value[1] if len(runs) else None,
        targets=targets.value,
        contracts=contracts.value,
        verdicts=verdicts.value,
    )
    _counts = filtered["verdict"].fillna("running").value_counts() if len(filtered) else {}
    mo.md(
        f"**{len(filtered)}** of {len(runs)} run(s) selected: "
        + (", ".join(f"{v} {n}" for v, n in _counts.items()) or "none")
    )
    return (filtered,)


@app.cell
def _(filtered):
    mo.vstack(
        [
            mo.md("## History"),
            charts.verdict_history_chart(filtered),
            charts.first_tick_latency_chart(filtered),
        ]
    )
    return


@app.cell
def _(filtered, store):
    # Ticks of the most recent runs only: enough for the shape of the distribution.
    history_ticks = (
        run_ticks(store, filtered["run_id"], MAX_TICK_RUNS)
        if store is not None and len(filtered)
        else pd.DataFrame()
    )
    mo.vstack(
        [
            mo.md(f"### Tick inter-arrival times (latest {MAX_TICK_RUNS} selected runs at most)"),
            charts.interarrival_ecdf_chart(history_ticks),
            charts.interarrival_chart(history_ticks),
        ]
    )
    return


@app.cell
def _(filtered, store):
    costs = store.costs() if store is not None else pd.DataFrame()
    if len(costs):
        costs = costs[costs["run_id"].isin(filtered["run_id"])]
    mo.vstack(
        [
            mo.md(
                "### Test-trade cost\n\nEvery harness order carries a `harness:` order ref, "
                "so these costs can be subtracted from P&L to keep test trades apart from "
                "strategy results."
            ),
            charts.cost_chart(costs),
            mo.ui.table(cost_totals(costs), selection=None, pagination=False),
        ]
    )
    return


@app.cell
def _(filtered, store):
    stack_checks = store.stack_checks() if store is not None else pd.DataFrame()
    if len(stack_checks):
        stack_checks = stack_checks[stack_checks["run_id"].isin(filtered["run_id"])]
    failed_stack = failed_stack_checks(stack_checks)
    mo.vstack(
        [
            mo.md(
                "### Your stack\n\nHow long after the harness saw it at the gateway your "
                "dashboard or engine showed it (runs with `[[stack]]` endpoints declared), "
                "and every stack check that did not pass."
            ),
            charts.stack_latency_chart(stack_checks),
            mo.md(f"**Failed stack checks: {len(failed_stack)}**"),
            mo.ui.table(failed_stack, selection=None, pagination=True)
            if len(failed_stack)
            else mo.md("_none_"),
        ]
    )
    return failed_stack, stack_checks


@app.cell
def _(filtered, store):
    drill_results = store.drill_results() if store is not None else pd.DataFrame()
    if len(drill_results):
        drill_results = drill_results[drill_results["run_id"].isin(filtered["run_id"])]
    drills = drill_table(drill_results)
    mo.vstack(
        [
            mo.md(
                "### Drills\n\nFault x reaction x latency x verdict of every `harness drill` "
                "among the selected runs, failures first."
            ),
            charts.drill_latency_chart(drill_results),
            mo.ui.table(drills, selection=None, pagination=True)
            if len(drills)
            else mo.md("_no drills recorded_"),
        ]
    )
    return


@app.cell
def _(args, filtered, runs):
    _ids = list(dict.fromkeys(([args.run] if args.run else []) + list(filtered["run_id"])))
    _default = args.run or (runs["run_id"].iloc[0] if len(runs) else None)
    picked = mo.ui.dropdown(options=_ids, value=_default if _default in _ids else None, label="run")
    mo.vstack([mo.md("## One run"), picked])
    return (picked,)


@app.cell
def _(picked, store):
    run_id = picked.value
    run = store.run(run_id) if store is not None and run_id else None
    if run is None:
        _out = mo.md(f"No run `{run_id}` in the store." if run_id else "No run selected.")
    else:
        _out = mo.vstack(
            [
                mo.callout(
                    mo.md(
                        f"**{run['verdict'] or run['status']}** — {run['reason'] or ''}  \n"
                        f"`{run_id}` · {run['target']['label']} · {run['contract']} · "
                        f"started {run['started_at']:%Y-%m-%d %H:%M:%S} UTC"
                    ),
                    kind="success" if run["verdict"] == "PASS" else "danger",
                ),
                mo.ui.table(
                    store.phases(run_id)[["phase", "verdict", "reason", "duration_s"]],
                    selection=None,
                    pagination=False,
                ),
            ]
        )
    _out
    return run, run_id


@app.cell
def _(run, run_id, store):
    mo.stop(run is None)
    checkpoints = store.checkpoints(run_id)
    _events = store.events(run_id)
    mo.vstack(
        [
            mo.md("### Checkpoints"),
            charts.checkpoint_timeline_chart(checkpoints),
            mo.ui.table(
                checkpoints[["phase", "name", "t_wall", "detail"]],
                selection=None,
                pagination=False,
            ),
            mo.md("### IB errors, warnings and notices"),
            mo.ui.table(
                _events[["t_wall", "kind", "code", "message"]],
                selection=None,
                pagination=False,
            )
            if len(_events)
            else mo.md("_none_"),
        ]
    )
    return (checkpoints,)


@app.cell
def _(run, run_id, store):
    mo.stop(run is None)
    run_stack_checks = stack_check_table(store.stack_checks(run_id))
    mo.vstack(
        [
            mo.md("### Stack checks"),
            mo.ui.table(run_stack_checks, selection=None, pagination=False)
            if len(run_stack_checks)
            else mo.md("_no stack was declared for this run_"),
        ]
    )
    return (run_stack_checks,)


@app.cell
def _(checkpoints, run_id, store):
    _ticks = store.ticks(run_id)
    _per_field = _ticks.groupby("field").size().rename("ticks").reset_index()
    mo.vstack(
        [
            mo.md(f"### Ticks ({len(_ticks)})"),
            charts.time_to_first_value_chart(_ticks, subscribed_at(checkpoints)),
            charts.price_spread_chart(_ticks),
            mo.ui.table(_per_field, selection=None, pagination=False),
        ]
    )
    return


@app.cell
def _(run):
    mo.stop(run is None or mo.app_meta().mode == "script")
    replay_button = mo.ui.run_button(label="Replay this run offline")
    mo.vstack(
        [
            mo.md(
                "### Replay\n\nRuns the harness again, with this run's configuration, "
                "against its wire recording (`harness replay`): same answers, same timing, "
                "no gateway. The replayed run is stored apart, in `wire/replays.sqlite`."
            ),
            replay_button,
        ]
    )
    return (replay_button,)


@app.cell
async def _(args, checkpoints, replay_button, run, run_id):
    mo.stop(not replay_button.value)
    _rep, _served, _cps = await replay_for_notebook(args.store, run_id)
    mo.vstack(
        [
            mo.md(
                f"**Original:** {run['verdict']}: {run['reason']}  \n"
                f"**Replayed:** {_rep.verdict}: {_rep.reason}  \n"
                f"{_served.matched} request(s) matched, "
                f"{len(_served.unmatched)} unmatched"
                + "".join(f"  \n- unmatched: `{u['request']}`" for u in _served.unmatched)
            ),
            mo.hstack(
                [
                    charts.checkpoint_timeline_chart(checkpoints),
                    charts.checkpoint_timeline_chart(_cps),
                ]
            ),
        ]
    )
    return


@app.cell
def _(args, run, run_id, runs, store):
    # This notebook's verdict, for scripts: the drilled-into run's own exit code.
    if store is None or runs.empty:
        findings = "no runs recorded: nothing to report"
    elif run is None:
        findings = f"no run {run_id!r} in {args.store}"
    else:
        findings = run_findings(store, run_id)
    exit_code = run_exit_code(run)
    if mo.app_meta().mode == "script":
        print(findings)
    return (exit_code,)


@app.cell
def _(args, exit_code, store):
    # Scripts end with the run's exit code; sys.exit propagates out of app.run().
    if mo.app_meta().mode == "script" and args.exit_at_end:
        if store is not None:
            store.close()
        sys.exit(exit_code)
    return


if __name__ == "__main__":
    app.run()
