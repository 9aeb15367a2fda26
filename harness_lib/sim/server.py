"""The paper-gateway simulator: a TCP server speaking the TWS API at server versions
157..178 (whatever the client offers, up to 178).

The real, unmodified ib_async client connects to it over a socket. The parts:

- ``wire.py``: framing and the handshake; ``requests.py``: declared request layouts;
- ``session.py``: one connection (transport, dispatch, sending); ``handlers.py``: the
  answer to each request; ``messages.py``: the server-to-client layouts per version;
- ``broker.py``: orders, matching, fills, positions; ``market.py``: instruments and quotes;
- ``faults.py``: the active faults and their predicates; ``truth.py``: what was sent.

``PaperGateway`` owns the market, the broker, the faults and the ground-truth log shared by
all sessions, and runs the market streams and the order flow.
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
from datetime import UTC, datetime, timedelta
from typing import Any

from . import handlers as _handlers  # noqa: F401  (registers the request handlers)
from . import messages as m
from . import trading_hours
from .broker import Broker, Execution, SimOrder, marketable_price, what_if
from .faults import FaultEngine
from .history import PricePath
from .market import Catalogue, Instrument, Quote, QuoteModel, build_catalogue
from .messages import OrderView
from .requests import Request, match_args
from .scenarios import Scenario, ScenarioParams, parse_scenario
from .session import HALTED, LAST_TIMESTAMP, RT_VOLUME, SHORTABLE, Session, Subscription
from .truth import GroundTruth, ReceivedOrder

log = logging.getLogger("harness_lib.sim")

SIM_MARKER = "livefire-sim"
"""Appears in the farm-status notices the simulator sends at connect, so a client can tell
it is talking to the simulator whatever port it listens on."""

DEFAULT_PORT = 7599
"""Not one of IB's ports (4001/4002/7496/7497), so the simulator is never mistaken for them."""

DEFAULT_ACCOUNT = "DU1234567"
LIVE_ACCOUNT = "U7654321"

