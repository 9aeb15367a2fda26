"""examples/dashboard: its mocked tests pass in every mode; the real thing tells the modes apart.

1. The dashboard's own mocked unit tests (a MagicMock IB returning populated tickers) run as a
   pytest subprocess in all six modes, and pass in all six.
2. The real processes: ``harness sim`` and the dashboard under uvicorn, read over real HTTP,
   SSE and WebSocket clients on 127.0.0.1. The fixed dashboard shows live quotes that match the
   broker's, opens and clears a position card, and shows each trade's own ids; each ``--bug``
   misbehaves the way its mistake predicts. Trades are 1 share, placed on the simulator by a
   plain ib_async client with orderRef ``harness:test``; the dashboard itself never orders.
3. The failover mistake (``double-subscribe``) needs a 1101 or a dropped connection on demand,
   so those tests run the same simulator in-process (``ThreadedGateway``) to trigger it.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ib_async import IB, MarketOrder, Stock, Trade
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from examples.dashboard.bugs import MODES
from harness_lib.sim import ThreadedGateway
from tests.helpers import connect, wait_until
from tests.loopback import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
DASHBOARD_CLIENT_ID = 77
TOKEN = "not-a-real-token-0123456789"
Doc = dict[str, Any]


# --- 1. the mocked suite, six times -------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_mocked_unit_tests_pass_in_every_mode(mode: str) -> None:
    """The point of the product: green mocked tests say nothing about these bugs."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "examples/dashboard/tests", "-q", "-n", "0",
         "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DASHBOARD_BUG": mode},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"dashboard mode: {mode}" in run.stdout
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 10, run.stdout[-1000:]
    assert not re.search(r"\d+ (failed|errors?)\b", run.stdout), run.stdout[-1000:]


# --- processes ------------------------------------------------------------------------------------


@pytest.fixture
def sim_port() -> Iterator[int]:
    """``harness sim --port 0`` as a subprocess; its printed port."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "harness_lib.cli", "sim", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        for line in sim.stdout:
            if m := re.match(r"PORT=(\d+)", line):
                yield int(m.group(1))
                break
        else:
            pytest.fail(f"harness sim exited ({sim.wait()}) without printing its port")
    finally:
        stop_process(sim)


@pytest.fixture
def gateway() -> Iterator[ThreadedGateway]:
    """The same simulator in-process, so a test can trigger 1101 or a drop on demand."""
    with ThreadedGateway(port=0) as gw:
        yield gw


@dataclass
class Dashboard:
    """A running dashboard process and real clients for it."""

    proc: subprocess.Popen[str]
    port: int
    token: str | None = None
    log: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def state(self) -> Doc:
        req = urllib.request.Request(self.base + "/api/state", headers=self.headers())
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def sse(self) -> SseStream:
        return SseStream(self.base + "/events", self.headers())


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """Start ``python -m examples.dashboard`` (as documented) and wait until it serves."""
    started: list[Dashboard] = []

    def start(
        ib_port: int, bug: str | None = None, token: str | None = None, *extra: str
    ) -> Dashboard:
        port = free_port()
        cmd = [sys.executable, "-m", "examples.dashboard", "--ib-port", str(ib_port),
               "--port", str(port), "--contract", "AAPL",
               "--client-id", str(DASHBOARD_CLIENT_ID)]  # fmt: skip
        if bug and bug != "fixed":
            cmd += ["--bug", bug]
        cmd += extra
        env = {**os.environ}
        if token:
            env["DASHBOARD_TOKEN"] = token  # not on the command line, where ps shows it
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        dash = Dashboard(proc, port, token)
        started.append(dash)
        threading.Thread(target=lambda: dash.log.extend(proc.stdout or []), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"dashboard exited {proc.returncode}: {''.join(dash.log)}"
            try:
                dash.state()
                return dash
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        pytest.fail(f"dashboard did not serve within {START_TIMEOUT}s: {''.join(dash.log)}")

    yield start
    for dash in started:
        stop_process(dash.proc)


class SseStream:
    """A real SSE client on a thread: every ``data:`` document with its arrival time."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        self.conn.request("GET", parts.path, headers={**headers, "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.docs: list[tuple[float, Doc]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        data: list[str] = []
        try:
            while line := self.resp.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("data:"):
                    data.append(text[5:].lstrip())
                elif not text and data:
                    self.docs.append((time.monotonic(), json.loads("\n".join(data))))
                    data = []
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed by the test (http.client drops its file object) or by the server

    def since(self, t0: float) -> list[Doc]:
        """Documents that arrived after monotonic time ``t0``."""
        return [d for t, d in list(self.docs) if t >= t0]

    def quotes(self, t0: float = 0.0) -> list[Doc]:
        """Every AAPL quote the stream carried after ``t0``."""
        return [d["quotes"]["AAPL"] for d in self.since(t0) if "AAPL" in d.get("quotes", {})]

    def close(self) -> None:
        self.conn.close()


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _live(quote: Doc) -> bool:
    return quote.get("mode") == "live" and _real(quote.get("bid")) and _real(quote.get("ask"))


def _aapl_qty(doc: Doc) -> float | None:
    rows = [p for p in doc.get("positions", []) if p["symbol"] == "AAPL"]
    return rows[0]["qty"] if rows else None


def _shown_ids(doc: Doc) -> tuple[str, int] | None:
    trade = doc.get("last_trade", {}).get("AAPL")
    return (trade["execId"], trade["permId"]) if trade else None


async def _poll(dash: Dashboard, pred: Callable[[Doc], bool], timeout: float, what: str) -> Doc:
    """Poll ``/api/state`` (off the event loop, so ib_async keeps reading) until ``pred``."""
    deadline = time.monotonic() + timeout
    doc: Doc = {}
    while time.monotonic() < deadline:
        doc = await asyncio.to_thread(dash.state)
        if pred(doc):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"dashboard never showed {what} within {timeout}s; last state {doc}")


