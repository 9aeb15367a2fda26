"""Ground truth: what the simulator really sent and received, time-stamped.

Tests and benchmarks compare what the harness measured with these records
(tick send times against recorded arrival times, orders received against guards).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class SentTick:
    """One tick message as the simulator wrote it to a client socket."""

    t_mono: float
    t_wall: float
    client_id: int
    req_id: int
    con_id: int
    tick_type: int
    field: str
    price: float | None
    size: float | None


@dataclass(slots=True, frozen=True)
class ReceivedOrder:
    """A placeOrder message the simulator received (whatever it then did with it)."""

    t_mono: float
    t_wall: float
    client_id: int
    order_id: int
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    order_ref: str
    account: str
    con_id: int
    symbol: str
    what_if: bool = False
    """A what-if: answered with margins and commission, never executed."""


@dataclass(slots=True, frozen=True)
class FaultEvent:
    """A fault added, fired or cleared (or a one-shot action), as the simulator did it."""

    t_mono: float
    t_wall: float
    event: str
    """'added', 'cleared', 'fired' (1100 sent), 'restored' (1101/1102 sent), 'dropped'."""
    name: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the control channel's /truth)."""
        return {
            "t_mono": self.t_mono,
            "t_wall": self.t_wall,
            "event": self.event,
            "name": self.name,
            "detail": self.detail,
        }


@dataclass
class GroundTruth:
    """Everything the gateway sent and received, for comparison with what a client saw."""

    ticks: list[SentTick] = field(default_factory=list)
    orders: list[ReceivedOrder] = field(default_factory=list)
    cancels: list[tuple[float, int, int]] = field(default_factory=list)
    """(t_mono, client_id, order_id) of every cancelOrder received."""
    messages: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=500_000))
    """(t_mono, client_id, msg_id) of recently sent messages; bounded for long benchmarks."""
    counts: Counter[tuple[int, int]] = field(default_factory=Counter)
    """Messages sent per (client_id, msg_id), unbounded."""
    requests: Counter[tuple[int, int]] = field(default_factory=Counter)
    """Requests received per (client_id, msg_id), served or not."""
    connections: list[tuple[float, int, str]] = field(default_factory=list)
    """(t_mono, client_id, event) with event 'connected', 'refused', 'dropped', 'closed'."""
    faults: list[FaultEvent] = field(default_factory=list)
    """Every fault added, fired and cleared, in order (run-time control included)."""
    record_ticks: bool = True
    """Benchmarks that only need counts may turn off per-tick records."""

    def sent(self, client_id: int, msg_id: int) -> None:
        """Count one sent message."""
        self.counts[(client_id, msg_id)] += 1
        self.messages.append((time.monotonic(), client_id, msg_id))

    def fault_event(self, event: str, name: str, **detail: Any) -> FaultEvent:
        """Record a fault event now."""
        ev = FaultEvent(time.monotonic(), time.time(), event, name, detail)
        self.faults.append(ev)
        return ev

    def ticks_for(self, client_id: int | None = None, req_id: int | None = None) -> list[SentTick]:
        """Ticks sent to one client (and one subscription), in send order."""
        return [
            t
            for t in self.ticks
            if (client_id is None or t.client_id == client_id)
            and (req_id is None or t.req_id == req_id)
        ]

    def first_tick(self, client_id: int, field_name: str) -> SentTick | None:
        """The first tick of a given field (bid, ask, last...) sent to a client."""
        return next(
            (t for t in self.ticks if t.client_id == client_id and t.field == field_name), None
        )

    def tick_count(self, client_id: int | None = None) -> int:
        """Tick messages (tickPrice + tickSize) sent, from the unbounded counters."""
        return sum(
            n
            for (cid, mid), n in self.counts.items()
            if mid in (1, 2) and (client_id is None or cid == client_id)
        )

    def orders_from(self, client_id: int | None = None) -> list[ReceivedOrder]:
        """placeOrder messages received, optionally from one client."""
        return [o for o in self.orders if client_id is None or o.client_id == client_id]

    def summary(self) -> dict[str, Any]:
        """Counts for printing."""
        return {
            "ticks_sent": self.tick_count(),
            "orders_received": len(self.orders),
            "cancels_received": len(self.cancels),
            "connections": len([c for c in self.connections if c[2] == "connected"]),
        }
