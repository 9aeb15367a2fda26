"""Render a :class:`~harness_lib.models.RunReport` for machines and people.

One run produces the same facts in four shapes:

* a JSON report (``<reports_dir>/<run_id>.json`` plus ``latest.json``) described by
  ``SCHEMA`` (generated from the dataclasses by :func:`report_schema`), for dashboards
  and scripts;
* a JUnit XML file, so CI systems show a failing phase as a failing test;
* a self-contained HTML page, the fallback for ``harness report`` when the notebook
  export is unavailable (fed from plain store rows, not from a RunReport);
* plain aligned lines for the console (:func:`console_summary`).

Every shape names the target, and a simulator run says SIMULATOR, so a green simulator
run is never mistaken for a healthy gateway.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.text import Text

from harness_lib.constants import VERDICT_COLOURS
from harness_lib.files import atomic_write_text
from harness_lib.models import Phase, PhaseResult, RunReport, Verdict

SCHEMA_VERSION = 1
"""Bumped whenever a field of the JSON report changes meaning or disappears."""

# --------------------------------------------------------------------------- schema

# What report_json() adds around RunReport.to_dict(), declared with its schema here.
_ENVELOPE: dict[str, dict[str, Any]] = {
    "schema_version": {
        "const": SCHEMA_VERSION,
        "description": "Version of this report format; bumped on incompatible changes.",
    },
    "simulated": {
        "type": "boolean",
        "description": "True when the run targeted the simulator: its PASS says nothing "
        "about the real gateway.",
    },
}


@functools.cache
def report_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the JSON report written by :func:`write_json_report`,
    generated from :class:`RunReport` (see :mod:`harness_lib.docschema`), so the two cannot
    drift. Also available as ``report.SCHEMA``."""
    from harness_lib.docschema import object_schema

    doc = object_schema(RunReport)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:livefire:run-report:{SCHEMA_VERSION}",
        "title": "livefire run report",
        "description": "What one `harness run` concluded about an Interactive Brokers stack. "
        "Written to <reports_dir>/<run_id>.json and copied to latest.json.",
        "type": "object",
        "required": [*_ENVELOPE, *doc["required"]],
        "additionalProperties": False,
        "properties": {**_ENVELOPE, **doc["properties"]},
    }


def __getattr__(name: str) -> Any:
    # SCHEMA is built on first use: a `harness run` that only writes reports never pays
    # for generating it.
    if name == "SCHEMA":
        return report_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------ JSON


def report_json(report: RunReport) -> dict[str, Any]:
    """The JSON report as a dict: ``RunReport.to_dict()`` plus ``schema_version`` and
    ``simulated`` (first, so a human opening the file sees them at once)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "simulated": bool(report.target.simulated),
        **report.to_dict(),
    }


def _dumps(data: Any) -> str:
    # default=str: metrics/evidence may carry Decimals or other non-JSON scalars;
    # a report that cannot be written is worse than one with a stringified value.
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(report: RunReport, path: Path) -> Path:
    """Write the JSON report to ``path`` (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, _dumps(report_json(report)))
    return path


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def _safe_file_stem(run_id: str) -> str:
    # run_id becomes a file name: never let it climb out of reports_dir or hide itself.
    stem = _UNSAFE_FILENAME.sub("_", run_id).lstrip(".")
    return stem or "run"


def write_json_report(report: RunReport, reports_dir: Path) -> Path:
    """Write ``<reports_dir>/<run_id>.json`` and atomically refresh ``latest.json``.

    Returns the path of the per-run file. ``latest.json`` is a copy, not a symlink, so
    it survives being synced or copied elsewhere.
    """
    reports_dir = Path(reports_dir)
    text = _dumps(report_json(report))
    path = reports_dir / f"{_safe_file_stem(report.run_id)}.json"
    atomic_write_text(path, text)
    atomic_write_text(reports_dir / "latest.json", text)
    return path


# ----------------------------------------------------------------------------- JUnit


def _fmt_seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{float(value):.3f}"
    return "0.000"


def _utc_naive_iso(dt: datetime) -> str:
    # The JUnit XSD wants a timestamp without a zone designator; we always write UTC.
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return dt.replace(tzinfo=None).isoformat(timespec="seconds")


def _phase_details(result: PhaseResult) -> str:
    """The failure text CI shows: reason, IB messages, last checkpoint, metrics."""
    lines = [f"verdict: {result.verdict}", f"reason: {result.reason or '-'}"]
    if result.checkpoints:
        last = result.checkpoints[-1]
        detail = f" ({last.detail})" if last.detail else ""
        lines.append(f"last checkpoint: {last.name}{detail}")
    for err in result.errors:
        req = f" (reqId {err.req_id})" if err.req_id != -1 else ""
        lines.append(f"IB {err.code}: {err.message}{req} at {err.t_wall.isoformat()}")
    for key, value in result.metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # same as the JSON report: not observed
        lines.append(f"{key}: {'not observed' if value is None else value}")
    return "\n".join(lines)


