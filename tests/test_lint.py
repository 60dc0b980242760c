"""ruff lint and ruff format over the whole tree (configuration in pyproject.toml), so
`make test` keeps both clean."""

import os
import subprocess
import sys

from tests.conftest import ROOT

RUFF = os.path.join(os.path.dirname(sys.executable), "ruff")
TREES = ["edge", "host_tools", "tests"]


def test_ruff_is_clean():
    r = subprocess.run([RUFF, "check", *TREES], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = subprocess.run(
        [RUFF, "format", "--check", *TREES], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
