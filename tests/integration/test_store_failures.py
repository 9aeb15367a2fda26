"""One policy for a store write that fails: recorded as a run event (when the store still
takes one), kept in memory otherwise, and the run is FAIL because it lost data.

The failures are real SQLite failures in a real file: a trigger that aborts an insert
(what a full disk or a constraint looks like to the writer) and SQLite's own page limit
(``max_page_count``, a full disk in miniature). Nothing about the store is mocked.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness_lib.config import HarnessConfig
from harness_lib.models import Phase, PhaseResult, Target, Verdict
from harness_lib.recorder import Recorder
from harness_lib.runner import run_harness
from harness_lib.sim import PaperGateway
from harness_lib.store import Store

LOST = "store write failed, data lost"


def cfg(tmp_path: Path, **kw: object) -> HarnessConfig:
    base: dict[str, object] = {"sim": True, "store": tmp_path / "h.sqlite",
                               "reports_dir": tmp_path / "reports"}  # fmt: skip
    base.update(kw)
    return HarnessConfig(**base)  # type: ignore[arg-type]


def refuse_inserts(path: Path, *tables: str) -> None:
    """Create the store, then make every insert into ``tables`` fail inside SQLite."""
    Store(path).close()
    with sqlite3.connect(path) as conn:
        for table in tables:
            conn.execute(
                f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )


async def test_lost_ticks_make_the_run_fail_and_are_recorded_as_an_event(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    path = tmp_path / "h.sqlite"
    refuse_inserts(path, "ticks")

    rep = await run_harness(cfg(tmp_path), gateway=paper_gateway)

    assert rep.verdict == Verdict.FAIL and rep.exit_code == 1, rep.reason
    ticks = rep.phase(Phase.TICKS)
    assert ticks is not None and ticks.verdict == Verdict.FAIL
    assert LOST in ticks.reason and "tick(s) not stored" in ticks.reason, ticks.reason
    # The phase's own observation is kept after the loss, not overwritten.
    assert "was PASS: bid/ask live" in ticks.reason, ticks.reason
    assert ticks.evidence["store_writes_lost"]
    with Store(path, readonly=True) as st:
        events = st.events(rep.run_id)
        run = st.run(rep.run_id)
        phases = st.phases(rep.run_id)
        assert st.ticks(rep.run_id).empty
    lost = events[events["message"].str.contains(LOST)]
    assert not lost.empty and set(lost["kind"]) == {"error"}
    assert run is not None and run["verdict"] == "FAIL" and LOST in run["reason"]
    stored = phases.set_index("phase").loc["ticks"]
    assert stored["verdict"] == "FAIL" and LOST in stored["reason"]


async def test_when_the_store_takes_no_event_either_the_loss_stays_in_memory(
    paper_gateway: PaperGateway, tmp_path: Path
) -> None:
    path = tmp_path / "h.sqlite"
    refuse_inserts(path, "ticks", "events", "checkpoints")

    rep = await run_harness(cfg(tmp_path), gateway=paper_gateway)

    assert rep.verdict == Verdict.FAIL, rep.reason
    health = rep.phase(Phase.HEALTH)
    assert health is not None and health.verdict == Verdict.FAIL
    assert LOST in health.reason, health.reason
    lost = health.evidence["store_writes_lost"]
    assert any(text.startswith("checkpoint connected not stored") for text in lost), lost
    with Store(path, readonly=True) as st:
        assert st.events(rep.run_id).empty
        run = st.run(rep.run_id)
    # The verdict and its reason still reach the run record (an UPDATE, not refused).
    assert run is not None and run["verdict"] == "FAIL" and LOST in run["reason"]


def test_harness_run_cli_says_fail_when_even_the_run_record_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    refuse_inserts(path, "runs")

    proc = subprocess.run(
        [sys.executable, "-m", "harness_lib.cli", "run", "--sim", "--store", str(path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip

    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "run record not stored" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    with Store(path, readonly=True) as st:
        assert st.runs().empty


def test_a_full_disk_during_a_tick_batch_is_charged_to_the_running_phase(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "h.sqlite")
    rec = Recorder("r1", store)
    rec.start_run(Target("127.0.0.1", 1, 1), contract="AAPL", phases=["ticks"], config={})
    rec.phase_started("ticks")
    # SQLite's own limit: the file may not grow, as on a full disk.
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[union-attr]
    store._conn.execute(f"PRAGMA max_page_count = {pages}")  # type: ignore[union-attr]
    row = ("r1", 1, "AAPL", "bid", 1, 100.0, None, 1.0, 1.0, 1)
    rec._buf.extend((*row, n) for n in range(1, 20_001))
    rec.flush()
    result = PhaseResult(Phase.TICKS, Verdict.PASS, reason="bid/ask live")
    rec.account_for_losses([result])
    assert result.verdict == Verdict.FAIL
    assert "20000 tick(s) not stored" in result.reason and "full" in result.reason
    assert rec.losses and rec.losses[0][0] == "ticks"
    # Accounted once: a second call changes nothing.
    reason = result.reason
    rec.account_for_losses([result])
    assert result.reason == reason
    store.close()


@pytest.mark.parametrize("verdict", [Verdict.STALLED, Verdict.SKIPPED])
def test_a_loss_never_leaves_a_phase_milder_than_fail(verdict: Verdict) -> None:
    rec = Recorder("r1", None)
    rec.losses.append(("ticks", "3 tick(s) not stored (disk full)"))
    result = PhaseResult(Phase.TICKS, verdict, reason="no tick")
    rec.account_for_losses([PhaseResult(Phase.HEALTH, Verdict.PASS), result])
    assert result.verdict == Verdict.FAIL and LOST in result.reason
