"""The paper-gateway simulator: a TCP server speaking the TWS API at server version 178.

The real, unmodified ib_async client connects to it over a socket. Each connection
is a ``Session`` (an asyncio Protocol); the ``PaperGateway`` owns the market,
the broker state, the scenario and the ground-truth log shared by all sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import messages as m
from .broker import Broker, Execution, SimOrder
from .market import Catalogue, Instrument, Quote, QuoteModel, build_catalogue
from .messages import OrderView
from .scenarios import DEFAULT_PARAMS, Scenario, ScenarioParams, parse_scenario
from .truth import GroundTruth, ReceivedOrder, SentTick
from .wire import (
    MIN_CLIENT_VERSION,
    SERVER_VERSION,
    FrameReader,
    ProtocolError,
    frame,
    handshake_reply,
    parse_version_range,
)

log = logging.getLogger("harness_lib.sim")

SIM_MARKER = "livefire-sim"
"""Appears in the farm-status notices the simulator sends at connect, so a client can tell
it is talking to the simulator whatever port it listens on."""

DEFAULT_PORT = 7599
"""Not one of IB's ports (4001/4002/7496/7497), so the simulator is never mistaken for them."""

DEFAULT_ACCOUNT = "DU1234567"
LIVE_ACCOUNT = "U7654321"

# Tick type ids: (live, delayed) per Ticker field.
TICK_IDS = {
    "bid": (1, 66),
    "ask": (2, 67),
    "last": (4, 68),
    "bidSize": (0, 69),
    "askSize": (3, 70),
    "lastSize": (5, 71),
    "volume": (8, 74),
    "close": (9, 75),
}

FARM_NOTICES = [
    (2104, f"Market data farm connection is OK:usfarm.{SIM_MARKER}"),
    (2106, f"HMDS data farm connection is OK:ushmds.{SIM_MARKER}"),
    (2158, f"Sec-def data farm connection is OK:secdefnj.{SIM_MARKER}"),
]


@dataclass(slots=True)
class Subscription:
    """One reqMktData stream of one session."""

    req_id: int
    inst: Instrument
    snapshot: bool
    delayed: bool
    frozen: bool
    started: float = field(default_factory=time.monotonic)
    first_sent: float | None = None
    task: asyncio.Task[None] | None = None


