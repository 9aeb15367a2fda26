"""Readers polling the store while a run writes never see "database is locked".

`harness run --trade` records as a subprocess while this test polls the same file the way
a notebook does (``Store(path, readonly=True)`` in a loop) and the way a person does
(`harness runs` subprocesses, back to back). The store already exists, as
it does after the first run of a day.

The simulator runs on a thread of this process so the test can hold the run: it starts
in ``never_ticks`` (the harness waits, its run 'running' in the store) until a `harness
runs` reader has shown the run as running; then the quotes start at 100 updates a second
and the run records ticks and trades while the readers keep polling. No read may fail
with a lock error, every `harness runs` exits 0, and the run passes.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from harness_lib.sim import ThreadedGateway
from harness_lib.store import Store, StoreError
from tests.faults.conftest import HARNESS, cli_env

NOT_READY = ("no harness store at", "empty database", "needs migrating")
"""What a reader may see in the instant before the writer created the store (not locks)."""


def _read_once(store: Path) -> int:
    """One notebook-style poll: the ticks of the newest run."""
    try:
        with Store(store, readonly=True) as st:
            runs = st.runs()
            return 0 if runs.empty else len(st.ticks(str(runs.iloc[0].run_id)))
    except StoreError as exc:
        text = str(exc)
        assert "locked" not in text.lower(), text
        raise


def test_readers_never_see_database_is_locked(tmp_path: Path) -> None:
    store = tmp_path / "h.sqlite"
    Store(store).close()  # an existing (empty) history
    env = cli_env()
    reading: list[subprocess.Popen[str]] = []
    results: list[tuple[int, str, str]] = []
    polls = ticks_seen = 0
    released = False

    def collect(proc: subprocess.Popen[str]) -> str:
        rout, rerr = proc.communicate(timeout=30)
        results.append((proc.returncode, rout, rerr))
        return rout

    with ThreadedGateway(scenario="never_ticks") as gw:
        run = subprocess.Popen(
            [*HARNESS, "run", "--host", "127.0.0.1", "--port", str(gw.port), "--trade",
             "--deadline", "60", "--observe", "1.5", "--store", str(store)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while run.poll() is None and time.monotonic() < deadline:
                ticks_seen = max(ticks_seen, _read_once(store))
                polls += 1
                for proc in [p for p in reading if p.poll() is not None]:
                    reading.remove(proc)
                    if "running" in collect(proc) and not released:
                        # A reader saw the run running: let the quotes flow.
                        gw.set_scenario("healthy", tick_interval=0.01)
                        released = True
                if not reading:
                    reading.append(
                        subprocess.Popen(
                            [*HARNESS, "runs", "--store", str(store)],
                            cwd=tmp_path,
                            env=env,
                            text=True,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        )
                    )
                time.sleep(0.1)
            out, err = run.communicate(timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            for proc in reading:
                collect(proc)
    assert released, "no `harness runs` reader saw the run running"
    assert run.returncode == 0, out + err
    assert "locked" not in (out + err).lower()
    assert polls > 10 and ticks_seen > 0, (polls, ticks_seen)  # it read while ticks arrived
    for code, rout, rerr in results:
        assert code == 0, rout + rerr
        assert "locked" not in (rout + rerr).lower(), rout + rerr
    # After the run: a final read sees it finished, and the file is consistent.
    with Store(store, readonly=True) as st:
        runs = st.runs()
        assert runs.iloc[0].verdict == "PASS"
        assert len(st.ticks(str(runs.iloc[0].run_id))) >= ticks_seen
        assert st.integrity_check() == "ok"
