"""Stack observations and checks through the Recorder into a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from harness_lib.models import Target, Verdict, utcnow
from harness_lib.recorder import Recorder
from harness_lib.stack.checks import CheckResult
from harness_lib.stack.observe import Extractor
from harness_lib.stack.spec import parse_stack
from harness_lib.store import Store

TOKEN = "not-a-real-token-0123456789"


def test_observations_and_checks_round_trip_without_the_token(tmp_path: Path) -> None:
    (ep,) = parse_stack(
        [
            {
                "name": "dash",
                "kind": "sse",
                "url": "http://127.0.0.1:1/e",
                "headers": {"Authorization": f"Bearer {TOKEN}"},
                "quote": {"select": "quotes.AAPL", "bid": "bid", "ask": "ask", "mode": "mode"},
                "trades": {"ids": "ids"},
            }
        ],
        "t",
    )
    ex = Extractor(ep)
    path = tmp_path / "h.sqlite"
    with Store(path) as store:
        store.start_run("r1", target=Target("127.0.0.1", 1, 1, simulated=True), contract="AAPL",
                        phases=["stack"], config={}, started_at=utcnow())  # fmt: skip
        rec = Recorder("r1", store)
        # A stack that echoes the caller's token in its payload must not get it stored.
        good = ex.from_text(
            json.dumps(
                {
                    "quotes": {"AAPL": {"bid": 1.5, "ask": 1.6, "mode": "snapshot_fallback"}},
                    "ids": ["e1", 7],
                    "echo": TOKEN,
                }
            ),
            10.0,
            1_764_600_000.0,
        )
        bad = ex.from_text(f"oops {TOKEN}", 11.0, 1_764_600_001.0)
        rec.stack_observation(good)
        rec.stack_observation(bad)
        rec.stack_check(CheckResult("quotes", "dash", Verdict.FAIL, "dash quotes check failed",
                                    latency_s=0.25, at_wall=1_764_600_000.0))  # fmt: skip
        obs = store.stack_observations("r1")
        checks = store.stack_checks()
    assert list(obs["bid"].iloc[:1]) == [1.5] and obs["mode"].iloc[0] == "snapshot_fallback"
    assert obs["trade_ids"].iloc[0] == ["e1", "7"] and obs["trade_ids"].iloc[1] is None
    assert obs["has_quote"].tolist() == [True, False]
    assert obs["error"].iloc[1].startswith("not JSON")
    assert "snapshot_fallback" in obs["raw"].iloc[0]  # readable, yet...
    assert len(snap := rec.snapshot()["stack"]) == 2 and snap[0] is good
    assert checks.iloc[0]["latency_s"] == 0.25 and checks.iloc[0]["verdict"] == "FAIL"
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("h.sqlite*"))
    assert TOKEN.encode() not in stored  # ...the token is nowhere in the file
