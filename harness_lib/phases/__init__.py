"""The four phases. Each is an async function of a RunContext returning a PhaseResult,
so it can be called on its own from a notebook, a script or a user's test."""

from .base import PhaseRun, RunContext, new_run_id
from .cleanup import cleanup, sweep
from .health import health
from .round_trip import round_trip
from .ticks import ticks

__all__ = [
    "PhaseRun",
    "RunContext",
    "cleanup",
    "health",
    "new_run_id",
    "round_trip",
    "sweep",
    "ticks",
]