class Session(asyncio.Protocol):
    """One client connection: parses its frames and answers as a paper gateway would."""

    def __init__(self, gw: PaperGateway) -> None:
        self.gw = gw
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.client_id: int | None = None
        self.peer = "?"
        self.market_data_type = 1
        self.subs: dict[int, Subscription] = {}
        self.positions_subscribed = False
        self.account_updates: str | None = None
        self.closed = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.gw.sessions.add(self)
        if self.gw.refusing():
            log.info("refusing connection from %s (scenario refuse_connections)", self.peer)
            self.gw.truth.connections.append((time.monotonic(), -1, "refused"))
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            if self.reader.greet():
                self._handshake()
            for fields in self.reader.frames():
                self._dispatch(fields)
        except ProtocolError as exc:
            # A client that does not speak the protocol only loses its own connection.
            log.warning("closing %s: %s", self.peer, exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gw.sessions.discard(self)
        if self.client_id is not None and self.gw.clients.get(self.client_id) is self:
            del self.gw.clients[self.client_id]
            self.gw.truth.connections.append((time.monotonic(), self.client_id, "closed"))
        for sub in self.subs.values():
            if sub.task:
                sub.task.cancel()
        for task in self._tasks:
            task.cancel()
        self.subs.clear()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # --- sending -----------------------------------------------------------------------------
    def send(self, fields: list[Any]) -> None:
        """Write one message and count it in the ground truth."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(frame(fields))
        self.gw.truth.sent(self.client_id or 0, int(fields[0]))

    def send_tick(
        self, sub: Subscription, fld: str, price: float | None, size: float | None
    ) -> None:
        """Send one tickPrice/tickSize and record it as ground truth."""
        if self.closed:
            return
        live_id, delayed_id = TICK_IDS[fld]
        tick_type = delayed_id if sub.delayed else live_id
        if price is not None:
            fields: list[Any] = [
                m.TICK_PRICE,
                6,
                sub.req_id,
                tick_type,
                price,
                m._qty(size or 0),
                0,
            ]
        else:
            fields = [m.TICK_SIZE, 6, sub.req_id, tick_type, m._qty(size or 0)]
        t_mono = time.monotonic()
        t_wall = time.time()
        self.send(fields)
        if self.gw.truth.record_ticks:
            self.gw.truth.ticks.append(
                SentTick(
                    t_mono,
                    t_wall,
                    self.client_id or 0,
                    sub.req_id,
                    sub.inst.con_id,
                    tick_type,
                    fld,
                    price,
                    size,
                )
            )

    def error(self, req_id: int, code: int, text: str) -> None:
        """Send an error/notice message."""
        self.send(m.error(req_id, code, text))

    async def drain(self) -> None:
        """Wait while the socket's write buffer is over the high-water mark."""
        await self._can_write.wait()

    def close(self) -> None:
        """Drop this connection (the client sees the peer close)."""
        if self.transport and not self.transport.is_closing():
            self.transport.close()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a coroutine tied to this session's lifetime."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- dispatch ----------------------------------------------------------------------------
    def _dispatch(self, fields: list[str]) -> None:
        try:
            msg_id = int(fields[0])
        except ValueError:
            log.warning("%s sent a non-numeric message id %r; ignored", self.peer, fields[0][:20])
            return
        handler = HANDLERS.get(msg_id)
        if handler is None:
            log.warning("%s sent unknown message id %d; ignored", self.peer, msg_id)
            return
        if msg_id != 71 and self.client_id is None:
            log.warning("%s sent message %d before startApi; ignored", self.peer, msg_id)
            return
        try:
            handler(self, fields)
        except (ValueError, IndexError) as exc:
            # Malformed fields in one request: log it, tell the client, keep serving.
            log.warning("%s sent a malformed message %d: %s", self.peer, msg_id, exc)
            self.error(-1, 320, f"Error reading request: malformed message {msg_id}")

    def _handshake(self) -> None:
        """Answer the version range with the server version and connection time."""
        text = self.reader.version_text or ""
        _low, high, _ = parse_version_range(text)
        if high < MIN_CLIENT_VERSION:
            raise ProtocolError(f"client versions {text!r} are older than {MIN_CLIENT_VERSION}")
        now = datetime.now(UTC) + self.gw.clock_offset_td
        assert self.transport is not None
        self.transport.write(
            handshake_reply(min(SERVER_VERSION, high), now.strftime("%Y%m%d %H:%M:%S") + " UTC")
        )


def _int(text: str, default: int = 0) -> int:
    return int(text) if text != "" else default


def _float(text: str) -> float | None:
    if text == "" or text == "1.7976931348623157E308":
        return None
    value = float(text)
    return None if value >= 1.7976931348623157e308 else value


def _contract_at(fields: list[str], i: int) -> dict[str, Any]:
    """Read the 12-field contract block (conId .. tradingClass) starting at index i."""
    return {
        "con_id": _int(fields[i]),
        "symbol": fields[i + 1],
        "sec_type": fields[i + 2],
        "expiry": fields[i + 3],
        "exchange": fields[i + 7],
        "primary_exchange": fields[i + 8],
        "currency": fields[i + 9],
        "local_symbol": fields[i + 10],
    }


# --- handlers ----------------------------------------------------------------------------------


def h_start_api(s: Session, f: list[str]) -> None:
    """startApi (71): register the clientId, announce accounts, next id and farm status."""
    client_id = _int(f[2])
    gw = s.gw
    if client_id in gw.clients and not gw.clients[client_id].closed:
        s.client_id = None
        s.send(
            m.error(
                -1,
                326,
                "Unable to connect as the client id is already in use. "
                "Retry with a unique client id.",
            )
        )
        gw.truth.connections.append((time.monotonic(), client_id, "refused"))
        s.close()
        return
    s.client_id = client_id
    gw.clients[client_id] = s
    gw.truth.connections.append((time.monotonic(), client_id, "connected"))
    s.send([m.MANAGED_ACCTS, 1, ",".join(gw.accounts)])
    s.send([m.NEXT_VALID_ID, 1, gw.broker.next_order_id])
    for code, text in FARM_NOTICES:
        s.error(-1, code, text)
    gw.on_session_started(s)


def h_req_ids(s: Session, f: list[str]) -> None:
    """reqIds (8)."""
    s.send([m.NEXT_VALID_ID, 1, s.gw.broker.next_order_id])


def h_current_time(s: Session, f: list[str]) -> None:
    """reqCurrentTime (49): the gateway clock, shifted by ``clock_offset`` for skew tests."""
    s.send([m.CURRENT_TIME, 1, int(time.time() + s.gw.clock_offset)])


def h_managed_accts(s: Session, f: list[str]) -> None:
    """reqManagedAccts (17)."""
    s.send([m.MANAGED_ACCTS, 1, ",".join(s.gw.accounts)])


def h_positions(s: Session, f: list[str]) -> None:
    """reqPositions (61): every position, then positionEnd; later changes are pushed."""
    s.positions_subscribed = True
    for acct, inst, pos in s.gw.broker.position_rows():
        s.send(m.position(acct, inst, pos.qty, pos.avg_price * inst.point_value))
    s.send([m.POSITION_END, 1])


def h_cancel_positions(s: Session, f: list[str]) -> None:
    """cancelPositions (64)."""
    s.positions_subscribed = False


def h_open_orders(s: Session, f: list[str]) -> None:
    """reqOpenOrders (5): this client's open orders (clientId 0 also sees everyone's)."""
    cid = None if s.client_id == 0 else s.client_id
    for o in s.gw.broker.open_orders(cid):
        s.send(m.open_order(o.view))
        s.send(m.order_status(o.view, avg_fill_price=o.avg_fill_price()))
    s.send([m.OPEN_ORDER_END, 1])


def h_all_open_orders(s: Session, f: list[str]) -> None:
    """reqAllOpenOrders (16): open orders of every client."""
    for o in s.gw.broker.open_orders():
        s.send(m.open_order(o.view))
        s.send(m.order_status(o.view, avg_fill_price=o.avg_fill_price()))
    s.send([m.OPEN_ORDER_END, 1])


def h_auto_open_orders(s: Session, f: list[str]) -> None:
    """reqAutoOpenOrders (15): accepted; clientId 0 already sees every order."""


def h_completed_orders(s: Session, f: list[str]) -> None:
    """reqCompletedOrders (99)."""
    for o in s.gw.broker.completed_orders():
        s.send(m.completed_order(o.view))
    s.send([m.COMPLETED_ORDERS_END])


def h_account_updates(s: Session, f: list[str]) -> None:
    """reqAccountUpdates (6): values, portfolio, time, then accountDownloadEnd."""
    subscribe = f[2] == "1"
    account = f[3] or s.gw.accounts[0]
    if not subscribe:
        s.account_updates = None
        return
    s.account_updates = account
    s.gw.send_account_snapshot(s, account)
    s.send([m.ACCT_DOWNLOAD_END, 1, account])


def h_account_updates_multi(s: Session, f: list[str]) -> None:
    """reqAccountUpdatesMulti (76): values per account, then the end marker for the reqId."""
    req_id = _int(f[2])
    accounts = [f[3]] if f[3] else s.gw.accounts
    for acct in accounts:
        for key, value in s.gw.broker.account_values(acct, s.gw.marks()).items():
            s.send([m.ACCOUNT_UPDATE_MULTI, 1, req_id, acct, f[4], key, value, "USD"])
    s.send([m.ACCOUNT_UPDATE_MULTI_END, 1, req_id])


def h_cancel_account_updates_multi(s: Session, f: list[str]) -> None:
    """cancelAccountUpdatesMulti (77)."""


def h_account_summary(s: Session, f: list[str]) -> None:
    """reqAccountSummary (62): ib_async asks again after 1102."""
    req_id = _int(f[2])
    for acct in s.gw.accounts:
        for key, value in s.gw.broker.account_values(acct, s.gw.marks()).items():
            s.send([63, 1, req_id, acct, key, value, "USD"])
    s.send([64, 1, req_id])


def h_cancel_account_summary(s: Session, f: list[str]) -> None:
    """cancelAccountSummary (63)."""


def h_executions(s: Session, f: list[str]) -> None:
    """reqExecutions (7): matching executions with their commissions, then the end marker."""
    req_id = _int(f[2])
    client_filter = _int(f[3])
    acct_filter = f[4]
    symbol_filter = f[6] if len(f) > 6 else ""
    for e in s.gw.broker.executions:
        o = e.order
        if client_filter and o.client_id != client_filter:
            continue
        if acct_filter and o.account != acct_filter:
            continue
        if symbol_filter and o.inst.symbol != symbol_filter:
            continue
        s.send(_exec_message(req_id, e))
        if e.commission_sent:
            s.send(m.commission_report(e.exec_id, e.commission, "USD", e.realized_pnl))
    s.send([m.EXECUTION_DATA_END, 1, req_id])


def _exec_message(req_id: int, e: Execution) -> list[Any]:
    """execDetails for one simulated execution (reqId -1 when live)."""
    return m.exec_details(
        req_id, e.order, exec_id=e.exec_id, when=e.time, shares=e.shares, price=e.price,
        cum_qty=e.cum_qty, avg_price=e.avg_price,
    )  # fmt: skip


def h_contract_details(s: Session, f: list[str]) -> None:
    """reqContractDetails (9): every match, or error 200 when nothing matches."""
    req_id = _int(f[2])
    matches = s.gw.catalogue.match(**_match_args(_contract_at(f, 3)))
    if not matches:
        s.error(req_id, 200, "No security definition has been found for the request")
        return
    for inst in matches:
        s.send(m.contract_details(req_id, inst))
    s.send([m.CONTRACT_DATA_END, 1, req_id])


def _match_args(c: dict[str, Any]) -> dict[str, Any]:
    return {
        k: c[k]
        for k in ("con_id", "symbol", "sec_type", "expiry", "exchange", "currency", "local_symbol")
    }


def h_market_data_type(s: Session, f: list[str]) -> None:
    """reqMarketDataType (59): remembered per client for later subscriptions."""
    mdt = _int(f[2], 1)
    if mdt not in (1, 2, 3, 4):
        raise ValueError(f"market data type {mdt}")
    s.market_data_type = mdt


def h_mkt_data(s: Session, f: list[str]) -> None:
    """reqMktData (1): resolve the contract, apply the scenario, start the stream."""
    req_id = _int(f[2])
    c = _contract_at(f, 3)
    i = 15
    if c["sec_type"] == "BAG":
        s.error(req_id, 200, "No security definition has been found for the request")
        return
    if f[i] == "1":  # delta-neutral contract present
        i += 3
    i += 1
    snapshot = f[i + 1] == "1"
    matches = s.gw.catalogue.match(**_match_args(c))
    if len(matches) != 1:
        text = (
            "No security definition has been found for the request"
            if not matches
            else f"The contract description specified for {c['symbol']} is ambiguous."
        )
        s.error(req_id, 200, text)
        return
    s.gw.subscribe(s, req_id, matches[0], snapshot)


def h_cancel_mkt_data(s: Session, f: list[str]) -> None:
    """cancelMktData (2): stop the stream."""
    sub = s.subs.pop(_int(f[2]), None)
    if sub and sub.task:
        sub.task.cancel()


def h_place_order(s: Session, f: list[str]) -> None:
    """placeOrder (3): validate, accept, and fill or rest per the scenario."""
    s.gw.place_order(s, f)


def h_cancel_order(s: Session, f: list[str]) -> None:
    """cancelOrder (4)."""
    s.gw.cancel_order(s, _int(f[2]))


def h_global_cancel(s: Session, f: list[str]) -> None:
    """reqGlobalCancel (58): cancel every open order of every client."""
    for o in s.gw.broker.open_orders():
        s.gw.cancel_order(s, o.view.order_id, owner=o.view.client_id)


HANDLERS: dict[int, Callable[[Session, list[str]], None]] = {
    1: h_mkt_data,
    2: h_cancel_mkt_data,
    3: h_place_order,
    4: h_cancel_order,
    5: h_open_orders,
    6: h_account_updates,
    7: h_executions,
    8: h_req_ids,
    9: h_contract_details,
    15: h_auto_open_orders,
    16: h_all_open_orders,
    17: h_managed_accts,
    49: h_current_time,
    58: h_global_cancel,
    59: h_market_data_type,
    61: h_positions,
    62: h_account_summary,
    63: h_cancel_account_summary,
    64: h_cancel_positions,
    71: h_start_api,
    76: h_account_updates_multi,
    77: h_cancel_account_updates_multi,
    99: h_completed_orders,
}


class PaperGateway:
    """A simulated IB paper gateway on loopback.

    Use it as ``async with PaperGateway(scenario="healthy") as gw: ...`` and connect
    ib_async to ``gw.port``. ``set_scenario`` switches behaviour while it runs;
    ``truth`` holds what it sent and received.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scenario: str | Scenario = Scenario.HEALTHY,
        seed: int = 7,
        accounts: list[str] | None = None,
        clock_offset: float = 0.0,
        **params: Any,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.seed = seed
        self.rng = random.Random(seed)
        self.catalogue = Catalogue(build_catalogue())
        self.models: dict[int, QuoteModel] = {}
        self.truth = GroundTruth()
        self.sessions: set[Session] = set()
        self.clients: dict[int, Session] = {}
        self.clock_offset = clock_offset
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outage = False
        self._one_shot_fired = False
        self._scenario_t0 = time.monotonic()
        self._refuse_until = 0.0
        self._step_counts = {}
        self._new_orders = 0
        self.scenario = Scenario.HEALTHY
        self.params = ScenarioParams()
        self._explicit_accounts = accounts
        self.accounts: list[str] = []
        self.set_scenario(scenario, **params)
        self.broker = Broker(self.accounts)

    # --- lifecycle -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port it listens on (known after start)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def clock_offset_td(self) -> Any:
        """The clock offset as a timedelta."""
        from datetime import timedelta

        return timedelta(seconds=self.clock_offset)

    async def start(self) -> PaperGateway:
        """Start listening."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: Session(self), self.host, self._requested_port, reuse_address=True
        )
        self._arm_scenario_timers()
        log.info("simulator listening on %s:%d (scenario %s)", self.host, self.port, self.scenario)
        return self

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        for t in self._timers:
            t.cancel()
        for task in list(self._tasks):
            task.cancel()
        for s in list(self.sessions):
            s.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> PaperGateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run a gateway-level coroutine, cancelled on stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- scenarios -----------------------------------------------------------------------------
    def set_scenario(self, scenario: str | Scenario, **params: Any) -> None:
        """Switch behaviour now. Streams already running follow the new scenario on their next
        step; timers of the old scenario are cancelled. Call on the gateway's loop (see
        ``ThreadedGateway.set_scenario`` from other threads)."""
        scen = scenario if isinstance(scenario, Scenario) else parse_scenario(scenario)
        base = DEFAULT_PARAMS.get(scen, ScenarioParams())
        self.params = base.with_overrides(**params)
        self.scenario = scen
        self._scenario_t0 = time.monotonic()
        self._refuse_until = (
            self._scenario_t0 + self.params.outage_seconds
            if scen == Scenario.REFUSE_CONNECTIONS and not self.params.disconnect_on
            else 0.0
        )
        self._one_shot_fired = False
        self._step_counts: dict[str, int] = {}
        self._new_orders = 0
        self.outage = False
        if self._explicit_accounts:
            self.accounts = list(self._explicit_accounts)
        else:
            self.accounts = [LIVE_ACCOUNT if scen == Scenario.LIVE_ACCOUNT else DEFAULT_ACCOUNT]
        if hasattr(self, "broker"):
            self.broker.accounts = self.accounts
            for a in self.accounts:
                self.broker.cash.setdefault(a, 1_000_000.0)
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        if self._loop is not None:
            self._arm_scenario_timers()
        log.info("scenario now %s %s", scen.value, params or "")

    def refusing(self) -> bool:
        """True while the refuse_connections scenario is in its outage window."""
        return time.monotonic() < self._refuse_until

    def _arm_scenario_timers(self) -> None:
        loop = self._loop
        assert loop is not None
        if self.scenario == Scenario.CONNECTIVITY_LOST and not self.params.disconnect_on:
            self._timers.append(
                loop.call_later(self.params.disconnect_after, self._lose_connectivity)
            )

    def _lose_connectivity(self) -> None:
        if self._one_shot_fired:
            return
        self._one_shot_fired = True
        self.outage = True
        for s in list(self.clients.values()):
            s.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
        assert self._loop is not None
        self._timers.append(loop_later(self._loop, self.params.outage_seconds, self._restore))

    def _restore(self) -> None:
        self.outage = False
        lost = self.params.data_lost
        for s in list(self.clients.values()):
            if lost:
                # Data lost: the gateway forgets market data subscriptions; clients resubscribe.
                for sub in list(s.subs.values()):
                    if sub.task:
                        sub.task.cancel()
                s.subs.clear()
                s.error(
                    -1,
                    1101,
                    "Connectivity between IB and Trader Workstation has been restored - data lost.",
                )
            else:
                s.error(
                    -1,
                    1102,
                    "Connectivity between IB and Trader Workstation has been restored - "
                    "data maintained.",
                )
        self._check_all_resting()

    def on_session_started(self, s: Session) -> None:
        """Arm per-session scenario behaviour (the timed disconnect)."""
        if self.scenario == Scenario.DISCONNECT and not self.params.disconnect_on:
            assert self._loop is not None
            self._timers.append(
                self._loop.call_later(self.params.disconnect_after, self.drop_all, "timer")
            )

    def order_step(self, step: str) -> None:
        """Called at each order step ('order_submitted', 'filled', 'cancel'). When it matches
        ``disconnect_on`` (``step`` = its first occurrence, ``step:n`` = the n-th), the
        scenario's fault fires: disconnect drops everyone, connectivity_lost sends 1100,
        refuse_connections drops everyone and refuses reconnects for ``outage_seconds``."""
        n = self._step_counts[step] = self._step_counts.get(step, 0) + 1
        want = self.params.disconnect_on
        if not want or self._one_shot_fired:
            return
        name, _, count = want.partition(":")
        if name != step or n != (int(count) if count else 1):
            return
        assert self._loop is not None
        # After the current message is handled, so the step itself happened first.
        if self.scenario == Scenario.DISCONNECT:
            self._loop.call_soon(self.drop_all, want)
        elif self.scenario == Scenario.CONNECTIVITY_LOST:
            self._loop.call_soon(self._lose_connectivity)
        elif self.scenario == Scenario.REFUSE_CONNECTIONS:
            self._one_shot_fired = True
            self._refuse_until = time.monotonic() + self.params.outage_seconds
            self._loop.call_soon(self._drop_sessions, want)

    def applies_to_order(self) -> bool:
        """True when the order scenarios (reject, no fill, partial) apply to the order being
        placed now: every order, or only the ``nth`` new one."""
        return self.params.nth == 0 or self._new_orders == self.params.nth

    def drop_all(self, why: str = "manual") -> int:
        """Drop every client connection now (one-shot in the disconnect scenario)."""
        if self.scenario == Scenario.DISCONNECT:
            if self._one_shot_fired:
                return 0
            self._one_shot_fired = True
        return self._drop_sessions(why)

    def _drop_sessions(self, why: str) -> int:
        n = 0
        for s in list(self.sessions):
            if s.client_id is not None:
                self.truth.connections.append((time.monotonic(), s.client_id, "dropped"))
            s.close()
            n += 1
        log.info("dropped %d connection(s) (%s)", n, why)
        return n

    # --- market --------------------------------------------------------------------------------
    def model(self, inst: Instrument) -> QuoteModel:
        """The quote model of an instrument (created on first use, seeded per conId)."""
        qm = self.models.get(inst.con_id)
        if qm is None:
            qm = QuoteModel(inst, random.Random(f"{self.seed}:{inst.con_id}"))
            self.models[inst.con_id] = qm
        return qm

    def marks(self) -> dict[int, float]:
        """Current mid price per conId that has a quote."""
        return {cid: qm.quote.mid for cid, qm in self.models.items()}

    def shift_market(self, symbol_or_con_id: str | int, ticks: int) -> Quote:
        """Move an instrument's book (tests use it to make a resting limit order marketable)."""
        inst = self._find(symbol_or_con_id)
        quote = self.model(inst).shift(ticks)
        self._check_resting(inst, quote)
        return quote

    def _find(self, key: str | int) -> Instrument:
        if isinstance(key, int):
            return self.catalogue.by_con_id[key]
        return next(i for i in self.catalogue.instruments if key in (i.symbol, i.local_symbol))

    def subscribe(self, s: Session, req_id: int, inst: Instrument, snapshot: bool) -> None:
        """Start a market data stream per the current scenario and the client's data type."""
        requested = s.market_data_type
        scen = self.scenario
        delayed = False
        frozen = False
        if not inst.subscribed or scen == Scenario.NOT_SUBSCRIBED:
            if requested in (1, 2):
                s.error(
                    req_id,
                    354,
                    "Requested market data is not subscribed. Delayed market data is available."
                    f"{inst.symbol} {inst.primary_exchange or inst.exchange}/TOP/ALL",
                )
                return
            delayed = True
        elif scen == Scenario.DELAYED_ONLY:
            if requested in (1, 2):
                s.error(
                    req_id,
                    10167,
                    "Requested market data is not subscribed. Displaying delayed market data.",
                )
            delayed = True
        if scen == Scenario.MARKET_CLOSED:
            frozen = True
        mdt = (4 if frozen else 3) if delayed else (2 if frozen else 1)
        sub = Subscription(req_id, inst, snapshot, delayed, frozen)
        old = s.subs.pop(req_id, None)
        if old and old.task:
            old.task.cancel()
        s.subs[req_id] = sub
        s.send([m.MARKET_DATA_TYPE, 1, req_id, mdt])
        s.send([m.TICK_REQ_PARAMS, req_id, inst.min_tick, "9c0001", 3])
        sub.task = s.spawn(self._stream(s, sub))

    async def _stream(self, s: Session, sub: Subscription) -> None:
        """Send a subscription's ticks: first after the delay, then on the cadence."""
        inst = sub.inst
        qm = self.model(inst)
        await asyncio.sleep(self.params.first_tick_delay)
        first = True
        n = 0
        try:
            while not s.closed:
                p = self.params
                interval = p.tick_interval
                silent = (
                    self.scenario == Scenario.NEVER_TICKS
                    or not inst.liquid
                    or self.outage
                    or (
                        self.scenario == Scenario.STALE_STREAM
                        and sub.first_sent is not None
                        and time.monotonic() - sub.first_sent >= p.stale_after
                    )
                )
                if silent:
                    if sub.snapshot:
                        s.send([m.TICK_SNAPSHOT_END, 1, sub.req_id])
                        break
                    await asyncio.sleep(interval or 0.05)
                    continue
                for _ in range(max(1, p.burst)):
                    quote = qm.quote if first else qm.step()
                    self._send_quote(s, sub, quote, full=first)
                    if sub.first_sent is None:
                        sub.first_sent = time.monotonic()
                    first = False
                    self._check_resting(inst, quote)
                n += 1
                if sub.snapshot:
                    s.send([m.TICK_SNAPSHOT_END, 1, sub.req_id])
                    break
                if sub.frozen:
                    # A closed market shows its last quote once and then nothing moves.
                    await asyncio.Event().wait()
                if interval > 0:
                    await asyncio.sleep(interval)
                else:
                    # Top rate: yield to the loop and respect socket back-pressure.
                    await s.drain()
                    if n % 8 == 0:
                        await asyncio.sleep(0)
        finally:
            if s.subs.get(sub.req_id) is sub and sub.snapshot:
                s.subs.pop(sub.req_id, None)

    def _send_quote(self, s: Session, sub: Subscription, q: Quote, *, full: bool) -> None:
        s.send_tick(sub, "bid", q.bid, q.bid_size)
        s.send_tick(sub, "ask", q.ask, q.ask_size)
        if full or self.rng.random() < 0.5:
            s.send_tick(sub, "last", q.last, q.last_size)
            s.send_tick(sub, "volume", None, q.volume)
        if full:
            s.send_tick(sub, "close", q.last, 0)

    # --- orders --------------------------------------------------------------------------------
    def place_order(self, s: Session, f: list[str]) -> None:
        """Handle placeOrder: record, validate, accept, then fill/rest/reject per scenario."""
        assert s.client_id is not None
        order_id = _int(f[1])
        c = _contract_at(f, 2)
        # Fields after the contract block: secIdType(14), secId(15), action(16) ...
        action = f[16].upper()
        quantity = float(f[17] or 0)
        order_type = f[18].upper()
        lmt = _float(f[19])
        aux = _float(f[20])
        tif = f[21] or "DAY"
        account = f[23] or self.accounts[0]
        order_ref = f[26]
        now_m, now_w = time.monotonic(), time.time()
        self.truth.orders.append(
            ReceivedOrder(
                now_m,
                now_w,
                s.client_id,
                order_id,
                action,
                quantity,
                order_type,
                lmt,
                order_ref,
                account,
                c["con_id"],
                c["symbol"],
            )
        )
        self.broker.note_order_id(order_id)
        key = (s.client_id, order_id)
        existing = self.broker.orders.get(key)
        if existing is not None:
            self._modify(s, existing, quantity, lmt, aux)
            return
        matches = self.catalogue.match(**_match_args(c))
        if len(matches) != 1:
            s.error(order_id, 200, "No security definition has been found for the request")
            return
        inst = matches[0]
        self._new_orders += 1
        problem = None
        if action not in ("BUY", "SELL"):
            problem = f"Invalid action {action!r}"
        elif not (quantity > 0 and math.isfinite(quantity)):
            problem = "Order quantity must be positive"
        elif order_type not in ("MKT", "LMT"):
            problem = f"The simulator supports MKT and LMT orders, not {order_type}"
        elif order_type == "LMT" and lmt is None:
            problem = "Limit price is missing"
        elif account not in self.accounts:
            problem = f"Account {account} is not managed by this gateway"
        if problem is None and self.scenario == Scenario.ORDER_REJECT and self.applies_to_order():
            problem = "Simulated rejection (livefire scenario order_reject)"
        if problem is not None:
            s.error(order_id, 201, f"Order rejected - reason:{problem}")
            return
        view = OrderView(
            order_id=order_id,
            client_id=s.client_id,
            perm_id=self.broker.new_perm_id(),
            inst=inst,
            action=action,
            quantity=quantity,
            order_type=order_type,
            lmt_price=lmt,
            aux_price=aux,
            tif=tif,
            account=account,
            order_ref=order_ref,
            status="Submitted",
        )
        order = SimOrder(view, datetime.now(UTC))
        order.faulty = self.applies_to_order()
        self.broker.orders[key] = order
        s.send(m.open_order(view))
        s.send(m.order_status(view))
        self.order_step("order_submitted")
        self._consider_fill(order)

    def _modify(
        self, s: Session, order: SimOrder, quantity: float, lmt: float | None, aux: float | None
    ) -> None:
        view = order.view
        if not order.is_active:
            s.error(
                view.order_id,
                10148,
                f"OrderId {view.order_id} that needs to be cancelled "
                "cannot be modified; it is already done.",
            )
            return
        view.quantity = max(quantity, view.filled)
        view.lmt_price = lmt
        view.aux_price = aux
        s.send(m.open_order(view))
        s.send(m.order_status(view, avg_fill_price=order.avg_fill_price()))
        self._consider_fill(order)

    def _consider_fill(self, order: SimOrder) -> None:
        """Fill now (after the fill delay) if the order is marketable and the scenario allows."""
        if self.scenario == Scenario.NO_FILL and order.faulty:
            return
        quote = self.model(order.view.inst).quote
        price = self._marketable_price(order, quote)
        if price is None:
            return
        self.spawn(self._fill_later(order))

    def _marketable_price(self, order: SimOrder, q: Quote) -> float | None:
        v = order.view
        if not order.is_active or order.remaining <= 0:
            return None
        if v.order_type == "MKT":
            return q.ask if v.action == "BUY" else q.bid
        assert v.lmt_price is not None
        if v.action == "BUY" and q.ask <= v.lmt_price:
            return q.ask
        if v.action == "SELL" and q.bid >= v.lmt_price:
            return q.bid
        return None

    async def _fill_later(self, order: SimOrder) -> None:
        await asyncio.sleep(self.params.fill_delay)
        while self.outage:
            await asyncio.sleep(0.05)
        quote = self.model(order.view.inst).quote
        price = self._marketable_price(order, quote)
        if price is None or getattr(order, "_filling", False):
            return
        shares = order.remaining
        if self.scenario == Scenario.NO_FILL and order.faulty:
            return
        if self.scenario == Scenario.PARTIAL_FILL and order.faulty:
            shares = math.floor(order.view.quantity * self.params.partial_ratio)
            shares = min(shares, order.view.quantity - 1) - order.view.filled
            if shares <= 0:
                return
        self._execute(order, shares, price)

    def _execute(self, order: SimOrder, shares: float, price: float) -> None:
        """Fill, then tell the owner: execDetails, orderStatus, commission, positions."""
        e = self.broker.fill(order, shares, price)
        view = order.view
        owner = self.clients.get(view.client_id)
        if owner is not None:
            owner.send(_exec_message(-1, e))
            owner.send(m.order_status(view, last_fill_price=price, avg_fill_price=e.avg_price))
        self.order_step("filled")
        delay = self.params.commission_delay if self.scenario == Scenario.COMMISSION_LATE else 0.0
        if delay == 0:
            self._send_commission(e)
        elif delay > 0:
            assert self._loop is not None
            self._timers.append(self._loop.call_later(delay, self._send_commission, e))
        self._push_position(view.account, view.inst)

    def _send_commission(self, e: Any) -> None:
        e.commission_sent = True
        owner = self.clients.get(e.order.client_id)
        if owner is not None:
            owner.send(m.commission_report(e.exec_id, e.commission, "USD", e.realized_pnl))

    def _push_position(self, account: str, inst: Instrument) -> None:
        pos = self.broker.positions[(account, inst.con_id)]
        for s in list(self.clients.values()):
            if s.positions_subscribed:
                s.send(m.position(account, inst, pos.qty, pos.avg_price * inst.point_value))
            if s.account_updates == account:
                self.send_account_snapshot(s, account, only=inst.con_id)

    def send_account_snapshot(self, s: Session, account: str, only: int | None = None) -> None:
        """updateAccountValue rows, portfolio rows and the account time."""
        marks = self.marks()
        for key, value in self.broker.account_values(account, marks).items():
            s.send([m.ACCT_VALUE, 2, key, value, "USD", account])
        for acct, inst, pos in self.broker.position_rows(account):
            if only is not None and inst.con_id != only:
                continue
            mark = marks.get(inst.con_id, pos.avg_price)
            s.send(
                m.portfolio_value(
                    acct, inst, pos.qty, mark, pos.avg_price * inst.point_value, pos.realized
                )
            )
        s.send([m.ACCT_UPDATE_TIME, 1, datetime.now(UTC).strftime("%H:%M")])

    def _check_resting(self, inst: Instrument, quote: Quote) -> None:
        if self.outage:
            return
        for o in self.broker.open_orders():
            if o.view.inst.con_id != inst.con_id or o.view.order_type != "LMT":
                continue
            if self.scenario == Scenario.NO_FILL and o.faulty:
                continue
            price = self._marketable_price(o, quote)
            if price is not None:
                assert o.view.lmt_price is not None
                shares = o.remaining
                if self.scenario == Scenario.PARTIAL_FILL and o.faulty:
                    continue
                # A resting limit fills at its limit price.
                self._execute(o, shares, o.view.lmt_price)

    def _check_all_resting(self) -> None:
        for o in self.broker.open_orders():
            self._consider_fill(o)

    def cancel_order(self, s: Session, order_id: int, owner: int | None = None) -> None:
        """Cancel an active order: orderStatus Cancelled, then error 202."""
        cid = owner if owner is not None else s.client_id
        assert cid is not None
        self.truth.cancels.append((time.monotonic(), cid, order_id))
        order = self.broker.orders.get((cid, order_id))
        if order is None or not order.is_active:
            s.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        self.order_step("cancel")
        view = order.view
        view.status = "Cancelled"
        view.completed_status = "Cancelled"
        view.completed_time = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"
        target = self.clients.get(cid)
        if target is not None:
            target.send(m.order_status(view, avg_fill_price=order.avg_fill_price()))
            target.error(order_id, 202, "Order Canceled - reason:")

    # --- introspection -------------------------------------------------------------------------
    def position(self, symbol_or_con_id: str | int, account: str | None = None) -> float:
        """Net position the gateway holds for an instrument (ground truth for flatness)."""
        inst = self._find(symbol_or_con_id)
        acct = account or self.accounts[0]
        pos = self.broker.positions.get((acct, inst.con_id))
        return pos.qty if pos else 0.0


def loop_later(loop: asyncio.AbstractEventLoop, delay: float, cb: Callable[[], None]) -> Any:
    """loop.call_later with a name that reads well at call sites."""
    return loop.call_later(delay, cb)


class ThreadedGateway:
    """A PaperGateway running on its own thread and loop, for synchronous callers
    (the CLI's ``--sim``, notebooks, subprocess tests)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.gw: PaperGateway | None = None
        self._thread = threading.Thread(target=self._run, name="livefire-sim", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.gw = PaperGateway(**self._kwargs)
            self.loop.run_until_complete(self.gw.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.gw.stop())
        self.loop.close()

    def start(self) -> ThreadedGateway:
        """Start the thread and wait until the server listens."""
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self.gw is not None
        return self.gw.port

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the gateway's loop and return its result."""
        fut: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(
            _call(fn, *args, **kwargs), self.loop
        )
        return fut.result(10)

    def set_scenario(self, scenario: str, **params: Any) -> None:
        """Switch scenario from any thread."""
        assert self.gw is not None
        self.call(self.gw.set_scenario, scenario, **params)

    def stop(self) -> None:
        """Stop the server and the thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ThreadedGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)
