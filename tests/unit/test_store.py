"""Tests for harness_lib.store: real SQLite files in tmp_path, real subprocesses, no mocks."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from harness_lib.models import Checkpoint, IBMessage, Phase, PhaseResult, Target, Verdict
from harness_lib.store import (
    DEFAULT_STORE,
    MIGRATIONS,
    SCHEMA_VERSION,
    Store,
    StoreError,
    migrate,
    sql_migration,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=UTC)
BATCH = 200

# A writer process: opens the store, starts a run, then (depending on the mode) exits at
# once, writes tick batches quietly for a while and finishes, or writes and reports every
# committed batch until it is killed.
WRITER = textwrap.dedent(
    """
    import sys, time
    from harness_lib.models import Target
    from harness_lib.store import Store

    path, run_id, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    store = Store(path)
    store.start_run(
        run_id,
        target=Target("127.0.0.1", 4002, 7, simulated=True, scenario="calm"),
        contract="AAPL",
        phases=["ticks"],
        config={"mode": mode},
    )
    print("ready", flush=True)
    if mode == "start-only":
        sys.exit(0)
    duration = 2.5 if mode == "quiet" else 60.0
    seq = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        rows = [
            (run_id, 265598, "AAPL", "bid", 1, 100.0 + i * 0.01, 100.0,
             time.monotonic(), time.time(), 1, seq + i)
            for i in range(200)
        ]
        store.add_ticks(rows)
        seq += 200
        if mode == "report":
            print(seq, flush=True)
        time.sleep(0.01)  # ~20k ticks/s, like a busy live subscription
    store.finish_run(run_id, verdict="PASS", reason="ok", exit_code=0, summary={})
    store.close()
    print("done", flush=True)
    """
)


def spawn_writer(path: Path, run_id: str, mode: str) -> subprocess.Popen[str]:
    """Start a writer subprocess and wait until its run is recorded."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), run_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"writer did not start: {line!r} {err}")
    return proc


def target(**kw: object) -> Target:
    base: dict[str, object] = {"host": "127.0.0.1", "port": 4002, "client_id": 7}
    base.update(kw)
    return Target(**base)  # type: ignore[arg-type]


def start(store: Store, run_id: str, *, started_at: datetime = T0, **kw: object) -> None:
    store.start_run(
        run_id,
        target=kw.pop("target", target()),  # type: ignore[arg-type]
        contract=str(kw.pop("contract", "AAPL")),
        phases=["health", "ticks"],
        config={"api_key": "***", "timeout": 5.0},
        started_at=started_at,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "harness.sqlite")
    yield s
    s.close()


def one_line(e: BaseException) -> bool:
    return "\n" not in str(e) and str(e) != ""


# ------------------------------------------------------------------ schema / migration


