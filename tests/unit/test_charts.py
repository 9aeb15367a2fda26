"""Chart builders over real pandas frames: exact helper values, valid specs, bounded data.

Every chart is validated by `chart.to_dict()` (Altair checks the spec against the
Vega-Lite schema there) and its inline data is counted by walking the
top-level `datasets`, which is where Altair consolidates every layer's data.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from harness_lib import report
from harness_lib.charts import (
    FIRST_VALUE_FIELDS,
    MAX_ROWS,
    VERDICT_COLORS,
    checkpoint_timeline_chart,
    cost_chart,
    first_tick_latency_chart,
    first_value_times,
    interarrival,
    interarrival_bins,
    interarrival_chart,
    interarrival_ecdf_chart,
    price_spread_chart,
    stack_latency_chart,
    stack_latency_frame,
    time_to_first_value_chart,
    verdict_history_chart,
)

BIG = 1_000_000
T0_WALL = 1_700_000_000.0  # 2023-11-14, an arbitrary fixed UTC epoch


# ------------------------------------------------------------------------ spec helpers


def spec_of(chart: alt.TopLevelMixin) -> dict[str, Any]:
    """The validated Vega-Lite spec (to_dict raises on an invalid one)."""
    return chart.to_dict()


def datasets(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return spec.get("datasets", {})


def data_rows(spec: dict[str, Any]) -> int:
    """Inline rows of a chart: top-level datasets plus any inline `values` left in place."""
    total = sum(len(rows) for rows in datasets(spec).values())

    def walk(node: Any) -> int:
        if isinstance(node, dict):
            own = 0
            data = node.get("data")
            if isinstance(data, dict) and isinstance(data.get("values"), list):
                own = len(data["values"])
            return own + sum(walk(v) for k, v in node.items() if k != "datasets")
        if isinstance(node, list):
            return sum(walk(v) for v in node)
        return 0

    return total + walk(spec)


def has_url_data(node: Any) -> bool:
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "url" in data:
            return True
        return any(has_url_data(v) for v in node.values())
    if isinstance(node, list):
        return any(has_url_data(v) for v in node)
    return False


def only_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a chart that has exactly one dataset."""
    sets = list(datasets(spec).values())
    assert len(sets) == 1, f"expected one dataset, got {len(sets)}"
    return sets[0]


def is_no_data(spec: dict[str, Any]) -> bool:
    rows = [r for rows in datasets(spec).values() for r in rows]
    return spec.get("mark", {}).get("type") == "text" and rows == [{"message": "no data"}]


# ---------------------------------------------------------------------------- frames