async def _trade(ib: IB, action: str) -> tuple[str, int]:
    """One share of AAPL at market on the simulator; the fill's (execId, permId)."""
    aapl = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    trade: Trade = ib.placeOrder(aapl, MarketOrder(action, 1, orderRef="harness:test"))
    await wait_until(lambda: trade.isDone() and bool(trade.fills), timeout=5)
    assert trade.orderStatus.status == "Filled"
    e = trade.fills[-1].execution
    return e.execId, e.permId


async def _broker_quote(ib: IB) -> tuple[float, float]:
    aapl = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(aapl)
    ticker = ib.reqMktData(aapl)
    await wait_until(lambda: math.isfinite(ticker.bid) and math.isfinite(ticker.ask), 5)
    return ticker.bid, ticker.ask


# --- 2. quotes ------------------------------------------------------------------------------------
async def test_fixed_dashboard_shows_live_quotes_everywhere(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port)
    sse = await asyncio.to_thread(dash.sse)
    try:
        ib = await connect(sim_port, client_id=31)
        try:
            bid, ask = await _broker_quote(ib)
            doc = await _poll(dash, lambda d: _live(d["quotes"].get("AAPL", {})), 5, "a live quote")
        finally:
            ib.disconnect()
        quote = doc["quotes"]["AAPL"]
        assert quote["conId"] == 265598 and doc["status"] == {"connected": True, "mode": "live"}
        # The same random walk: within a few cents of what the broker sent the test client.
        assert abs(quote["bid"] - bid) < 0.01 * bid and abs(quote["ask"] - ask) < 0.01 * ask
        assert quote["bid"] <= quote["ask"]

        # SSE: the full document first, then a stream of live quote updates (one per tick).
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        assert set(sse.docs[0][1]) == {"quotes", "positions", "last_trade", "status"}
        updates = sse.quotes(t0)
        assert len(updates) >= 3 and all(_live(q) for q in updates), updates
        assert len({q["ts"] for q in updates}) == len(updates), "a tick was sent twice"

        # WebSocket with a first subscribe message: the state for AAPL, then live updates.
        def read_ws() -> list[Doc]:
            with ws_connect(f"ws://127.0.0.1:{dash.port}/ws", open_timeout=5) as ws:
                ws.send(json.dumps({"op": "subscribe", "symbols": ["AAPL"]}))
                return [json.loads(ws.recv(timeout=5)) for _ in range(5)]

        msgs = await asyncio.to_thread(read_ws)
        ws_quotes = [m["quotes"]["AAPL"] for m in msgs if "AAPL" in m.get("quotes", {})]
        assert len(ws_quotes) >= 4 and all(_live(q) for q in ws_quotes), msgs

        # The page carries the elements the browser kind reads; the numbers come over /ws.
        with urllib.request.urlopen(dash.base + "/", timeout=5) as resp:
            html = resp.read().decode()
        assert 'id="quotes"' in html and "new WebSocket" in html and "position-card" in html
    finally:
        sse.close()


