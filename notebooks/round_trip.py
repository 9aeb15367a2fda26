import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="livefire · round trip")

with app.setup:
    import sys

    import marimo as mo

    from harness_lib import charts
    from harness_lib.config import ConfigError
    from harness_lib.live import (
        callout_kind,
        check_target,
        connection_form,
        get_feed,
        notebook_args,
        round_trip_config,
    )
    from harness_lib.models import Verdict
    from harness_lib.postmortem import (
        cost_breakdown,
        lifecycle_steps,
        open_store,
        order_lifecycle,
        run_findings,
    )
    from harness_lib.runner import run_harness

    RUN_TIMEOUT = 180.0  # seconds a whole run may take (deadlines are enforced inside it)


@app.cell
def _():
    mo.md(r"""
    # Paper round trip

    Buys one contract and sells it back on a **paper** account, then shows the order
    lifecycle, the fills and what the test trade cost (commission and slippage against
    the mid). It runs the harness itself (`health → ticks → round trip → cleanup`), so
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
    source, scenario, host, port, client_id, contract = connection_form(
        args, client_id=args.client_id or 917
    )
    return client_id, contract, host, port, scenario, source


@app.cell
def _(client_id, contract, host, port, scenario, source):
    _where = [scenario] if source.value == "simulator" else [host, port]
    mo.hstack([source, *_where, client_id, contract], justify="start", wrap=True)
    return


@app.cell
def _(args, client_id, contract, host, port, scenario, source):
    # Runs execute on the process-wide feed's loop, next to its embedded simulator.
    feed = get_feed()
    simulated = source.value == "simulator"
    cfg, cfg_error = None, ""
    try:
        cfg = round_trip_config(
            args,
            simulated=simulated,
            scenario=scenario.value,
            host=host.value,
            port=int(port.value),
            client_id=int(client_id.value),
            contract=contract.value,
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
    allowed = check is not None and check.paper
    _what = (
        f"BUY then SELL {cfg.quantity} {cfg.contract} on paper account {check.target.account}"
        if allowed
        else "nothing (the target did not pass the paper guard)"
    )
    confirm = mo.ui.checkbox(label=f"I confirm: place {_what}", disabled=not allowed)
    run_button = mo.ui.run_button(
        label="Run the paper round trip", kind="danger", disabled=not allowed
    )
    mo.vstack([confirm, run_button])
    return allowed, confirm, run_button


@app.cell
def _(allowed, args, cfg, confirm, feed, run_button, simulated):
    # A button click alone never trades: the confirmation must be ticked too (UI), or
    # --yes given (script).
    if mo.app_meta().mode == "script":
        wanted = bool(args.yes)
    else:
        wanted = bool(run_button.value and confirm.value)
    report = None
    if wanted and allowed:
        _gateway = feed.sim if simulated else None
        with mo.status.spinner(title="placing the paper round trip…"):
            report = feed.run(lambda: run_harness(cfg, gateway=_gateway)).result(RUN_TIMEOUT)
    if report is None:
        _msg = (
            "Tick the confirmation box, then click **Run**."
            if allowed and run_button.value and not confirm.value
            else "No round trip placed yet."
        )
        _out = mo.md(_msg)
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
    return report, wanted


@app.cell
def _(cfg, report):
    # Everything below is read back from the store, as any later post-mortem would.
    store = None
    if report is not None:
        store, _why = open_store(cfg.store)
    return (store,)


@app.cell
def _(report, store):
    lifecycle = None
    if store is not None:
        lifecycle = order_lifecycle(store, report.run_id)
        _out = mo.vstack(
            [
                mo.md("### Order lifecycle"),
                charts.checkpoint_timeline_chart(lifecycle, title="Order lifecycle"),
                mo.ui.table(lifecycle_steps(lifecycle), selection=None, pagination=False),
            ]
        )
    else:
        _out = mo.md("")
    _out
    return (lifecycle,)


@app.cell
def _(report, store):
    fills = None
    if store is not None:
        fills = store.trades(report.run_id)[
            ["t_wall", "leg", "side", "shares", "price", "decision_mid", "commission",
             "slippage", "currency", "exec_id"]
        ]  # fmt: skip
        _out = mo.vstack(
            [
                mo.md("### Fills"),
                mo.ui.table(fills.round({"slippage": 6}), selection=None, pagination=False),
            ]
        )
    else:
        _out = mo.md("")
    _out
    return (fills,)


@app.cell
def _(report, store):
    costs = None
    if store is not None:
        costs = cost_breakdown(store, report.run_id)
        _out = mo.vstack(
            [
                mo.md("### What the test trade cost"),
                mo.ui.table(costs, selection=None, pagination=False),
                mo.md(
                    "Test trades carry the `harness:` order ref; the post-mortem "
                    "notebook sums them so they can be kept out of strategy P&L."
                ),
            ]
        )
    else:
        _out = mo.md("")
    _out
    return (costs,)


@app.cell
def _(args, cfg, cfg_error, check, report, store, wanted):
    # The verdict of this notebook, for scripts: the run's, or why nothing was run.
    if cfg is None:
        verdict, findings = Verdict.BAD_INPUT, f"bad input: {cfg_error}"
    elif check is None or not check.paper:
        verdict = check.result.verdict if check is not None else Verdict.BAD_INPUT
        if verdict == Verdict.PASS:
            verdict = Verdict.REFUSED  # passed health, yet not provably paper
        findings = f"{verdict}: {check.result.reason if check else cfg_error}"
    elif report is None:
        verdict = Verdict.REFUSED
        findings = (
            f"would place: BUY then SELL {cfg.quantity} {cfg.contract} on paper account "
            f"{check.target.account} at {check.target.label}; not confirmed "
            f"({'pass --yes' if mo.app_meta().mode == 'script' else 'tick the box'}), "
            "nothing was sent"
        )
    else:
        verdict = report.verdict
        findings = run_findings(store, report.run_id) if store is not None else report.reason
    if mo.app_meta().mode == "script":
        print(findings)
    exit_code = verdict.exit_code
    return exit_code, verdict


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
