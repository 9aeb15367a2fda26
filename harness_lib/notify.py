"""Tell a person on their phone whether to trust this morning's stack.

* :func:`format_message` turns a RunReport into a (title, body) pair: ``PASSED`` or
  ``DO NOT TRUST THE DASHBOARD`` with the reason and the IB code.
* :func:`should_notify` applies the ``--notify-on fail|always|change`` policy.
* :func:`send` delivers through apprise to any number of URLs and never raises.
* :func:`heartbeat` pings a healthchecks.io-style URL (``/start``, ``/``, ``/fail``) so a
  run that never happens (machine asleep, cron broken) is noticed too.

Notification URLs carry secrets (bot tokens, passwords, webhook tokens). They are shown
only through :func:`harness_lib.redact.redact_url`, and while apprise runs, a log-record
factory scrubs them from every record any logger creates (apprise, requests, urllib3,
plugin libraries); :mod:`harness_lib.redact` holds every one of those rules.
"""

from __future__ import annotations

import contextlib
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness_lib.constants import NOTIFY_ON
from harness_lib.models import Phase, RunReport, Verdict
from harness_lib.quotes import MARKET_DATA_TYPES
from harness_lib.redact import (
    apprise_secrets,
    redact_text,
    redact_url,
    redacting_logs,
    secrets_in_url,
)

__all__ = [
    "Delivery",
    "format_message",
    "heartbeat",
    "send",
    "should_notify",
]