async def test_no_wait_bug_falls_back_to_snapshots_for_good(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port, bug="no-wait")
    sse = await asyncio.to_thread(dash.sse)
    try:
        ib = await connect(sim_port, client_id=31)
        try:
            await _broker_quote(ib)  # the broker is streaming fine
            t0 = time.monotonic()
            await asyncio.sleep(2.5)
            assert math.isfinite(ib.tickers()[0].bid)
        finally:
            ib.disconnect()
        modes = [q["mode"] for q in sse.quotes()]
        assert modes and set(modes) <= {"waiting", "snapshot_fallback"}, modes
        assert "live" not in modes
        assert dash.state()["quotes"]["AAPL"]["mode"] == "snapshot_fallback"
        # Snapshot polling is slow: far fewer updates than the 4 a second the broker streams.
        assert len(sse.quotes(t0)) <= 3
    finally:
        sse.close()


async def test_nan_to_null_bug_streams_nulls_under_a_live_badge(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port, bug="nan-to-null")
    sse = await asyncio.to_thread(dash.sse)
    try:
        ib = await connect(sim_port, client_id=31)
        try:
            bid, ask = await _broker_quote(ib)
            assert bid > 0 and ask > 0
        finally:
            ib.disconnect()
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        quotes = sse.quotes(t0)
        assert len(quotes) >= 3, "the stream itself flows"
        assert all(q["mode"] == "live" for q in quotes)
        assert all(q["bid"] is None and q["ask"] is None for q in quotes), quotes
        state = dash.state()["quotes"]["AAPL"]
        assert state["bid"] is None and state["mode"] == "live"
    finally:
        sse.close()


# --- 2. trades ------------------------------------------------------------------------------------
async def _round_trip(sim_port: int, dash: Dashboard) -> tuple[tuple[str, int], tuple[str, int]]:
    """Buy 1 and wait until the dashboard shows it, then sell 1; the two fills' ids."""
    ib = await connect(sim_port, client_id=31)
    try:
        await _poll(dash, lambda d: _live(d["quotes"].get("AAPL", {})), 5, "a live quote")
        entry = await _trade(ib, "BUY")
        await _poll(dash, lambda d: _aapl_qty(d) == 1, 5, "the open position")
        exit_ = await _trade(ib, "SELL")
        await wait_until(lambda: not [p for p in ib.positions() if p.position], 5)
        return entry, exit_
    finally:
        ib.disconnect()


async def test_fixed_dashboard_opens_clears_and_names_each_trade(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port)
    sse = await asyncio.to_thread(dash.sse)
    try:
        entry, exit_ = await _round_trip(sim_port, dash)
        assert entry != exit_
        await _poll(dash, lambda d: _aapl_qty(d) is None, 5, "the position cleared")
        cleared = time.monotonic()
        await _poll(dash, lambda d: _shown_ids(d) == exit_, 5, "the exit's own ids")
        await asyncio.sleep(1.5)  # six ticks: long enough for any queued repaint to land
        after = sse.since(cleared)
        # Ticks kept coming (each one flushes staged card refreshes), and none repainted it.
        assert len(sse.quotes(cleared)) >= 4
        assert all(_aapl_qty(d) is None for d in after if "positions" in d), after
        assert _aapl_qty(dash.state()) is None
        shown = [_shown_ids(d) for _, d in sse.docs if "last_trade" in d]
        assert entry in shown and shown[-1] == exit_
        trade = dash.state()["last_trade"]["AAPL"]
        assert trade["side"] == "SLD" and trade["qty"] == 1
    finally:
        sse.close()


async def test_stale_card_bug_repaints_the_closed_position(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port, bug="stale-card")
    sse = await asyncio.to_thread(dash.sse)
    try:
        await _round_trip(sim_port, dash)
        await asyncio.sleep(1.0)
        qtys = [_aapl_qty(d) for t, d in sse.docs if "positions" in d]
        # Open (1), the close goes out at once (None), then the repaint queued before the
        # close lands with the next tick (1) and stays.
        assert 1 in qtys, qtys
        closed_at = qtys.index(None, qtys.index(1))
        assert 1 in qtys[closed_at:], qtys
        assert _aapl_qty(dash.state()) == 1, "the repaint sticks: /api/state shows it too"
    finally:
        sse.close()


