"""The pytest plugin (host_tools/testing, entry point `pytest11: edge`, docs/TESTING.md): the
example downstream tests in docs/examples/appliance-tests run as a user's project would, in a
directory outside this repository with only the installed package; with the plugin turned off
they cannot find their fixtures (so it is the entry point that provides them)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "docs", "examples", "appliance-tests")


def _downstream(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    for name in os.listdir(EXAMPLE):
        shutil.copy(os.path.join(EXAMPLE, name), tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", ".", *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_example_uses_only_the_public_plugin():
    tree = ast.parse(open(os.path.join(EXAMPLE, "test_fridge_config.py")).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert imported == {"json", "pathlib", "host_tools.testing"}, imported


def test_downstream_tests_pass_with_the_plugin(tmp_path, micropython):
    r = _downstream(tmp_path)
    assert r.returncode == 0 and "3 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_without_the_plugin_the_fixtures_are_missing(tmp_path):
    r = _downstream(tmp_path, "-p", "no:edge", "-k", "replayed")
    assert r.returncode != 0 and "fixture 'capture_replay' not found" in r.stdout, r.stdout


def test_the_vboard_fixture_gives_a_board_that_answers(vboard):
    """`vboard()`: a virtual board whose port answers at the REPL, as mpremote sees it."""
    import time

    import serial

    board = vboard()
    assert os.path.islink(board.port) and os.path.exists(board.image)
    with serial.serial_for_url(board.port, timeout=0.2) as port:
        seen = b""
        deadline = time.monotonic() + 30
        while b">>> " not in seen and time.monotonic() < deadline:
            port.write(b"\r\n")
            seen += port.read(256)
        port.write(b"print(6 * 7)\r\n")
        while b"42" not in seen and time.monotonic() < deadline:
            seen += port.read(256)
    assert b"42" in seen, seen[-300:]


def test_the_collector_fixture_names_what_the_agent_sends(agents, collector):
    """`agents.config()` aims an agent at the session broker; `collector` names its readings
    by the channel names the device declared (the simulated fridge of the unix-sim board)."""
    from host_tools.testing import assert_readings

    cfg = agents.config({"device_id": "plugin-0001"}, sim={"count": 40, "rate_hz": 200})
    agents(cfg)
    got = collector.wait_for_readings(5, device="plugin-0001")
    assert all(r.name and r.category for r in got), got[:3]
    cabinet = collector.readings("plugin-0001", "cabinet_temp_cC")
    assert cabinet and {r.channel for r in cabinet} == {1}
    assert_readings(cabinet, at_least=1, between=(-4000, 10000))
