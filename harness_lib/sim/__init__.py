"""The paper-gateway simulator: IB's TWS wire protocol on loopback, with named scenarios."""

from .scenarios import Scenario, ScenarioParams, parse_scenario
from .server import (
    DEFAULT_ACCOUNT,
    DEFAULT_PORT,
    SIM_MARKER,
    PaperGateway,
    ThreadedGateway,
)
from .truth import GroundTruth, ReceivedOrder, SentTick

__all__ = [
    "DEFAULT_ACCOUNT",
    "DEFAULT_PORT",
    "SIM_MARKER",
    "GroundTruth",
    "PaperGateway",
    "ReceivedOrder",
    "Scenario",
    "ScenarioParams",
    "SentTick",
    "ThreadedGateway",
    "parse_scenario",
]
