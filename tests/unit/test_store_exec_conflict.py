"""An execution whose exec id is already stored with other content is kept as a conflict
event, never dropped silently (a real SQLite file on disk)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from harness_lib.models import Target
from harness_lib.store import Store

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
FILL = {
    "exec_id": "0000e0d5.662a73b3.01.01",
    "order_id": 3,
    "perm_id": 1376327563,
    "order_ref": "harness:r1",
    "con_id": 265598,
    "symbol": "AAPL",
    "side": "BOT",
    "shares": 1.0,
    "price": 230.01,
    "account": "DU1234567",
    "t_wall": T0,
}


def _start(store: Store, run_id: str) -> None:
    store.start_run(
        run_id,
        target=Target("127.0.0.1", 7599, 917, simulated=True, scenario="healthy"),
        contract="AAPL",
        phases=["trade"],
        config={},
        started_at=T0,
    )


def test_same_exec_id_other_content_is_a_conflict_event(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    with Store(path) as st:
        _start(st, "r1")
        _start(st, "r2")
        assert st.add_execution("r1", **FILL) is True
        other = {**FILL, "order_ref": "harness:r2", "con_id": 7000001, "symbol": "MES"}
        assert st.add_execution("r2", **other) is False
    with Store(path, readonly=True) as st:
        assert list(st.trades("r1")["symbol"]) == ["AAPL"]
        events = st.events("r2")
        conflicts = events[events["kind"] == "conflict"]
        assert len(conflicts) == 1
        text = conflicts.iloc[0]["message"]
        assert FILL["exec_id"] in text and "run r1" in text
        kept = json.loads(text.rsplit("this one: ", 1)[1])
        assert kept["symbol"] == "MES" and kept["con_id"] == 7000001
        assert st.events("r1").empty


def test_identical_repeat_is_not_a_conflict(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite") as st:
        _start(st, "r1")
        _start(st, "r2")
        assert st.add_execution("r1", **FILL) is True
        # reqExecutions after a reconnect replays the same fill, possibly in a later run.
        assert st.add_execution("r2", **{**FILL, "t_wall": datetime.now(UTC)}) is False
        assert st.events("r1").empty and st.events("r2").empty
