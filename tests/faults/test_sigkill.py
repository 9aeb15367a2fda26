"""The harness process SIGKILLed mid-run: no data lost, orphans found, `harness cleanup`.

`harness run --trade` runs as a real subprocess against the simulator on the test's loop;
the simulator's no_fill scenario keeps it mid-run with an order working. Once the store
shows the run, its ticks and the order, the process gets SIGKILL. Then:

* the store passes ``PRAGMA integrity_check``, and the ticks and events a read-only reader
  saw just before the kill are all still there;
* the next read-write open marks the run ``aborted`` (verdict ABORTED, exit code 1);
* a new ``--trade`` run detects the orphans and refuses to trade, pointing at
  ``harness cleanup``, without sending a single placeOrder;
* the real ``harness cleanup`` (a subprocess) cancels the orphaned working order and
  flattens the position, and the referee finds everything clean.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness_lib.models import Phase, Verdict
from harness_lib.runner import run_harness
from harness_lib.store import Store, StoreError
from tests.faults.conftest import (
    HARNESS,
    HARNESS_CLIENT,
    StagedGateway,
    assert_clean,
    cli,
    cli_env,
    harness_cfg,
)


def _peek(store: Path) -> dict[str, Any] | None:
    """What a read-only reader sees now: the run, its tick seqs and events (None if the
    store or the run is not there yet)."""
    try:
        with Store(store, readonly=True) as st:
            runs = st.runs()
            if runs.empty:
                return None
            run_id = str(runs.iloc[0].run_id)
            ticks = st.ticks(run_id)
            events = st.events(run_id)
            orders = st.orders(run_id)
    except StoreError as exc:
        assert "locked" not in str(exc), exc
        return None
    return {
        "run_id": run_id,
        "seqs": set(ticks["seq"]),
        "events": {(str(t), c, msg) for t, c, msg in zip(
            events["t_wall"], events["code"], events["message"], strict=True)},
        "orders": len(orders),
    }  # fmt: skip


async def _wait_mid_run(
    gw: StagedGateway, store: Path, orders: int, proc: asyncio.subprocess.Process
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.returncode is None, "the harness ended before it could be killed"
        seen = _peek(store)
        if (
            seen is not None
            and seen["seqs"]
            and seen["orders"] >= orders
            and len(gw.truth.orders_from(HARNESS_CLIENT)) >= orders
        ):
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError("the run never got mid-way")


@pytest.mark.parametrize(
    ("nth", "orders", "swept"),
    [
        pytest.param(1, 1, "cancelled 1 order(s), flattened 0 position(s)", id="entry_working"),
        pytest.param(2, 2, "cancelled 1 order(s), flattened 1 position(s)", id="exit_working"),
    ],
)
async def test_sigkill_mid_run(
    gw: StagedGateway, tmp_path: Path, nth: int, orders: int, swept: str
) -> None:
    gw.set_scenario("no_fill", nth=nth)
    store = tmp_path / "h.sqlite"
    proc = await asyncio.create_subprocess_exec(
        *HARNESS, "run", "--host", "127.0.0.1", "--port", str(gw.port), "--trade",
        "--store", str(store), "--fill-deadline", "30",
        cwd=tmp_path, env=cli_env(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        before = await _wait_mid_run(gw, store, orders, proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    run_id = before["run_id"]

    # Nothing written before the kill is lost, and the file is consistent.
    after = _peek(store)
    assert after is not None and after["run_id"] == run_id
    assert before["seqs"] <= after["seqs"], "ticks seen before the kill are gone"
    assert before["events"] <= after["events"], "events seen before the kill are gone"
    with Store(store, readonly=True) as st:
        assert st.integrity_check() == "ok"
        assert st.run(run_id)["status"] == "running", "a reader must not conclude the run"
    with Store(store) as st:  # the next read-write open
        run = st.run(run_id)
    assert run is not None and run["status"] == "aborted"
    assert run["verdict"] == "ABORTED" and run["exit_code"] == Verdict.ABORTED.exit_code
    assert str(proc.pid) in run["reason"], run["reason"]

    # A new --trade run finds the orphans and refuses to trade until they are swept.
    placed = len(gw.truth.orders_from(HARNESS_CLIENT))
    rep = await run_harness(harness_cfg(tmp_path), gateway=gw)
    rt = rep.phase(Phase.ROUND_TRIP)
    assert rep.verdict == Verdict.REFUSED and rt is not None, rep.reason
    assert "harness cleanup" in rt.reason and rt.evidence["guard"] == "orphans", rt.reason
    assert len(gw.truth.orders_from(HARNESS_CLIENT)) == placed, "it placed an order anyway"

    code, out, err = await cli(
        "cleanup", "--host", "127.0.0.1", "--port", str(gw.port), "--store", str(store),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    assert swept in out, out
    assert_clean(gw, Verdict.ABORTED.exit_code, store, run_id=run_id, aborted=True,
                 exact_ticks=False)  # fmt: skip
