"""Every subscriber of an instrument gets the same ticks, as from a real market data feed.

Stack checks compare what the user's dashboard shows with the quotes the harness's own
connection received. With the walk stepped once per subscription, each client saw every
other step: a dashboard showed quotes the harness never got, and a quote latency could only
be matched against an older equal price (200+ ms "latency" for a stack 2 ms behind).
"""

from __future__ import annotations

import asyncio

from ib_async import Stock, Ticker

from harness_lib.sim import PaperGateway
from tests.helpers import connect, wait_until

Seen = tuple[float, float, float, float]


def _record(ticker: Ticker, into: list[Seen]) -> None:
    def on_update(t: Ticker) -> None:
        into.append((t.bid, t.ask, t.bidSize, t.askSize))

    ticker.updateEvent += on_update


async def test_two_clients_get_the_same_ticks(paper_gateway: PaperGateway) -> None:
    harness = await connect(paper_gateway.port, client_id=21)
    dashboard = await connect(paper_gateway.port, client_id=22)
    try:
        a: list[Seen] = []
        b: list[Seen] = []
        contract = Stock("AAPL", "SMART", "USD")
        await harness.qualifyContractsAsync(contract)
        _record(harness.reqMktData(contract), a)
        await asyncio.sleep(0.1)  # the second subscription starts at another moment
        _record(dashboard.reqMktData(contract), b)
        await wait_until(lambda: len(b) >= 8, timeout=10)
    finally:
        harness.disconnect()
        dashboard.disconnect()
    # Bid, ask and both sizes identify a step of the walk: the dashboard's steps after its
    # first (full) tick are the harness's steps, not the ones in between.
    later = [q for q in b[1:] if q in set(a)]
    assert len(later) >= len(b[1:]) - 1, (a, b)
    steps_a = list(dict.fromkeys(a))
    steps_b = list(dict.fromkeys(b[1:]))
    start = steps_a.index(steps_b[0])
    assert steps_a[start : start + len(steps_b) - 1] == steps_b[:-1], (steps_a, steps_b)
