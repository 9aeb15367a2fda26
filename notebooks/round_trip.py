import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="livefire · round trip")

with app.setup:
    import sys

    import marimo as mo

    from harness_lib import charts
    from harness_lib.config import ConfigError
    from harness_lib.live.decisions import check_target, round_trip_outcome, trade_gate
    from harness_lib.live.feed import get_feed
    from harness_lib.live.views import callout_kind
    from harness_lib.notebook import connection_form, notebook_args, round_trip_config
    from harness_lib.postmortem import (
        cost_breakdown,
        lifecycle_steps,
        open_store,
        order_lifecycle,
        run_findings,
        stack_check_table,
    )
    from harness_lib.runner import run_harness

    RUN_TIMEOUT = 180.0  # seconds a whole run may take (deadlines are enforced inside it)


@app.cell
def _():
    mo.md(r"""
    # Paper round trip

    Buys one contract and sells it back on a **paper** account, then shows the order
    lifecycle, the fills and what the test trade cost (commission and slippage against
    the mid). With a stack declared (`[[stack]]` in harness.toml, `HARNESS_STACK` or
    `--stack-file`), it also shows when your own stack showed the quote, the position and
    the trade ids, on the same timeline, and each stack check's verdict. It runs the harness itself (`health → ticks → round trip → cleanup`), so
    the paper guard, the quantity limit and cleanup are the same as in `harness run --trade`,
    and the run is recorded in the store for the post-mortem notebook.

    The run button stays disabled unless the target passed the health check with only
    paper accounts, and it needs the confirmation box ticked.

    As a script: `uv run python notebooks/round_trip.py -- --sim --yes`. Without `--yes`
    it only checks the target, prints what it would do and exits **3** (refused: not
    confirmed); otherwise it exits with the run's code: 0 pass, 1 fail, 2 stalled,
    3 refused, 4 bad input.
    """)
    return


@app.cell
def _():
    args = notebook_args("round_trip")
    return (args,)


@app.cell
def _(args):
    form = connection_form(args, client_id=args.cfg.client_id)
    return (form,)


@app.cell
def _(form):
    _where = ["scenario"] if form.value["source"] == "simulator" else ["host", "port"]
    _shown = ["source", *_where, "client_id", "contract"]
    mo.hstack([form[k] for k in _shown], justify="start", wrap=True)
    return


@app.cell
def _(args, form):
    # Runs execute on the process-wide feed's loop, next to its embedded simulator.
    feed = get_feed()
    _f = form.value
    simulated = _f["source"] == "simulator"
    cfg, cfg_error = None, ""
    try:
        cfg = round_trip_config(
            args,
            simulated=simulated,
            scenario=_f["scenario"],
            host=_f["host"],
            port=int(_f["port"]),
            client_id=int(_f["client_id"]),
            contract=_f["contract"],
        )
    except ConfigError as _exc:
        cfg_error = str(_exc)
    if cfg is not None and simulated:
        feed.start_sim(cfg.scenario)
    return cfg, cfg_error, feed, simulated


@app.cell
def _(cfg, feed, simulated):
    # The health phase alone: connect, accounts, paper guard, then disconnect.
    check = None
    if cfg is not None:
        _host = "127.0.0.1" if simulated else cfg.host
        _port = feed.sim_port if simulated else cfg.candidate_ports[0]
        check = feed.run(
            lambda: check_target(cfg, host=_host, port=_port, simulated=simulated)
        ).result(RUN_TIMEOUT)
    return (check,)


@app.cell
def _(cfg, cfg_error, check):
    if check is None:
        _out = mo.callout(mo.md(f"**BAD_INPUT** — {cfg_error}"), kind="danger")
    else:
        _accounts = ", ".join(
            f"{a} ({'paper' if paper else '**LIVE**'})" for a, paper in check.accounts
        )
        _guard = (
            "trading allowed: every account is a paper account"
            if check.paper
            else "trading **refused**"
        )
        _out = mo.callout(
            mo.md(
                f"""**Target:** {check.target.label}  \n
    **Contract:** {cfg.contract} · quantity {cfg.quantity} (limit {cfg.max_quantity})  \n
    **Accounts:** {_accounts or "—"}  \n
    **Paper guard:** {check.result.verdict} — {check.result.reason}  \n
    {_guard}"""
            ),
            kind="success" if check.paper else callout_kind(check.result.verdict),
        )
    _out
    return


