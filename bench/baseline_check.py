"""The section 3 baseline: a hand-written ib_async script doing the harness's checks.

What a user would write without the harness, using nothing but ib_async: connect,
check every managed account is paper, ask for the gateway time, qualify the stock,
subscribe, wait for a real bid and ask within the deadline, keep watching for the same
observation window as the harness, then unsubscribe and disconnect. It prints one JSON
line with its own timings and exits 0 (PASS), 2 (STALLED) or 3 (REFUSED), like
``harness run``.

    uv run python bench/baseline_check.py --port 7599 [--symbol AAPL] [--deadline 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time

from ib_async import IB, Stock, Ticker


def real(x: float) -> bool:
    """A usable quote: finite and not IB's -1."""
    return x is not None and math.isfinite(x) and x != -1


async def check(host: str, port: int, client_id: int, symbol: str, deadline: float,
                observe: float) -> dict[str, object]:  # fmt: skip
    """Run the checks; return the verdict and monotonic timings."""
    t_connect = time.monotonic()
    ib = IB()
    await ib.connectAsync(host, port, clientId=client_id, timeout=4)
    out: dict[str, object] = {"connect_s": time.monotonic() - t_connect}
    accounts = ib.managedAccounts()
    if not accounts or not all(a.startswith("D") for a in accounts):
        ib.disconnect()
        return {**out, "verdict": "REFUSED", "connect_to_verdict_s": time.monotonic() - t_connect}
    await ib.reqCurrentTimeAsync()
    contract = Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(contract)
    ticker = ib.reqMktData(contract)
    t_sub = time.monotonic()
    updated = asyncio.Event()

    def on_update(t: Ticker) -> None:
        updated.set()

    ticker.updateEvent += on_update
    verdict = "STALLED"
    while True:
        if real(ticker.bid) and real(ticker.ask):
            verdict = "PASS"
            break
        remaining = t_sub + deadline - time.monotonic()
        if remaining <= 0:
            break
        updated.clear()
        try:
            await asyncio.wait_for(updated.wait(), remaining)
        except TimeoutError:
            break
    if verdict == "PASS":
        # The same staleness window the harness keeps after bid/ask are live.
        await asyncio.sleep(observe)
    t_verdict = time.monotonic()
    ib.cancelMktData(contract)
    ib.disconnect()
    return {
        **out,
        "verdict": verdict,
        "connect_to_verdict_s": t_verdict - t_connect,
        "subscribe_to_verdict_s": t_verdict - t_sub,
        "bid": ticker.bid,
        "ask": ticker.ask,
    }


def main() -> int:
    """Parse arguments, run the check, print JSON, return the exit code."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", type=int, default=918)
    p.add_argument("--symbol", default="AAPL")
    p.add_argument("--deadline", type=float, default=5.0)
    p.add_argument("--observe", type=float, default=0.5)
    a = p.parse_args()
    result = asyncio.run(check(a.host, a.port, a.client_id, a.symbol, a.deadline, a.observe))
    print(json.dumps(result))
    return {"PASS": 0, "STALLED": 2, "REFUSED": 3}.get(str(result["verdict"]), 1)


if __name__ == "__main__":
    sys.exit(main())