def make_ticks(n: int, *, runs: int = 1, seed: int = 0) -> pd.DataFrame:
    """A ticks frame shaped like the store's: mixed fields, -1 no-quotes, sizes, two clocks."""
    rng = np.random.default_rng(seed)
    names = np.array(["bid", "ask", "last", "bidSize", "askSize", "lastSize", "volume"])
    field = names[rng.integers(0, len(names), n)]
    t_mono = 5_000.0 + np.cumsum(rng.exponential(0.002, n))
    mid = 450.0 + np.cumsum(rng.normal(0, 0.01, n))
    price = np.where(field == "bid", mid - 0.01, np.where(field == "ask", mid + 0.01, mid))
    is_price = np.isin(field, ["bid", "ask", "last"])
    price = np.where(is_price, price, np.nan)
    price[is_price & (rng.random(n) < 0.01)] = -1.0
    size = np.where(is_price, np.nan, rng.integers(1, 500, n).astype(float))
    t_wall_epoch = T0_WALL + (t_mono - t_mono[0])
    run_id = np.array([f"run-{i}" for i in range(runs)])[np.arange(n) * runs // max(n, 1)]
    return pd.DataFrame(
        {
            "run_id": run_id,
            "con_id": 756733,
            "symbol": "SPY",
            "field": field,
            "tick_type": rng.integers(0, 100, n),
            "price": price,
            "size": size,
            "t_mono": t_mono,
            "t_wall": pd.to_datetime(t_wall_epoch, unit="s", utc=True),
            "t_wall_epoch": t_wall_epoch,
            "market_data_type": 1,
            "seq": np.arange(n),
        }
    )


CHECKPOINT_PLAN = [
    ("health", "connected", 0.000),
    ("health", "accounts_verified", 0.040),
    ("ticks", "contract_qualified", 0.090),
    ("ticks", "subscribed", 0.100),
    ("ticks", "first_tick", 0.350),
    ("ticks", "bid_ask_live", 0.600),
    ("round_trip", "order_submitted", 0.700),
    ("round_trip", "entry_filled", 0.950),
    ("round_trip", "entry_commission", 1.000),
    ("round_trip", "exit_submitted", 1.100),
    ("round_trip", "exit_filled", 1.300),
    ("round_trip", "exit_commission", 1.350),
    ("round_trip", "flat", 1.400),
    ("cleanup", "disconnected", 1.500),
]


def make_checkpoints(run_ids: list[str], start_mono: float = 200.0) -> pd.DataFrame:
    rows = []
    for i, run_id in enumerate(run_ids):
        for phase, name, offset in CHECKPOINT_PLAN:
            rows.append(
                {
                    "run_id": run_id,
                    "phase": phase,
                    "name": name,
                    "t_mono": start_mono + offset,
                    "t_wall": pd.Timestamp(T0_WALL + 3600 * i + offset, unit="s", tz="UTC"),
                    "detail": f"{name} ok",
                }
            )
    return pd.DataFrame(rows)


def make_runs(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    verdicts = np.array(["PASS", "FAIL", "STALLED", "REFUSED", "BAD_INPUT", "ABORTED"])
    started = pd.to_datetime(T0_WALL + np.arange(n) * 600.0, unit="s", utc=True)
    first_bid = rng.exponential(0.3, n)
    first_bid[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "run_id": [f"r{i:07d}" for i in range(n)],
            "started_at": started,
            "finished_at": started + pd.Timedelta(seconds=3),
            "status": "finished",
            "verdict": verdicts[rng.integers(0, len(verdicts), n)],
            "reason": "",
            "exit_code": 0,
            "simulated": True,
            "scenario": "normal",
            "target_label": "sim:4002",
            "contract": "SPY",
            "first_bid_s": first_bid,
            "first_ask_s": rng.exponential(0.3, n),
            "total_cost": rng.random(n),
        }
    )


def make_costs(n: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    commission = np.full(n, 2.0)
    slippage = rng.random(n) * 0.05
    return pd.DataFrame(
        {
            "time": pd.to_datetime(T0_WALL + np.arange(n) * 900.0, unit="s", utc=True),
            "run_id": [f"r{i}" for i in range(n)],
            "order_ref": [f"livefire-{i}" for i in range(n)],
            "symbol": "SPY",
            "quantity": 1.0,
            "entry_price": 450.0,
            "exit_price": 450.01,
            "commission": commission,
            "slippage": slippage,
            "total_cost": commission + slippage,
            "realized_pnl": -slippage,
            "currency": "USD",
        }
    )


STACK_CHECKS = ("stream", "quotes", "position_opened", "trade_id", "position_cleared")


def make_stack_checks(n: int, seed: int = 3) -> pd.DataFrame:
    """A stack_checks frame shaped like the store's: five checks per run, one endpoint,
    stream without a latency, one failure in ten without a moment."""
    rng = np.random.default_rng(seed)
    run = np.arange(n) // len(STACK_CHECKS)
    name = np.array(STACK_CHECKS)[np.arange(n) % len(STACK_CHECKS)]
    latency = rng.exponential(0.05, n)
    latency[name == "stream"] = np.nan
    failed = rng.random(n) < 0.1
    at = T0_WALL + run * 600.0 + np.arange(n) % len(STACK_CHECKS)
    return pd.DataFrame(
        {
            "run_id": [f"r{i:07d}" for i in run],
            "endpoint": "dash-sse",
            "name": name,
            "verdict": np.where(failed, "FAIL", "PASS"),
            "reason": np.where(failed, "dash-sse quotes check failed: showed bid null", "ok"),
            "latency_s": np.where(failed, np.nan, latency),
            "at_wall": pd.to_datetime(np.where(failed, np.nan, at), unit="s", utc=True),
            "expected": "",
            "observed": "",
        }
    )


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    return make_ticks(3_000, runs=2)


@pytest.fixture(scope="module")
def big_ticks() -> pd.DataFrame:
    return make_ticks(BIG, runs=3)


FrameKind = str
Builder = Callable[[pd.DataFrame], alt.TopLevelMixin]

# Each chart, with the kind of frame it reads.
BUILDERS: dict[str, tuple[FrameKind, Builder]] = {
    "time_to_first_value": ("ticks", time_to_first_value_chart),
    "interarrival": ("ticks", interarrival_chart),
    "interarrival_ecdf": ("ticks", interarrival_ecdf_chart),
    "price_spread": ("ticks", price_spread_chart),
    "price_spread_last_10s": ("ticks", lambda df: price_spread_chart(df, last_seconds=10.0)),
    "checkpoint_timeline": ("checkpoints", checkpoint_timeline_chart),
    "verdict_history": ("runs", verdict_history_chart),
    "first_tick_latency": ("runs", first_tick_latency_chart),
    "cost": ("costs", cost_chart),
    "stack_latency": ("stack_checks", stack_latency_chart),
}

EMPTY_COLUMNS = {
    "ticks": list(make_ticks(1).columns),
    "checkpoints": list(make_checkpoints(["x"]).columns),
    "runs": list(make_runs(1).columns),
    "costs": list(make_costs(1).columns),
    "stack_checks": list(make_stack_checks(1).columns),
}


@pytest.fixture(scope="module")
def typical(ticks: pd.DataFrame) -> dict[FrameKind, pd.DataFrame]:
    return {
        "ticks": ticks,
        "checkpoints": make_checkpoints(["run-0", "run-1"]),
        "runs": make_runs(200),
        "costs": make_costs(50),
        "stack_checks": make_stack_checks(500),
    }


@pytest.fixture(scope="module")
def huge(big_ticks: pd.DataFrame) -> dict[FrameKind, pd.DataFrame]:
    # One run with a million checkpoints is absurd, but the bound must hold anyway.
    n = BIG
    checkpoints = pd.DataFrame(
        {
            "run_id": "run-big",
            "phase": np.array(["health", "ticks", "round_trip", "cleanup"])[np.arange(n) % 4],
            "name": "heartbeat",
            "t_mono": np.arange(n) * 0.001,
            "t_wall": pd.to_datetime(T0_WALL + np.arange(n) * 0.001, unit="s", utc=True),
            "detail": "",
        }
    )
    return {
        "ticks": big_ticks,
        "checkpoints": checkpoints,
        "runs": make_runs(n),
        "costs": make_costs(n),
        "stack_checks": make_stack_checks(n),
    }


# ------------------------------------------------------------------ every chart, 3 sizes


@pytest.mark.parametrize("name", list(BUILDERS))
def test_chart_builds_valid_inline_spec_on_typical_data(
    name: str, typical: dict[FrameKind, pd.DataFrame]
) -> None:
    kind, build = BUILDERS[name]
    spec = spec_of(build(typical[kind]))
    assert not is_no_data(spec)
    assert 0 < data_rows(spec) <= MAX_ROWS
    assert not has_url_data(spec)
    assert spec["width"] == "container"
    assert spec["title"]


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("shape", ["no_columns", "columns_no_rows"])
def test_chart_on_empty_frame_says_no_data(name: str, shape: str) -> None:
    kind, build = BUILDERS[name]
    frame = pd.DataFrame() if shape == "no_columns" else pd.DataFrame(columns=EMPTY_COLUMNS[kind])
    spec = spec_of(build(frame))
    assert is_no_data(spec)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_chart_on_a_million_rows_stays_under_max_rows_and_fast(
    name: str, huge: dict[FrameKind, pd.DataFrame]
) -> None:
    kind, build = BUILDERS[name]
    frame = huge[kind]
    assert len(frame) == BIG
    started = time.perf_counter()
    spec = spec_of(build(frame))
    elapsed = time.perf_counter() - started
    assert not is_no_data(spec)
    assert 0 < data_rows(spec) <= MAX_ROWS
    assert elapsed < 3.0, f"{name} took {elapsed:.2f}s on {BIG:,} rows"


def test_custom_title_is_used() -> None:
    spec = spec_of(interarrival_chart(pd.DataFrame(), title="Gaps on ES"))
    assert spec["title"] == "Gaps on ES"


def test_chart_renders_to_standalone_html(typical: dict[FrameKind, pd.DataFrame]) -> None:
    # The post-mortem export writes charts as HTML outside marimo: Altair's own
    # 5,000-row limit applies there, and to_html must not need any server.
    html = price_spread_chart(typical["ticks"]).to_html()
    assert "vega-embed" in html and '"datasets"' in html


# ------------------------------------------------------------------ time to first value


def hand_made_ticks(t0: float) -> pd.DataFrame:
    rows = [
        # field, price, size, seconds after t0; listed out of time order on purpose
        ("volume", np.nan, 100.0, 0.01),
        ("bid", -1.0, 0.0, 0.10),  # IB's "no quote": not a price
        ("bidSize", np.nan, 0.0, 0.10),  # the size that comes with it: not a size
        ("bid", np.nan, np.nan, 0.15),
        ("ask", 10.30, np.nan, 0.70),  # later than the 0.5 s ask below
        ("bid", 10.00, np.nan, 0.25),
        ("bidSize", np.nan, 5.0, 0.25),
        ("last", -1.0, np.nan, 0.20),  # the only "last": never real
        ("ask", 10.20, np.nan, 0.50),
        ("askSize", np.nan, 3.0, 0.50),
        ("bid", 10.10, np.nan, 0.30),
    ]
    return pd.DataFrame(
        {
            "run_id": "r",
            "field": [r[0] for r in rows],
            "price": [r[1] for r in rows],
            "size": [r[2] for r in rows],
            "t_mono": [t0 + r[3] for r in rows],
        }
    )


def test_first_value_times_exact_values() -> None:
    t0 = 100.0
    got = first_value_times(hand_made_ticks(t0), t0).set_index("field")["seconds"]
    assert list(got.index) == list(FIRST_VALUE_FIELDS)
    assert got["bid"] == pytest.approx(0.25)
    assert got["ask"] == pytest.approx(0.50)
    assert math.isnan(got["last"])
    assert got["bidSize"] == pytest.approx(0.25)
    assert got["askSize"] == pytest.approx(0.50)


def test_first_value_times_without_ticks_is_all_nan() -> None:
    got = first_value_times(pd.DataFrame(columns=["field", "price", "size", "t_mono"]), 1.0)
    assert list(got["field"]) == list(FIRST_VALUE_FIELDS)
    assert got["seconds"].isna().all()


def test_time_to_first_value_chart_labels_ms_and_never() -> None:
    t0 = 100.0
    rows = only_rows(spec_of(time_to_first_value_chart(hand_made_ticks(t0), t0=t0)))
    labels = {r["field"]: r["label"] for r in rows}
    assert labels == {
        "bid": "250.0 ms",
        "ask": "500.0 ms",
        "last": "never",
        "bidSize": "250.0 ms",
        "askSize": "500.0 ms",
    }
    never = next(r for r in rows if r["field"] == "last")
    assert never["ms"] is None  # no bar is drawn for it


def test_time_to_first_value_chart_accepts_precomputed_times() -> None:
    times = first_value_times(hand_made_ticks(100.0), 100.0)
    rows = only_rows(spec_of(time_to_first_value_chart(times)))
    assert {r["field"]: r["ms"] for r in rows}["ask"] == pytest.approx(500.0)


def test_time_to_first_value_chart_defaults_t0_to_first_tick() -> None:
    rows = only_rows(spec_of(time_to_first_value_chart(hand_made_ticks(100.0))))
    # The first tick (volume) is at t0+0.01, so bid's first real price is 240 ms after it.
    assert {r["field"]: r["ms"] for r in rows}["bid"] == pytest.approx(240.0)


# ------------------------------------------------------------------------- interarrival


def test_interarrival_of_a_known_sequence_per_run() -> None:
    ticks = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "a", "a", "b", "a", "a"],
            "t_mono": [0.5, 0.0, 10.25, 2.5, 0.001, 10.0, 0.001, np.nan],
        }
    )
    gaps = interarrival(ticks)
    assert gaps.name == "interarrival_s"
    # Run a sorted: 0, .001, .001 (one arrival, two ticks), .5, 2.5; run b: 10, 10.25;
    # ticks that arrived together count once, and no gap spans two runs.
    assert sorted(gaps) == pytest.approx(sorted([0.001, 0.499, 2.0, 0.25]))