@app.cell
def _(cfg, check):
    gate = trade_gate(cfg, check)
    allowed = gate.allowed
    confirm = mo.ui.checkbox(label=f"I confirm: place {gate.plan}", disabled=not allowed)
    run_button = mo.ui.run_button(
        label="Run the paper round trip", kind="danger", disabled=not allowed
    )
    mo.vstack([confirm, run_button])
    return allowed, confirm, gate, run_button


@app.cell
def _(args, cfg, confirm, feed, gate, run_button, simulated):
    # A button click alone never trades: the confirmation must be ticked too (UI), or
    # --yes given (script); and only on a target that passed the paper guard.
    _asked = dict(
        script=mo.app_meta().mode == "script",
        yes=bool(args.yes),
        clicked=bool(run_button.value),
        confirmed=bool(confirm.value),
    )
    report = None
    if gate.permits(**_asked):
        _gateway = feed.sim if simulated else None
        with mo.status.spinner(title="placing the paper round trip…"):
            report = feed.run(lambda: run_harness(cfg, gateway=_gateway)).result(RUN_TIMEOUT)
    if report is None:
        _out = mo.md(gate.prompt(clicked=_asked["clicked"], confirmed=_asked["confirmed"]))
    else:
        _rows = [
            {"phase": str(p.phase), "verdict": str(p.verdict), "reason": p.reason}
            for p in report.phases
        ]
        _out = mo.vstack(
            [
                mo.callout(
                    mo.md(f"**{report.verdict}** — {report.reason} (run `{report.run_id}`)"),
                    kind=callout_kind(report.verdict),
                ),
                mo.ui.table(_rows, selection=None, pagination=False),
            ]
        )
    _out
    return (report,)


@app.cell
def _(cfg, report):
    # Everything below is read back from the store, as any later post-mortem would.
    store = None
    if report is not None:
        store, _why = open_store(cfg.store)
    return (store,)


@app.cell
def _(report, store):
    mo.stop(store is None)
    lifecycle = order_lifecycle(store, report.run_id)
    mo.vstack(
        [
            mo.md("### Order lifecycle"),
            charts.checkpoint_timeline_chart(lifecycle, title="Order lifecycle"),
            mo.ui.table(lifecycle_steps(lifecycle), selection=None, pagination=False),
        ]
    )
    return (lifecycle,)


@app.cell
def _(report, store):
    mo.stop(store is None)
    stack_checks = stack_check_table(store.stack_checks(report.run_id))
    mo.vstack(
        [
            mo.md("### Stack checks"),
            mo.ui.table(stack_checks, selection=None, pagination=False)
            if len(stack_checks)
            else mo.md(
                "_No stack declared: add `[[stack]]` endpoints to harness.toml, "
                "`HARNESS_STACK` or `--stack-file` to check your own dashboard too._"
            ),
        ]
    )
    return (stack_checks,)


@app.cell
def _(report, store):
    mo.stop(store is None)
    fills = store.trades(report.run_id)[
        ["t_wall", "leg", "side", "shares", "price", "decision_mid", "commission",
         "slippage", "currency", "exec_id"]
    ]  # fmt: skip
    mo.vstack(
        [
            mo.md("### Fills"),
            mo.ui.table(fills.round({"slippage": 6}), selection=None, pagination=False),
        ]
    )
    return (fills,)


@app.cell
def _(report, store):
    mo.stop(store is None)
    costs = cost_breakdown(store, report.run_id)
    mo.vstack(
        [
            mo.md("### What the test trade cost"),
            mo.ui.table(costs, selection=None, pagination=False),
            mo.md(
                "Test trades carry the `harness:` order ref; the post-mortem "
                "notebook sums them so they can be kept out of strategy P&L."
            ),
        ]
    )
    return (costs,)


@app.cell
def _(cfg, cfg_error, check, report, store):
    # The verdict of this notebook, for scripts: the run's, or why nothing was run.
    _script = mo.app_meta().mode == "script"
    outcome = round_trip_outcome(
        cfg,
        cfg_error,
        check,
        report,
        script=_script,
        run_findings=run_findings(store, report.run_id) if store is not None else None,
    )
    if _script:
        print(outcome.findings)
    exit_code = outcome.exit_code
    return (exit_code,)


@app.cell
def _(args, exit_code, store):
    # Scripts end with the verdict's exit code; sys.exit propagates out of app.run().
    if mo.app_meta().mode == "script" and args.exit_at_end:
        if store is not None:
            store.close()
        get_feed().stop()
        sys.exit(exit_code)
    return


if __name__ == "__main__":
    app.run()
