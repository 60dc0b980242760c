"""100,000 fuzzed inputs per bus parser in-process under CPython, and a smaller run of the
same driver (tests/mp/fuzz_bus.py) under unix MicroPython. Every case is followed by a
known-good message that must decode exactly (resynchronisation), and the byte ledger must add
up after every case and leave nothing pending after a flush (decoded + unhandled + rejected +
garbage = fed)."""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "mp"))

import fuzz_bus  # noqa: E402

N = 100_000


RUNS = {
    "line": lambda n: fuzz_bus.fuzz_line(n),
    "formats": lambda n: fuzz_bus.fuzz_line_formats(n),
    "tuya": lambda n: fuzz_bus.fuzz_tuya(n),
    "lowpower": lambda n: fuzz_bus.fuzz_tuya(n, 5, "low_power"),
    "modbus": lambda n: fuzz_bus.fuzz_modbus(n),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fuzz_100k_cpython(name):
    res = RUNS[name](N)
    assert res["cases"] == N
    assert res["errors"] > N // 10  # the fuzz really produced rejected input
    b = res.get("bytes")
    if b is not None:  # the ledger balanced (checked per case inside); all buckets used
        assert b["pending"] == 0 and b["rejected"] and b["garbage"] and b["decoded"]
        assert b["fed"] == b["decoded"] + b["unhandled"] + b["rejected"] + b["garbage"]


def test_ledger_check_catches_a_lost_byte():
    """The invariant the fuzz enforces fails when a parser drops a byte unaccounted."""
    from edge.bus.line import LineParser

    p = LineParser({"keys": {"A": 1}})
    p.feed(b"A=1\n", 4, lambda c, v: None)
    p.ledger.decoded -= 1
    with pytest.raises(RuntimeError, match="pending"):
        fuzz_bus.finish(p, "line", {})


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
    for name in RUNS:
        assert any(ln.startswith(name + " ") and "'cases': 20000" in ln for ln in lines), r.stdout


def test_inputs_bench_runs_and_reports_every_parser(monkeypatch):
    """`edgectl bench inputs` (figures only; speed is never asserted in a unit test)."""
    from host_tools.bench import inputs

    monkeypatch.setenv("EDGE_BENCH_INPUTS_SECONDS", "0.2")
    r = inputs.bench_inputs(None)
    for k in ("line_kv", "line_csv", "tuya", "modbus"):
        assert r[f"{k}_readings_per_s"] > 0 and f"{k}_vs_ingest_target" in r
    assert r["copy_only_bytes_per_s"] > r["line_kv_bytes_per_s"] > 0
