"""The --slow switch, the fast-test list and MicroPython script runners. The fixtures
(`micropython`, `broker`, `agents`, `collector`, `vboard`, `capture_replay`, `simulator`) come
from the project's own pytest plugin, host_tools/testing (docs/TESTING.md)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from host_tools.paths import edge_root, micropython_path, mp_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # A checkout whose .venv was installed before the plugin's entry point existed has not
    # registered it (`make venv` does): load it by module so the fixtures are there anyway.
    if not config.pluginmanager.has_plugin("edge"):
        config.pluginmanager.import_plugin("host_tools.testing.plugin")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


# `make test-fast` (pytest -m fast): the modules that need no broker, no running agent, no
# virtual board and no fuzzing campaign: lint and types, the host/edge boundary, the shared
# contract vectors (CPython and one MicroPython run each), config and board files, the bus
# parsers. Under a minute on this project's 2-core machine; `make test` runs everything.
FAST_MODULES = {
    "test_lint",
    "test_stub_typecheck",
    "test_boundary",
    "test_wire",
    "test_codec",
    "test_config",
    "test_schema",
    "test_boards",
    "test_bus_line",
    "test_bus_modbus",
    "test_bus_tuya",
    "test_bus_tuya_variants",
    "test_bus_config",
    "test_sensors_deadband",
}


def pytest_collection_modifyitems(config, items):
    fast = pytest.mark.fast
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in FAST_MODULES:
            item.add_marker(fast)
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_mp(
    script: str, *args: str, heap: str = "1M", timeout: float = 120, input: str | None = None
):
    """Run a MicroPython script file (path) with the repo's `edge` on the import path."""
    env = mp_env()
    env["MICROPYPATH"] = ".frozen:" + edge_root() + ":" + os.path.join(ROOT, "tests", "mp")
    return subprocess.run(
        [micropython_path(), "-X", f"heapsize={heap}", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=input,
    )


def mp_json(script: str, *args: str, **kw):
    """Run a MicroPython script whose last stdout line is JSON; return it parsed."""
    r = run_mp(script, *args, **kw)
    if r.returncode == 0 and not r.stdout.strip():
        # Seen once in CI under load: exit status 0 and no output at all (the wheel's in-process
        # runner, not the script: every script here prints its JSON last). One rerun tells a
        # lost stdout from a script that prints nothing, which still fails below.
        r = run_mp(script, *args, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing (exit 0); stderr: {r.stderr!r}"
    return json.loads(lines[-1])
