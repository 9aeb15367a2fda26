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

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "live_ticks.py"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    port = _free_port()
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
