"""Tables and constants more than one module needs, each defined once here.

The rules with a module of their own live there: quote fields, market data type names
and what counts as a real value in :mod:`harness_lib.quotes`; IB's paper and live ports
in :mod:`harness_lib.safety`; exit codes on :class:`harness_lib.models.Verdict`; secret
redaction in :mod:`harness_lib.redact`; side words and net positions in
:mod:`harness_lib.positions`.
"""

from __future__ import annotations

from pathlib import Path

from harness_lib.models import Verdict

__all__ = ["DEFAULT_STORE", "NOTIFY_ON", "VERDICT_COLOURS"]

DEFAULT_STORE = Path("data/harness.sqlite")
"""Where runs are recorded unless told otherwise (relative to the working directory)."""

NOTIFY_ON: tuple[str, ...] = ("fail", "always", "change")
"""When to notify: on a non-passing run, after every run, or when the verdict changed."""

VERDICT_COLOURS: dict[str, str] = {
    Verdict.PASS.value: "#1b7f3b",
    Verdict.FAIL.value: "#b91c1c",
    Verdict.STALLED.value: "#b45309",
    Verdict.REFUSED.value: "#7c3aed",
    Verdict.ABORTED.value: "#374151",
    Verdict.BAD_INPUT.value: "#8c564b",
    Verdict.SKIPPED.value: "#6b7280",
    "OTHER": "#0e7490",
}
"""One colour per verdict for charts, HTML badges and exports. Dark enough for white
text on top (the HTML badges) and for marks on a white chart; anything not a known
verdict shows as OTHER rather than borrowing a known verdict's colour."""