def _failure_message(result: PhaseResult) -> str:
    codes = [str(e) for e in result.errors if str(e) not in result.reason]
    msg = result.reason or str(result.verdict)
    # The message attribute is what most CI UIs show in a list; put the IB code there.
    return f"{msg} [{codes[0]}]" if codes else msg


def _stack_case(check: Mapping[str, Any]) -> tuple[str, Verdict, str, str, str]:
    latency = check.get("latency_s")
    details = [f"verdict: {check.get('verdict')}", f"reason: {check.get('reason') or '-'}"]
    details += [f"{k}: {check[k]}" for k in ("expected", "observed") if check.get(k)]
    details.append(f"latency_s: {'not observed' if latency is None else latency}")
    name = f"stack.{check.get('endpoint')}.{check.get('name')}"
    verdict = Verdict(str(check.get("verdict")))
    return name, verdict, "0.000", str(check.get("reason") or verdict), "\n".join(details)


def junit_xml(report: RunReport) -> str:
    """JUnit XML for the run: one ``<testsuite name="livefire">`` (inside
    ``<testsuites>``) with one ``<testcase>`` per phase.

    FAIL/ABORTED become ``<failure>``, STALLED a ``<failure type="STALLED">``,
    REFUSED/BAD_INPUT an ``<error>`` (the run could not test anything), SKIPPED
    ``<skipped/>``.
    """
    kind = "simulated" if report.target.simulated else "gateway"
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = sum(
        p.duration_s
        for p in report.phases
        if isinstance(p.duration_s, (int, float)) and math.isfinite(p.duration_s)
    )
    if report.finished_at is not None:
        total_time = max(total_time, (report.finished_at - report.started_at).total_seconds())

    suite = ET.Element("testsuite", name="livefire")
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", report.target.label),
        ("simulated", str(report.target.simulated).lower()),
        ("run_id", report.run_id),
        ("contract", report.contract),
        ("verdict", str(report.verdict)),
        ("exit_code", str(report.exit_code)),
    ):
        ET.SubElement(props, "property", name=name, value=value)

    cases: list[tuple[str, Verdict, str, str, str]] = []
    for p in report.phases:
        checks = p.evidence.get("checks") if p.phase == Phase.STACK else None
        if checks:
            # One case per stack check, so CI names the failed one (stack.dash-sse.quotes).
            cases.extend(_stack_case(c) for c in checks)
            continue
        cases.append(
            (str(p.phase), p.verdict, _fmt_seconds(p.duration_s), _failure_message(p),
             _phase_details(p))
        )  # fmt: skip
    if not cases:
        # A run with no phase must still show up in CI rather than as an empty suite.
        cases.append(("run", Verdict.SKIPPED, "0.000", "no phase ran", "no phase ran"))

    for name, verdict, seconds, message, details in cases:
        counts["tests"] += 1
        case = ET.SubElement(
            suite, "testcase", classname=f"livefire.{kind}", name=name, time=seconds
        )
        if verdict in (Verdict.FAIL, Verdict.ABORTED, Verdict.STALLED):
            counts["failures"] += 1
            el = ET.SubElement(case, "failure", message=message, type=str(verdict))
            el.text = details
        elif verdict in (Verdict.REFUSED, Verdict.BAD_INPUT):
            counts["errors"] += 1
            el = ET.SubElement(case, "error", message=message, type=str(verdict))
            el.text = details
        elif verdict == Verdict.SKIPPED:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=message)
        else:
            # Passing phases keep their measurements visible in CI as stdout.
            out = ET.SubElement(case, "system-out")
            out.text = details

    attrs = {k: str(v) for k, v in counts.items()}
    attrs["time"] = _fmt_seconds(total_time)
    attrs["timestamp"] = _utc_naive_iso(report.started_at)
    suite.attrib.update(attrs)

    # The <testsuites> wrapper repeats the totals: some CI readers only look at the root.
    totals = {k: v for k, v in attrs.items() if k != "timestamp"}
    root = ET.Element("testsuites", name="livefire", attrib=totals)
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: RunReport, path: Path) -> Path:
    """Write :func:`junit_xml` to ``path`` (atomically) and return the path."""
    path = Path(path)
    atomic_write_text(path, junit_xml(report))
    return path


