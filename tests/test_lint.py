"""The tree's habits, checked by `make test` and by the pre-commit hooks
(.pre-commit-config.yaml) with the same configuration (pyproject.toml): ruff lint, ruff format,
mypy over host_tools, codespell over code and docs."""

import os
import subprocess
import sys

from tests.conftest import ROOT

BIN = os.path.dirname(sys.executable)
TREES = ["edge", "host_tools", "tests"]
# what codespell reads (binary captures, images and vectors are skipped in pyproject.toml)
SPELLED = [*TREES, "docs", "boards", "samples", "README.md", "Makefile", "pyproject.toml", ".ci"]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, tool), *args], cwd=ROOT, capture_output=True, text=True
    )


def test_ruff_is_clean():
    r = _run("ruff", "check", *TREES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format_is_applied():
    r = _run("ruff", "format", "--check", *TREES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_host_tools():
    """mypy over host_tools ([tool.mypy]; edge/ is checked against the MicroPython stubs in
    tests/test_stub_typecheck.py)."""
    r = _run("mypy")
    assert r.returncode == 0, r.stdout + r.stderr


def test_codespell():
    r = _run("codespell", *[p for p in SPELLED if os.path.exists(os.path.join(ROOT, p))])
    assert r.returncode == 0, r.stdout + r.stderr
