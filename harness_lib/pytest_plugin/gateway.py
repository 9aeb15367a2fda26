"""What the ``livefire`` fixture hands a test, the session-start guard probe, and the
session-end cleanup. Imported lazily by the plugin (it pulls in ib_async).

Money safety follows the harness rules: every order ``Livefire.place`` sends carries the
session's orderRef ``harness:pytest-<session id>``, passes ``check_accounts`` and
``check_order`` first, and the session-end cleanup cancels and flattens only what carries
that exact orderRef, never more than the account holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ib_async import IB, Contract, Fill, LimitOrder, MarketOrder, Trade

from harness_lib.connection import Connection, GatewayUnreachable, HandshakeTimeout
from harness_lib.phases.base import wait_for
from harness_lib.phases.cleanup import clip_to_account, flatten_order
from harness_lib.phases.health import FARM_SETTLE_SECONDS
from harness_lib.positions import net_position
from harness_lib.safety import (
    GuardRefusal,
    check_accounts,
    check_order,
    check_port,
    mask_account,
)
from harness_lib.sim import PaperGateway

from .options import PluginOptions, target_label

T = TypeVar("T")


def run_in_thread(coro: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run ``coro`` to completion on a fresh event loop in a worker thread.

    The plugin's session hooks are synchronous and must not touch the main thread's event
    loop state, which pytest-asyncio and the user's tests own.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="livefire") as pool:
        return pool.submit(asyncio.run, coro).result(timeout)


# --- session start: the guards ----------------------------------------------------------------


@dataclass(slots=True)
class GatewayTarget:
    """The gateway given with ``--livefire-gateway``, as probed at session start."""

    host: str
    port: int
    simulated: bool
    accounts: list[str]
    account: str
    port_warning: str | None = None

    @property
    def label(self) -> str:
        """SIMULATOR or GATEWAY host:port (masked account)."""
        return target_label(
            simulated=self.simulated, host=self.host, port=self.port, account=self.account
        )


class SessionRefused(Exception):
    """The session must not start: ``returncode`` is 3 (safety guard) or 4 (bad input)."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(" ".join(message.split()))
        self.returncode = returncode


async def probe_gateway(opts: PluginOptions) -> GatewayTarget:
    """The guards of ``harness run``, before any test: the live-port check, then connect
    once, read the managed accounts and refuse unless every one is paper.

    Raises :class:`SessionRefused` with a one-line reason.
    """
    assert opts.gateway is not None
    host, port = opts.gateway
    where = f"{host}:{port}"
    try:
        warning = check_port(port, opts.allow_live_port)
    except GuardRefusal as exc:
        text = str(exc).replace("--allow-live-port", "--livefire-allow-live-port")
        raise SessionRefused(f"livefire: {text}", 3) from None
    conn = Connection(host, port, opts.client_id, timeout=opts.connect_timeout)
    try:
        await conn.connect()
    except GatewayUnreachable as exc:
        raise SessionRefused(
            f"livefire: {exc}; start the paper gateway with the API enabled, or drop "
            f"{opts.gateway_source} to run against a simulator per test",
            4,
        ) from None
    except HandshakeTimeout as exc:
        raise SessionRefused(f"livefire: {exc}", 4) from None
    try:
        await asyncio.sleep(FARM_SETTLE_SECONDS)
        accounts = list(conn.ib.managedAccounts())
        simulated = conn.simulated
    finally:
        conn.disconnect()
    try:
        check_accounts(accounts)
    except GuardRefusal as exc:
        raise SessionRefused(f"livefire: {exc} ({where}); no test was run", 3) from None
    if opts.account and opts.account not in accounts:
        managed = ", ".join(mask_account(a) for a in accounts)
        raise SessionRefused(
            f"livefire: account {mask_account(opts.account)} is not managed by {where} "
            f"(managed: {managed}); fix --livefire-account",
            4,
        )
    return GatewayTarget(
        host=host,
        port=port,
        simulated=simulated,
        accounts=accounts,
        account=opts.account or accounts[0],
        port_warning=warning,
    )