# ------------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#111}
h1{font-size:1.4rem;margin:0 0 .5rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f4f6}
.verdict{display:inline-block;color:#fff;padding:.1rem .5rem;border-radius:.25rem;
font-weight:600}
.sim{background:#fde68a;border:2px solid #b45309;padding:.5rem 1rem;font-weight:700;
margin:.5rem 0}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:600}
dd{margin:0}
code{font-family:ui-monospace,Menlo,Consolas,monospace}
"""


def _e(value: Any) -> str:
    """Escape anything for HTML (None shows as an empty cell)."""
    # pandas missing values (NA, NaT) arrive when rows come from store DataFrames;
    # checked by type name so this module does not import pandas.
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return ""
    if isinstance(value, float):
        return html.escape(f"{value:.6g}" if math.isfinite(value) else "")
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value, ensure_ascii=False, default=str))
    return html.escape(str(value))


def _seconds_or_none(value: Any) -> str | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.3f} s"
    return None


def _verdict_badge(verdict: Any) -> str:
    text = str(verdict or "UNKNOWN")
    colour = VERDICT_COLOURS.get(text, VERDICT_COLOURS["OTHER"])
    return f'<span class="verdict" style="background:{colour}">{_e(text)}</span>'


def _maybe_json(value: Any) -> Any:
    # Store rows may keep metrics/target as JSON text; show them as structures.
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in row and row[key] is not None:
            return row[key]
    return None


def _columns(rows: Iterable[Mapping[str, Any]], preferred: list[str]) -> list[str]:
    """Preferred columns that occur, then any other keys in first-seen order."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in seen:
                seen.append(key)
    return [c for c in preferred if c in seen] + [c for c in seen if c not in preferred]


def _generic_table(
    rows: list[dict], preferred: list[str], empty: str, hide: Iterable[str] = ("run_id",)
) -> str:
    if not rows:
        return f"<p>{_e(empty)}</p>"
    # Only `harness report --plain` renders this page, and it has pandas loaded already.
    import pandas as pd

    hidden = set(hide)
    cols = [c for c in _columns(rows, preferred) if c not in hidden]
    # Cells are escaped by _e here, not by to_html: verdict cells hold badge markup.
    cell = {c: _verdict_cell if c == "verdict" else _e for c in cols}
    frame = pd.DataFrame(
        [[cell[c](_maybe_json(row.get(c))) for c in cols] for row in rows],
        columns=[_e(c) for c in cols],
    )
    return frame.to_html(index=False, escape=False, border=0, justify="left")


def _verdict_cell(value: Any) -> str:
    return _verdict_badge(value) if isinstance(value, str) and value else _e(value)


def _target_text(run: Mapping[str, Any]) -> tuple[str, bool]:
    target = _maybe_json(run.get("target"))
    simulated = bool(_first(run, "simulated", "target_simulated"))
    label = _first(run, "target_label", "label")
    if isinstance(target, Mapping):
        simulated = simulated or bool(target.get("simulated"))
        label = label or target.get("label")
        if not label and target.get("host"):
            label = f"{target.get('host')}:{target.get('port')}"
    elif target and not label:
        label = str(target)
    if simulated and label and "SIMULATOR" not in str(label):
        label = f"SIMULATOR {label}"
    return str(label or "unknown target"), simulated


