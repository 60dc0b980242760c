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
