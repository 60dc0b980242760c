"""`edgectl bench inputs`: parser throughput under unix MicroPython (host_tools/bench/mp/
inputs_bench.py): readings per second of the line (kv, csv), Tuya and Modbus parsers fed in
64-byte UART reads, against a copy-only loop over the same reads run in the same process (the
cost floor of reading the UART), and against the ingest target (DESIGN 6: 50,000 readings/s for
sample, consent, append and commit together, so a parser must leave room for the rest)."""

from __future__ import annotations

import json
import os
import subprocess

from host_tools.errors import ToolError
from host_tools.paths import micropython_path, mp_env

SCRIPT = os.path.join(os.path.dirname(__file__), "mp", "inputs_bench.py")
INGEST_TARGET = 50_000


def bench_inputs(args) -> dict:
    secs = os.environ.get("EDGE_BENCH_INPUTS_SECONDS", "2")
    p = subprocess.run(
        [micropython_path(), "-X", "heapsize=4M", SCRIPT, secs],
        capture_output=True,
        text=True,
        env=mp_env(),
        timeout=600,
    )
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("@bench ")]
    if p.returncode != 0 or not line:
        raise ToolError(f"inputs bench failed: {(p.stdout + p.stderr).strip()[-300:]}")
    r = json.loads(line[-1][7:])
    out = dict(sorted(r.items()))
    out["line_kv_vs_copy"] = round(r["line_kv_bytes_per_s"] / r["copy_only_bytes_per_s"], 4)
    out["tuya_vs_copy"] = round(r["tuya_bytes_per_s"] / r["copy_only_bytes_per_s"], 4)
    for k in ("line_kv", "line_csv", "tuya", "modbus"):
        out[f"{k}_vs_ingest_target"] = round(r[f"{k}_readings_per_s"] / INGEST_TARGET, 2)
    return out
