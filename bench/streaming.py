"""Clients that consume a simulator stream at its top rate, and what they measure.

The *bare* client is the baseline a user would write by hand: ib_async, ``reqMktData``
and a ``pendingTickersEvent`` handler that only counts ``TickData``. The *raw drain*
client swaps ib_async's decoder for a byte counter after subscribing, so it shows what
the simulator alone can push through the socket.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ib_async import IB, Contract, Ticker
from simproc import SYNTH_BASE_CON_ID, SimProcess, synth_instrument

from harness_lib.recorder import TICK_FIELDS

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc; 10 ms grain)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return float("nan")
    rest = data[data.rindex(b")") + 2 :].split()
    # rest[11], rest[12] are fields 14 (utime) and 15 (stime).
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def system_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
    except OSError:
        return float("nan")
    values = [int(x) for x in parts[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / _CLK_TCK


def synth_contracts(n: int) -> list[Contract]:
    """Contracts for the first n synthetic stocks, by conId (no qualification round trip)."""
    return [Contract(conId=SYNTH_BASE_CON_ID + i, exchange="SMART") for i in range(n)]


@dataclass
class StreamResult:
    """What one client saw during its measurement window and after draining."""

    label: str
    contracts: int
    window_s: float = 0.0
    received_window: int = 0
    sent_window: int = 0
    client_cpu_s: float = 0.0
    sim_cpu_s: float = 0.0
    system_busy_s: float = float("nan")
    """Busy CPU seconds of the whole machine in the window (all processes)."""
    received_total: int = 0
    sent_total: int = 0
    stored_total: int | None = None
    recorder_total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def recv_rate(self) -> float:
        """TickData per second the client received in the window."""
        return self.received_window / self.window_s if self.window_s else float("nan")

    @property
    def sent_rate(self) -> float:
        """Tick messages per second the simulator sent to this client in the window."""
        return self.sent_window / self.window_s if self.window_s else float("nan")

    @property
    def client_util(self) -> float:
        """Fraction of one core the client process used in the window."""
        return self.client_cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def sim_util(self) -> float:
        """Fraction of one core the simulator process used in the window."""
        return self.sim_cpu_s / self.window_s if self.window_s else float("nan")

    @property
    def other_util(self) -> float:
        """Cores' worth of CPU used in the window by processes other than the client and
        the simulator: other work on the (shared) machine competing with the benchmark."""
        if not self.window_s:
            return float("nan")
        return max(0.0, self.system_busy_s - self.client_cpu_s - self.sim_cpu_s) / self.window_s

    @property
    def cpu_us_per_tick(self) -> float:
        """Client CPU microseconds per received tick: the cost of handling one tick."""
        return 1e6 * self.client_cpu_s / self.received_window if self.received_window else 0.0


class TickCounter:
    """A ``pendingTickersEvent`` handler that counts the TickData the client received from
    tickPrice/tickSize messages (what the simulator counts as sent and the store keeps);
    the halted flag (tickGeneric 49) and friends also make TickData and are left out."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, tickers: set[Ticker]) -> None:
        n = 0
        kept = TICK_FIELDS
        for t in tickers:
            for td in t.ticks:
                n += td.tickType in kept
        self.count += n


class Window:
    """Samples received/sent counts and CPU at the start and end of a measurement window."""

    def __init__(self, sim: SimProcess, counter: TickCounter, client_id: int) -> None:
        self.sim, self.counter, self.client_id = sim, counter, client_id
        self.t0 = self.c0 = self.s0 = self.p0 = self.q0 = self.b0 = 0.0

    def start(self) -> None:
        """Mark the window start."""
        self.s0 = self.sim.tick_count(self.client_id)
        self.q0 = proc_cpu_seconds(self.sim.pid)
        self.c0 = self.counter.count
        self.p0 = time.process_time()
        self.b0 = system_busy_seconds()
        self.t0 = time.monotonic()

    def stop(self, res: StreamResult) -> None:
        """Mark the window end and fill the window figures of ``res``."""
        t1 = time.monotonic()
        c1 = self.counter.count
        p1 = time.process_time()
        s1 = self.sim.tick_count(self.client_id)
        q1 = proc_cpu_seconds(self.sim.pid)
        res.system_busy_s = system_busy_seconds() - self.b0
        res.window_s = t1 - self.t0
        res.received_window = int(c1 - self.c0)
        res.sent_window = int(s1 - self.s0)
        res.client_cpu_s = p1 - self.p0
        res.sim_cpu_s = q1 - self.q0


async def wait_all_ticking(tickers: list[Ticker], timeout: float = 15.0) -> None:
    """Wait until every subscription has delivered something (ib_async throttles requests
    to 45/s, so 50 subscriptions take over a second to be sent)."""
    deadline = time.monotonic() + timeout
    while not all(t.time for t in tickers):
        if time.monotonic() > deadline:
            raise TimeoutError("not every subscription ticked")
        await asyncio.sleep(0.005)


