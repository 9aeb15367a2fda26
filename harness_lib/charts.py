"""Altair charts over the store's pandas frames (and live snapshots with the same columns).

Every builder here reduces its input in pandas *before* handing it to Altair, so
no chart ever carries more than `MAX_ROWS` rows of inline data, whatever the
size of the frame it was given. That keeps three consumers happy at once:

- Altair's default data transformer refuses datasets over 5,000 rows; marimo
  raises that to 20,000 only inside its own output path, so charts that must
  also render in an HTML post-mortem (`chart.save`) have to stay under 5,000.
- marimo refuses outputs over 8 MB, and a `mo.ui.refresh` re-sends the whole
  spec on every tick, so small inline data is what keeps live views cheap.
- Aggregating in pandas keeps the spec self-contained: no vegafusion, no
  pyarrow, no virtual files, and `chart.to_dict()` validates offline.

Builders never raise on empty or column-less frames; they return a small chart
with a "no data" text mark instead, so a notebook cell can always display
something. Timestamps are shown in UTC (as the store writes them) so a
post-mortem reads the same in every time zone.

Frames and the columns read (see `harness_lib.store`):

- ticks: run_id, con_id, symbol, field, price, size, t_mono, t_wall, t_wall_epoch
- checkpoints: run_id, phase, name, t_mono, t_wall, detail
- runs: run_id, started_at, finished_at, status, verdict, reason, exit_code,
  simulated, scenario, target_label, contract, first_bid_s, first_ask_s
- costs: time, run_id, order_ref, symbol, quantity, entry_price, exit_price,
  commission, slippage, total_cost, realized_pnl, currency
- stack checks: run_id, endpoint, name, verdict, reason, latency_s, at_wall
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from harness_lib.constants import VERDICT_COLOURS
from harness_lib.models import Phase
from harness_lib.quotes import QUOTE_FIELDS, real_mask

__all__ = [
    "FIRST_VALUE_FIELDS",
    "MAX_ROWS",
    "VERDICT_COLORS",
    "checkpoint_timeline_chart",
    "cost_chart",
    "drill_latency_chart",
    "first_tick_latency_chart",
    "first_value_times",
    "interarrival",
    "interarrival_bins",
    "interarrival_chart",
    "interarrival_ecdf_chart",
    "price_spread_chart",
    "stack_latency_chart",
    "stack_latency_frame",
    "time_to_first_value_chart",
    "verdict_history_chart",
]

MAX_ROWS = 5000
"""Most inline data rows any chart built here carries, summed over all its datasets.

Altair's own default limit, deliberately lower than marimo's 20,000, so the
same chart also renders in a plain HTML export.
"""

FIRST_VALUE_FIELDS: tuple[str, ...] = QUOTE_FIELDS
"""Ticker fields whose first real value `first_value_times` reports, in display order."""

PRICE_SERIES: tuple[str, ...] = ("bid", "ask", "last")
"""Ticker fields drawn as price lines by `price_spread_chart`."""

VERDICT_COLORS: dict[str, str] = VERDICT_COLOURS
"""Fixed verdict colors, so the same verdict looks the same in every chart and export.

Anything not a known verdict (missing, misspelt) is shown as OTHER rather than
silently borrowing a known verdict's color.
"""

_PHASE_ORDER: tuple[str, ...] = tuple(p.value for p in Phase)
_SERIES_COLORS = {"bid": "#1f77b4", "ask": "#d62728", "last": "#2ca02c", "spread": "#7f7f7f"}
_TEXT_LIMIT = 200  # free-text columns (reason, detail) are cut so they cannot bloat a spec
_UTC_FORMAT = "%Y-%m-%d %H:%M:%S.%L"
_MULTI_UTC_FORMAT = {
    "milliseconds": "%H:%M:%S.%L",
    "seconds": "%H:%M:%S",
    "minutes": "%H:%M",
    "hours": "%H:%M",
    "date": "%b %d",
    "week": "%b %d",
    "month": "%b %Y",
    "year": "%Y",
}
_EPOCH = pd.Timestamp(0, tz="UTC")


# --------------------------------------------------------------------------- helpers


def _usable(df: pd.DataFrame | None, columns: Iterable[str]) -> bool:
    """True when `df` is a non-empty frame carrying every one of `columns`."""
    return isinstance(df, pd.DataFrame) and not df.empty and all(c in df.columns for c in columns)


def _no_data(title: str, message: str = "no data") -> alt.Chart:
    """The placeholder every builder returns instead of raising on empty input."""
    return (
        alt.Chart(pd.DataFrame({"message": [message]}))
        .mark_text(fontSize=14, color="gray")
        .encode(text=alt.Text("message:N"))
        .properties(title=title, width="container", height=60)
    )


def _num(df: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64, with anything unparseable (None, "", pd.NA) as NaN."""
    if column not in df.columns:
        return np.full(len(df), np.nan)
    values = pd.to_numeric(df[column], errors="coerce")
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _utc(df: pd.DataFrame, column: str) -> pd.Series:
    """A column as tz-aware UTC datetimes (NaT where missing), whatever it was stored as."""
    if column not in df.columns:
        return pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns, UTC]")
    return pd.to_datetime(df[column], utc=True, errors="coerce")