# --- what a test gets -------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every order the session placed through ``Livefire.place``: the cleanup's memory of
    what is ours (the gateway's reqExecutions only fills in what happened after a test's
    connection closed)."""

    order_ref: str
    trades: list[Trade] = field(default_factory=list)
    client_ids: list[int] = field(default_factory=list)
    """Client ids that placed orders, first one first (IB lets only the placer cancel)."""

    def placed(self, client_id: int, trade: Trade) -> None:
        """Remember an order placed by ``client_id``."""
        self.trades.append(trade)
        if client_id not in self.client_ids:
            self.client_ids.append(client_id)

    def fills(self) -> list[Fill]:
        """Every fill the tests' connections saw for the session's orders."""
        return [f for t in self.trades for f in t.fills]


@dataclass
class Livefire:
    """What the ``livefire`` fixture yields: the target of this test and two helpers.

    The same test body runs against a simulator (started for this test) or against the
    ``--livefire-gateway``; ``simulated`` and ``label`` say which, and ``sim`` is the
    in-process simulator (ground truth, scenario switches) or None against a gateway.
    """

    host: str
    port: int
    simulated: bool
    account: str | None
    order_ref: str
    client_id: int
    max_quantity: int
    ledger: Ledger
    scenario: str | None = None
    sim: PaperGateway | None = None
    connect_timeout: float = 4.0
    _clients: list[IB] = field(default_factory=list)

    @property
    def label(self) -> str:
        """SIMULATOR or GATEWAY host:port (scenario, masked account)."""
        return target_label(simulated=self.simulated, host=self.host, port=self.port,
                            account=self.account, scenario=self.scenario)  # fmt: skip

    async def connect(self, client_id: int | None = None) -> IB:
        """A connected ``ib_async.IB`` (client id: the session's, or ``client_id``),
        disconnected when the test ends."""
        ib = IB()
        self._clients.append(ib)
        cid = self.client_id if client_id is None else client_id
        await ib.connectAsync(self.host, self.port, clientId=cid, timeout=self.connect_timeout)
        return ib

    async def place(
        self,
        ib: IB,
        contract: Contract,
        action: str,
        quantity: float,
        *,
        limit_price: float | None = None,
    ) -> Trade:
        """Place a market order (or a DAY limit order at ``limit_price``) tagged with the
        session's orderRef, after the paper-account and order-size guards.

        Raises :class:`~harness_lib.safety.GuardRefusal` instead of sending anything unsafe
        (a live account, more than ``--livefire-max-quantity``) and ValueError for an
        unknown action or a contract the gateway cannot qualify.
        """
        side = str(action).strip().upper()
        if side not in ("BUY", "SELL"):
            raise ValueError(f"action {action!r}: expected BUY or SELL")
        check_accounts(list(ib.managedAccounts()))
        check_order(quantity, self.max_quantity, price=limit_price, multiplier=1.0,
                    max_notional=None)  # fmt: skip
        if not contract.conId:
            await ib.qualifyContractsAsync(contract)
            if not contract.conId:
                raise ValueError(f"{contract} could not be qualified; give a full contract")
        if limit_price is None:
            order = MarketOrder(side, quantity, orderRef=self.order_ref, tif="DAY")
        else:
            order = LimitOrder(side, quantity, limit_price, orderRef=self.order_ref, tif="DAY")
        if self.account:
            order.account = self.account
        trade = ib.placeOrder(contract, order)
        self.ledger.placed(ib.client.clientId, trade)
        return trade

    def close(self) -> None:
        """Disconnect every client ``connect`` made (idempotent)."""
        for ib in self._clients:
            ib.disconnect()
        self._clients.clear()


# --- session end: the cleanup -----------------------------------------------------------------


@dataclass
class CleanupReport:
    """What the session-end cleanup did, for the terminal summary."""

    cancelled: int = 0
    flattened: dict[str, float] = field(default_factory=dict)
    """Symbol -> quantity sent to close (negative: sold)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    placed: int = 0

    @property
    def clean(self) -> bool:
        """True when nothing of the session's is known to be left."""
        return not self.problems

    def lines(self, order_ref: str) -> list[str]:
        """Terminal-summary lines."""
        head = f"livefire cleanup ({order_ref}): "
        if not self.placed and not self.problems:
            return [head + "nothing to clean up, no order was placed through livefire.place"]
        closed = ", ".join(f"{s} {q:+g}" for s, q in self.flattened.items()) or "nothing"
        out = [
            head + f"{self.placed} order(s) placed by tests; cancelled {self.cancelled} working "
            f"order(s); flattened {closed}; other orders and positions untouched"
        ]
        out += [f"livefire cleanup: {n}" for n in self.notes]
        out += [f"livefire cleanup NOT CLEAN: {p}" for p in self.problems]
        return out


async def _connected(target: GatewayTarget, client_id: int, timeout: float) -> IB:
    ib = IB()
    await ib.connectAsync(target.host, target.port, clientId=client_id, timeout=timeout)
    return ib


async def _until(pred: Callable[[], bool], seconds: float, ib: IB) -> bool:
    return await wait_for(pred, time.monotonic() + seconds, abort=lambda: not ib.isConnected())


async def _cancel_as(
    target: GatewayTarget, client_id: int, order_ref: str, opts: PluginOptions
) -> int:
    """Connect as ``client_id`` (only the placing client may cancel its orders) and cancel
    its working orders tagged ``order_ref``; return how many."""
    ib = await _connected(target, client_id, opts.connect_timeout)
    try:
        trades = await asyncio.wait_for(ib.reqOpenOrdersAsync(), opts.connect_timeout * 2)
        mine = [t for t in trades if t.isActive() and t.order.orderRef == order_ref]
        for t in mine:
            ib.cancelOrder(t.order)
        await _until(lambda: not any(t.isActive() for t in mine), opts.fill_deadline, ib)
        left = [t.order.orderId for t in mine if t.isActive()]
        if left:
            raise RuntimeError(f"orders {left} of client {client_id} still working")
        return len(mine)
    finally:
        ib.disconnect()


async def _ours(ib: IB, ledger: Ledger, timeout: float) -> dict[str, tuple[int, str, float]]:
    """execId -> (conId, side, shares) of every execution with the session's orderRef, from
    the tests' own fills and the gateway's report (merged by execId, none counted twice)."""
    out = {f.execution.execId: (f.contract.conId, f.execution.side, float(f.execution.shares))
           for f in ledger.fills()}  # fmt: skip
    for f in await asyncio.wait_for(ib.reqExecutionsAsync(), timeout):
        if f.execution.orderRef == ledger.order_ref:
            ex = f.execution
            out[ex.execId] = (f.contract.conId, ex.side, float(ex.shares))
    return out


async def _flatten(
    ib: IB, target: GatewayTarget, ledger: Ledger, opts: PluginOptions, rep: CleanupReport
) -> None:
    """Close the net position the session's own executions left, clipped to what the
    account holds, with market orders tagged with the session's orderRef."""
    net = net_position((await _ours(ib, ledger, opts.connect_timeout * 2)).values())
    if not net:
        return
    check_accounts(list(ib.managedAccounts()))
    held: dict[int, float] = {}
    for pos in await asyncio.wait_for(ib.reqPositionsAsync(), opts.connect_timeout * 2):
        if pos.account == target.account:
            held[pos.contract.conId] = held.get(pos.contract.conId, 0.0) + pos.position
    contracts = {t.contract.conId: t.contract for t in ledger.trades}
    for con_id, qty in net.items():
        to_close = clip_to_account(qty, held.get(con_id, 0.0))
        contract = contracts.get(con_id) or Contract(conId=con_id)
        name = contract.localSymbol or contract.symbol or f"conId {con_id}"
        if not to_close:
            has = held.get(con_id, 0.0)
            rep.notes.append(f"{name}: session net {qty:+g} but the account holds {has:+g}; "
                             "not flattening what is not there")  # fmt: skip
            continue
        if not contract.exchange:
            await ib.qualifyContractsAsync(contract)
        order = flatten_order(to_close, ledger.order_ref, target.account)
        action = order.action
        trade = ib.placeOrder(contract, order)
        await _until(trade.isDone, opts.fill_deadline, ib)
        if trade.orderStatus.status == "Filled":
            rep.flattened[name] = -to_close
        else:
            if trade.isActive():
                ib.cancelOrder(order)
            rep.problems.append(f"{name}: closing {action} {abs(to_close):g} did not fill "
                                f"({trade.orderStatus.status})")  # fmt: skip


async def session_cleanup(
    target: GatewayTarget, ledger: Ledger, opts: PluginOptions
) -> CleanupReport:
    """Cancel the session's working orders and flatten its net position; then check,
    against the gateway, that no order of the session works and its net is 0.

    Runs whatever the tests did (a test that crashed mid-trade included). Anything it cannot
    do is a ``problem`` naming `harness cleanup`, which sweeps every ``harness:`` order.
    """
    rep = CleanupReport(placed=len(ledger.trades))
    if not ledger.trades:
        return rep
    where = f"--host {target.host} --port {target.port}"
    primary = ledger.client_ids[0] if ledger.client_ids else opts.client_id
    for cid in ledger.client_ids:
        try:
            rep.cancelled += await _cancel_as(target, cid, ledger.order_ref, opts)
        except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:
            rep.problems.append(f"cancelling as client {cid}: {exc or type(exc).__name__}")
    try:
        ib = await _connected(target, primary, opts.connect_timeout)
    except (OSError, TimeoutError, ConnectionError) as exc:
        rep.problems.append(f"could not reach {target.host}:{target.port} ({exc}); positions "
                            f"may be open: run `harness cleanup {where}`")  # fmt: skip
        return rep
    try:
        await _flatten(ib, target, ledger, opts, rep)
        # Verify against the gateway, not against what we believe we did.
        left = net_position((await _ours(ib, ledger, opts.connect_timeout * 2)).values())
        if left:
            rep.problems.append(f"session net still {left} (conId: qty); run `harness cleanup "
                                f"{where}`")  # fmt: skip
        working = [t.order.orderId for t in await ib.reqAllOpenOrdersAsync()
                   if t.isActive() and t.order.orderRef == ledger.order_ref]  # fmt: skip
        if working:
            rep.problems.append(f"orders {working} still working; run `harness cleanup {where}`")
    except GuardRefusal as exc:
        rep.problems.append(f"refused to flatten: {exc}")
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        rep.problems.append(f"{type(exc).__name__}: {exc}; run `harness cleanup {where}`")
    finally:
        with contextlib.suppress(Exception):
            ib.disconnect()
    return rep
