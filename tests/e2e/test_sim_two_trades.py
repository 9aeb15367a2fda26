"""Two simulated trades into one store both reach the cost ledger: each `harness run --sim`
starts its own simulator, whose exec ids and permIds must not repeat the previous one's."""

from __future__ import annotations

from pathlib import Path

from harness_lib.store import Store
from tests.e2e.test_cli_run import harness, no_traceback


def test_aapl_then_mes_trade_into_one_store_both_in_costs(tmp_path: Path) -> None:
    first = harness("run", "--sim", "--trade", tmp=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    second = harness("run", "--sim", "--trade", "--contract", "MES", tmp=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    with Store(tmp_path / "h.sqlite", readonly=True) as st:
        runs = st.runs()
        assert len(runs) == 2
        execs = {rid: st.trades(rid) for rid in runs["run_id"]}
        assert all(len(t) == 2 for t in execs.values()), "entry and exit of both runs"
        ids = [x for t in execs.values() for x in t["exec_id"]]
        assert len(set(ids)) == 4
        perms = [p for t in execs.values() for p in t["perm_id"]]
        assert len(set(perms)) == 4 and all(0 < p < 2**31 for p in perms)
        ledger = st.costs()
        symbols = sorted(ledger["symbol"])
        assert symbols[0] == "AAPL" and symbols[1].startswith("MES"), symbols
        for rid in runs["run_id"]:
            events = st.events(rid)
            assert (events["kind"] != "conflict").all()
    costs = harness("costs", tmp=tmp_path)
    no_traceback(costs)
    assert costs.returncode == 0 and "2 test trade" in costs.stdout
    assert "AAPL" in costs.stdout and "MES" in costs.stdout