def _epoch_seconds(times: pd.Series) -> np.ndarray:
    """UTC datetimes as float seconds since the epoch (NaN for NaT), unit-agnostic."""
    return ((times - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64", na_value=np.nan)


def _from_epoch(seconds: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(seconds, unit="s", utc=True))


def _text(df: pd.DataFrame, column: str, default: str = "") -> pd.Series:
    """A column as plain Python strings (cut to `_TEXT_LIMIT`), for tooltips and labels."""
    if column not in df.columns:
        return pd.Series(default, index=df.index, dtype=object)
    return _map_distinct(df[column], lambda v: str(v)[:_TEXT_LIMIT], default)


def _map_distinct(values: pd.Series, convert: Callable[[object], str], missing: str) -> pd.Series:
    """Apply `convert` once per distinct value (not per row): a million-row column of a
    few currencies or verdicts costs a factorize, not a million Python calls."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = np.array([*(convert(v) for v in uniques), missing], dtype=object)
    # Missing values are coded -1, which indexes the trailing `missing` entry.
    return pd.Series(lookup[codes], index=values.index, dtype=object)


def _utc_x(field: str, title: str = "time (UTC)") -> alt.X:
    return alt.X(
        f"{field}:T",
        title=title,
        scale=alt.Scale(type="utc"),
        # Vega's multi-format picks the unit to suit the span; this one keeps the clock time
        # on sub-second ticks (the default shows a bare ".800", meaningless in a live view).
        axis=alt.Axis(labelOverlap=True, format=_MULTI_UTC_FORMAT, formatType="utc"),
    )


def _utc_tooltip(field: str, title: str = "time (UTC)") -> alt.Tooltip:
    return alt.Tooltip(f"{field}:T", title=title, format=_UTC_FORMAT, formatType="utc")


def _fmt_duration(seconds: float) -> str:
    """Compact human duration: '0.18 ms', '42 ms', '1.8 s'."""
    if not math.isfinite(seconds):
        return "never"
    if abs(seconds) >= 1:
        return f"{seconds:.2g} s" if abs(seconds) < 100 else f"{seconds:,.0f} s"
    ms = seconds * 1e3
    return f"{ms:.0f} ms" if abs(ms) >= 10 else f"{ms:.2g} ms"


def _evenly(df: pd.DataFrame, limit: int) -> pd.DataFrame:
    """At most `limit` rows, evenly spaced and always keeping the first and last."""
    if len(df) <= limit:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, limit).round().astype(np.int64))
    return df.iloc[idx]


# Periods tried, finest first, when a history has too many rows to draw one mark each.
_PERIODS: tuple[tuple[str, str], ...] = (("D", "day"), ("W", "week"), ("M", "month"), ("Y", "year"))


def _by_period(
    times: pd.Series,
    frame: pd.DataFrame,
    keys: Sequence[str],
    agg: dict[str, tuple[str, str]],
    limit: int,
) -> tuple[pd.DataFrame, str]:
    """Aggregate `frame` per calendar period (and `keys`), choosing the finest period that fits.

    Returns the aggregated frame with `period_start`/`period_end` UTC columns and
    the period's name. If even yearly rows exceed `limit` (centuries of data or
    garbage timestamps), the most recent `limit` rows are kept so the bound holds.
    """
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None).reset_index(drop=True)
    frame = frame.reset_index(drop=True)
    out, name = pd.DataFrame(), _PERIODS[-1][1]
    for code, period_name in _PERIODS:
        periods = naive.dt.to_period(code).rename("_period")
        grouped = frame.groupby([periods, *(frame[k] for k in keys)], sort=True, observed=True)
        out, name = grouped.agg(**agg).reset_index(), period_name
        if len(out) <= limit:
            break
    out = out.tail(limit)
    period_index = pd.PeriodIndex(out["_period"])
    out = out.drop(columns="_period").assign(
        period_start=period_index.start_time.tz_localize("UTC"),
        period_end=(period_index + 1).start_time.tz_localize("UTC"),
    )
    return out.reset_index(drop=True), name


def _tick_times(ticks: pd.DataFrame) -> tuple[np.ndarray, bool]:
    """Seconds for each tick and whether they are wall-clock epoch seconds.

    Wall time is preferred because it is comparable across runs (monotonic
    clocks restart with each process); t_mono is the fallback for snapshots
    that carry no wall time.
    """
    epoch = _num(ticks, "t_wall_epoch")
    if np.isfinite(epoch).any():
        return epoch, True
    if "t_wall" in ticks.columns:
        epoch = _epoch_seconds(_utc(ticks, "t_wall"))
        if np.isfinite(epoch).any():
            return epoch, True
    return _num(ticks, "t_mono"), False


# ----------------------------------------------------------------- time to first value


def first_value_times(ticks: pd.DataFrame, t0: float) -> pd.DataFrame:
    """Seconds from `t0` (monotonic) to the first real value of each field of interest.

    Pass the ticks of one run and a `t0` from the same monotonic clock (typically
    the `subscribed` checkpoint's t_mono). For bid/ask/last a value counts when
    `price` is finite and not -1 (IB's "no quote"); for bidSize/askSize when
    `size` is finite and positive (a zero size is what accompanies "no quote").
    "First" means earliest t_mono, not first in frame order.

    Returns one row per field of `FIRST_VALUE_FIELDS`, in that order, with
    columns `field` and `seconds` (NaN when the field never had a real value).
    A negative value means the tick was stamped before `t0`; it is reported, not
    hidden, because it says the chosen t0 was late.
    """
    seconds = dict.fromkeys(FIRST_VALUE_FIELDS, np.nan)
    if _usable(ticks, ("field", "t_mono")):
        sub = ticks[ticks["field"].isin(FIRST_VALUE_FIELDS)]
        if not sub.empty:
            fields = sub["field"].astype(object).to_numpy()
            t = _num(sub, "t_mono")
            is_size = np.char.endswith(fields.astype(str), "Size")
            value = np.where(is_size, _num(sub, "size"), _num(sub, "price"))
            real = real_mask(value, is_size) & np.isfinite(t)
            firsts = pd.Series(t[real]).groupby(fields[real]).min()
            for field, t_first in firsts.items():
                seconds[str(field)] = float(t_first) - float(t0)
    return pd.DataFrame({"field": list(seconds), "seconds": list(seconds.values())})


def time_to_first_value_chart(
    df_or_ticks: pd.DataFrame,
    t0: float | None = None,
    *,
    title: str | None = None,
) -> alt.LayerChart | alt.Chart:
    """Horizontal bars: time from `t0` to each field's first real value, labelled in ms.

    `df_or_ticks` is either the output of `first_value_times` (columns `field`,
    `seconds`) or a ticks frame, in which case `first_value_times(ticks, t0)` is
    computed here. Without `t0` the first tick's t_mono is used, which measures
    from the first tick rather than from the subscription; pass the `subscribed`
    checkpoint's t_mono for the real latency. Fields that never got a value
    are listed with the label "never" and no bar.
    """
    title = title or "Time to first value"
    if not isinstance(df_or_ticks, pd.DataFrame) or df_or_ticks.empty:
        return _no_data(title)
    if {"field", "seconds"} <= set(df_or_ticks.columns) and "t_mono" not in df_or_ticks.columns:
        times = df_or_ticks[["field", "seconds"]].copy()
    elif _usable(df_or_ticks, ("field", "t_mono")):
        t_mono = _num(df_or_ticks, "t_mono")
        if t0 is None:
            if not np.isfinite(t_mono).any():
                return _no_data(title)
            t0 = float(np.nanmin(t_mono))
        times = first_value_times(df_or_ticks, t0)
    else:
        return _no_data(title)

    # A hand-made frame could hold anything; the chart only needs one row per field.
    times = _evenly(times.drop_duplicates("field", keep="first"), MAX_ROWS)
    ms = _num(times, "seconds") * 1e3
    data = pd.DataFrame(
        {
            "field": times["field"].astype(str).to_numpy(dtype=object),
            "ms": ms,
            "label": [f"{v:,.1f} ms" if math.isfinite(v) else "never" for v in ms],
            # "never" rows have no bar; their label sits at the axis origin instead.
            "label_x": np.where(np.isfinite(ms), ms, 0.0),
        }
    )
    order = [f for f in FIRST_VALUE_FIELDS if f in set(data["field"])]
    order += [f for f in data["field"] if f not in order]
    y = alt.Y("field:N", title=None, sort=order)
    tooltip = [alt.Tooltip("field:N"), alt.Tooltip("label:N", title="time to first value")]
    bars = (
        alt.Chart()
        .mark_bar(color="#1f77b4")
        .encode(x=alt.X("ms:Q", title="ms since t0"), y=y, tooltip=tooltip)
    )
    labels = (
        alt.Chart()
        .mark_text(align="left", baseline="middle", dx=4)
        .encode(x="label_x:Q", y=y, text="label:N", tooltip=tooltip)
    )
    return alt.layer(bars, labels, data=data).properties(
        title=title, width="container", height=alt.Step(28)
    )


# ------------------------------------------------------------------------- interarrival


def interarrival(ticks: pd.DataFrame) -> pd.Series:
    """Seconds between consecutive tick arrivals (by t_mono), within each run.

    Ticks are ordered by t_mono inside each run_id; the gap across two runs is
    never counted (their monotonic clocks are unrelated). Ticks that arrived together
    (several fields of one quote update share one receive time) count as one arrival,
    so the distribution shows the feed's cadence rather than a spike at zero.
    Returns a float Series named `interarrival_s`, empty if there are fewer than
    two ticks in any run.
    """
    empty = pd.Series([], dtype="float64", name="interarrival_s")
    if not _usable(ticks, ("t_mono",)):
        return empty
    t = _num(ticks, "t_mono")
    if "run_id" in ticks.columns:
        runs = pd.factorize(ticks["run_id"], use_na_sentinel=False)[0]
    else:
        runs = np.zeros(len(ticks), dtype=np.int64)
    keep = np.isfinite(t)
    t, runs = t[keep], runs[keep]
    if len(t) < 2:
        return empty
    order = np.lexsort((t, runs))
    t, runs = t[order], runs[order]
    # One arrival per distinct receive time within a run.
    first = np.ones(len(t), dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (runs[1:] != runs[:-1])
    t, runs = t[first], runs[first]
    if len(t) < 2:
        return empty
    same_run = runs[1:] == runs[:-1]
    return pd.Series(np.diff(t)[same_run], name="interarrival_s")


# Log-spaced edges, 4 per decade, from 0.1 ms to 10 s; anything outside goes to an
# underflow/overflow bin so the counts always add up to the number of gaps.
_GAP_EDGES = np.logspace(-4, 1, 21)


def interarrival_bins(gaps: pd.Series | np.ndarray) -> pd.DataFrame:
    """Histogram of inter-arrival gaps (seconds) on log-spaced bins from 0.1 ms to 10 s.

    Returns one row per bin in order, with columns `bin` (label), `lo_s`, `hi_s`
    (NaN for the open-ended under/overflow bins), `count` and `share`.
    Gaps below 0.1 ms (including 0) land in the first bin, gaps of 10 s or more
    in the last, so `count` sums to the number of finite gaps.
    """
    values = np.asarray(gaps, dtype="float64")
    values = values[np.isfinite(values)]
    inside = values[(values >= _GAP_EDGES[0]) & (values < _GAP_EDGES[-1])]
    counts, _ = np.histogram(inside, bins=_GAP_EDGES)
    lo = [np.nan, *_GAP_EDGES[:-1], _GAP_EDGES[-1]]
    hi = [_GAP_EDGES[0], *_GAP_EDGES[1:], np.nan]
    labels = [f"< {_fmt_duration(_GAP_EDGES[0])}"]
    labels += [
        f"{_fmt_duration(a)} – {_fmt_duration(b)}" for a, b in itertools.pairwise(_GAP_EDGES)
    ]
    labels.append(f"≥ {_fmt_duration(_GAP_EDGES[-1])}")
    all_counts = np.concatenate(
        [[np.sum(values < _GAP_EDGES[0])], counts, [np.sum(values >= _GAP_EDGES[-1])]]
    ).astype(np.int64)
    total = int(all_counts.sum())
    return pd.DataFrame(
        {
            "bin": labels,
            "lo_s": lo,
            "hi_s": hi,
            "count": all_counts,
            "share": all_counts / total if total else np.zeros(len(all_counts)),
        }
    )


def interarrival_chart(ticks: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Histogram of tick inter-arrival gaps on log-spaced bins (0.1 ms … 10 s).

    Counts are computed in pandas (`interarrival_bins`), so the chart carries
    about two dozen rows however many ticks there were. The bins are drawn as
    equal-width ordinal bars, which is exactly a log axis for log-spaced bins
    and also leaves room for the "< 0.1 ms" and "≥ 10 s" catch-all bins.
    """
    title = title or "Tick inter-arrival times"
    gaps = interarrival(ticks) if isinstance(ticks, pd.DataFrame) else pd.Series(dtype=float)
    if gaps.empty:
        return _no_data(title)
    bins = interarrival_bins(gaps)
    return (
        alt.Chart(bins)
        .mark_bar(color="#1f77b4")
        .encode(
            x=alt.X(
                "bin:O",
                title="gap between ticks",
                sort=list(bins["bin"]),
                axis=alt.Axis(labelAngle=-45),
            ),
            y=alt.Y("count:Q", title="ticks"),
            tooltip=[
                alt.Tooltip("bin:O", title="gap"),
                alt.Tooltip("count:Q", format=","),
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .properties(title=f"{title} (n={len(gaps):,})", width="container", height=240)
    )


_ECDF_POINTS = 1000
_ECDF_TICKS_MS = [0, 0.1, 1, 10, 100, 1_000, 10_000, 100_000]


def interarrival_ecdf_chart(ticks: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Empirical CDF of tick inter-arrival gaps, drawn from at most 1,000 quantile points.

    With more gaps than that, the curve is sampled at evenly spaced
    probabilities (np.quantile), which keeps its shape and its tails exact at
    p=0 and p=1. The x axis is symlog in ms so that zero gaps (several fields
    from one message) stay visible next to multi-second stalls.
    """
    title = title or "Tick inter-arrival ECDF"
    gaps = interarrival(ticks) if isinstance(ticks, pd.DataFrame) else pd.Series(dtype=float)
    values = np.sort(gaps.to_numpy(dtype="float64"))
    if values.size == 0:
        return _no_data(title)
    if values.size <= _ECDF_POINTS:
        p = np.arange(1, values.size + 1) / values.size
    else:
        p = np.linspace(0.0, 1.0, _ECDF_POINTS)
        values = np.quantile(values, p)
    data = pd.DataFrame({"ms": values * 1e3, "p": p})
    return (
        alt.Chart(data)
        .mark_line(interpolate="step-after", color="#1f77b4")
        .encode(
            x=alt.X(
                "ms:Q",
                title="gap between ticks (ms, symlog)",
                scale=alt.Scale(type="symlog", constant=0.1),
                # Vega's automatic symlog ticks are linear-looking; decades read better.
                axis=alt.Axis(values=_ECDF_TICKS_MS, format="~g"),
            ),
            y=alt.Y(
                "p:Q",
                title="share of gaps ≤ x",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            tooltip=[
                alt.Tooltip("ms:Q", title="gap (ms)", format=",.3f"),
                alt.Tooltip("p:Q", title="quantile", format=".1%"),
            ],
        )
        .properties(title=f"{title} (n={len(gaps):,})", width="container", height=240)
    )


# ------------------------------------------------------------------------ price/spread


def price_spread_chart(
    ticks: pd.DataFrame,
    last_seconds: float | None = None,
    *,
    con_id: int | None = None,
    title: str | None = None,
) -> alt.LayerChart | alt.Chart:
    """Bid, ask and last as step lines, with the bid/ask spread on its own right-hand axis.

    The spread is ask − bid with both sides forward-filled through the tick
    stream (within each run, so one run's quote never leaks into the next); a
    -1 "no quote" on either side clears that side until a real price returns.
    `last_seconds` keeps only the final N seconds before the latest tick (for
    live views). One instrument is drawn: `con_id`, or by default the one with
    the latest tick. Each series is downsampled to at most `MAX_ROWS // 4`
    points by keeping the last value per time bucket, which is what a step
    line would show at the bucket's end.
    """
    title = title or "Bid / ask / last and spread"
    if not _usable(ticks, ("field", "price")):
        return _no_data(title)
    times, is_wall = _tick_times(ticks)
    frame = ticks
    if "con_id" in ticks.columns:
        con_ids = ticks["con_id"].to_numpy()
        if con_id is None and np.isfinite(times).any():
            con_id = con_ids[int(np.nanargmax(times))]
        if con_id is not None:
            mine = con_ids == con_id
            frame, times = ticks[mine], times[mine]

    is_price = frame["field"].isin(PRICE_SERIES).to_numpy() & np.isfinite(times)
    frame, times = frame[is_price], times[is_price]
    if frame.empty:
        return _no_data(title)
    if last_seconds is not None:
        recent = times >= np.max(times) - float(last_seconds)
        frame, times = frame[recent], times[recent]

    fields = frame["field"].astype(object).to_numpy()
    price = _num(frame, "price")
    real = real_mask(price, False)
    if "run_id" in frame.columns:
        runs = pd.factorize(frame["run_id"], use_na_sentinel=False)[0]
    else:
        runs = np.zeros(len(frame), dtype=np.int64)
    order = np.argsort(times, kind="stable")
    fields, price, real, runs, times = (a[order] for a in (fields, price, real, runs, times))

    # Forward-fill each side's quote. -inf marks "this side was just cleared"
    # so ffill stops there instead of carrying the stale quote over the gap.
    def side(name: str) -> np.ndarray:
        on_side = fields == name
        values = pd.Series(np.where(on_side, np.where(real, price, -np.inf), np.nan))
        filled = values.groupby(runs).ffill().to_numpy()
        return np.where(np.isneginf(filled), np.nan, filled)

    spread = side("ask") - side("bid")
    spread_rows = np.isin(fields, ("bid", "ask")) & np.isfinite(spread)
    price_rows = real
    long = pd.DataFrame(
        {
            "t": np.concatenate([times[price_rows], times[spread_rows]]),
            "series": np.concatenate([fields[price_rows], np.full(spread_rows.sum(), "spread")]),
            "value": np.concatenate([price[price_rows], spread[spread_rows]]),
            "run": np.concatenate([runs[price_rows], runs[spread_rows]]),
        }
    )
    if long.empty:
        return _no_data(title, "no real quotes")
    long = long.sort_values("t", kind="stable")

    per_series = MAX_ROWS // 4
    if long["series"].value_counts().max() > per_series:
        t = long["t"].to_numpy()
        t_min, span = t.min(), t.max() - t.min()
        bucket = (
            np.zeros(len(t), dtype=np.int64)
            if span <= 0
            else np.minimum(((t - t_min) / span * per_series).astype(np.int64), per_series - 1)
        )
        # Rows are time-sorted, so keep="last" is the last value in each bucket.
        long = long.assign(bucket=bucket).drop_duplicates(["series", "bucket"], keep="last")

    data = pd.DataFrame(
        {
            "series": long["series"].astype(str).to_numpy(dtype=object),
            "value": long["value"].to_numpy(),
            "elapsed_s": long["t"].to_numpy() - long["t"].min(),
        }
    )
    if is_wall:
        data.insert(0, "t", _from_epoch(long["t"].to_numpy()))
        x = _utc_x("t")
        time_tip = _utc_tooltip("t")
    else:
        data.insert(0, "t", data["elapsed_s"])
        x = alt.X("t:Q", title="seconds since first tick")
        time_tip = alt.Tooltip("t:Q", title="seconds", format=",.3f")
    multi_run = long["run"].nunique() > 1
    if multi_run:
        # Split lines per run so a gap between runs is not drawn as a price move.
        data["run"] = long["run"].to_numpy()

    color = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=list(_SERIES_COLORS), range=list(_SERIES_COLORS.values())),
    )
    tooltip = [
        time_tip,
        alt.Tooltip("series:N"),
        alt.Tooltip("value:Q", format=",.4f"),
        alt.Tooltip("elapsed_s:Q", title="s since first", format=",.3f"),
    ]
    extra = {"detail": alt.Detail("run:N")} if multi_run else {}
    prices = (
        alt.Chart()
        .transform_filter(alt.datum.series != "spread")
        .mark_line(interpolate="step-after")
        .encode(
            x=x,
            y=alt.Y("value:Q", title="price", scale=alt.Scale(zero=False)),
            color=color,
            tooltip=tooltip,
            **extra,
        )
    )
    spreads = (
        alt.Chart()
        .transform_filter(alt.datum.series == "spread")
        .mark_line(interpolate="step-after", strokeDash=[4, 2], opacity=0.8)
        .encode(
            x=x,
            y=alt.Y("value:Q", title="spread", axis=alt.Axis(orient="right")),
            color=color,
            tooltip=tooltip,
            **extra,
        )
    )
    symbol = ""
    if "symbol" in frame.columns and frame["symbol"].notna().any():
        symbol = f" — {frame['symbol'].dropna().iloc[-1]}"
    return (
        alt.layer(prices, spreads, data=data)
        .resolve_scale(y="independent")
        .properties(title=f"{title}{symbol}", width="container", height=280)
    )


# ------------------------------------------------------------------- checkpoint timeline


def checkpoint_timeline_chart(
    checkpoints: pd.DataFrame,
    *,
    run_id: str | None = None,
    title: str | None = None,
) -> alt.LayerChart | alt.Chart:
    """Checkpoints of one run on a time axis (ms since its first checkpoint), one row per phase.

    Points are colored by phase and labelled with the checkpoint name; a rule
    per phase spans its first to last checkpoint (computed in the spec from the
    same data). One run is drawn, `run_id` or by default the run of the latest
    checkpoint, because monotonic times of different runs are not comparable.
    Times are t_mono; a frame with no usable t_mono at all falls back to t_wall.
    """
    title = title or "Checkpoint timeline"
    if not _usable(checkpoints, ("name",)) or not ({"t_mono", "t_wall"} & set(checkpoints.columns)):
        return _no_data(title)
    cps = checkpoints
    wall = _epoch_seconds(_utc(cps, "t_wall"))
    if "run_id" in cps.columns and cps["run_id"].nunique(dropna=False) > 1:
        if run_id is None:
            latest = int(np.nanargmax(wall)) if np.isfinite(wall).any() else len(cps) - 1
            run_id = cps["run_id"].iloc[latest]
        mine = (cps["run_id"] == run_id).to_numpy()
        cps, wall = cps[mine], wall[mine]
    t = _num(cps, "t_mono")
    if not np.isfinite(t).any():
        t = wall
    keep = np.isfinite(t)
    cps, t = cps[keep], t[keep]
    if cps.empty:
        return _no_data(title)
    # Sort and thin before any per-row string work, which is the slow part.
    order = np.argsort(t, kind="stable")
    picked = _evenly(pd.DataFrame({"i": order}), MAX_ROWS)["i"].to_numpy()
    ms = (t[picked] - t.min()) * 1e3
    cps = cps.iloc[picked]

    data = pd.DataFrame(
        {
            "ms": ms,
            "phase": _text(cps, "phase", "unknown").to_numpy(),
            "name": _text(cps, "name").to_numpy(),
            "detail": _text(cps, "detail").to_numpy(),
        }
    )
    if "t_wall" in cps.columns:
        data["t_wall"] = _utc(cps, "t_wall").to_numpy()
    data["label_above"] = (data.groupby("phase").cumcount() % 2 == 0).to_numpy()

    phases = [p for p in _PHASE_ORDER if p in set(data["phase"])]
    phases += sorted(set(data["phase"]) - set(phases))
    y = alt.Y("phase:N", title=None, sort=phases)
    color = alt.Color("phase:N", title="phase", sort=phases)
    tooltip = [
        alt.Tooltip("name:N"),
        alt.Tooltip("phase:N"),
        alt.Tooltip("ms:Q", title="ms since first", format=",.1f"),
        alt.Tooltip("detail:N"),
    ]
    if "t_wall" in data.columns:
        tooltip.append(_utc_tooltip("t_wall"))
    spans = (
        alt.Chart()
        .mark_rule(strokeWidth=3, opacity=0.5)
        .encode(
            x=alt.X("min(ms):Q", title="ms since first checkpoint"),
            x2="max(ms):Q",
            y=y,
            color=color,
        )
    )
    points = (
        alt.Chart()
        .mark_point(filled=True, size=70)
        .encode(x="ms:Q", y=y, color=color, tooltip=tooltip)
    )
    # Checkpoints a few ms apart (contract_qualified, subscribed) would print on top
    # of each other: alternate labels above and below the phase line.
    above = (
        alt.Chart()
        .transform_filter("datum.label_above")
        .mark_text(align="left", baseline="bottom", angle=330, dx=3, dy=-5, fontSize=10)
        .encode(x="ms:Q", y=y, text="name:N")
    )
    below = (
        alt.Chart()
        .transform_filter("!datum.label_above")
        .mark_text(align="left", baseline="top", angle=30, dx=3, dy=5, fontSize=10)
        .encode(x="ms:Q", y=y, text="name:N")
    )
    return alt.layer(spans, points, above, below, data=data).properties(
        title=title, width="container", height=alt.Step(80)
    )


# ----------------------------------------------------------------------- run history


def _verdicts(runs: pd.DataFrame) -> pd.Series:
    """Verdicts as their string values, with anything unknown or missing as OTHER."""

    def convert(v: object) -> str:
        name = str(getattr(v, "value", v)).upper()
        return name if name in VERDICT_COLORS else "OTHER"

    return _map_distinct(runs["verdict"], convert, "OTHER")


def _verdict_color() -> alt.Color:
    return alt.Color(
        "verdict:N",
        title="verdict",
        scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values())),
    )


def verdict_history_chart(runs: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """One point per run over started_at, one row per verdict, in fixed verdict colors.

    With more than `MAX_ROWS` runs, the chart becomes stacked bars of run counts
    per verdict per day (or per week/month/year if days would still be too many).
    """
    title = title or "Run verdicts"
    if not _usable(runs, ("started_at", "verdict")):
        return _no_data(title)
    started = _utc(runs, "started_at")
    keep = started.notna().to_numpy()
    runs, started = runs[keep], started[keep]
    if runs.empty:
        return _no_data(title)
    verdict = _verdicts(runs)
    y_sort = list(VERDICT_COLORS)

    if len(runs) <= MAX_ROWS:
        finished = _utc(runs, "finished_at")
        data = pd.DataFrame(
            {
                "started_at": started.to_numpy(),
                "verdict": verdict.to_numpy(),
                "run_id": _text(runs, "run_id").to_numpy(),
                "status": _text(runs, "status").to_numpy(),
                "reason": _text(runs, "reason").to_numpy(),
                "scenario": _text(runs, "scenario").to_numpy(),
                "target": _text(runs, "target_label").to_numpy(),
                "exit_code": _num(runs, "exit_code"),
                "simulated": _text(runs, "simulated").to_numpy(),
                "duration_s": ((finished - started) / pd.Timedelta(seconds=1)).to_numpy(
                    dtype="float64", na_value=np.nan
                ),
            }
        )
        return (
            alt.Chart(data)
            .mark_point(filled=True, size=60, opacity=0.8)
            .encode(
                x=_utc_x("started_at", "started (UTC)"),
                y=alt.Y("verdict:N", title=None, sort=y_sort),
                color=_verdict_color(),
                tooltip=[
                    _utc_tooltip("started_at", "started (UTC)"),
                    alt.Tooltip("verdict:N"),
                    alt.Tooltip("run_id:N"),
                    alt.Tooltip("reason:N"),
                    alt.Tooltip("status:N"),
                    alt.Tooltip("scenario:N"),
                    alt.Tooltip("target:N"),
                    alt.Tooltip("exit_code:Q"),
                    alt.Tooltip("simulated:N"),
                    alt.Tooltip("duration_s:Q", title="duration (s)", format=",.1f"),
                ],
            )
            .properties(title=title, width="container", height=alt.Step(24))
        )

    counts, period = _by_period(
        started,
        pd.DataFrame({"verdict": verdict.to_numpy(), "one": 1}),
        keys=["verdict"],
        agg={"runs": ("one", "sum")},
        limit=MAX_ROWS,
    )
    # Stack in pandas: a bar spanning x..x2 (the whole period) is taken by Vega-Lite
    # as a horizontal range bar and is not stacked, so it needs explicit y and y2.
    rank = counts["verdict"].map({v: i for i, v in enumerate(VERDICT_COLORS)})
    counts = counts.assign(_rank=rank).sort_values(["period_start", "_rank"], kind="stable")
    counts["top"] = counts.groupby("period_start")["runs"].cumsum()
    counts["bottom"] = counts["top"] - counts["runs"]
    counts = counts.drop(columns="_rank").reset_index(drop=True)
    return (
        alt.Chart(counts)
        .mark_bar()
        .encode(
            x=_utc_x("period_start", f"{period} (UTC)"),
            x2="period_end:T",
            y=alt.Y("top:Q", title=f"runs per {period}"),
            y2="bottom:Q",
            color=_verdict_color(),
            tooltip=[
                _utc_tooltip("period_start", f"{period} from (UTC)"),
                alt.Tooltip("verdict:N"),
                alt.Tooltip("runs:Q", format=","),
            ],
        )
        .properties(title=f"{title} (runs per {period})", width="container", height=240)
    )


def first_tick_latency_chart(runs: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """first_bid_s and first_ask_s of each run over started_at, as two colored series.

    The data stays one row per run and is folded into series in the spec, so up
    to `MAX_ROWS` runs are drawn individually; beyond that each point is the
    median per day (or coarser period) and the tooltip says how many runs it covers.
    """
    title = title or "Time to first bid / ask"
    series = [c for c in ("first_bid_s", "first_ask_s") if c in getattr(runs, "columns", ())]
    if not series or not _usable(runs, ("started_at",)):
        return _no_data(title)
    started = _utc(runs, "started_at")
    values = pd.DataFrame({c: _num(runs, c) for c in series})
    keep = (started.notna().to_numpy()) & np.isfinite(values.to_numpy()).any(axis=1)
    if not keep.any():
        return _no_data(title)
    runs, started, values = runs[keep], started[keep], values[keep]

    if len(runs) <= MAX_ROWS:
        data = values.assign(
            started_at=started.to_numpy(),
            run_id=_text(runs, "run_id").to_numpy(),
            verdict=_text(runs, "verdict").to_numpy(),
        )
        detail = [alt.Tooltip("run_id:N"), alt.Tooltip("verdict:N")]
        suffix = ""
    else:
        data, period = _by_period(
            started,
            values,
            keys=[],
            agg={**{c: (c, "median") for c in series}, "runs": (series[0], "size")},
            limit=MAX_ROWS,
        )
        data = data.rename(columns={"period_start": "started_at"}).drop(columns="period_end")
        detail = [alt.Tooltip("runs:Q", title=f"runs in {period}", format=",")]
        suffix = f" (median per {period})"

    return (
        alt.Chart(data)
        .transform_fold(series, as_=["series", "seconds"])
        .mark_line(point=True, strokeWidth=1)
        .encode(
            x=_utc_x("started_at", "started (UTC)"),
            y=alt.Y("seconds:Q", title="seconds after subscribing"),
            color=alt.Color("series:N", title=None, sort=series),
            tooltip=[
                _utc_tooltip("started_at", "started (UTC)"),
                alt.Tooltip("series:N"),
                alt.Tooltip("seconds:Q", format=",.3f"),
                *detail,
            ],
        )
        .properties(title=f"{title}{suffix}", width="container", height=240)
    )


# ------------------------------------------------------------------------------ costs


def cost_chart(costs: pd.DataFrame, *, title: str | None = None) -> alt.LayerChart | alt.Chart:
    """Bars of total_cost per test trade and a cumulative cost line on its own right-hand axis.

    Cumulative cost is summed per currency (adding USD to EUR would be
    meaningless); a trade with unknown total_cost adds nothing to it. With more
    than `MAX_ROWS` trades, bars and line are per day (or coarser period) sums.
    """
    title = title or "Test-trade cost"
    if not _usable(costs, ("time", "total_cost")):
        return _no_data(title)
    when = _utc(costs, "time")
    keep = when.notna().to_numpy()
    costs, when = costs[keep], when[keep]
    if costs.empty:
        return _no_data(title)
    # argsort on the Series: to_numpy() of tz-aware datetimes builds one Timestamp per row.
    order = when.argsort(kind="stable").to_numpy()
    costs, when = costs.iloc[order], when.iloc[order]
    currency = _text(costs, "currency", "?").to_numpy()
    money = ["total_cost", "commission", "slippage", "realized_pnl"]

    if len(costs) <= MAX_ROWS:
        data = pd.DataFrame({"time": when.to_numpy(), "currency": currency})
        for c in money:
            data[c] = _num(costs, c)
        for c in ("run_id", "order_ref", "symbol"):
            data[c] = _text(costs, c).to_numpy()
        for c in ("quantity", "entry_price", "exit_price"):
            data[c] = _num(costs, c)
        x = _utc_x("time")
        x2: dict[str, alt.X2 | alt.Y2Datum] = {}
        bar_title = "cost per trade"
        tooltip = [
            _utc_tooltip("time"),
            alt.Tooltip("run_id:N"),
            alt.Tooltip("order_ref:N"),
            alt.Tooltip("symbol:N"),
            alt.Tooltip("quantity:Q"),
            alt.Tooltip("entry_price:Q", format=",.4f"),
            alt.Tooltip("exit_price:Q", format=",.4f"),
        ]
        suffix = ""
    else:
        frame = pd.DataFrame({c: _num(costs, c) for c in money}).assign(currency=currency)
        data, period = _by_period(
            when,
            frame,
            keys=["currency"],
            agg={**{c: (c, "sum") for c in money}, "trades": ("total_cost", "size")},
            limit=MAX_ROWS,
        )
        data = data.rename(columns={"period_start": "time"})
        x = _utc_x("time", f"{period} (UTC)")
        # Range bars (x..x2) need an explicit base, or Vega-Lite draws them horizontally.
        x2 = {"x2": alt.X2("period_end:T"), "y2": alt.Y2Datum(0)}
        bar_title = f"cost per {period}"
        tooltip = [
            _utc_tooltip("time", f"{period} from (UTC)"),
            alt.Tooltip("trades:Q", format=","),
        ]
        suffix = f" (per {period})"

    data["cumulative_cost"] = data["total_cost"].fillna(0.0).groupby(data["currency"]).cumsum()
    tooltip += [
        alt.Tooltip("currency:N"),
        *(alt.Tooltip(f"{c}:Q", format=",.4f") for c in money),
        alt.Tooltip("cumulative_cost:Q", format=",.4f"),
    ]
    color = alt.Color("currency:N", title="currency")
    bars = (
        alt.Chart()
        .mark_bar(opacity=0.6)
        .encode(x=x, y=alt.Y("total_cost:Q", title=bar_title), color=color, tooltip=tooltip, **x2)
    )
    line = (
        alt.Chart()
        .mark_line(interpolate="step-after", strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("cumulative_cost:Q", title="cumulative cost", axis=alt.Axis(orient="right")),
            color=color,
            tooltip=tooltip,
        )
    )
    return (
        alt.layer(bars, line, data=data)
        .resolve_scale(y="independent")
        .properties(title=f"{title}{suffix}", width="container", height=260)
    )


# ---------------------------------------------------------------------- stack latency


def stack_latency_frame(checks: pd.DataFrame) -> pd.DataFrame:
    """The stack checks that measured a latency, one row each, oldest first.

    Columns: at_wall (UTC, when the stack showed it), check (``endpoint.name``),
    latency_ms (stack moment minus the broker moment the harness observed; negative when
    the stack was first), run_id, verdict, reason. Checks without a latency or a moment
    (a stack that never showed it) are left out: there is nothing to draw.
    """
    cols = ["at_wall", "check", "latency_ms", "run_id", "verdict", "reason"]
    if not _usable(checks, ("at_wall", "latency_s", "endpoint", "name")):
        return pd.DataFrame(columns=cols)
    at = _utc(checks, "at_wall")
    latency = _num(checks, "latency_s")
    keep = at.notna().to_numpy() & np.isfinite(latency)
    checks, at, latency = checks[keep], at[keep], latency[keep]
    check = _text(checks, "endpoint").to_numpy() + "." + _text(checks, "name").to_numpy()
    frame = pd.DataFrame(
        {
            "at_wall": at.to_numpy(),
            "check": check,
            "latency_ms": latency * 1e3,
            "run_id": _text(checks, "run_id").to_numpy(),
            "verdict": _text(checks, "verdict").to_numpy(),
            "reason": _text(checks, "reason").to_numpy(),
        }
    )
    return frame.sort_values("at_wall", kind="stable").reset_index(drop=True)[cols]


def stack_latency_chart(checks: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Broker→stack latency of each stack check (``endpoint.check``) over the run history.

    One point per check per run up to `MAX_ROWS`; beyond that the median per check per
    day (or coarser period), with the number of checks it covers in the tooltip.
    """
    title = title or "Broker → stack latency per check"
    data = stack_latency_frame(checks)
    if data.empty:
        return _no_data(title)
    checks_sorted = sorted(set(data["check"]))
    if len(data) <= MAX_ROWS:
        detail = [
            alt.Tooltip("run_id:N"),
            alt.Tooltip("verdict:N"),
            alt.Tooltip("reason:N"),
        ]
        suffix = ""
    else:
        data, period = _by_period(
            data["at_wall"],
            data[["check", "latency_ms"]],
            keys=["check"],
            agg={"latency": ("latency_ms", "median"), "checks": ("latency_ms", "size")},
            limit=MAX_ROWS,
        )
        data = data.rename(columns={"period_start": "at_wall", "latency": "latency_ms"})
        data = data.drop(columns="period_end")
        detail = [alt.Tooltip("checks:Q", title=f"checks in {period}", format=",")]
        suffix = f" (median per {period})"
    return (
        alt.Chart(data)
        .mark_line(point=True, strokeWidth=1)
        .encode(
            x=_utc_x("at_wall", "shown by the stack (UTC)"),
            y=alt.Y("latency_ms:Q", title="ms after the broker"),
            color=alt.Color("check:N", title="check", sort=checks_sorted),
            tooltip=[
                _utc_tooltip("at_wall", "shown (UTC)"),
                alt.Tooltip("check:N"),
                alt.Tooltip("latency_ms:Q", title="latency (ms)", format=",.1f"),
                *detail,
            ],
        )
        .properties(title=f"{title}{suffix}", width="container", height=240)
    )


def drill_latency_chart(results: pd.DataFrame, *, title: str | None = None) -> alt.Chart:
    """Each drill reaction's measured latency against its deadline (``Store.drill_results``):
    one point per drill x reaction x endpoint x run, coloured by verdict; the deadline is a tick."""
    title = title or "Drill reactions: latency against deadline"
    if results.empty:
        return _no_data(title, "no drills recorded")
    data = pd.DataFrame(
        {
            "reaction": results["drill"].astype(str) + "." + results["reaction"].astype(str),
            "endpoint": results["endpoint"].astype(str),
            "run_id": results["run_id"].astype(str),
            "verdict": results["verdict"].astype(str),
            "latency_ms": pd.to_numeric(results["latency_s"], errors="coerce") * 1000,
            "deadline_ms": pd.to_numeric(results["deadline_s"], errors="coerce") * 1000,
            "detail": results["detail"].astype(str),
        }
    ).tail(MAX_ROWS)
    timed = data.dropna(subset=["latency_ms"])
    if timed.empty:
        return _no_data(title, "no reaction with a measured latency")
    y = alt.Y("reaction:N", title=None, sort=sorted(set(timed["reaction"])))
    points = (
        alt.Chart(timed)
        .mark_point(filled=True, size=60)
        .encode(
            x=alt.X("latency_ms:Q", title="ms after the fault (or recovery)"),
            y=y,
            color=_verdict_color(),
            tooltip=[
                alt.Tooltip("run_id:N"),
                alt.Tooltip("endpoint:N"),
                alt.Tooltip("latency_ms:Q", title="latency (ms)", format=",.1f"),
                alt.Tooltip("deadline_ms:Q", title="deadline (ms)", format=",.0f"),
                alt.Tooltip("verdict:N"),
                alt.Tooltip("detail:N"),
            ],
        )
    )
    deadlines = (
        alt.Chart(timed.dropna(subset=["deadline_ms"]).drop_duplicates(["reaction", "deadline_ms"]))
        .mark_tick(color="#999", thickness=2, size=18)
        .encode(x="deadline_ms:Q", y=y, tooltip=[alt.Tooltip("deadline_ms:Q", title="deadline")])
    )
    return (points + deadlines).properties(title=title, width="container", height=260)
