"""ruff over the whole tree (configuration in pyproject.toml), so `make test` keeps it clean."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_ruff_is_clean():
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    r = subprocess.run([ruff, "check", "edge", "host_tools", "tests"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