def html_summary(run: dict, phases: list[dict], checkpoints: list[dict], events: list[dict]) -> str:
    """A self-contained HTML page (inline CSS, no scripts, no external assets) for one run.

    Takes plain dicts so it can be fed straight from store rows; unknown keys are shown
    as extra columns rather than dropped, and every value is HTML-escaped.
    """
    label, simulated = _target_text(run)
    verdict = _first(run, "verdict") or "UNKNOWN"
    run_id = _first(run, "run_id", "id") or "?"
    title = f"livefire {verdict} — {run_id}"
    if simulated:
        title += " (SIMULATOR)"

    target = _maybe_json(run.get("target"))
    account = _first(run, "account", "target_account")
    if account is None and isinstance(target, Mapping):
        account = target.get("account")
    facts = [
        ("Verdict", _verdict_badge(verdict)),
        ("Reason", _e(_first(run, "reason"))),
        ("Target", _e(label)),
        ("Account", _e(account)),
        ("Contract", _e(_first(run, "contract"))),
        ("Run id", f"<code>{_e(run_id)}</code>"),
        ("Started", _e(_first(run, "started_at"))),
        ("Finished", _e(_first(run, "finished_at"))),
        ("Exit code", _e(_first(run, "exit_code"))),
        ("First bid", _e(_seconds_or_none(run.get("first_bid_s")))),
        ("First ask", _e(_seconds_or_none(run.get("first_ask_s")))),
        ("Round-trip cost", _e(run.get("total_cost"))),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts if v)

    sim_banner = (
        '<div class="sim">SIMULATOR RUN — this says nothing about the real IB gateway.</div>'
        if simulated
        else ""
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        sim_banner,
        f"<dl>{dl}</dl>",
        "<h2>Phases</h2>",
        _generic_table(
            phases,
            ["phase", "name", "verdict", "reason", "duration_s", "started_at", "metrics"],
            "No phase recorded.",
            # Shown in their own tables below when given; run_id is in the header.
            hide=["run_id"]
            + (["checkpoints"] if checkpoints else [])
            + (["errors"] if events else []),
        ),
        "<h2>Checkpoints</h2>",
        _generic_table(
            checkpoints,
            ["phase", "name", "t_wall", "t_mono", "detail"],
            "No checkpoint recorded.",
        ),
        "<h2>Errors and events</h2>",
        _generic_table(
            events,
            ["t_wall", "phase", "kind", "code", "message", "req_id"],
            "No error or event recorded.",
        ),
        f"<p><small>Generated {_e(datetime.now(UTC).isoformat(timespec='seconds'))} "
        "by livefire.</small></p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------- console

_STYLE = {
    Verdict.PASS: "bold green",
    Verdict.SKIPPED: "dim",
    Verdict.FAIL: "bold red",
    Verdict.ABORTED: "bold red",
    Verdict.STALLED: "bold yellow",
    Verdict.REFUSED: "bold magenta",
    Verdict.BAD_INPUT: "bold magenta",
}


def _seconds_text(value: Any) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.2f} s"
    return "never"


def console_summary(report: RunReport) -> Group:
    """The run for a person: a title line (it shouts SIMULATOR when the target was the
    simulator), one line per phase (verdict, duration, reason with the IB code) and the
    target, account, time to first bid/ask, cost and the run's reason.

    Plain aligned lines rather than a table: a table must wrap or crop its cells to fit a
    terminal, and an IB message is what a reader greps for. Print it with
    :func:`print_console_summary`, which never cuts a line (the terminal wraps it)."""
    verdict = report.verdict
    if report.target.simulated:
        title = Text.assemble(
            (" SIMULATOR ", "bold black on yellow"),
            " livefire ",
            (str(verdict), _STYLE[verdict]),
            " — not the real gateway",
        )
    else:
        title = Text.assemble("livefire ", (str(verdict), _STYLE[verdict]))

    lines: list[Text] = [title]
    width = max((len(str(p.phase)) for p in report.phases), default=0)
    for p in report.phases:
        reason = p.reason
        codes = [str(e) for e in p.errors if not p.ok and str(e) not in reason]
        if codes:
            reason = f"{reason} ({codes[0]})" if reason else codes[0]
        duration = _seconds_text(p.duration_s) if p.verdict != Verdict.SKIPPED else "-"
        lines.append(
            Text.assemble(
                "  ",
                (f"{p.verdict.mark} {p.verdict!s:<9}", _STYLE[p.verdict]),
                f" {p.phase!s:<{width}} {duration:>8}",
                f"  {reason}" if reason else "",
            )
        )

    facts = [f"Target: {report.target.label}"]
    if not report.target.account:
        # The label names the account when known; otherwise say what the gateway offered.
        facts.append(f"Account: {', '.join(report.target.accounts) or 'not reported'}")
    facts.append(f"Contract: {report.contract}")
    ticks = report.phase(Phase.TICKS)
    if ticks is not None and ticks.verdict != Verdict.SKIPPED:
        facts.append(
            f"First bid: {_seconds_text(ticks.metrics.get('first_bid_s'))}, "
            f"first ask: {_seconds_text(ticks.metrics.get('first_ask_s'))}"
            + (
                f", market data type {ticks.metrics['market_data_type']}"
                if ticks.metrics.get("market_data_type") is not None
                else ""
            )
        )
    cost = report.metric("total_cost")
    if cost is not None:
        facts.append(f"Round-trip cost: {cost} {report.metric('currency') or ''}".rstrip())
    if failed := report.failed_stack_checks():
        # The stack phase's line names the first; a reader needs every one (and each kind).
        facts.append(f"Failed stack check(s): {', '.join(failed)}")
    facts.append(f"Run {report.run_id}: {report.reason}")
    lines.extend(Text(line) for line in facts)
    return Group(*lines)


def print_console_summary(report: RunReport, console: Console) -> None:
    """Print :func:`console_summary` whole: no line is wrapped or cropped by rich, so a
    narrow terminal wraps it and a pipe or a log file gets each line intact."""
    console.print(console_summary(report), soft_wrap=True, highlight=False)