def test_interarrival_needs_two_ticks() -> None:
    assert interarrival(pd.DataFrame({"t_mono": [1.0]})).empty
    assert interarrival(pd.DataFrame()).empty


def test_interarrival_bins_put_every_gap_somewhere() -> None:
    gaps = np.array([0.0, 0.00005, 0.0001, 0.5, 10.0, 20.0, np.nan])
    bins = interarrival_bins(gaps)
    counts = dict(zip(bins["bin"], bins["count"], strict=True))
    assert bins["count"].sum() == 6
    assert counts["< 0.1 ms"] == 2
    assert counts["0.1 ms – 0.18 ms"] == 1
    assert counts["316 ms – 562 ms"] == 1
    assert counts["≥ 10 s"] == 2
    assert bins["share"].sum() == pytest.approx(1.0)


def test_interarrival_chart_is_a_small_binned_histogram(big_ticks: pd.DataFrame) -> None:
    rows = only_rows(spec_of(interarrival_chart(big_ticks)))
    assert len(rows) == 22
    # Every gap is counted: n ticks in 3 runs give n - 3 gaps.
    assert sum(r["count"] for r in rows) == BIG - 3


def test_interarrival_ecdf_uses_at_most_1000_points(big_ticks: pd.DataFrame) -> None:
    rows = only_rows(spec_of(interarrival_ecdf_chart(big_ticks)))
    assert len(rows) == 1000
    assert rows[0]["p"] == 0 and rows[-1]["p"] == 1
    ms = [r["ms"] for r in rows]
    assert ms == sorted(ms)


