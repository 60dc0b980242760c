"""The pytest plugin of edge-telemetry (entry point `pytest11: edge`): fixtures that run the
real agent under unix MicroPython against a real broker and collector, a virtual board, a
capture replay and a simulator, for tests of an appliance config (docs/TESTING.md).

Import the helpers from here: `from host_tools.testing import Reading, assert_readings`."""

from host_tools.testing.fixtures import (
    Agents,
    CaptureReplay,
    Reading,
    ReplayOutcome,
    Simulator,
    TestCollector,
    VBoards,
    assert_readings,
)

__all__ = [
    "Agents",
    "CaptureReplay",
    "Reading",
    "ReplayOutcome",
    "Simulator",
    "TestCollector",
    "VBoards",
    "assert_readings",
]
