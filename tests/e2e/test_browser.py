"""The live notebook in a real browser: ``marimo run`` against the simulator, read by
Debian's chromium through Playwright.

marimo draws charts and widgets inside shadow roots, so chart checks walk them; the
ticker table is plain HTML (``table.livefire-quote``). A screenshot is saved under
test-artifacts/ (git-ignored) for CI to upload.
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness_lib.stack.watch import CHROMIUM, CHROMIUM_FLAGS  # the one launch recipe
from tests.loopback import free_port, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "live_ticks.py"
ARTIFACTS = ROOT / "test-artifacts"
SERVER_START_TIMEOUT = 60.0
PAGE_TIMEOUT = 60.0

# A row of the ticker table, found by its first cell (the field name):
# [field, value, first real after (ms), at, data type].
READ_ROW = """(field) => {
  const rows = [...document.querySelectorAll('table.livefire-quote tbody tr')];
  const row = rows.find(r => r.cells.length && r.cells[0].innerText.trim() === field);
  return row ? [...row.cells].map(td => td.innerText.trim()) : null;
}"""
# The caption starts with the tick count: "123 ticks · market data live".
READ_TICKS = """() => {
  const e = document.querySelector('table.livefire-quote caption');
  return e ? parseInt(e.innerText, 10) : null;
}"""
# Charts render into a canvas or svg inside (possibly nested) shadow roots.
COUNT_CHARTS = """() => {
  let n = 0;
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.shadowRoot) {
      if (el.shadowRoot.querySelector('canvas, svg.marks')) n += 1;
      walk(el.shadowRoot);
    }
  });
  walk(document);
  return n;
}"""


def _require_browser() -> Any:
    """Playwright's sync API, or skip (fail in CI) when chromium or Playwright is missing."""
    in_ci = bool(os.environ.get("CI"))
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail(f"CI is set but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium); CI=1 makes this a failure")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            raise
        pytest.skip("playwright is not installed (uv sync --group dev)")
    return sync_playwright