def test_fresh_store_creates_schema_wal_and_version(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "h.sqlite"
    with Store(path) as s:
        assert s.path == path
        assert s.schema_version == SCHEMA_VERSION == len(MIGRATIONS) == 3
        assert s.integrity_check() == "ok"
    assert Path("data/harness.sqlite") == DEFAULT_STORE
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {
            "meta",
            "runs",
            "phases",
            "checkpoints",
            "ticks",
            "events",
            "orders",
            "executions",
            "commissions",
            "notifications",
            "stack_observations",
            "stack_checks",
        } <= tables
        assert conn.execute("SELECT value FROM meta WHERE key='application'").fetchone() == (
            "livefire",
        )
        idx = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "ticks_run_seq" in idx
    finally:
        conn.close()


def test_empty_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s.runs().empty
    # Reopening an up-to-date store is a no-op.
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION


def test_migrate_mechanism_applies_a_v2_entry_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with Store(path) as s:
        start(s, "r1")
    nxt = SCHEMA_VERSION + 1
    v_next = [*MIGRATIONS, sql_migration("ALTER TABLE runs ADD COLUMN note TEXT")]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert migrate(conn) == SCHEMA_VERSION  # up-to-date store, same code: nothing to do
        assert migrate(conn, v_next) == nxt
        assert migrate(conn, v_next) == nxt
        cols = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert "note" in cols
        assert conn.execute("SELECT run_id FROM runs").fetchall() == [("r1",)]
    finally:
        conn.close()

    # This code does not know the next version: such a store is refused, in one line, in both modes.
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer") as ei:
            Store(path, readonly=readonly)
        assert one_line(ei.value)


def test_failed_migration_step_rolls_back(tmp_path: Path) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    conn = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    try:
        with pytest.raises(RuntimeError):
            migrate(conn, [*MIGRATIONS, broken])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in names
        assert not conn.in_transaction
    finally:
        conn.close()


def test_not_a_sqlite_file_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not a database at all\n" * 100)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="not a harness store") as ei:
            Store(path, readonly=readonly)
        assert one_line(ei.value)


def test_foreign_sqlite_database_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a harness store") as ei:
        Store(path)
    assert one_line(ei.value)
    # And it was left untouched.
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()

    # Some other app's versioned database without our meta record.
    path2 = tmp_path / "other2.sqlite"
    conn = sqlite3.connect(path2)
    conn.execute("CREATE TABLE things (id INTEGER)")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a harness store"):
        Store(path2)


def test_unusable_paths_raise_one_line_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as ei:
        Store(tmp_path)  # a directory
    assert one_line(ei.value)

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as ei:
        Store(blocker / "h.sqlite")  # parent is a file
    assert one_line(ei.value)

    missing = tmp_path / "missing" / "h.sqlite"
    with pytest.raises(StoreError, match="no harness store"):
        Store(missing, readonly=True)
    assert not missing.parent.exists()  # read-only mode never creates anything


# ----------------------------------------------------------------------- round trip


def test_round_trip_of_every_write_and_query(store: Store) -> None:
    tgt = target(simulated=True, scenario="calm")
    start(store, "r1", target=tgt)

    store.add_checkpoint("r1", "health", Checkpoint("connected", 1.5, T0, "v176"))
    store.add_checkpoint("r1", "health", Checkpoint("accounts", 1.2, T0 + timedelta(seconds=1)))
    result = PhaseResult(
        phase=Phase.HEALTH,
        verdict=Verdict.PASS,
        reason="ok",
        started_at=T0,
        duration_s=0.25,
        checkpoints=[Checkpoint("connected", 1.5, T0, "v176")],
        metrics={"server_version": 176, "skew_s": float("nan")},
        evidence={"accounts": ["DU123"]},
        errors=[IBMessage(2104, "Market data farm connection is OK", -1, T0)],
    )
    store.record_phase("r1", result)
    # Upsert: the second record replaces the first, and keeps its position.
    result.reason = "ok again"
    store.record_phase("r1", result)
    store.record_phase("r1", PhaseResult(Phase.TICKS, Verdict.STALLED, "no ask", started_at=T0))

    t_wall = T0.timestamp()
    store.add_ticks(
        [
            ("r1", 265598, "AAPL", "ask", 2, 100.02, 3.0, 10.2, t_wall + 0.2, 1, 1),
            ("r1", 265598, "AAPL", "bid", 1, 100.0, None, 10.1, t_wall + 0.1, 1, 0),
            ("r1", 265598, "AAPL", "last", 4, float("nan"), 5.0, 10.3, t_wall + 0.3, 1, 2),
        ]
    )
    store.add_ticks([])
    store.add_event(
        "r1", kind="notice", code=2104, message="farm OK", req_id=-1, t_wall=T0, t_mono=1.0
    )
    store.add_event(
        "r1", kind="log", code=None, message="hello", req_id=None, t_wall=T0 + timedelta(1)
    )
    store.upsert_order(
        "r1",
        order_id=11,
        perm_id=None,
        client_id=7,
        account="DU123",
        con_id=265598,
        symbol="AAPL",
        sec_type="STK",
        multiplier=1.0,
        action="BUY",
        quantity=1,
        order_type="LMT",
        lmt_price=100.05,
        order_ref="harness:r1:entry",
        leg="entry",
        status="PendingSubmit",
        decision_bid=100.0,
        decision_ask=100.02,
        decision_mid=100.01,
    )
    assert store.add_execution(
        "r1",
        exec_id="e1",
        order_id=11,
        perm_id=99,
        order_ref="harness:r1:entry",
        con_id=265598,
        symbol="AAPL",
        side="BOT",
        shares=1,
        price=100.02,
        account="DU123",
        t_wall=T0,
        t_mono=2.0,
    )
    assert store.add_commission(
        "r1",
        exec_id="e1",
        commission=-1.0,
        currency="USD",
        realized_pnl=1.7976931348623157e308,
        t_wall=T0,
    )
    store.add_notification("r1", channel="tgram://***", ok=True, detail="sent", t_wall=T0)
    store.add_notification("r1", channel="mailto://***", ok=False, detail="timeout")
    final_target = target(
        simulated=True, scenario="calm", account="DU123", accounts=["DU123"], server_version=176
    )
    store.finish_run(
        "r1",
        verdict=Verdict.STALLED,
        reason="ticks: no ask",
        exit_code=2,
        summary={
            "first_bid_s": 0.1,
            "first_ask_s": None,
            "total_cost": 2.02,
            "target": final_target.to_dict(),
        },
        finished_at=T0 + timedelta(seconds=30),
    )

    run = store.run("r1")
    assert run is not None
    assert run["status"] == "finished"
    assert run["verdict"] == "STALLED"
    assert run["exit_code"] == 2
    assert run["started_at"] == T0  # exact to the microsecond
    assert run["finished_at"] == T0 + timedelta(seconds=30)
    assert run["config"] == {"api_key": "***", "timeout": 5.0}
    assert run["phases"] == ["health", "ticks"]
    assert run["account"] == "DU123"
    assert run["accounts"] == ["DU123"]
    assert run["server_version"] == 176
    assert run["target_label"] == final_target.label
    assert run["target"]["label"] == final_target.label
    assert run["pid"] == os.getpid()
    assert run["tick_count"] == 3
    assert run["summary"]["total_cost"] == 2.02
    assert store.run("nope") is None

    runs = store.runs()
    assert list(runs["run_id"]) == ["r1"]
    row = runs.iloc[0]
    for col in ("simulated", "scenario", "host", "port", "client_id", "contract", "reason"):
        assert col in runs.columns
    assert bool(row["simulated"]) is True
    assert row["scenario"] == "calm"
    assert row["started_at"] == pd.Timestamp(T0)
    assert row["first_bid_s"] == 0.1
    assert math.isnan(row["first_ask_s"])
    assert row["total_cost"] == 2.02
    assert str(runs["started_at"].dt.tz) == "UTC"

    phases = store.phases("r1")
    assert list(phases["phase"]) == ["health", "ticks"]
    health = phases.iloc[0]
    assert health["reason"] == "ok again"
    assert health["metrics"] == {"server_version": 176, "skew_s": None}
    assert health["evidence"] == {"accounts": ["DU123"]}
    assert health["errors"][0]["code"] == 2104
    assert health["checkpoints"][0]["name"] == "connected"
    assert health["duration_s"] == 0.25

    cps = store.checkpoints("r1")
    assert list(cps.columns) == ["run_id", "phase", "name", "t_mono", "t_wall", "detail"]
    assert list(cps["name"]) == ["accounts", "connected"]  # ordered by t_mono
    assert cps.iloc[1]["t_wall"] == pd.Timestamp(T0)
    assert cps.iloc[1]["detail"] == "v176"

    ticks = store.ticks("r1")
    assert list(ticks["seq"]) == [0, 1, 2]
    assert list(ticks["field"]) == ["bid", "ask", "last"]
    assert math.isnan(ticks.iloc[0]["size"])
    assert math.isnan(ticks.iloc[2]["price"])  # NaN stored as NULL
    assert ticks.iloc[0]["t_wall_epoch"] == pytest.approx(t_wall + 0.1)
    assert str(ticks["t_wall"].dt.tz) == "UTC"
    assert abs(ticks.iloc[0]["t_wall"] - pd.Timestamp(T0 + timedelta(seconds=0.1))) < pd.Timedelta(
        "2us"
    )

    events = store.events("r1")
    assert list(events["kind"]) == ["notice", "log"]
    assert events.iloc[0]["code"] == 2104
    assert pd.isna(events.iloc[1]["code"])
    assert events.iloc[0]["t_wall"] == pd.Timestamp(T0)

    orders = store.orders("r1")
    assert list(orders["order_id"]) == [11]
    assert orders.iloc[0]["decision_mid"] == 100.01
    assert orders.iloc[0]["status"] == "PendingSubmit"

    trades = store.trades("r1")
    assert len(trades) == 1
    tr = trades.iloc[0]
    assert tr["leg"] == "entry"
    assert tr["multiplier"] == 1.0
    assert tr["decision_mid"] == 100.01
    assert tr["commission"] == -1.0
    assert tr["currency"] == "USD"
    assert pd.isna(tr["realized_pnl"])  # IB's UNSET_DOUBLE stored as NULL
    assert tr["slippage"] == pytest.approx(0.01)
    assert tr["t_wall"] == pd.Timestamp(T0)

    notes = store.notifications("r1")
    assert list(notes["channel"]) == ["tgram://***", "mailto://***"]
    assert list(notes["ok"]) == [True, False]

    assert store.integrity_check() == "ok"


def test_empty_queries_have_columns(store: Store) -> None:
    assert "total_cost" in store.runs().columns
    assert "t_wall_epoch" in store.ticks("none").columns
    assert list(store.checkpoints("none").columns) == [
        "run_id",
        "phase",
        "name",
        "t_mono",
        "t_wall",
        "detail",
    ]
    for df in (
        store.phases("none"),
        store.events("none"),
        store.orders("none"),
        store.trades("none"),
        store.costs(),
        store.notifications("none"),
    ):
        assert df.empty and len(df.columns) > 0
    assert "slippage_known" in store.costs().columns


def test_duplicate_exec_id_and_commission_are_ignored(store: Store) -> None:
    start(store, "r1")
    kw = {
        "exec_id": "0001f4e8.01.01",
        "order_id": 1,
        "perm_id": 5,
        "order_ref": "harness:r1",
        "con_id": 1,
        "symbol": "AAPL",
        "side": "BOT",
        "shares": 1.0,
        "price": 100.0,
        "account": "DU1",
        "t_wall": T0,
    }
    assert store.add_execution("r1", **kw) is True
    assert store.add_execution("r1", **{**kw, "price": 101.0}) is False
    # Even when another run sees the same fill (reqExecutions after a reconnect).
    start(store, "r2")
    assert store.add_execution("r2", **kw) is False
    assert store.add_commission(
        "r1", exec_id=kw["exec_id"], commission=1.0, currency="USD", realized_pnl=None, t_wall=T0
    )
    assert not store.add_commission(
        "r1", exec_id=kw["exec_id"], commission=9.0, currency="USD", realized_pnl=None, t_wall=T0
    )
    trades = store.trades("r1")
    assert len(trades) == 1
    assert trades.iloc[0]["price"] == 100.0
    assert trades.iloc[0]["commission"] == 1.0
    assert store.trades("r2").empty


def _order(store: Store, run_id: str, **kw: object) -> None:
    base: dict[str, object] = {
        "order_id": 1,
        "perm_id": None,
        "client_id": 7,
        "account": "DU1",
        "con_id": 1,
        "symbol": "AAPL",
        "sec_type": "STK",
        "multiplier": 1.0,
        "action": "BUY",
        "quantity": 1.0,
        "order_type": "LMT",
        "lmt_price": 100.0,
        "order_ref": "harness:x",
        "leg": "entry",
        "status": "PendingSubmit",
    }
    base.update(kw)
    store.upsert_order(run_id, **base)  # type: ignore[arg-type]


def test_upsert_order_keeps_first_submission_and_decision_quote(store: Store) -> None:
    start(store, "r1")
    _order(store, "r1", decision_bid=99.0, decision_ask=101.0, decision_mid=100.0)
    first = store.orders("r1").iloc[0]
    time.sleep(0.01)
    _order(store, "r1", perm_id=777, account=None, status="Filled")
    orders = store.orders("r1")
    assert len(orders) == 1
    o = orders.iloc[0]
    assert o["status"] == "Filled"
    assert o["perm_id"] == 777
    assert o["account"] == "DU1"
    assert o["decision_mid"] == 100.0
    assert o["decision_bid"] == 99.0
    assert o["submitted_at"] == first["submitted_at"]
    assert o["updated_at"] > first["updated_at"]


# ------------------------------------------------------------------ history queries


def test_runs_filters_and_order(store: Store) -> None:
    sim = target(simulated=True, scenario="calm")
    gw = target(port=4004)
    for i in range(5):
        rid = f"r{i}"
        start(
            store,
            rid,
            started_at=T0 + timedelta(days=i),
            target=sim if i % 2 == 0 else gw,
            contract="AAPL" if i < 3 else "ES",
        )
        store.finish_run(
            rid,
            verdict="PASS" if i != 3 else "FAIL",
            reason="x",
            exit_code=0 if i != 3 else 1,
            summary={"total_cost": float(i)},
            finished_at=T0 + timedelta(days=i, seconds=5),
        )
    assert list(store.runs()["run_id"]) == ["r4", "r3", "r2", "r1", "r0"]
    assert list(store.runs(2)["run_id"]) == ["r4", "r3"]
    assert list(store.runs(since=T0 + timedelta(days=3))["run_id"]) == ["r4", "r3"]
    assert list(store.runs(target="SIMULATOR")["run_id"]) == ["r4", "r2", "r0"]
    assert list(store.runs(target="127.0.0.1:4004")["run_id"]) == ["r3", "r1"]
    assert list(store.runs(contract="ES")["run_id"]) == ["r4", "r3"]
    assert list(store.runs(verdict="fail")["run_id"]) == ["r3"]
    assert list(store.runs(since=timedelta(days=1))["run_id"]) == []  # T0 is in the past


def test_history_of_a_year_lists_fast(tmp_path: Path) -> None:
    """runs() reads summary columns only; it must not scale with the ticks table."""
    with Store(tmp_path / "h.sqlite") as s:
        for d in range(365):
            rid = f"run{d:03d}"
            start(s, rid, started_at=T0 + timedelta(days=d))
            s.add_ticks([(rid, 1, "AAPL", "bid", 1, 1.0, 1.0, 0.0, 0.0, 1, i) for i in range(1000)])
            s.finish_run(rid, verdict="PASS", reason="", exit_code=0, summary={})
        t = time.perf_counter()
        df = s.runs()
        elapsed = time.perf_counter() - t
        assert len(df) == 365
        assert df.iloc[0]["tick_count"] == 1000
        assert elapsed < 0.5


def test_add_ticks_is_fast_enough(store: Store) -> None:
    start(store, "r1")
    t = time.perf_counter()
    for b in range(100):
        store.add_ticks(
            [("r1", 1, "AAPL", "bid", 1, 1.0, 1.0, 0.0, 1.0, 1, b * 300 + i) for i in range(300)]
        )
    rate = 30_000 / (time.perf_counter() - t)
    assert rate > 20_000, f"{rate:.0f} ticks/s"
    assert store.run("r1")["tick_count"] == 30_000  # type: ignore[index]


# ----------------------------------------------------------------------- cost ledger


def _fill(
    store: Store,
    run_id: str,
    exec_id: str,
    order_id: int,
    side: str,
    px: float,
    *,
    ref: str,
    t: datetime,
    shares: float = 1.0,
    commission: float | None = 1.0,
) -> None:
    store.add_execution(
        run_id,
        exec_id=exec_id,
        order_id=order_id,
        perm_id=None,
        order_ref=ref,
        con_id=1,
        symbol="AAPL",
        side=side,
        shares=shares,
        price=px,
        account="DU1",
        t_wall=t,
    )
    if commission is not None:
        store.add_commission(
            run_id,
            exec_id=exec_id,
            commission=commission,
            currency="USD",
            realized_pnl=None,
            t_wall=t,
        )


def test_costs_hand_computed_round_trip(store: Store) -> None:
    start(store, "r1")
    ref = "harness:r1"
    _order(store, "r1", order_id=1, action="BUY", order_ref=ref, decision_mid=100.01)
    _order(store, "r1", order_id=2, action="SELL", order_ref=ref, leg="exit", decision_mid=100.00)
    _fill(store, "r1", "e1", 1, "BOT", 100.02, ref=ref, t=T0)
    _fill(store, "r1", "e2", 2, "SLD", 99.99, ref=ref, t=T0 + timedelta(seconds=3))
    # Not a harness order: someone else's fill seen by the same run must be ignored.
    _order(store, "r1", order_id=3, order_ref="manual", decision_mid=50.0)
    _fill(store, "r1", "e3", 3, "BOT", 55.0, ref="manual", t=T0, commission=5.0)
    _fill(store, "r1", "e4", 3, "BOT", 55.0, ref="", t=T0, commission=5.0)

    costs = store.costs()
    assert len(costs) == 1
    c = costs.iloc[0]
    assert c["run_id"] == "r1"
    assert c["order_ref"] == ref
    assert c["time"] == pd.Timestamp(T0)
    assert c["symbol"] == "AAPL"
    assert c["quantity"] == 1.0
    assert c["entry_side"] == "BOT"
    assert c["entry_price"] == pytest.approx(100.02)
    assert c["exit_price"] == pytest.approx(99.99)
    assert c["commission"] == pytest.approx(2.00)
    assert c["slippage"] == pytest.approx(0.02)
    assert bool(c["slippage_known"]) is True
    assert c["total_cost"] == pytest.approx(2.02)
    assert c["realized_pnl"] == pytest.approx(-2.03)
    assert c["net_position"] == 0.0
    assert c["currency"] == "USD"
    assert c["executions"] == 2


def test_costs_multiplier_missing_mid_open_leg_and_since(store: Store) -> None:
    # Futures round trip, multiplier 50, exit mid unknown, commissions reported negative.
    start(store, "fut", started_at=T0)
    ref = "harness:fut"
    _order(store, "fut", order_id=1, order_ref=ref, multiplier=50.0, decision_mid=5000.0)
    _order(store, "fut", order_id=2, order_ref=ref, multiplier=50.0, action="SELL")
    _fill(store, "fut", "f1", 1, "BOT", 5000.25, ref=ref, t=T0, commission=-2.5)
    _fill(store, "fut", "f2", 2, "SLD", 5000.0, ref=ref, t=T0 + timedelta(1), commission=-2.5)
    # An entry whose exit never happened (the run crashed), a day later.
    start(store, "open", started_at=T0 + timedelta(days=2))
    _order(store, "open", order_id=1, order_ref="harness:open", decision_mid=10.0)
    _fill(store, "open", "o1", 1, "BOT", 10.1, ref="harness:open", t=T0 + timedelta(days=2))

    costs = store.costs()
    assert list(costs["run_id"]) == ["open", "fut"]  # newest first
    fut = costs.set_index("run_id").loc["fut"]
    assert fut["commission"] == pytest.approx(5.0)
    assert fut["slippage"] == pytest.approx(0.25 * 50)  # exit contributes 0
    assert bool(fut["slippage_known"]) is False
    assert fut["total_cost"] == pytest.approx(5.0 + 12.5)
    assert fut["realized_pnl"] == pytest.approx(-0.25 * 50 - 5.0)
    op = costs.set_index("run_id").loc["open"]
    assert op["net_position"] == 1.0
    assert math.isnan(op["realized_pnl"])
    assert math.isnan(op["exit_price"])
    assert op["slippage"] == pytest.approx(0.1)

    assert list(store.costs(since=T0 + timedelta(days=1))["run_id"]) == ["open"]
    assert store.costs(since=timedelta(hours=1)).empty


# --------------------------------------------------------------- aborted / alive runs


def test_run_of_a_dead_writer_becomes_aborted(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    proc = spawn_writer(path, "dead", "start-only")
    assert proc.wait(timeout=30) == 0
    # Opened read-only, nothing is written, so the run still reads 'running'.
    with Store(path, readonly=True) as ro:
        assert ro.run("dead")["status"] == "running"  # type: ignore[index]
    with Store(path) as s:
        run = s.run("dead")
        assert run is not None
        assert run["status"] == "aborted"
        assert run["verdict"] == "ABORTED"
        assert run["exit_code"] == Verdict.ABORTED.exit_code
        assert str(proc.pid) in run["reason"]
        assert run["finished_at"] is not None


def test_run_of_a_live_writer_stays_running(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with Store(path) as writer:
        start(writer, "alive")  # recorded with os.getpid(), which is alive
        with Store(path) as other:
            assert other.run("alive")["status"] == "running"  # type: ignore[index]
        with Store(path, readonly=True) as ro:
            assert ro.runs().iloc[0]["status"] == "running"
        writer.finish_run("alive", verdict="PASS", reason="", exit_code=0, summary={})
        assert writer.run("alive")["status"] == "finished"  # type: ignore[index]


def test_runs_of_other_hosts_are_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    proc = spawn_writer(path, "remote", "start-only")
    proc.wait(timeout=30)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET hostname = 'some-other-host'")
    conn.commit()
    conn.close()
    with Store(path) as s:
        assert s.run("remote")["status"] == "running"  # type: ignore[index]


def test_reused_pid_is_recognised(tmp_path: Path) -> None:
    """Same pid, different process start time: the writer is gone (container restarts)."""
    path = tmp_path / "h.sqlite"
    with Store(path) as s:
        start(s, "old")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET pid_start = pid_start - 1")
    conn.commit()
    conn.close()
    with Store(path) as s:
        assert s.run("old")["status"] == "aborted"  # type: ignore[index]


def test_pid_start_of_an_older_store_counts_as_alive(tmp_path: Path) -> None:
    """Before psutil, pid_start held clock ticks since boot; such a run of a live pid is
    not comparable, so it is left running (doubt resolves to alive)."""
    path = tmp_path / "h.sqlite"
    with Store(path) as s:
        start(s, "old-format")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET pid_start = 123456")
    conn.commit()
    conn.close()
    with Store(path) as s:
        assert s.run("old-format")["status"] == "running"  # type: ignore[index]


def test_mark_aborted_does_not_clobber_a_finished_run(store: Store) -> None:
    start(store, "r1")
    store.mark_aborted("r1", "interrupted (Ctrl-C)")
    assert store.run("r1")["status"] == "aborted"  # type: ignore[index]
    assert store.run("r1")["reason"] == "interrupted (Ctrl-C)"  # type: ignore[index]
    start(store, "r2")
    store.finish_run("r2", verdict="PASS", reason="ok", exit_code=0, summary={})
    store.mark_aborted("r2", "late")
    assert store.run("r2")["status"] == "finished"  # type: ignore[index]


def test_duplicate_run_id_and_readonly_writes_raise(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with Store(path) as s:
        start(s, "r1")
        with pytest.raises(StoreError, match="already exists"):
            start(s, "r1")
    with Store(path, readonly=True) as ro, pytest.raises(StoreError, match="read-only"):
        ro.add_event("r1", kind="log", code=None, message="x", req_id=None, t_wall=T0)


def test_closed_store_raises_and_close_is_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path / "h.sqlite")
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.runs()
    with pytest.raises(StoreError, match="closed"):
        start(s, "r1")


def test_writes_from_a_worker_thread(store: Store) -> None:
    start(store, "r1")
    errors: list[BaseException] = []

    def work(base: int) -> None:
        try:
            for b in range(20):
                store.add_ticks(
                    [
                        ("r1", 1, "AAPL", "bid", 1, 1.0, 1.0, 0.0, 1.0, 1, base + b * 50 + i)
                        for i in range(50)
                    ]
                )
                store.add_event("r1", kind="info", code=None, message="x", req_id=None, t_wall=T0)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        store.runs()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.ticks("r1")) == 4 * 20 * 50
    assert store.run("r1")["tick_count"] == 4000  # type: ignore[index]


# ------------------------------------------------------ concurrency and crash safety


@pytest.mark.slow
def test_readers_polling_a_live_writer_never_see_locked(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    proc = spawn_writer(path, "live", "quiet")
    errors: list[BaseException] = []
    counts: list[int] = []
    polls = 0
    try:
        ro = Store(path, readonly=True)
        rw = Store(path)  # a notebook opening read-write must not abort the live run
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                # Alternate between the read-only and the read-write connection.
                s = ro if polls % 2 == 0 else rw
                assert s.runs().iloc[0]["status"] == "running"
                ticks = s.ticks("live")
                n = len(ticks)
                # Batches are atomic: a reader sees whole batches, in order.
                assert n % BATCH == 0
                if n:
                    assert ticks["seq"].iloc[-1] == n - 1
                counts.append(n)
                with Store(path, readonly=True) as fresh:  # opening while writing, too
                    fresh.run("live")
                polls += 1
            except (sqlite3.Error, StoreError) as e:
                errors.append(e)
        ro.close()
        rw.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert errors == []
    assert polls > 5, polls
    assert counts == sorted(counts)  # never goes backwards...
    assert counts[-1] > counts[0]  # ...and the writer made progress while we polled
    with Store(path, readonly=True) as s:
        assert s.run("live")["status"] == "finished"  # type: ignore[index]


@pytest.mark.slow
def test_sigkill_mid_stream_keeps_committed_ticks_and_aborts_run(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    proc = spawn_writer(path, "killed", "report")
    assert proc.stdout is not None
    committed = 0
    try:
        while committed < 20 * BATCH:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            committed = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)  # reap it, so its pid is really gone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with Store(path) as s:
        assert s.integrity_check() == "ok"
        run = s.run("killed")
        assert run is not None
        assert run["status"] == "aborted"
        assert run["verdict"] == "ABORTED"
        ticks = s.ticks("killed")
        n = len(ticks)
        assert n >= committed  # everything it reported as committed survived
        assert n % BATCH == 0  # and no half batch
        assert list(ticks["seq"]) == list(range(n))
        assert run["tick_count"] == n
        # The abort time is the last thing the run recorded, not "now".
        last_tick = ticks["t_wall"].iloc[-1]
        assert abs(pd.Timestamp(run["finished_at"]) - last_tick) < pd.Timedelta("1ms")
