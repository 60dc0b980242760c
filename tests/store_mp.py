"""Run the store's MicroPython-side helpers (tests/mp/) under the unix port."""

from __future__ import annotations

import json
import os
import subprocess

from host_tools.paths import edge_root, micropython_path, mp_env

MP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp")


def mp_run(
    script: str, *args: str, heap: str = "4M", timeout: float = 300, cwd: str | None = None
):
    """Run tests/mp/SCRIPT with `edge` and tests/mp importable; returns the CompletedProcess."""
    env = mp_env()
    env["MICROPYPATH"] = ".frozen:" + edge_root() + ":" + MP_DIR
    return subprocess.run(
        [micropython_path(), "-X", f"heapsize={heap}", os.path.join(MP_DIR, script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def mp_last_json(script: str, *args: str, **kw) -> dict:
    """Run a helper whose last stdout line is JSON; fail with its output otherwise."""
    r = mp_run(script, *args, **kw)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