def test_interarrival_ecdf_small_input_keeps_every_gap() -> None:
    ticks = pd.DataFrame({"run_id": "r", "t_mono": [0.0, 0.001, 0.003, 0.006]})
    rows = only_rows(spec_of(interarrival_ecdf_chart(ticks)))
    assert [r["ms"] for r in rows] == pytest.approx([1.0, 2.0, 3.0])
    assert [r["p"] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0])


# ------------------------------------------------------------------------ price/spread


def quote_ticks(rows: list[tuple[str, float, float]], run_id: str = "r") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": run_id,
            "con_id": 1,
            "symbol": "XYZ",
            "field": [r[0] for r in rows],
            "price": [r[1] for r in rows],
            "t_mono": [r[2] for r in rows],
            "t_wall_epoch": [T0_WALL + r[2] for r in rows],
        }
    )


def series_values(spec: dict[str, Any], series: str) -> list[float]:
    return [r["value"] for r in only_rows(spec) if r["series"] == series]


def test_spread_is_forward_filled_and_cleared_by_no_quote() -> None:
    ticks = quote_ticks(
        [
            ("bid", 10.0, 1.0),
            ("ask", 10.5, 2.0),  # spread 0.5
            ("last", 10.2, 2.5),  # not a quote: no spread point
            ("bid", 10.2, 3.0),  # 0.3
            ("ask", -1.0, 4.0),  # ask side gone: no spread until it returns
            ("bid", 10.1, 4.5),  # still no ask
            ("ask", 10.4, 5.0),  # 0.3 against the forward-filled bid 10.1
        ]
    )
    spec = spec_of(price_spread_chart(ticks))
    assert series_values(spec, "spread") == pytest.approx([0.5, 0.3, 0.3])
    assert series_values(spec, "ask") == pytest.approx([10.5, 10.4])  # the -1 is not drawn
    assert series_values(spec, "last") == pytest.approx([10.2])