async def bare_client_run(sim: SimProcess, n: int, seconds: float, client_id: int,
                          warmup: float = 0.2) -> StreamResult:  # fmt: skip
    """The hand-written baseline: subscribe n contracts, count TickData, nothing else."""
    res = StreamResult("bare ib_async", n)
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=10)
    counter = TickCounter()
    ib.pendingTickersEvent += counter
    contracts = synth_contracts(n)
    tickers = [ib.reqMktData(c, "", False, False) for c in contracts]
    await wait_all_ticking(tickers)
    await asyncio.sleep(warmup)
    win = Window(sim, counter, client_id)
    win.start()
    await asyncio.sleep(seconds)
    win.stop(res)
    for c in contracts:
        ib.cancelMktData(c)
    # The simulator answers in order: once this reply is in, every tick it sent before
    # handling the cancels has been received and counted.
    await asyncio.wait_for(ib.reqCurrentTimeAsync(), 60)
    res.received_total = counter.count
    res.sent_total = sim.tick_count(client_id)
    ib.disconnect()
    return res


async def raw_drain_run(sim: SimProcess, n: int, seconds: float, client_id: int,
                        warmup: float = 0.2) -> StreamResult:  # fmt: skip
    """Subscribe with ib_async, then read the socket without decoding: the simulator's
    own ceiling, since this client costs almost nothing per tick."""
    res = StreamResult("raw socket drain", n)
    ib = IB()
    await ib.connectAsync("127.0.0.1", sim.port, clientId=client_id, timeout=10)
    contracts = synth_contracts(n)
    tickers = [ib.reqMktData(c, "", False, False) for c in contracts]
    await wait_all_ticking(tickers)
    nbytes = 0

    def drain(data: bytes) -> None:
        nonlocal nbytes
        nbytes += len(data)

    ib.client.conn.hasData -= ib.client._onSocketHasData
    ib.client.conn.hasData += drain
    await asyncio.sleep(warmup)
    counter = TickCounter()  # stays 0: nothing is decoded
    win = Window(sim, counter, client_id)
    win.start()
    await asyncio.sleep(seconds)
    win.stop(res)
    res.received_window = res.sent_window  # everything sent was read and discarded
    res.extra["bytes"] = nbytes
    res.sent_total = sim.tick_count(client_id)
    ib.disconnect()
    return res


# --- replay: the client's own capacity, with the simulator out of the loop ----------------


def build_replay(req_ids: list[int], n_ticks: int, seed: int = 7, burst: int = 8,
                 chunk: int = 16_384) -> tuple[list[bytes], int]:  # fmt: skip
    """Pre-encoded tick frames for the given subscriptions, cut into socket-sized chunks.

    The frames are what the simulator sends at top rate (its own encoder, quote model and
    message mix: bid and ask as tickPrice, half the quotes with last + volume), round-robin
    over the subscriptions ``burst`` quotes at a time, as its stream tasks interleave.
    Chunks are cut at arbitrary byte offsets, as a socket read would be. Returns
    (chunks, tick messages).
    """
    import random

    from harness_lib.sim import messages as m
    from harness_lib.sim.market import QuoteModel
    from harness_lib.sim.wire import frame

    rng = random.Random(seed)
    models = []
    for i, _ in enumerate(req_ids):
        inst = synth_instrument(i)
        models.append(QuoteModel(inst, random.Random(f"{seed}:{inst.con_id}")))
    out = bytearray()
    count = 0
    while count < n_ticks:
        for req_id, qm in zip(req_ids, models, strict=True):
            for _ in range(burst):
                q = qm.step()
                msgs = [[m.TICK_PRICE, 6, req_id, 1, q.bid, m._qty(q.bid_size), 0],
                        [m.TICK_PRICE, 6, req_id, 2, q.ask, m._qty(q.ask_size), 0]]  # fmt: skip
                if rng.random() < 0.5:
                    msgs.append([m.TICK_PRICE, 6, req_id, 4, q.last, m._qty(q.last_size), 0])
                    msgs.append([m.TICK_SIZE, 6, req_id, 8, m._qty(q.volume)])
                for f in msgs:
                    out += frame(f)
                count += len(msgs)
    data = bytes(out)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)], count


def req_ids_of(ib: IB, tickers: list[Ticker]) -> list[int]:
    """The request ids ib_async gave these market data subscriptions."""
    ids = ib.wrapper.ticker2ReqId["mktData"]
    return [ids[t] for t in tickers]


async def feed(ib: IB, chunks: list[bytes], counter: TickCounter) -> tuple[float, float, int]:
    """Hand the chunks to ib_async exactly as its socket protocol does (one
    ``Connection.hasData`` event per read, so every listener, the wire tap included, sees
    them), yielding to the loop between reads so timers and other threads still run.
    Returns (wall seconds, CPU seconds of the whole process, TickData counted)."""
    on_data = ib.client.conn.hasData.emit
    c0 = counter.count
    t0, p0 = time.perf_counter(), time.process_time()
    for chunk in chunks:
        on_data(chunk)
        await asyncio.sleep(0)
    return time.perf_counter() - t0, time.process_time() - p0, counter.count - c0


async def feed_measured(ib: IB, chunks: list[bytes], counter: TickCounter,
                        res: StreamResult) -> None:  # fmt: skip
    """``feed`` with the machine's busy time recorded, to show competing load."""
    b0 = system_busy_seconds()
    res.window_s, res.client_cpu_s, res.received_window = await feed(ib, chunks, counter)
    res.system_busy_s = system_busy_seconds() - b0
