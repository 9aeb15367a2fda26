"""A trading dashboard's start-up against `harness sim`, in plain ib_async (nothing of
livefire in it): what a typical engine or dashboard asks for in its first seconds.

    uv run harness sim --port 7599 &
    uv run python examples/typical_startup.py --port 7599

1. qualify the watchlist (a stock, an FX pair, the front future);
2. a day of 5-minute bars for the chart, kept up to date;
3. live quotes for the watchlist (bid, ask, last, high, low, open, close);
4. the account: summary, P&L, positions and portfolio.

Prints one line per step with the figures a dashboard would show, and exits 0 when every
step got its data (1 otherwise), each within its own timeout so nothing hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys

from ib_async import IB, Contract, Forex, Future, Stock

STEP_TIMEOUT = 5.0


async def wait_for(pred: object, what: str) -> None:
    """Poll ``pred()`` until true, or fail the start-up naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while not pred():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not arrive within {STEP_TIMEOUT} s")
        await asyncio.sleep(0.02)


async def startup(port: int, client_id: int = 23) -> int:
    """Run the start-up; return the process exit code."""
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=4)
    try:
        account = ib.managedAccounts()[0]
        print(f"connected: server version {ib.client.serverVersion()}, account {account}")

        # 1. Qualify the watchlist; the future is the front month of MES.
        months = await ib.reqContractDetailsAsync(Future("MES", exchange="CME"))
        front = min(months, key=lambda d: d.contract.lastTradeDateOrContractMonth).contract
        watch: list[Contract] = [Stock("AAPL", "SMART", "USD"), Forex("EURUSD"), front]
        await ib.qualifyContractsAsync(*watch)
        print("qualified:", ", ".join(f"{c.localSymbol}={c.conId}" for c in watch))
        [details] = await ib.reqContractDetailsAsync(watch[0])
        print(f"AAPL trading hours today: {details.tradingHours.split(';')[0]}")

        # 2. The chart: a day of 5-minute bars, then live updates of the open bar.
        bars = await ib.reqHistoricalDataAsync(
            watch[0], "", "1 D", "5 mins", "TRADES", useRTH=False, keepUpToDate=True
        )
        if not bars:
            print("chart: no bars")
            return 1
        print(f"chart: {len(bars)} bars, last {bars[-1].date} close {bars[-1].close}")

        # 3. Live quotes for the watchlist.
        tickers = [ib.reqMktData(c) for c in watch]
        await wait_for(
            lambda: all(math.isfinite(t.bid) and math.isfinite(t.ask) for t in tickers),
            "bid/ask for every watchlist contract",
        )
        await wait_for(lambda: math.isfinite(tickers[0].high), "AAPL's session high")
        for t in tickers:
            print(
                f"quote {t.contract.localSymbol}: bid {t.bid} ask {t.ask} last {t.last} "
                f"high {t.high} low {t.low} open {t.open} close {t.close}"
            )

        # 4. The account panel.
        summary = {v.tag: v.value for v in await ib.accountSummaryAsync(account)}
        print(f"account: net liquidation {summary['NetLiquidation']}, "
              f"buying power {summary['BuyingPower']}")  # fmt: skip
        pnl = ib.reqPnL(account)
        await wait_for(lambda: math.isfinite(pnl.dailyPnL), "daily P&L")
        print(f"P&L: daily {pnl.dailyPnL} unrealized {pnl.unrealizedPnL}")
        positions = await ib.reqPositionsAsync()
        print(f"positions: {len(positions)}; portfolio items: {len(ib.portfolio())}")

        ib.cancelPnL(account)
        ib.cancelHistoricalData(bars)
        for c in watch:
            ib.cancelMktData(c)
        return 0
    except TimeoutError as exc:
        print(f"start-up incomplete: {exc}")
        return 1
    finally:
        ib.disconnect()


def main() -> None:
    """Parse --port and run the start-up."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=7599)
    args = ap.parse_args()
    sys.exit(asyncio.run(startup(args.port)))


if __name__ == "__main__":
    main()