async def test_stale_trade_id_bug_shows_the_entrys_ids_on_the_exit(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port, bug="stale-trade-id")
    entry, exit_ = await _round_trip(sim_port, dash)
    doc = await _poll(dash, lambda d: _aapl_qty(d) is None, 5, "the position cleared")
    await asyncio.sleep(0.5)  # the executions refresh after the close has answered
    doc = dash.state()
    trade = doc["last_trade"]["AAPL"]
    assert trade["side"] == "SLD", "the exit is the latest trade shown"
    assert _shown_ids(doc) == entry != exit_


# --- 3. failover: 1101 and a dropped connection ---------------------------------------------------
def _duplicates(quotes: list[Doc]) -> int:
    """Consecutive quote messages that are the same tick (same broker timestamp and values)."""
    return sum(1 for a, b in itertools.pairwise(quotes) if a == b)


@pytest.mark.parametrize("mode", ["fixed", "double-subscribe"])
@pytest.mark.parametrize("fault", ["1102", "1101", "disconnect"])
async def test_failover_degrades_recovers_and_shows_each_tick_once(
    gateway: ThreadedGateway, dashboard: Callable[..., Dashboard], mode: str, fault: str
) -> None:
    dash = dashboard(gateway.port, bug=mode)
    sse = await asyncio.to_thread(dash.sse)
    try:
        await _poll(dash, lambda d: _live(d["quotes"].get("AAPL", {})), 5, "a live quote")
        t_fault = time.monotonic()
        if fault == "disconnect":
            assert gateway.gw is not None
            gateway.call(gateway.gw.drop_all)
        else:
            # 1100 at once, then "restored" after half a second: 1101 data lost / 1102 kept.
            gateway.set_scenario(
                "connectivity_lost",
                disconnect_after=0.05,
                outage_seconds=0.5,
                data_lost=fault == "1101",
            )
        await _poll(dash, lambda d: d["status"]["mode"] == "degraded", 3, "the degraded badge")
        await _poll(dash, lambda d: _live(d["quotes"]["AAPL"]), 10, "live again after recovery")
        t_live = time.monotonic()
        await asyncio.sleep(1.5)
        modes = [q["mode"] for q in sse.quotes(t_fault)]
        assert "degraded" in modes and modes[-1] == "live"
        after = sse.quotes(t_live)
        assert len(after) >= 4, after
        dupes = _duplicates(after)
        if mode == "double-subscribe" and fault != "1102":
            # Resubscribed without cancelling: every tick is published twice.
            assert dupes >= len(after) // 2 - 1 and dupes >= 2, after
        else:
            # Fixed, or 1102 (data maintained: nothing to resubscribe, so nothing doubled).
            assert dupes == 0, after
    finally:
        sse.close()