def test_spread_does_not_leak_across_runs() -> None:
    ticks = pd.concat(
        [
            quote_ticks([("bid", 10.0, 1.0), ("ask", 10.5, 2.0)], run_id="first"),
            quote_ticks([("bid", 20.0, 100.0), ("ask", 20.2, 101.0)], run_id="second"),
        ]
    )
    spec = spec_of(price_spread_chart(ticks))
    # Without the per-run fill, the second run's first bid would pair with 10.5.
    assert series_values(spec, "spread") == pytest.approx([0.5, 0.2])


def test_price_spread_last_seconds_keeps_the_tail() -> None:
    ticks = quote_ticks([("bid", 10.0 + i, float(i)) for i in range(100)])
    spec = spec_of(price_spread_chart(ticks, last_seconds=9.5))
    assert series_values(spec, "bid") == pytest.approx([10.0 + i for i in range(90, 100)])


def test_price_spread_downsamples_each_series_and_keeps_the_latest(
    big_ticks: pd.DataFrame,
) -> None:
    spec = spec_of(price_spread_chart(big_ticks))
    rows = only_rows(spec)
    for series in ("bid", "ask", "last", "spread"):
        assert 0 < sum(r["series"] == series for r in rows) <= MAX_ROWS // 4
    # The newest real last price survives downsampling (it is the last in its bucket).
    real = big_ticks[(big_ticks["field"] == "last") & (big_ticks["price"] != -1)]
    assert series_values(spec, "last")[-1] == pytest.approx(real["price"].iloc[-1])


