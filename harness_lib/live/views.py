"""What the live notebook draws from a :class:`~harness_lib.live.snapshot.Snapshot`: the
quote table (as a frame, and as HTML via pandas' Styler), the broker's quote beside each
stack endpoint's, the message log, the health panel, plain-text findings for script mode,
and the callout kind of a verdict.

Nothing here talks to IB or holds state; every function takes a snapshot and returns a
value a cell can show, so each view is tested without a notebook.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from harness_lib.live.snapshot import HealthPanel, Snapshot
from harness_lib.models import Verdict
from harness_lib.quotes import QUOTE_FIELDS as FIELDS

__all__ = [
    "callout_kind",
    "format_findings",
    "health_markdown",
    "messages_html",
    "messages_table",
    "quote_html",
    "quote_table",
    "stack_html",
    "stack_table",
]

_LEFT_ALIGNED = [
    {"selector": "th, td", "props": "text-align: left; padding: 2px 14px 2px 0;"},
    {"selector": "caption", "props": "text-align: left;"},
]
_NONE = "—"


def _clock(at: datetime | None) -> str | None:
    """HH:MM:SS.mmm of a UTC time, or None."""
    return None if at is None else at.strftime("%H:%M:%S.%f")[:-3]


def quote_table(snap: Snapshot) -> pd.DataFrame:
    """The live table: one row per ticker field with its value (nan until real), the time
    from subscribing to its first real value, when that was (UTC) and the data type."""
    rows = []
    for f in FIELDS:
        secs = snap.first_seconds.get(f)
        rows.append(
            {
                "field": f,
                "value": snap.quote.get(f, math.nan),
                "first real after (ms)": None if secs is None else round(secs * 1000, 1),
                "first real at (UTC)": _clock(snap.first_at.get(f)),
                "market data": snap.market_data or _NONE,
            }
        )
    return pd.DataFrame(rows)


STACK_COLUMNS: tuple[str, ...] = (
    "source", "bid", "ask", "last", "data mode", "live", "age (ms)", "matches broker", "check",
)  # fmt: skip
"""Columns of :func:`stack_table`."""


def _yes_no(value: bool | None) -> str:
    return _NONE if value is None else "yes" if value else "no"


def _age_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def stack_table(snap: Snapshot) -> pd.DataFrame:
    """The broker's quote and each stack endpoint's latest quote side by side, one row per
    source (the broker first): bid, ask, last (NaN where no real number was shown), the
    data-mode flag and whether it means live, the quote's age, whether it matches the
    broker (the quotes check's rule), and the endpoint's checks so far. Empty (with the
    columns) when no stack is declared."""
    if not snap.stack:
        return pd.DataFrame(columns=list(STACK_COLUMNS))
    ticks = snap.phases.ticks
    rows: list[dict[str, Any]] = [
        {
            "source": "broker",
            **{f: snap.quote.get(f, math.nan) for f in ("bid", "ask", "last")},
            "data mode": snap.market_data or _NONE,
            "live": _yes_no(None if snap.market_data is None else snap.market_data == "live"),
            "age (ms)": _age_ms(snap.last_tick_age_s),
            "matches broker": _NONE,
            "check": f"ticks {ticks.verdict}: {ticks.reason}" if ticks else "ticks: waiting",
        }
    ]
    for q in snap.stack:
        matches = _yes_no(q.matches) + (f" ({q.why})" if q.why else "")
        check = f"{q.verdict}: {q.reason}" if q.verdict is not None else q.reason
        rows.append(
            {
                "source": q.endpoint,
                **{f: math.nan if v is None else v for f, v in
                   (("bid", q.bid), ("ask", q.ask), ("last", q.last))},
                "data mode": _NONE if q.mode is None else q.mode,
                "live": _yes_no(q.mode_live),
                "age (ms)": _age_ms(q.age_s),
                "matches broker": matches if q.shown else f"{_NONE} ({q.error or 'nothing yet'})",
                "check": check,
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(STACK_COLUMNS))


def stack_html(snap: Snapshot) -> str:
    """:func:`stack_table` as an HTML table (``table.livefire-stack``); a number the stack
    did not show as a real number reads "—". The first cell of each row names its source."""
    caption = " · ".join(
        f"{q.endpoint} ({q.kind}) {'connected' if q.connected else 'not connected'}, "
        f"{q.messages} message(s)"
        for q in snap.stack
    )
    return _html_table(
        stack_table(snap),
        "livefire-stack",
        {"bid": _price, "ask": _price, "last": _price, "age (ms)": _ms},
        caption,
    )


def messages_table(snap: Snapshot, limit: int = 50) -> pd.DataFrame:
    """The newest ``limit`` IB messages and feed events, newest first: time (UTC), kind
    (error, warning, notice, feed), code and message."""
    log = snap.messages.tail(limit).iloc[::-1]
    return pd.DataFrame(
        {
            "time (UTC)": [_clock(t if isinstance(t, datetime) else None) for t in log["t_wall"]],
            "kind": log["kind"].tolist(),
            "code": log["code"].tolist(),
            "message": log["message"].tolist(),
        }
    )


def _html_table(
    frame: pd.DataFrame,
    css_class: str,
    formatters: Mapping[str, Callable[[Any], str]],
    caption: str | None = None,
) -> str:
    """A plain, left-aligned HTML table of ``frame`` (pandas' Styler escapes every cell;
    missing values show "—" unless a column's formatter says otherwise)."""
    styler = (
        frame.style.hide(axis="index")
        .format({c: formatters.get(c, _text) for c in frame.columns}, escape="html")
        .set_table_attributes(f'class="{css_class}"')
        .set_table_styles(_LEFT_ALIGNED)
    )
    if caption:
        # The Styler template writes the caption as it is: escape it here.
        styler = styler.set_caption(html.escape(caption))
    return styler.to_html()


def _text(value: Any) -> str:
    return _NONE if value is None or value is pd.NA or value is pd.NaT else str(value)


def _number(value: Any) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:g}"


def _price(value: Any) -> str:
    return _NONE if value is None or pd.isna(value) else f"{value:g}"


def _ms(value: Any) -> str:
    return _NONE if value is None or pd.isna(value) else f"{value:,.1f}"


def _code(value: Any) -> str:
    return "" if value is None or pd.isna(value) else str(int(value))


def quote_html(snap: Snapshot) -> str:
    """The live table as a small HTML table (``table.livefire-quote``).

    Values show ``nan`` until they are real, as ib_async's Ticker does; the first cell of
    each row names its field and the caption starts with the tick count, so a browser test
    can read them without depending on marimo's own widgets.
    """
    caption = f"{int(snap.tick_count)} ticks · market data {snap.market_data or _NONE}"
    return _html_table(
        quote_table(snap),
        "livefire-quote",
        {"value": _number, "first real after (ms)": _ms},
        caption,
    )


def messages_html(snap: Snapshot, limit: int = 50) -> str:
    """:func:`messages_table` as an HTML table (``table.livefire-log``)."""
    return _html_table(messages_table(snap, limit), "livefire-log", {"code": _code})


def health_markdown(panel: HealthPanel) -> str:
    """The health panel as markdown: verdict, server version, accounts (paper or LIVE),
    clock skew and farm notices."""
    accounts = ", ".join(f"{a} ({'paper' if paper else '**LIVE**'})" for a, paper in panel.accounts)
    farms = "\n".join(f"- {'✅' if f.ok else '🚨'} {f.code}: {f.message}" for f in panel.farms)
    return "\n".join(
        [
            "### Health",
            f"- **{panel.verdict or '…'}** {panel.reason}",
            f"- server version: {panel.server_version or _NONE}",
            f"- accounts: {accounts or _NONE}",
            f"- clock skew: {panel.clock_skew_s} s",
            "",
            "Farm notices:",
            "",
            farms or "- none yet",
        ]
    )


def format_findings(snap: Snapshot) -> str:
    """Plain-text findings for script mode: target, verdict, quote, first-value times."""
    lines = [
        f"target:   {snap.target}",
        f"contract: {snap.contract}  market data: {snap.market_data or 'unknown'}",
        f"verdict:  {snap.verdict} — {snap.reason}",
        f"ticks:    {snap.tick_count} recorded",
    ]
    for f in FIELDS:
        secs = snap.first_seconds.get(f)
        first = "never" if secs is None else f"{secs * 1000:.0f} ms"
        lines.append(f"  {f:<8} {snap.quote.get(f, math.nan)!s:<12} first real after {first}")
    for q in snap.stack:
        lines.append(
            f"stack:    {q.endpoint} ({q.kind}) {q.verdict or 'undecided'} — {q.reason}; "
            f"latest quote: {q.shown or 'none'}"
        )
    errors = snap.messages[snap.messages["kind"].isin(["error", "warning"])]
    for row in errors.tail(10).itertuples():
        code = "" if pd.isna(row.code) else f"IB {row.code}: "
        lines.append(f"  {row.kind}: {code}{row.message}")
    return "\n".join(lines)


_CALLOUT = {
    Verdict.PASS: "success",
    Verdict.SKIPPED: "neutral",
    Verdict.STALLED: "warn",
    Verdict.REFUSED: "danger",
    Verdict.FAIL: "danger",
    Verdict.ABORTED: "danger",
    Verdict.BAD_INPUT: "danger",
}


def callout_kind(verdict: Verdict | str | None) -> str:
    """The ``mo.callout`` kind for a verdict (success, warn, danger, neutral)."""
    try:
        return _CALLOUT[Verdict(str(verdict))]
    except ValueError:
        return "neutral"
