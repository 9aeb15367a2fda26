"""The drill report: JSON (schema generated from these dataclasses) and the store.

A `harness drill` invocation is recorded as one run in the store (``simulated`` true,
scenario ``drill``, phases ``["drill"]``), its reactions in ``drill_results`` and what the
stack showed in ``stack_observations``, all through the :class:`~harness_lib.recorder.Recorder`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness_lib.models import Target, Verdict

from .run import DrillOutcome

__all__ = [
    "DRILL_SCHEMA_VERSION",
    "DrillReport",
    "drill_report",
    "drill_schema",
    "record",
    "write_json",
]

DRILL_SCHEMA_VERSION = 1


@dataclass(slots=True)
class ReactionRow:
    """One reaction of one drill on one endpoint."""

    reaction: str
    """The reaction's name (see `harness drill --list`)."""
    endpoint: str
    """The stack endpoint judged, or 'gateway' for what the simulator itself saw."""
    deadline_s: float | None
    """The deadline in seconds; null when the reaction has none."""
    latency_s: float | None
    """Measured seconds from the fault (or recovery) to the reaction; null if not seen."""
    verdict: str
    """PASS, FAIL, STALLED or SKIPPED."""
    detail: str
    """What was observed, in one line."""


@dataclass(slots=True)
class DrillRow:
    """One drill: the fault, when it happened and recovered, and its reactions."""

    drill: str
    """The drill's name."""
    verdict: str
    """FAIL if any reaction failed, STALLED if the stack never showed live, else PASS."""
    t_fault: float | None
    """Epoch seconds the simulator applied the fault."""
    t_recover: float | None
    """Epoch seconds the simulator recovered."""
    note: str
    """Why the drill could not run, if it could not."""
    reactions: list[ReactionRow] = field(default_factory=list)
    """Every reaction x endpoint."""


@dataclass(slots=True)
class DrillReport:
    """What one `harness drill` concluded about a stack under faults."""

    run_id: str
    """The run's id in the store."""
    verdict: str
    """The overall verdict: FAIL over STALLED over PASS."""
    exit_code: int
    """0 pass, 1 fail, 2 stalled (3 refused and 4 bad input write no report)."""
    started_at: float
    """Epoch seconds."""
    finished_at: float
    """Epoch seconds."""
    simulator: dict[str, Any]
    """The control channel's identity of the simulator (drills run only against it)."""
    drills: list[DrillRow] = field(default_factory=list)
    """Every drill, in the order run."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


@functools.cache
def drill_schema() -> dict[str, Any]:
    """JSON Schema of the drill report, generated from :class:`DrillReport`."""
    from harness_lib.docschema import object_schema

    doc = object_schema(DrillReport)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:livefire:drill-report:{DRILL_SCHEMA_VERSION}",
        "title": "livefire drill report",
        "description": "Fault x reaction x latency x verdict of one `harness drill`.",
        "type": "object",
        "required": ["schema_version", *doc["required"]],
        "additionalProperties": False,
        "properties": {
            "schema_version": {"const": DRILL_SCHEMA_VERSION},
            **doc["properties"],
        },
    }


def drill_report(
    outcomes: list[DrillOutcome],
    identity: dict[str, Any],
    verdict: Verdict,
    *,
    started_at: float,
    run_id: str | None = None,
) -> DrillReport:
    """The report of a sequence of drills."""
    return DrillReport(
        run_id=run_id or f"drill-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        verdict=verdict.value,
        exit_code=int(verdict.exit_code),
        started_at=started_at,
        finished_at=time.time(),
        simulator=dict(identity),
        drills=[
            DrillRow(
                drill=o.drill,
                verdict=o.verdict.value,
                t_fault=o.t_fault,
                t_recover=o.t_recover,
                note=o.note,
                reactions=[
                    ReactionRow(
                        r.reaction,
                        r.endpoint,
                        r.deadline,
                        r.latency,
                        r.verdict.value,
                        r.detail,
                    )
                    for r in o.results
                ],
            )
            for o in outcomes
        ],
    )


def write_json(report: DrillReport, path: Path) -> Path:
    """Write the report (with ``schema_version`` first) to ``path`` atomically."""
    from harness_lib.files import atomic_write_text

    doc = {"schema_version": DRILL_SCHEMA_VERSION, **report.to_dict()}
    atomic_write_text(Path(path), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return Path(path)


def record(report: DrillReport, store_path: Path, observations: list[Any]) -> list[str]:
    """Store the drills as one run through the Recorder; returns the writes lost (if the
    store could not take them: the verdict stands, the report says so)."""
    from harness_lib.recorder import Recorder
    from harness_lib.store import Store, StoreError

    try:
        store = Store(store_path)
    except StoreError as exc:
        return [f"store not opened ({exc})"]
    with store:
        rec = Recorder(report.run_id, store)
        ident = report.simulator
        rec.start_run(
            Target(
                host=str(ident.get("ib_host", "127.0.0.1")),
                port=int(ident.get("ib_port", 0)),
                client_id=0,
                simulated=True,
                scenario="drill",
                accounts=list(ident.get("accounts", [])),
            ),
            contract="",
            phases=["drill"],
            config={"drills": [d.drill for d in report.drills]},
            started_at=datetime.fromtimestamp(report.started_at, UTC),
        )
        for obs in observations:
            rec.stack_observation(obs)
        for d in report.drills:
            for r in d.reactions:
                row = {"drill": d.drill, **dataclasses.asdict(r)}
                rec.drill_result({**row, "t_fault": d.t_fault, "t_recover": d.t_recover})
        rec.finish_drills(verdict=report.verdict, reason="", exit_code=report.exit_code)
        return [text for _, text in rec.losses]
