"""A plain ib_async script, nothing of livefire in it, to try against `harness sim`.

    uv run harness sim --port 7599 &
    uv run python examples/plain_ib_async.py --port 7599

Connects, qualifies AAPL, waits for bid/ask to become numbers, buys and sells one share,
waits for both commission reports, and checks the position is flat. Exit 0 on success.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time

from ib_async import IB, MarketOrder, Stock


async def main(port: int) -> int:
    """Run the check; return the process exit code."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=21, timeout=4)
    try:
        aapl = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(aapl)
        print(f"qualified AAPL conId={aapl.conId}")
        ticker = ib.reqMktData(aapl)
        t0 = time.monotonic()
        while not (math.isfinite(ticker.bid) and math.isfinite(ticker.ask)):
            if time.monotonic() - t0 > 1.0:
                print("bid/ask still nan after 1 s")
                return 1
            await asyncio.sleep(0.01)
        print(f"bid {ticker.bid} ask {ticker.ask} after {time.monotonic() - t0:.3f} s")
        reports = []
        ib.commissionReportEvent += lambda trade, fill, report: reports.append(report)
        for action in ("BUY", "SELL"):
            trade = ib.placeOrder(aapl, MarketOrder(action, 1))
            while not trade.isDone():
                await asyncio.sleep(0.01)
            print(f"{action} {trade.orderStatus.status} @ {trade.orderStatus.avgFillPrice}")
        while len(reports) < 2:
            await asyncio.sleep(0.01)
        print("commissions", [r.commission for r in reports])
        await asyncio.sleep(0.1)
        held = sum(p.position for p in ib.positions() if p.contract.conId == aapl.conId)
        print(f"position {held}")
        return 0 if held == 0 else 1
    finally:
        ib.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=7599)
    sys.exit(asyncio.run(main(parser.parse_args().port)))
