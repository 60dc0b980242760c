"""100,000 fuzzed inputs per bus parser (issue 6 item 9) in-process under CPython, and a
smaller run of the same driver (tests/mp/fuzz_bus.py) under unix MicroPython. Every case is
followed by a known-good message that must decode exactly (resynchronisation)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "mp"))

import fuzz_bus  # noqa: E402

N = 100_000


@pytest.mark.parametrize("name", ["line", "tuya", "modbus"])
def test_fuzz_100k_cpython(name):
    res = getattr(fuzz_bus, "fuzz_" + name)(N)
    assert res["cases"] == N
    assert res["errors"] > N // 10  # the fuzz really produced rejected input


def test_fuzz_under_micropython():
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    env = dict(os.environ, MICROPYPATH=ROOT + ":" + os.path.join(HERE, "mp"))
    r = subprocess.run(
        [mp, os.path.join(HERE, "mp", "fuzz_bus.py"), "20000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split("\n")
    for name in ("line", "tuya", "modbus"):
        assert any(ln.startswith(name + " ") and "'cases': 20000" in ln for ln in lines), r.stdout