# ----------------------------------------------------------------------------- message


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of one notification or heartbeat. ``channel`` is always redacted."""

    channel: str
    ok: bool
    detail: str


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.2f} s"
    return "never"


def _money(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.2f}"
    return "?"


def _ib_line(report: RunReport) -> str | None:
    """The IB message that best explains the failure, e.g. ``IB 354: Requested market
    data is not subscribed``; None if IB said nothing relevant."""
    failing = report.failing_phase
    candidates = list(failing.errors) if failing else []
    candidates += [e for p in report.phases if p is not failing for e in p.errors]
    # 2100-2199 are farm/connection notices ("market data farm connection is OK"); they
    # are noise next to a real error, so prefer anything else.
    real = [e for e in candidates if not 2100 <= e.code <= 2199]
    chosen = (real or candidates or [None])[0]
    return str(chosen) if chosen is not None else None


def format_message(report: RunReport, *, report_location: str | None) -> tuple[str, str]:
    """Build the (title, body) of the phone message for a run.

    PASS: ``✅ livefire PASSED — <contract> on <target label>``. Anything else:
    ``🚨 livefire <VERDICT> — DO NOT TRUST THE DASHBOARD``. A simulator run says
    SIMULATOR in both title and body.
    """
    target = report.target
    verdict = report.verdict
    if verdict == Verdict.PASS:
        title = f"✅ livefire PASSED — {report.contract} on {target.label}"
    else:
        title = f"🚨 livefire {verdict} — DO NOT TRUST THE DASHBOARD"
        if target.simulated:
            title += " (SIMULATOR run)"

    lines: list[str] = []
    if target.simulated:
        lines.append("SIMULATOR run — this says nothing about the real IB gateway.")
    lines.append(f"Target: {target.label}")
    if not target.account:
        lines.append(f"Account: {', '.join(target.accounts) or 'not reported'}")
    lines.append(f"Contract: {report.contract}")
    lines.append(f"Verdict: {verdict} (exit {report.exit_code})")

    failing = report.failing_phase
    if failing is not None:
        lines.append(f"Failed phase: {failing.phase} — {failing.reason or verdict}")
    elif verdict != Verdict.PASS:
        lines.append(f"Reason: {report.reason}")
    if failed := report.failed_stack_checks():
        lines.append(f"Failed stack check(s): {', '.join(failed)}")
    stack = report.phase(Phase.STACK)
    if stack is not None and stack.verdict == Verdict.PASS:
        lines.append(f"Stack: {stack.reason}")  # how many checks, and each one's latency
    ib = _ib_line(report) if verdict != Verdict.PASS else None
    if ib and (failing is None or ib not in failing.reason):
        lines.append(ib)

    ticks = report.phase(Phase.TICKS)
    if ticks is not None and ticks.verdict != Verdict.SKIPPED:
        line = (
            f"First bid: {_seconds(ticks.metrics.get('first_bid_s'))}, "
            f"first ask: {_seconds(ticks.metrics.get('first_ask_s'))}"
        )
        mdt = ticks.metrics.get("market_data_type")
        if mdt is not None:
            name = MARKET_DATA_TYPES.get(mdt) if isinstance(mdt, int) else None
            line += f" (market data type {mdt}{f' = {name}' if name else ''})"
        lines.append(line)

    rt = report.phase(Phase.ROUND_TRIP)
    if rt is not None and rt.metrics.get("total_cost") is not None:
        m = rt.metrics
        currency = m.get("currency") or ""
        line = f"Round-trip cost: {_money(m.get('total_cost'))} {currency}".rstrip()
        parts = [
            f"{label} {_money(m[key])}"
            for key, label in (
                ("commission", "commission"),
                ("slippage", "slippage"),
                ("realized_pnl", "realized P&L"),
            )
            if m.get(key) is not None
        ]
        if parts:
            line += f" ({', '.join(parts)})"
        lines.append(line)

    where = report_location or report.report_path or report.store_path
    if where:
        lines.append(f"Report: {where}")
    lines.append(f"Run: {report.run_id}")
    return title, "\n".join(lines)


def should_notify(policy: str, verdict: Verdict, previous_verdict: str | None) -> bool:
    """Whether to send a message for this run.

    ``always``: every run. ``fail``: every run that did not PASS (a run where nothing ran
    is not a pass either). ``change``: only when the verdict differs from the previous run
    on the same target; the first run ever counts as a change.
    """
    policy = policy.strip().lower()
    if policy not in NOTIFY_ON:
        raise ValueError(f"unknown notify policy {policy!r}: use one of {', '.join(NOTIFY_ON)}")
    if policy == "always":
        return True
    if policy == "fail":
        return verdict != Verdict.PASS
    if previous_verdict is None:
        return True
    return str(verdict) != str(previous_verdict).strip().upper()


# -------------------------------------------------------------------------------- send


def _result_detail(result: Any, secrets: set[str]) -> str:
    """The last warning/error apprise captured for a delivery, scrubbed."""
    messages: list[str] = []
    try:
        for service_result in result:
            for entry in service_result.logs():
                if str(getattr(entry, "level", "")).upper() in ("WARNING", "ERROR", "CRITICAL"):
                    messages.append(str(entry.message))
    except Exception:
        pass
    status = getattr(getattr(result, "status", None), "name", None) or "FAILURE"
    detail = f"not delivered ({status.lower()})"
    if messages:
        detail += f": {messages[-1]}"
    return redact_text(detail, secrets)


def send(urls: Sequence[str], title: str, body: str, *, timeout: float = 10) -> list[Delivery]:
    """Send (title, body) to every apprise URL; one :class:`Delivery` per URL, in order.

    Never raises (short of KeyboardInterrupt): unparseable URLs, refused connections,
    HTTP errors, plugin crashes and a missing apprise all come back as ``ok=False`` with a
    redacted detail, because a broken phone channel must not change the run's exit code.
    ``timeout`` bounds each URL's connect and read and the whole apprise call for it.
    """
    if isinstance(urls, str):  # one URL passed bare: don't iterate its characters
        urls = [urls]
    urls = [u.strip() for u in urls if isinstance(u, str) and u.strip()]
    try:
        return _send(urls, title, body, timeout)
    except Exception as exc:
        secrets: set[str] = set()
        for url in urls:
            with contextlib.suppress(Exception):
                secrets |= secrets_in_url(url)
        detail = redact_text(f"not delivered: {type(exc).__name__}: {exc}", secrets)
        return [Delivery(redact_url(u), False, detail) for u in urls]


def _send(urls: list[str], title: str, body: str, timeout: float) -> list[Delivery]:
    import apprise  # imported here: plugin loading is slow and only needed to send

    per_url = [secrets_in_url(u) for u in urls]
    # One live set shared with the record factory; plugin secrets are added as found.
    all_secrets: set[str] = set().union(*per_url) if per_url else set()
    deliveries: list[Delivery] = []
    with redacting_logs(all_secrets):
        ap = apprise.Apprise()
        tags: list[str | None] = []
        for i, url in enumerate(urls):
            channel = redact_url(url)
            tag = f"livefire-{i}"
            try:
                plugin = apprise.Apprise.instantiate(url, tag=tag)
            except Exception as exc:
                err = redact_text(f"{type(exc).__name__}: {exc}", all_secrets)
                tags.append(None)
                deliveries.append(
                    Delivery(channel, False, f"unsupported notification URL {channel} ({err})")
                )
                continue
            if plugin is None:
                tags.append(None)
                deliveries.append(
                    Delivery(channel, False, f"unsupported notification URL {channel}")
                )
                continue
            all_secrets |= apprise_secrets(plugin)
            # apprise knows which parts of its own URL are private; hide those too.
            channel = redact_text(channel, all_secrets)
            for attr in ("socket_connect_timeout", "socket_read_timeout"):
                with contextlib.suppress(Exception):
                    setattr(plugin, attr, float(timeout))
            ap.add(plugin)
            tags.append(tag)
            deliveries.append(Delivery(channel, False, "pending"))

        for i, tag in enumerate(tags):
            if tag is None:
                continue
            channel = deliveries[i].channel
            try:
                # One tag per URL so each channel gets its own ok/detail, while apprise
                # still applies its own per-service formatting and emoji handling.
                result = ap.notify(body=body, title=title, tag=tag, timeout=timeout)
                if bool(result):
                    deliveries[i] = Delivery(channel, True, "delivered")
                else:
                    deliveries[i] = Delivery(channel, False, _result_detail(result, all_secrets))
            except Exception as exc:
                detail = redact_text(f"{type(exc).__name__}: {exc}", all_secrets)
                deliveries[i] = Delivery(channel, False, f"not delivered: {detail}")
    return deliveries


# --------------------------------------------------------------------------- heartbeat

_HEARTBEAT_SUFFIX = {"start": "/start", "success": "", "fail": "/fail"}


def heartbeat(url: str | None, stage: str, *, timeout: float = 5) -> Delivery | None:
    """Ping a healthchecks.io-style check: ``<url>/start`` when a run begins, ``<url>``
    when it passed, ``<url>/fail`` when it did not. Returns None when no URL is
    configured; never raises (a dead monitoring service must not fail the run)."""
    if not url or not url.strip():
        return None
    base = url.strip().rstrip("/")
    secrets = secrets_in_url(base)
    channel = redact_url(base)
    if stage not in _HEARTBEAT_SUFFIX:
        return Delivery(channel, False, f"unknown heartbeat stage {stage!r}")
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme not in ("http", "https"):
        # urllib would also open file:// and ftp:// URLs; a heartbeat is HTTP only.
        return Delivery(channel, False, f"heartbeat URL must be http(s): {channel}")
    # Healthchecks puts the query (e.g. ?rid=) after the stage suffix, not before.
    parts = urllib.parse.urlsplit(base)
    target = urllib.parse.urlunsplit(
        parts._replace(path=parts.path.rstrip("/") + _HEARTBEAT_SUFFIX[stage])
    )
    shown = redact_url(target)
    request = urllib.request.Request(
        target, method="GET", headers={"User-Agent": "livefire-heartbeat/1"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = getattr(response, "status", 200)
            response.read(1024)
        return Delivery(channel, 200 <= status < 300, f"{stage}: HTTP {status} from {shown}")
    except urllib.error.HTTPError as exc:
        return Delivery(channel, False, f"{stage}: HTTP {exc.code} from {shown}")
    except Exception as exc:
        reason = getattr(exc, "reason", exc)
        detail = redact_text(f"{type(exc).__name__}: {reason}", secrets)
        return Delivery(channel, False, f"{stage}: not delivered to {shown} ({detail})")