def test_price_spread_draws_the_instrument_with_the_latest_tick() -> None:
    old = quote_ticks([("bid", 1.0, 1.0)]).assign(con_id=111, symbol="OLD")
    new = quote_ticks([("bid", 2.0, 2.0)]).assign(con_id=222, symbol="NEW")
    spec = spec_of(price_spread_chart(pd.concat([old, new])))
    assert series_values(spec, "bid") == [2.0]
    assert "NEW" in spec["title"]
    spec = spec_of(price_spread_chart(pd.concat([old, new]), con_id=111))
    assert series_values(spec, "bid") == [1.0]


# ------------------------------------------------------------------ checkpoint timeline


def test_checkpoint_timeline_is_ms_since_first_checkpoint_of_latest_run() -> None:
    cps = make_checkpoints(["old", "new"])
    rows = only_rows(spec_of(checkpoint_timeline_chart(cps)))
    assert len(rows) == len(CHECKPOINT_PLAN)  # only the latest run
    by_name = {r["name"]: r for r in rows}
    assert by_name["connected"]["ms"] == pytest.approx(0.0)
    assert by_name["entry_filled"]["ms"] == pytest.approx(950.0)
    assert by_name["entry_filled"]["phase"] == "round_trip"


def test_checkpoint_timeline_has_a_rule_per_phase_span() -> None:
    spec = spec_of(checkpoint_timeline_chart(make_checkpoints(["r"]), run_id="r"))
    rule = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    assert rule["encoding"]["x"]["aggregate"] == "min"
    assert rule["encoding"]["x2"]["aggregate"] == "max"
    assert rule["encoding"]["y"]["field"] == "phase"


