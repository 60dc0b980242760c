"""`edgectl bench update`: an over-the-air update of the real agent (unix MicroPython, booted from
slots like a board) through a 20 ms RTT link (host_tools/backend/proxy.py), three runs in one:

- wire: no telemetry, chunk window 4: bytes on the wire both ways per update, against the
  bundle's size;
- baseline: the same with a window of one chunk (subscribe, wait, write, next): the time a
  stop-and-wait download takes, for the ratio;
- busy: the agent forwards readings all along: readings acknowledged per second before the
  update and while it downloads (forwarding must not stop), and how many.

Plus the device's costs, measured under unix MicroPython (64-bit: about twice an ESP32's sizes):
the release signature's verification time, the heap the update code takes while an update runs
(it is unloaded afterwards), and what the parsed manifest keeps. Times are seconds from `cmd/update`
to `installed` (download, verify, write) and to `confirmed` (reboot, trial, self-check).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools.agent.run import AgentProcess, agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.connect import ConnectOptions
from host_tools.backend.proxy import FaultProxy
from host_tools.errors import ToolError
from host_tools.ota import update as up
from host_tools.ota.keys import ReleaseKey
from host_tools.ota.release import build_bundle
from host_tools.paths import edge_root, micropython_path

RTT_MS = 20
RATE_HZ = 300  # simulated readings per second in the busy run (a third of them essential)

# heap of the update code and one verification, measured in MicroPython
_PROBE = """
import gc, json, time
gc.collect()
a0 = gc.mem_alloc()
from edge import bundle, lms
from edge.ota import install, remote, updater, slots, trial
gc.collect()
code = gc.mem_alloc() - a0
data = open(BUNDLE, 'rb').read()
pub = open(PUB, 'rb').read()
mlen, slen = bundle.parse_header(data)
raw = data[12:12 + mlen]
sig = data[12 + mlen:12 + mlen + slen]
gc.collect()
a1 = gc.mem_alloc()
t = time.ticks_us()
m = bundle.parse_manifest(raw)
ok = bundle.verify(pub, raw, sig)
us = time.ticks_diff(time.ticks_us(), t)
gc.collect()
print(json.dumps({"ok": ok, "verify_us": us, "code": code, "manifest": gc.mem_alloc() - a1,
                  "files": len(m["files"])}))
"""


def _probe(bundle_path: Path, pub_path: Path) -> dict:
    script = f"BUNDLE = {str(bundle_path)!r}\nPUB = {str(pub_path)!r}\n" + _PROBE
    r = subprocess.run(
        [micropython_path(), "-X", "heapsize=1M", "-c", script],
        capture_output=True,
        text=True,
        env={"MICROPYPATH": ".frozen:" + edge_root()},
        timeout=60,
    )
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ToolError(f"update probe failed: {(r.stdout + r.stderr)[-300:]}") from None


def _run(broker, proxy, d: Path, name: str, bundle: Path, pub: bytes, window: int, rate: int):
    """One agent behind the proxy, one update; returns the figures of this run."""
    cfg = agent_config(
        "unix-sim",
        device_id=name,
        mqtt={"port": proxy.port},
        sim={"rate_hz": rate},
        ota={"window": window, "settle_ms": 1000},
    )
    agent = AgentProcess(cfg, root=True, workdir=str(d / name), secrets={"release.pub": pub})
    agent.start()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end and not agent.stats.get("reconnects"):
            time.sleep(0.1)
        time.sleep(3.0)  # forwarding settles
        s0, t0 = agent.stats.get("acked", 0), time.monotonic()
        time.sleep(2.0)
        before = (agent.stats.get("acked", 0) - s0) / (time.monotonic() - t0)
        marks: dict[str, float] = {}
        acked: dict[str, int] = {}
        b0 = (proxy.stats["bytes_up"], proxy.stats["bytes_down"])

        def progress(offset: int, size: int, state: str) -> None:
            if state not in marks:
                marks[state] = time.monotonic()
                acked[state] = agent.stats.get("acked", 0)
                if state == "installed":
                    marks["bytes_up"] = proxy.stats["bytes_up"] - b0[0]
                    marks["bytes_down"] = proxy.stats["bytes_down"] - b0[1]

        t_cmd = time.monotonic()
        o = up.update_device(ConnectOptions(port=broker.port), name, bundle, progress=progress)
        if o.state != "confirmed" or "installed" not in marks:
            raise ToolError(f"update benchmark: {name}: {o.state}: {o.error}")
        first = "accepted" if "accepted" in marks else "downloading"
        during_s = marks["installed"] - marks[first]
        during = acked["installed"] - acked[first]
        return {
            "installed_s": round(marks["installed"] - t_cmd, 3),
            "download_s": round(during_s, 3),
            "confirmed_s": round(o.seconds, 3),
            "bytes_up": int(marks["bytes_up"]),
            "bytes_down": int(marks["bytes_down"]),
            "acked_per_s_before": round(before, 1),
            "acked_per_s_during": round(during / during_s, 1) if during_s > 0 else 0.0,
            "acked_during": during,
        }
    finally:
        agent.cleanup()


def bench_update(args: argparse.Namespace | None = None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-update-"))
    try:
        key = ReleaseKey.generate(tmp / "release.json", 5)
        (tmp / "release.pub").write_bytes(key.public())
        rel = build_bundle("unix-sim", "1.1.0", tmp / "release.json", tmp / "v110.bundle")
        probe = _probe(rel.path, tmp / "release.pub")
        with broker_mod.start() as broker, FaultProxy(broker.port, rtt_ms=RTT_MS) as proxy:
            pub = key.public()
            wire = _run(broker, proxy, tmp, "bench-wire", rel.path, pub, 4, 0)
            base = _run(broker, proxy, tmp, "bench-stopwait", rel.path, pub, 1, 0)
            busy = _run(broker, proxy, tmp, "bench-busy", rel.path, pub, 4, RATE_HZ)
        wire_total = wire["bytes_up"] + wire["bytes_down"]
        return {
            "rtt_ms": RTT_MS,
            "bundle_bytes": rel.bytes,
            "bundle_files": rel.files,
            "chunks": (rel.bytes + 1023) // 1024,
            "wire_bytes_down": wire["bytes_down"],
            "wire_bytes_up": wire["bytes_up"],
            "wire_bytes_per_update": wire_total,
            "wire_overhead_ratio": round(wire_total / rel.bytes, 3),
            "installed_s": wire["installed_s"],
            "download_s": wire["download_s"],
            "confirmed_s": wire["confirmed_s"],
            "baseline_window1_download_s": base["download_s"],
            "speedup_vs_window1": round(base["download_s"] / wire["download_s"], 2),
            "readings_forwarded_during_update": busy["acked_during"],
            "acked_per_s_before_update": busy["acked_per_s_before"],
            "acked_per_s_during_update": busy["acked_per_s_during"],
            "forwarding_ratio_during_vs_before": round(
                busy["acked_per_s_during"] / busy["acked_per_s_before"], 3
            )
            if busy["acked_per_s_before"]
            else 0.0,
            "busy_installed_s": busy["installed_s"],
            "verify_ms_unix": round(probe["verify_us"] / 1000, 3),
            "update_code_heap_bytes": probe["code"],
            "manifest_heap_bytes": probe["manifest"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
