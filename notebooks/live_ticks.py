import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="livefire · live ticks")

with app.setup:
    import sys
    import time

    import marimo as mo

    from harness_lib import charts
    from harness_lib.config import HarnessConfig
    from harness_lib.live import (
        callout_kind,
        connection_form,
        format_findings,
        get_feed,
        messages_html,
        notebook_args,
        quote_html,
    )


@app.cell
def _():
    mo.md(r"""
    # Live ticks

    Watch a ticker fill in. Right after subscribing every field is `nan`; the table
    shows each one turning into a real value, how long that took and whether the data
    is live or delayed. Runs against the built-in **simulator** by default (no gateway
    needed); switch to *gateway* for a paper IB Gateway or TWS. Pick the `never_ticks`
    scenario to see what a dead feed looks like.

    The connection lives in a background feed shared by the whole process, so re-running
    cells never leaks connections and a slow cell never stops the ticks.

    As a script: `uv run python notebooks/live_ticks.py -- --sim --seconds 10` prints the
    findings and exits 0 pass, 1 fail, 2 stalled, 3 refused, 4 bad input.
    """)
    return


@app.cell
def _():
    args = notebook_args("live_ticks")
    return (args,)


@app.cell
def _(args):
    source, scenario, host, port, client_id, contract = connection_form(
        args, client_id=args.client_id
    )
    reconnect = mo.ui.run_button(label="reconnect")
    return client_id, contract, host, port, reconnect, scenario, source


@app.cell
def _(client_id, contract, host, port, reconnect, scenario, source):
    _where = [scenario] if source.value == "simulator" else [host, port]
    mo.hstack([source, *_where, client_id, contract, reconnect], justify="start", wrap=True)
    return


@app.cell
def _(args, client_id, contract, host, port, reconnect, scenario, source):
    # The feed keeps one connection for the whole process: connect() closes the previous
    # one, and returns the live session unchanged when nothing changed (re-runs, viewers).
    feed = get_feed()
    _cfg = HarnessConfig(tick_deadline=args.deadline)
    if source.value == "simulator":
        feed.start_sim(scenario.value)
        feed.connect(
            client_id=int(client_id.value),
            contract=contract.value,
            cfg=_cfg,
            reuse=not reconnect.value,
        )
    else:
        feed.connect(
            host.value,
            int(port.value),
            int(client_id.value),
            contract.value,
            cfg=_cfg,
            reuse=not reconnect.value,
        )
    return (feed,)


@app.cell
def _(args, feed):
    # Unattended run: watch for --seconds before judging. In the UI the refresh polls.
    if mo.app_meta().mode == "script":
        time.sleep(args.seconds)
    watched = feed.alive
    return (watched,)


@app.cell
def _():
    refresh = mo.ui.refresh(options=[0.5, 1, 2, 5], default_interval=0.5, label="update every")
    refresh
    return (refresh,)


@app.cell
def _(feed, refresh, watched):
    refresh, watched  # re-run on every refresh tick
    snap = feed.snapshot()
    return (snap,)


@app.cell
def _(snap):
    mo.callout(
        mo.md(
            f"**{snap['verdict']}** — {snap['reason']}  \n"
            f"{snap['target'] or 'not connected'} · {snap['contract'] or ''} · "
            f"{snap['tick_count']} ticks · state {snap['state']}"
        ),
        kind=callout_kind(snap["verdict"]),
    )
    return


@app.cell
def _(snap):
    mo.vstack([mo.md("### Ticker fields"), mo.Html(quote_html(snap))])
    return


@app.cell
def _(snap):
    _h = snap["health"]
    _accounts = ", ".join(
        f"{a['account']} ({'paper' if a['paper'] else '**LIVE**'})" for a in _h.get("accounts", [])
    )
    _farms = "\n".join(
        f"- {'✅' if f['ok'] else '🚨'} {f['code']}: {f['message']}" for f in _h.get("farms", [])
    )
    mo.md(
        f"""### Health
    - **{_h.get("verdict") or "…"}** {_h.get("reason", "not connected")}
    - server version: {_h.get("server_version") or "—"}
    - accounts: {_accounts or "—"}
    - clock skew: {_h.get("clock_skew_s")} s

    Farm notices:

    {_farms or "- none yet"}
    """
    )
    return


@app.cell
def _(snap):
    # Small, aggregated charts: each refresh re-sends the whole spec to the browser.
    mo.vstack(
        [
            charts.price_spread_chart(snap["ticks"], last_seconds=60),
            charts.interarrival_chart(snap["ticks"]),
        ]
    )
    return


@app.cell
def _(snap):
    mo.vstack(
        [
            mo.md("### IB errors, warnings and notices (newest first)"),
            mo.Html(messages_html(snap)) if len(snap["messages"]) else mo.md("_nothing yet_"),
        ]
    )
    return


@app.cell
def _(snap):
    exit_code = snap["verdict"].exit_code
    if mo.app_meta().mode == "script":
        print(format_findings(snap))
    return (exit_code,)


@app.cell
def _(args, exit_code):
    # Scripts end with the verdict's exit code; sys.exit propagates out of app.run().
    if mo.app_meta().mode == "script" and args.exit_at_end:
        get_feed().stop()
        sys.exit(exit_code)
    return


if __name__ == "__main__":
    app.run()