# ------------------------------------------------------------------------- run history


def test_verdict_colors_are_fixed() -> None:
    spec = spec_of(verdict_history_chart(make_runs(20)))
    scale = spec["encoding"]["color"]["scale"]
    colors = dict(zip(scale["domain"], scale["range"], strict=True))
    assert colors == VERDICT_COLORS
    # The HTML report's badges use the same table: a verdict looks the same everywhere.
    for verdict, colour in colors.items():
        if verdict != "OTHER":
            assert f"background:{colour}" in report._verdict_badge(verdict)
    # Every verdict distinguishable from every other.
    assert len(set(colors.values())) == len(colors)


def test_verdict_history_has_one_mark_per_run_and_unknowns_as_other() -> None:
    runs = make_runs(30)
    runs.loc[0, "verdict"] = "weird"
    runs.loc[1, "verdict"] = None
    rows = only_rows(spec_of(verdict_history_chart(runs)))
    assert len(rows) == 30
    assert [r["verdict"] for r in rows[:2]] == ["OTHER", "OTHER"]
    assert rows[2]["duration_s"] == pytest.approx(3.0)


def test_verdict_history_aggregates_per_day_beyond_max_rows() -> None:
    runs = make_runs(MAX_ROWS + 1)  # one run every 10 min: about 35 days
    spec = spec_of(verdict_history_chart(runs))
    rows = only_rows(spec)
    assert spec["mark"]["type"] == "bar"
    assert "per day" in spec["title"]
    assert sum(r["runs"] for r in rows) == MAX_ROWS + 1
    expected = runs.groupby([runs["started_at"].dt.floor("D"), "verdict"]).size()
    assert len(rows) == len(expected)
    # Stacked in pandas: each day's bars tile 0..runs that day without gaps.
    first_day = [r for r in rows if r["period_start"] == rows[0]["period_start"]]
    assert first_day[0]["bottom"] == 0
    for lower, upper in itertools.pairwise(first_day):
        assert upper["bottom"] == lower["top"]
    assert first_day[-1]["top"] == sum(r["runs"] for r in first_day)


def test_first_tick_latency_is_one_row_per_run_folded_in_spec() -> None:
    runs = make_runs(40)
    spec = spec_of(first_tick_latency_chart(runs))
    rows = only_rows(spec)
    assert len(rows) == 40
    assert spec["transform"][0]["fold"] == ["first_bid_s", "first_ask_s"]
    assert rows[3]["first_ask_s"] == pytest.approx(runs["first_ask_s"].iloc[3])


def test_first_tick_latency_aggregates_medians_beyond_max_rows() -> None:
    runs = make_runs(MAX_ROWS * 2)
    spec = spec_of(first_tick_latency_chart(runs))
    rows = only_rows(spec)
    assert "median per day" in spec["title"]
    first_day = runs[runs["started_at"].dt.floor("D") == runs["started_at"].iloc[0].floor("D")]
    assert rows[0]["runs"] == len(first_day)
    assert rows[0]["first_ask_s"] == pytest.approx(first_day["first_ask_s"].median())


# ------------------------------------------------------------------------------ costs