def _wait_listening(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"marimo run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"marimo run did not listen on {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """``marimo run notebooks/live_ticks.py`` on the simulator's slow_first_tick scenario:
    the first tick comes 3 s after subscribing, so the page shows nan before numbers."""
    port = free_port()
    log = tmp_path / "marimo-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", str(NOTEBOOK), "--headless",
             "--host", "127.0.0.1", "--port", str(port), "--no-token",
             "--", "--sim", "--scenario", "slow_first_tick"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            env={**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1"},
        )  # fmt: skip
    try:
        _wait_listening(port, proc, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _poll(page: Any, script: str, arg: Any, until: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(script, arg)
        if until(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s; last value {value!r}")


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return math.nan


def test_live_ticks_in_chromium(live_server: str, tmp_path: Path) -> None:
    sync_playwright = _require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 2200},
        )
        try:
            page = browser.new_page()
            page.goto(live_server, timeout=PAGE_TIMEOUT * 1000)

            # Before the first tick the bid cell shows nan (empty would do as well).
            first = _poll(page, READ_ROW, "bid", lambda r: r is not None, PAGE_TIMEOUT)
            assert first[1] in ("nan", ""), f"bid was already {first[1]!r} on first sight"

            # Then bid and ask become numbers, with the time each first became real.
            bid = _poll(page, READ_ROW, "bid", lambda r: _number(r[1]) > 0, 15)
            ask = _poll(page, READ_ROW, "ask", lambda r: _number(r[1]) > 0, 5)
            assert _number(ask[1]) >= _number(bid[1])
            assert 2500 < _number(bid[2]) < 6000  # slow_first_tick: about 3 s
            assert bid[4] == "live"

            # The tick count rises between two reads. The page refreshes every 0.5 s and the
            # simulator quotes every 0.25 s, so 3 s show about 6 values; 5 leaves slack for
            # a loaded CI machine while still proving about two updates a second.
            seen = []
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end:
                seen.append(page.evaluate(READ_TICKS))
                time.sleep(0.1)
            assert seen[-1] > seen[0]
            assert len(set(seen)) >= 5, f"only {len(set(seen))} distinct updates in 3 s: {seen}"

            assert _poll(page, COUNT_CHARTS, None, lambda n: n >= 2, 10) >= 2
            page.screenshot(path=str(ARTIFACTS / "live_ticks.png"), full_page=True)

            # Switch the simulator to never_ticks: the page reconnects and says so.
            # (Playwright's CSS locators pierce the shadow root marimo's dropdown lives in.)
            scenario = page.locator("select").filter(
                has=page.locator("option", has_text="never_ticks")
            )
            scenario.select_option(label="never_ticks")
            _poll(page, READ_ROW, "bid", lambda r: r is not None and r[1] == "nan", 15)
            said = page.get_by_text(
                re.compile(r"STALLED — (waiting for the first tick|ticks: no tick)")
            )
            said.first.wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "live_ticks_never_ticks.png"), full_page=True)
        finally:
            browser.close()


# ----------------------------------------------------------------- with the user's stack

# A row of the broker/stack table, found by its first cell (the source):
# [source, bid, ask, last, data mode, live, age (ms), matches broker, check].
READ_STACK_ROW = """(source) => {
  const rows = [...document.querySelectorAll('table.livefire-stack tbody tr')];
  const row = rows.find(r => r.cells.length && r.cells[0].innerText.trim() === source);
  return row ? [...row.cells].map(td => td.innerText.trim()) : null;
}"""

STACK_FILE = """[[stack]]
name = "tiny-sse"
kind = "sse"
url = "http://127.0.0.1:{port}/events"

[stack.quote]
select = 'quotes."{{symbol}}"'
bid = "bid"
ask = "ask"
last = "last"
mode = "mode"
"""


@pytest.fixture
def live_server_with_stack(tmp_path: Path) -> Iterator[str]:
    """``harness sim`` and the tiny stack (tests/stack_app.py) on it, as real processes, and
    ``marimo run notebooks/live_ticks.py -- --port SIM --stack-file F`` watching both."""
    from tests.stack_app import start_sim_process, start_stack_process

    sim, sim_port = start_sim_process()
    procs = [sim]
    try:
        stack, stack_port = start_stack_process(sim_port)
        procs.append(stack)
        sfile = tmp_path / "stack.toml"
        sfile.write_text(STACK_FILE.format(port=stack_port))
        port = free_port()
        log = tmp_path / "marimo-run.log"
        with log.open("w") as out:
            marimo = subprocess.Popen(
                [sys.executable, "-m", "marimo", "run", str(NOTEBOOK), "--headless",
                 "--host", "127.0.0.1", "--port", str(port), "--no-token",
                 "--", "--port", str(sim_port), "--stack-file", str(sfile)],
                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                env={**os.environ, "MARIMO_SKIP_UPDATE_CHECK": "1"},
            )  # fmt: skip
        procs.append(marimo)
        _wait_listening(port, marimo, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def test_live_page_shows_the_stack_quote_beside_the_broker(
    live_server_with_stack: str, tmp_path: Path
) -> None:
    sync_playwright = _require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 2200},
        )
        try:
            page = browser.new_page()
            page.goto(live_server_with_stack, timeout=PAGE_TIMEOUT * 1000)

            def judged(r: list[str] | None) -> bool:
                return r is not None and r[8].startswith("PASS") and _number(r[1]) > 0

            dash = _poll(page, READ_STACK_ROW, "tiny-sse", judged, PAGE_TIMEOUT)
            broker = page.evaluate(READ_STACK_ROW, "broker")
            assert broker is not None and _number(broker[1]) > 0
            # Side by side: the stack shows the broker's numbers (it echoes the gateway)...
            assert _number(dash[1]) == pytest.approx(_number(broker[1]), rel=0.01)
            assert _number(dash[2]) == pytest.approx(_number(broker[2]), rel=0.01)
            # ...and both data-mode flags say live.
            assert broker[4] == "live" and dash[4] == "live" and dash[5] == "yes"
            assert "tiny-sse showed AAPL bid" in dash[8]

            # Both sides keep updating: the stack's quote age resets as its quotes arrive.
            seen = set()
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end:
                row = page.evaluate(READ_STACK_ROW, "tiny-sse")
                seen.add((row[1], row[2], row[6]))
                time.sleep(0.1)
            assert len(seen) >= 4, f"the stack row barely changed in 3 s: {seen}"
            page.get_by_text(re.compile(r"PASS — .*stack shows it")).first.wait_for(timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "live_ticks_stack.png"), full_page=True)
        finally:
            browser.close()