async def test_a_silent_stream_is_shown_stale_until_it_ticks_again(
    gateway: ThreadedGateway, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(gateway.port, None, None, "--stale-after", "0.6")
    await _poll(dash, lambda d: _live(d["quotes"].get("AAPL", {})), 5, "a live quote")
    gateway.set_scenario("stale_stream", stale_after=0.0)  # ticks stop now
    t_silent = time.monotonic()
    await _poll(dash, lambda d: d["quotes"]["AAPL"]["mode"] == "degraded", 3, "stale → degraded")
    assert time.monotonic() - t_silent >= 0.5, "not before the stream was silent long enough"
    gateway.set_scenario("healthy")
    doc = await _poll(dash, lambda d: _live(d["quotes"]["AAPL"]), 3, "live on the next tick")
    assert doc["status"]["mode"] == "live"


async def test_dashboard_waits_for_a_gateway_that_is_not_up_yet(
    dead_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(dead_port)
    doc = dash.state()
    assert doc["status"]["connected"] is False and doc["quotes"] == {}
    await asyncio.sleep(1.0)  # a few refused attempts
    assert dash.proc.poll() is None, "the dashboard keeps serving and retrying"
    with ThreadedGateway(port=dead_port):
        doc = await _poll(dash, lambda d: _live(d["quotes"].get("AAPL", {})), 10, "live")
    assert doc["status"] == {"connected": True, "mode": "live"}


# --- auth -----------------------------------------------------------------------------------------
async def test_bearer_token_guards_every_endpoint(
    sim_port: int, dashboard: Callable[..., Dashboard]
) -> None:
    dash = dashboard(sim_port, token=TOKEN)
    base = dash.base
    for path in ("/", "/api/state", "/events"):
        req = urllib.request.Request(base + path, headers={"Authorization": "Bearer wrong"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 401, path
    with pytest.raises(InvalidStatus):
        ws_connect(f"ws://127.0.0.1:{dash.port}/ws", open_timeout=5)

    assert "quotes" in dash.state()
    sse = dash.sse()
    assert sse.status == 200
    sse.close()
    with ws_connect(
        f"ws://127.0.0.1:{dash.port}/ws", additional_headers=dash.headers(), open_timeout=5
    ) as ws:
        assert "quotes" in json.loads(ws.recv(timeout=5))
    req = urllib.request.Request(base + "/", headers=dash.headers())
    with urllib.request.urlopen(req, timeout=5) as resp:
        html = resp.read().decode()
        cookie = resp.headers["set-cookie"]
    assert TOKEN not in html, "the token is never written into the page"
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert TOKEN not in "".join(dash.log), "nor into the dashboard's output"


# --- the page, in chromium ------------------------------------------------------------------------
READ_PAGE = """() => {
  const q = document.querySelector('#quote-AAPL');
  const card = document.querySelector('.position-card[data-symbol="AAPL"]');
  const trade = document.querySelector('.last-trade[data-symbol="AAPL"]');
  const text = (root, sel) => {
    const e = root ? root.querySelector(sel) : null;
    return e ? e.textContent : null;
  };
  return {
    mode: q ? q.querySelector('.mode').dataset.mode : null,
    bid: text(q, '.bid'), ask: text(q, '.ask'),
    qty: text(card, '.qty'),
    execId: text(trade, '.exec-id'), permId: text(trade, '.perm-id'),
  };
}"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fixed", "stale-card"])
async def test_page_in_chromium_follows_the_websocket(
    sim_port: int, dashboard: Callable[..., Dashboard], tmp_path: Path, mode: str
) -> None:
    from tests.e2e.test_browser import CHROMIUM, CHROMIUM_FLAGS, _require_browser

    _require_browser()  # skips (or fails in CI) without chromium / Playwright
    from playwright.async_api import async_playwright

    dash = dashboard(sim_port, bug=mode, token=TOKEN)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = await browser.new_context(extra_http_headers=dash.headers())
            page = await context.new_page()
            await page.goto(dash.base + "/", timeout=30_000)

            async def seen(pred: Callable[[Doc], bool], what: str, timeout: float = 5) -> Doc:
                deadline = time.monotonic() + timeout
                shown: Doc = {}
                while time.monotonic() < deadline:
                    shown = await page.evaluate(READ_PAGE)
                    if pred(shown):
                        return shown
                    await asyncio.sleep(0.05)
                raise AssertionError(f"the page never showed {what}; last {shown}")

            def number(text: str | None) -> float:
                try:
                    return float(text or "")
                except ValueError:
                    return math.nan

            shown = await seen(lambda s: s["mode"] == "live" and number(s["bid"]) > 0, "live")
            assert number(shown["ask"]) >= number(shown["bid"])
            ib = await connect(sim_port, client_id=31)
            try:
                entry = await _trade(ib, "BUY")
                await seen(lambda s: s["qty"] == "1.0" or s["qty"] == "1", "the open card")
                await seen(lambda s: s["execId"] == entry[0], "the entry's exec id")
                exit_ = await _trade(ib, "SELL")
            finally:
                ib.disconnect()
            if mode == "fixed":
                await seen(lambda s: s["qty"] is None, "the card cleared")
            # (stale-card's repaint can land within one poll of the clear, so no wait there)
            shown = await seen(lambda s: s["execId"] == exit_[0], "the exit's exec id")
            assert shown["permId"] == str(exit_[1])
            await asyncio.sleep(1.0)  # four ticks
            qty = (await page.evaluate(READ_PAGE))["qty"]
            if mode == "fixed":
                assert qty is None, "the closed card stays gone"
            else:
                assert qty is not None and number(qty) == 1, "the queued repaint brought it back"
            assert TOKEN not in await page.content()
        finally:
            await browser.close()