def test_cost_chart_bars_per_trade_and_cumulative_line() -> None:
    costs = make_costs(5)
    costs.loc[2, "total_cost"] = np.nan  # unknown cost adds nothing to the running total
    spec = spec_of(cost_chart(costs))
    rows = only_rows(spec)
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["bar", "line"]
    assert spec["resolve"]["scale"]["y"] == "independent"
    expected = costs["total_cost"].fillna(0).cumsum()
    assert [r["cumulative_cost"] for r in rows] == pytest.approx(list(expected))


def test_cost_chart_cumulates_per_currency() -> None:
    costs = make_costs(4).assign(currency=["USD", "EUR", "USD", "EUR"], total_cost=1.0)
    rows = only_rows(spec_of(cost_chart(costs)))
    assert [(r["currency"], r["cumulative_cost"]) for r in rows] == [
        ("USD", 1.0),
        ("EUR", 1.0),
        ("USD", 2.0),
        ("EUR", 2.0),
    ]


def test_cost_chart_aggregates_per_day_beyond_max_rows() -> None:
    costs = make_costs(MAX_ROWS + 10)  # one trade every 15 min: 96 per day
    spec = spec_of(cost_chart(costs))
    rows = only_rows(spec)
    assert "per day" in spec["title"]
    assert sum(r["trades"] for r in rows) == MAX_ROWS + 10
    assert rows[-1]["cumulative_cost"] == pytest.approx(costs["total_cost"].sum())


# ------------------------------------------------------------------------ stack latency


def test_stack_latency_frame_is_ms_per_check_and_drops_what_measured_nothing() -> None:
    checks = pd.DataFrame(
        {
            "run_id": ["b", "a", "a", "a"],
            "endpoint": ["dash", "dash", "dash", "page"],
            "name": ["quotes", "quotes", "stream", "trade_id"],
            "verdict": ["PASS", "PASS", "PASS", "FAIL"],
            "reason": ["later", "first", "no latency", "never showed it"],
            "latency_s": [0.84, 0.052, None, None],
            "at_wall": pd.to_datetime([T0_WALL + 60, T0_WALL, T0_WALL, None], unit="s", utc=True),
        }
    )
    frame = stack_latency_frame(checks)
    assert list(frame.columns) == ["at_wall", "check", "latency_ms", "run_id", "verdict", "reason"]
    assert frame["check"].tolist() == ["dash.quotes", "dash.quotes"]  # oldest first
    assert frame["latency_ms"].tolist() == pytest.approx([52.0, 840.0])
    assert frame["run_id"].tolist() == ["a", "b"]
    assert frame["at_wall"].iloc[0] == pd.Timestamp(T0_WALL, unit="s", tz="UTC")


def test_stack_latency_chart_draws_one_point_per_check_and_run() -> None:
    checks = make_stack_checks(50)
    spec = spec_of(stack_latency_chart(checks))
    rows = only_rows(spec)
    measured = checks["latency_s"].notna() & checks["at_wall"].notna()
    assert len(rows) == int(measured.sum())
    assert {r["check"] for r in rows} == {f"dash-sse.{n}" for n in STACK_CHECKS if n != "stream"}
    assert spec["encoding"]["y"]["field"] == "latency_ms"
    assert spec["encoding"]["color"]["field"] == "check"


def test_stack_latency_aggregates_medians_per_check_beyond_max_rows() -> None:
    n = MAX_ROWS * 3
    checks = make_stack_checks(n)
    spec = spec_of(stack_latency_chart(checks))
    rows = only_rows(spec)
    assert 0 < len(rows) <= MAX_ROWS
    assert "median per" in spec["title"]
    # Each point is a median of its own check's latencies in that period.
    frame = stack_latency_frame(checks)
    first = min(rows, key=lambda r: (r["at_wall"], r["check"]))
    day = frame["at_wall"].dt.floor("D") == pd.Timestamp(first["at_wall"]).tz_convert("UTC")
    mine = frame[day & (frame["check"] == first["check"])]
    assert first["latency_ms"] == pytest.approx(mine["latency_ms"].median())
    assert first["checks"] == len(mine)
