"""`edgectl bench replay`: a synthetic capture of one fridge frame per second (default 24 h)
replayed twice through the agent with a virtual clock (docs/REPLAY.md 3). Reports the seconds each
run took, the speed-up over real time (the capture's own duration is the baseline) and whether the
two runs gave identical collector output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from host_tools.captures import simulate
from host_tools.errors import ToolError
from host_tools.paths import edge_root


def bench_replay(args) -> dict:
    hours = float(os.environ.get("EDGE_BENCH_REPLAY_HOURS", "24"))
    frames = int(hours * 3600)
    config = os.path.join(edge_root(), "samples", "fridge-line.agent.json")
    if not os.path.exists(config):
        raise ToolError(f"sample device config missing: {config}")
    with tempfile.TemporaryDirectory(prefix="edge-bench-replay-") as d:
        cap = os.path.join(d, "day.ecap")
        simulate.simulate("fridge", cap, frames)
        runs = []
        for _ in range(2):
            t0 = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "host_tools",
                    "replay",
                    cap,
                    "--agent",
                    "unix-sim",
                    "--config",
                    config,
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=1800,
            )
            if proc.returncode != 0:
                raise ToolError(f"replay failed: {proc.stderr.strip()[-300:]}")
            runs.append((time.monotonic() - t0, json.loads(proc.stdout.strip().splitlines()[-1])))
    slow = max(r[0] for r in runs)
    return {
        "capture_hours": hours,
        "frames": runs[0][1]["frames"],
        "readings": runs[0][1]["readings"],
        "run1_s": round(runs[0][0], 2),
        "run2_s": round(runs[1][0], 2),
        "seconds": round(slow, 2),
        "speedup_vs_real_time": round(frames / slow, 1),
        "identical": runs[0][1]["digest"] == runs[1][1]["digest"],
        "digest": runs[0][1]["digest"],
    }