FARM_NOTICES = [
    (2104, f"Market data farm connection is OK:usfarm.{SIM_MARKER}"),
    (2106, f"HMDS data farm connection is OK:ushmds.{SIM_MARKER}"),
    (2158, f"Sec-def data farm connection is OK:secdefnj.{SIM_MARKER}"),
]
FARM_BROKEN_NOTICES = [
    (2103, f"Market data farm connection is broken:usfarm.{SIM_MARKER}"),
    (2105, f"HMDS data farm connection is broken:ushmds.{SIM_MARKER}"),
    (2158, f"Sec-def data farm connection is OK:secdefnj.{SIM_MARKER}"),
]
"""What the farm_down fault announces (and a client connecting while it holds is told)."""

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_PORT",
    "LIVE_ACCOUNT",
    "SIM_MARKER",
    "PaperGateway",
    "Session",
    "Subscription",
    "ThreadedGateway",
]


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
        self._paths: dict[int, PricePath] = {}
        self.truth = GroundTruth()
        self.sessions: set[Session] = set()
        self.clients: dict[int, Session] = {}
        self.clock_offset = clock_offset
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.outage = False
        """Connectivity to 'IB' is lost (connectivity_lost): no ticks, fills wait."""
        self.faults = FaultEngine()
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
    def clock_offset_td(self) -> timedelta:
        """The clock offset as a timedelta."""
        return timedelta(seconds=self.clock_offset)

    def farm_notices(self) -> list[tuple[int, str]]:
        """The farm-status notices sent at connect (broken ones while farm_down holds)."""
        return FARM_BROKEN_NOTICES if self.faults.has(Scenario.FARM_DOWN) else FARM_NOTICES

    def _announce_farms(self) -> None:
        """Tell every client the farms' state now (farm_down added or cleared)."""
        for s in list(self.clients.values()):
            for code, text in self.farm_notices()[:2]:
                s.error(-1, code, text)

    async def start(self) -> PaperGateway:
        """Start listening."""
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: Session(self), self.host, self._requested_port, reuse_address=True
        )
        self._arm_fault_timers()
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
        """Switch behaviour now: clear every active fault and add this one (``healthy``
        clears them all). Streams already running follow on their next step; timers of the
        old faults are cancelled. Call on the gateway's loop (see
        ``ThreadedGateway.set_scenario`` from other threads). To combine faults, use
        ``add_fault`` after this."""
        for name in list(self.faults.active):
            self.truth.fault_event("cleared", name.value)
        self.faults.clear()
        self.outage = False
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        fault = self.faults.add(scenario, **params)
        self.scenario = fault.scenario
        self.params = fault.params
        if fault.scenario != Scenario.HEALTHY:
            self.truth.fault_event("added", fault.scenario.value, **params)
        self._sync_accounts()
        if self._loop is not None:
            self._arm_fault_timers()
        log.info("scenario now %s %s", fault.scenario.value, params or "")

    def add_fault(self, scenario: str | Scenario, **params: Any) -> None:
        """Add one more fault to those active, at run time (its knobs are its own)."""
        was_farm_down = self.faults.has(Scenario.FARM_DOWN)
        fault = self.faults.add(scenario, **params)
        self.truth.fault_event("added", fault.scenario.value, **params)
        self._sync_accounts()
        if self._loop is not None:
            self._arm_fault_timers(only=fault.scenario)
        if fault.scenario == Scenario.FARM_DOWN and not was_farm_down:
            self._announce_farms()
        log.info("fault added: %s %s", fault.scenario.value, params or "")

    def clear_fault(self, scenario: str | Scenario | None = None) -> None:
        """Remove one fault (or all). An outage it caused ends now, announced as IB would
        (1102, or 1101 when the fault said data is lost); farms it broke report OK again."""
        names = (
            list(self.faults.active)
            if scenario is None
            else [scenario if isinstance(scenario, Scenario) else parse_scenario(scenario)]
        )
        if Scenario.CONNECTIVITY_LOST in names and self.outage:
            self._restore()
        farm_was_down = self.faults.has(Scenario.FARM_DOWN)
        self.faults.clear(scenario)
        for name in names:
            self.truth.fault_event("cleared", name.value)
        if not self.faults.has(Scenario.CONNECTIVITY_LOST):
            self.outage = False
        if farm_was_down and not self.faults.has(Scenario.FARM_DOWN):
            self._announce_farms()
        self._sync_accounts()

    def _sync_accounts(self) -> None:
        if self._explicit_accounts:
            self.accounts = list(self._explicit_accounts)
        else:
            self.accounts = [LIVE_ACCOUNT if self.faults.live_account() else DEFAULT_ACCOUNT]
        if hasattr(self, "broker"):
            self.broker.accounts = self.accounts
            for a in self.accounts:
                self.broker.cash.setdefault(a, 1_000_000.0)

    def refusing(self) -> bool:
        """True while a refuse_connections fault is in its outage window."""
        return self.faults.refusing()

    def _arm_fault_timers(self, only: Scenario | None = None) -> None:
        loop = self._loop
        assert loop is not None
        f = self.faults.get(Scenario.CONNECTIVITY_LOST)
        if f is not None and only in (None, f.scenario) and not f.params.disconnect_on:
            self._timers.append(loop.call_later(f.params.disconnect_after, self._lose_connectivity))

    def _lose_connectivity(self) -> None:
        f = self.faults.get(Scenario.CONNECTIVITY_LOST)
        if f is None or f.fired:
            return
        f.fired = True
        self.outage = True
        self.truth.fault_event("fired", f.scenario.value, code=1100)
        for s in list(self.clients.values()):
            s.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost.")
        assert self._loop is not None
        self._timers.append(loop_later(self._loop, f.params.outage_seconds, self._restore))

    def _restore(self) -> None:
        if not self.outage:
            return  # already restored (the fault was cleared before its timer)
        self.outage = False
        f = self.faults.get(Scenario.CONNECTIVITY_LOST)
        lost = f is not None and f.params.data_lost
        self.truth.fault_event(
            "restored", Scenario.CONNECTIVITY_LOST.value, code=1101 if lost else 1102
        )
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
        """Arm per-session fault behaviour (the timed disconnect)."""
        f = self.faults.get(Scenario.DISCONNECT)
        if f is not None and not f.params.disconnect_on:
            assert self._loop is not None
            self._timers.append(
                self._loop.call_later(f.params.disconnect_after, self.drop_all, "timer")
            )

    def order_step(self, step: str) -> None:
        """Called at each order step ('order_submitted', 'filled', 'cancel'). When it matches
        a fault's ``disconnect_on`` (``step`` = its first occurrence, ``step:n`` = the n-th),
        that fault fires: disconnect drops everyone, connectivity_lost sends 1100,
        refuse_connections drops everyone and refuses reconnects for ``outage_seconds``."""
        assert self._loop is not None
        for scen, f in list(self.faults.active.items()):
            if not f.step_fires(step):
                continue
            want = f.params.disconnect_on
            # After the current message is handled, so the step itself happened first.
            if scen == Scenario.DISCONNECT:
                self._loop.call_soon(self.drop_all, want)
            elif scen == Scenario.CONNECTIVITY_LOST:
                self._loop.call_soon(self._lose_connectivity)
            elif scen == Scenario.REFUSE_CONNECTIONS:
                f.fired = True
                f.refuse_until = time.monotonic() + f.params.outage_seconds
                self._loop.call_soon(self._drop_sessions, want)

    def drop_all(self, why: str = "manual") -> int:
        """Drop every client connection now (one-shot under the disconnect fault)."""
        f = self.faults.get(Scenario.DISCONNECT)
        if f is not None:
            if f.fired:
                return 0
            f.fired = True
        return self._drop_sessions(why)

    def _drop_sessions(self, why: str) -> int:
        n = 0
        for s in list(self.sessions):
            if s.client_id is not None:
                self.truth.connections.append((time.monotonic(), s.client_id, "dropped"))
            s.close()
            n += 1
        self.truth.fault_event("dropped", Scenario.DISCONNECT.value, connections=n, why=why)
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

    def now(self) -> datetime:
        """The gateway's clock (the wall clock shifted by ``clock_offset``)."""
        return datetime.now(UTC) + self.clock_offset_td

    def hours(self, inst: Instrument) -> tuple[str, str]:
        """(tradingHours, liquidHours) of an instrument from the gateway clock; the
        market_closed fault closes today."""
        return trading_hours.hours(inst, self.now(), closed_today=self.faults.market_closed())

    def advance(self, inst: Instrument) -> Quote:
        """The instrument's quote, stepping the walk if no quote stream stepped it within a
        tick interval (so history updates, tick-by-tick and depth move on their own, and
        follow the same walk as the quotes when both run)."""
        qm = self.model(inst)
        last = qm.path[-1][0] if qm.path else qm.t0
        if time.time() - last >= max(self.params.tick_interval, 0.05):
            qm.step()
            self._check_resting(inst, qm.quote)
        return qm.quote

    def price_path(self, inst: Instrument) -> PricePath:
        """The synthetic past of an instrument (cached: its seeded chunks are reused)."""
        path = self._paths.get(inst.con_id)
        if path is None:
            path = self._paths[inst.con_id] = PricePath(self.model(inst), self.seed)
        return path

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

    def subscribe(
        self,
        s: Session,
        req_id: int,
        inst: Instrument,
        snapshot: bool,
        generic: frozenset[str] = frozenset(),
    ) -> None:
        """Start a market data stream per the active faults and the client's data type."""
        if snapshot and generic:
            s.error(
                req_id,
                321,
                "Error validating request.-'bO' : cause - Snapshot market data subscription "
                "is not applicable to generic ticks",
            )
            return
        refusal, delayed, frozen = self.faults.market_data_mode(s.market_data_type, inst.subscribed)
        if refusal == "not_subscribed":
            s.error(
                req_id,
                354,
                "Requested market data is not subscribed. Delayed market data is available."
                f"{inst.symbol} {inst.primary_exchange or inst.exchange}/TOP/ALL",
            )
            return
        if refusal == "delayed_warning":
            s.error(
                req_id,
                10167,
                "Requested market data is not subscribed. Displaying delayed market data.",
            )
        mdt = (4 if frozen else 3) if delayed else (2 if frozen else 1)
        sub = Subscription(req_id, inst, snapshot, delayed, frozen, generic)
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
                silent = not inst.liquid or self.outage or self.faults.stream_silent(sub)
                if silent:
                    if sub.snapshot:
                        s.send([m.TICK_SNAPSHOT_END, 1, sub.req_id])
                        break
                    await asyncio.sleep(interval or 0.05)
                    continue
                # One market clock per instrument: every subscription sends at the same
                # moments (multiples of the interval) the same step of the walk.
                slot = round(time.monotonic() / interval) if interval > 0 else 0
                for i in range(max(1, p.burst)):
                    if first:
                        quote = qm.quote
                    elif interval > 0:
                        quote = qm.step_in((slot, i))
                    else:
                        quote = qm.step()  # top rate: each stream as fast as it can
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
                    await asyncio.sleep(max(0.0, (slot + 1) * interval - time.monotonic()))
                else:
                    # Top rate: yield to the loop and respect socket back-pressure.
                    await s.drain()
                    if n % 8 == 0:
                        await asyncio.sleep(0)
        finally:
            if s.subs.get(sub.req_id) is sub and sub.snapshot:
                s.subs.pop(sub.req_id, None)

    def _send_quote(self, s: Session, sub: Subscription, q: Quote, *, full: bool) -> None:
        """One quote update. The first carries IB's whole default set: bid, ask, last, their
        sizes, volume, prior close, open, high, low, last-trade time (45) and halted (49);
        later ones carry what changed. Generic ticks 233 (RTVolume) and 236 (shortable)
        go out when asked for."""
        qm = self.model(sub.inst)
        s.send_tick(sub, "bid", q.bid, q.bid_size)
        s.send_tick(sub, "ask", q.ask, q.ask_size)
        if full or self.rng.random() < 0.5:
            s.send_tick(sub, "last", q.last, q.last_size)
            s.send_tick(sub, "volume", None, q.volume)
            stamp = int(qm.last_time)
            if stamp != sub.last_stamp:
                # Tick 45 is in whole seconds: a repeat of the same value carries nothing.
                sub.last_stamp = stamp
                s.send_extra(sub, LAST_TIMESTAMP, m.TICK_STRING, str(stamp))
            if "233" in sub.generic:
                vwap = round((qm.high + qm.low + q.last) / 3, sub.inst.decimals + 2)
                s.send_extra(
                    sub,
                    RT_VOLUME,
                    m.TICK_STRING,
                    f"{q.last};{q.last_size};{int(qm.last_time * 1000)};{q.volume};{vwap};true",
                )
        if full:
            s.send_tick(sub, "close", qm.open, 0)
            s.send_tick(sub, "open", qm.open, 0)
            s.send_extra(sub, HALTED, m.TICK_GENERIC, 0.0)
            if "236" in sub.generic:
                s.send_extra(sub, SHORTABLE, m.TICK_GENERIC, 3.0)
                s.send_tick(sub, "shortableShares", None, 100_000)
        if full or sub.high != qm.high:
            sub.high = qm.high
            s.send_tick(sub, "high", qm.high, 0)
        if full or sub.low != qm.low:
            sub.low = qm.low
            s.send_tick(sub, "low", qm.low, 0)

    # --- orders --------------------------------------------------------------------------------
    def handle_order(self, s: Session, r: Request) -> None:
        """placeOrder: record, validate, accept, then fill/rest/reject per the faults."""
        assert s.client_id is not None
        order_id = r["order_id"]
        c = r["contract"]
        action, quantity, order_type = r["action"], r["quantity"], r["order_type"]
        lmt, aux = r["lmt_price"], r["aux_price"]
        account = r["account"] or self.accounts[0]
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
                r["order_ref"],
                account,
                c["con_id"],
                c["symbol"],
                r["what_if"],
            )
        )
        if r["what_if"]:
            self._what_if(s, r)
            return
        self.broker.note_order_id(order_id)
        key = (s.client_id, order_id)
        existing = self.broker.orders.get(key)
        if existing is not None:
            self._modify(s, existing, quantity, lmt, aux)
            return
        matches = self.catalogue.match(**match_args(c))
        if len(matches) != 1:
            s.error(order_id, 200, "No security definition has been found for the request")
            return
        inst = matches[0]
        order_faults = self.faults.new_order()
        problem = self._order_problem(r, account)
        if problem is None and Scenario.ORDER_REJECT in order_faults:
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
            tif=r["tif"],
            account=account,
            order_ref=r["order_ref"],
            status="Submitted",
        )
        order = SimOrder(view, datetime.now(UTC), faults=order_faults)
        self.broker.orders[key] = order
        s.send(m.open_order(view, s.server_version))
        s.send(m.order_status(view, s.server_version))
        self.order_step("order_submitted")
        self._consider_fill(order)

    def _what_if(self, s: Session, r: Request) -> None:
        """A what-if order is credit-checked, never sent: the answer is an openOrder whose
        order state carries margins and commission. No order, execution or position is
        created. A contract the gateway cannot resolve is a malformed order: 321."""
        c = r["contract"]
        matches = self.catalogue.match(**match_args(c))
        if len(matches) != 1:
            what = "is ambiguous" if matches else "is unknown"
            s.error(
                r["order_id"],
                321,
                "Error validating request.-'bN' : cause - The contract description specified "
                f"for {c['symbol'] or c['local_symbol'] or c['con_id']} {what}.",
            )
            return
        inst = matches[0]
        account = r["account"] or self.accounts[0]
        problem = self._order_problem(r, account)
        if problem is not None:
            s.error(r["order_id"], 201, f"Order rejected - reason:{problem}")
            return
        q = self.model(inst).quote
        price = r["lmt_price"] if r["order_type"] == "LMT" else None
        price = price or (q.ask if r["action"] == "BUY" else q.bid)
        state = what_if(self.broker, account, inst, r["action"], r["quantity"], price, self.marks())
        view = OrderView(
            order_id=r["order_id"],
            client_id=s.client_id or 0,
            perm_id=0,
            inst=inst,
            action=r["action"],
            quantity=r["quantity"],
            order_type=r["order_type"],
            lmt_price=r["lmt_price"],
            aux_price=r["aux_price"],
            tif=r["tif"],
            account=account,
            order_ref=r["order_ref"],
            status="PreSubmitted",
        )
        s.send(m.open_order(view, s.server_version, state))

    def _order_problem(self, r: Request, account: str) -> str | None:
        """Why an order is invalid, or None."""
        action, quantity, order_type = r["action"], r["quantity"], r["order_type"]
        if action not in ("BUY", "SELL"):
            return f"Invalid action {action!r}"
        if not (quantity > 0 and math.isfinite(quantity)):
            return "Order quantity must be positive"
        if order_type not in ("MKT", "LMT"):
            return f"The simulator supports MKT and LMT orders, not {order_type}"
        if order_type == "LMT" and r["lmt_price"] is None:
            return "Limit price is missing"
        if account not in self.accounts:
            return f"Account {account} is not managed by this gateway"
        return None

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
        s.send(m.open_order(view, s.server_version))
        s.send(m.order_status(view, s.server_version, avg_fill_price=order.avg_fill_price()))
        self._consider_fill(order)

    def _consider_fill(self, order: SimOrder) -> None:
        """Fill now (after the fill delay) if the order is marketable and no fault withholds it."""
        if order.withheld:
            return
        if marketable_price(order, self.model(order.view.inst).quote) is None:
            return
        self.spawn(self._fill_later(order))

    async def _fill_later(self, order: SimOrder) -> None:
        await asyncio.sleep(self.params.fill_delay)
        while self.outage:
            await asyncio.sleep(0.05)
        price = marketable_price(order, self.model(order.view.inst).quote)
        if price is None or order.withheld:
            return
        shares = order.fill_size(self.faults.partial_ratio())
        if shares > 0:
            self._execute(order, shares, price)

    def _execute(self, order: SimOrder, shares: float, price: float) -> None:
        """Fill, then tell the owner: execDetails, orderStatus, commission, positions."""
        e = self.broker.fill(order, shares, price)
        view = order.view
        owner = self.clients.get(view.client_id)
        if owner is not None:
            owner.send(m.exec_details(-1, e, owner.server_version))
            owner.send(
                m.order_status(
                    view, owner.server_version, last_fill_price=price, avg_fill_price=e.avg_price
                )
            )
        self.order_step("filled")
        delay = self.faults.commission_delay()
        if delay == 0:
            self._send_commission(e)
        elif delay > 0:
            assert self._loop is not None
            self._timers.append(self._loop.call_later(delay, self._send_commission, e))
        self._push_position(view.account, view.inst)

    def _send_commission(self, e: Execution) -> None:
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
            if o.withheld or o.partial:
                continue
            if marketable_price(o, quote) is not None:
                assert o.view.lmt_price is not None
                # A resting limit fills at its limit price.
                self._execute(o, o.remaining, o.view.lmt_price)

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
            target.send(
                m.order_status(view, target.server_version, avg_fill_price=order.avg_fill_price())
            )
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
