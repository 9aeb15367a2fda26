import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="livefire · live ticks")

with app.setup:
    import sys
    import time

    import marimo as mo

    from harness_lib import charts
    from harness_lib.config import ConfigError
    from harness_lib.live.feed import get_feed
    from harness_lib.live.views import (
        callout_kind,
        format_findings,
        health_markdown,
        messages_html,
        quote_html,
        stack_html,
    )
    from harness_lib.models import Verdict
    from harness_lib.notebook import connection_form, live_config, notebook_args


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

    With a stack declared (`[[stack]]` in harness.toml, `HARNESS_STACK`, or `--stack-file`),
    the feed also watches your own dashboard or engine, with the same watchers and checks
    as `harness run`, and shows its quote and data-mode flag beside the broker's.

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
    form = connection_form(args, client_id=args.cfg.client_id)
    reconnect = mo.ui.run_button(label="reconnect")
    return form, reconnect


@app.cell
def _(form, reconnect):
    _where = ["scenario"] if form.value["source"] == "simulator" else ["host", "port"]
    _shown = ["source", *_where, "client_id", "contract"]
    mo.hstack([*(form[k] for k in _shown), reconnect], justify="start", wrap=True)
    return


@app.cell
def _(args):
    # Settings as `harness run` loads them (harness.toml < HARNESS_* < flags), stack included.
    cfg, cfg_error = None, ""
    try:
        cfg = live_config(args)
    except ConfigError as _exc:
        cfg_error = str(_exc)
    return cfg, cfg_error


@app.cell
def _(cfg, form, reconnect):
    # The feed keeps one connection for the whole process: connect() closes the previous
    # one, and returns the live session unchanged when nothing changed (re-runs, viewers).
    feed = get_feed()
    _f = form.value
    _simulated = _f["source"] == "simulator"
    if cfg is not None:
        if _simulated:
            feed.start_sim(_f["scenario"])
        _ready = feed.connect(
            None if _simulated else _f["host"],
            None if _simulated else int(_f["port"]),
            int(_f["client_id"]),
            _f["contract"],
            cfg=cfg,
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
def _(cfg_error, snap):
    if cfg_error:
        _out = mo.callout(mo.md(f"**{Verdict.BAD_INPUT}** — {cfg_error}"), kind="danger")
    else:
        _out = mo.callout(
            mo.md(
                f"**{snap.verdict}** — {snap.reason}  \n"
                f"{snap.target or 'not connected'} · {snap.contract or ''} · "
                f"{snap.tick_count} ticks · state {snap.state}"
            ),
            kind=callout_kind(snap.verdict),
        )
    _out
    return


@app.cell
def _(snap):
    mo.vstack([mo.md("### Ticker fields"), mo.Html(quote_html(snap))])
    return


@app.cell
def _(snap):
    # Only with a stack declared: the broker's quote and each endpoint's, side by side.
    mo.stop(not snap.stack)
    mo.vstack(
        [
            mo.md("### Broker and stack quotes"),
            mo.Html(stack_html(snap)),
            mo.md(
                "*matches broker* is the quotes check's rule: real numbers, a live data "
                "mode, and within tolerance of a broker quote the harness itself received."
            ),
        ]
    )
    return


@app.cell
def _(snap):
    mo.md(health_markdown(snap.health))
    return


@app.cell
def _(snap):
    # Small, aggregated charts: each refresh re-sends the whole spec to the browser.
    mo.vstack(
        [
            charts.price_spread_chart(snap.ticks, last_seconds=60),
            charts.interarrival_chart(snap.ticks),
        ]
    )
    return


@app.cell
def _(snap):
    mo.vstack(
        [
            mo.md("### IB errors, warnings and notices (newest first)"),
            mo.Html(messages_html(snap)) if len(snap.messages) else mo.md("_nothing yet_"),
        ]
    )
    return


@app.cell
def _(cfg_error, snap):
    exit_code = Verdict.BAD_INPUT.exit_code if cfg_error else snap.exit_code
    if mo.app_meta().mode == "script":
        if cfg_error:
            print(f"bad input: {cfg_error}", file=sys.stderr)
        else:
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
