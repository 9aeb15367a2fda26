"""Fault drills: a named fault on a running simulator, and the stack's declared reactions.

``catalog`` declares the drills and reactions, ``judge`` turns observations into verdicts
(pure), ``run`` drives the simulator's control channel and the stack watchers, ``report``
prints and records the results. `harness drill` (cli.py) and the pytest plugin use them.
"""

from .catalog import DRILLS, REACTIONS, Drill, Reaction, select
from .judge import ReactionResult
from .run import ControlClient, ControlUnreachable, DrillOutcome, DrillRefused, DrillSession

__all__ = [
    "DRILLS",
    "REACTIONS",
    "ControlClient",
    "ControlUnreachable",
    "Drill",
    "DrillOutcome",
    "DrillRefused",
    "DrillSession",
    "Reaction",
    "ReactionResult",
    "select",
]
