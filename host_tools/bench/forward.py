"""`edgectl bench forward` and `edgectl bench memory` (docs/MQTT.md 6).

Both drive the real `edge` modules under unix MicroPython (host_tools/bench/mp/fwd_bench.py)
against mosquitto started by host_tools.backend.broker; the 20 ms RTT runs go through
host_tools.backend.proxy. Sizes can be lowered for tests with EDGE_BENCH_SCALE (a float, default
1.0)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from host_tools.backend import broker as broker_mod
from host_tools.backend.proxy import FaultProxy
from host_tools.bench import heap32, tlsheap
from host_tools.errors import ToolError
from host_tools.paths import local_mpy, micropython_path, mp_env

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp", "fwd_bench.py")
BATCH = 250  # readings per PUBLISH (config batch.max_readings)
WINDOW = 8  # QoS 1 PUBLISHes in flight (config mqtt.window, the default)


def _scale(n: int) -> int:
    return max(int(n * float(os.environ.get("EDGE_BENCH_SCALE", "1.0"))), 100)


def run_mp(
    mode: str,
    port: int | str,
    readings: int,
    batch: int,
    window: int,
    heap: str = "4M",
    timeout: float = 600,
    fmt: int = 0,
) -> dict:
    """Run the MicroPython bench script once; returns its `@bench` figures."""
    work = tempfile.mkdtemp(prefix="edge-bench-")
    cmd = [
        micropython_path(),
        "-X",
        f"heapsize={heap}",
        SCRIPT,
        mode,
        "127.0.0.1",
        str(port),
        str(readings),
        str(batch),
        str(window),
        work,
        str(fmt),  # 0: the config's default
    ]
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=mp_env(), timeout=timeout, cwd=work
        )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"bench {mode} did not finish within {timeout} s") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in p.stdout.splitlines():
        if line.startswith("@bench "):
            return json.loads(line[7:])
    tail = "\n".join(p.stdout.splitlines()[-10:])
    raise ToolError(f"bench {mode} failed (exit {p.returncode}): {p.stderr.strip()} {tail}")


def bench_forward(args=None) -> dict:
    """Loopback and 20 ms RTT forwarding rates, the stop-and-wait baseline, wire bytes of both
    batch formats (docs/FORMAT.md 3), and the format 2 encoder on its own."""
    with broker_mod.start(prefer="mosquitto") as b:
        n = _scale(200_000)
        loop = run_mp("forward", b.port, n, BATCH, WINDOW, fmt=2)
        loop1 = run_mp("forward", b.port, n, BATCH, WINDOW, fmt=1)
        with FaultProxy(b.port, rtt_ms=20).start() as px:
            rtt = run_mp("forward", px.port, _scale(100_000), BATCH, WINDOW, fmt=2)
            # the baseline umqtt.simple and mqtt_as embody: one reading per PUBLISH, QoS 1,
            # wait for each PUBACK (window 1)
            base = run_mp("forward", px.port, _scale(300), 1, 1)
    enc = {f: run_mp("encode", 0, _scale(100_000), 100, 0, fmt=f) for f in (1, 2)}
    return {
        "loopback_readings": loop["readings"],
        "loopback_readings_per_s": loop["readings_per_s"],
        "loopback_v1_readings_per_s": loop1["readings_per_s"],
        "rtt20_readings_per_s": rtt["readings_per_s"],
        "rtt20_baseline_readings_per_s": base["readings_per_s"],
        "rtt20_ratio": round(rtt["readings_per_s"] / max(base["readings_per_s"], 1), 1),
        "wire_bytes_per_reading": round(loop["tx_bytes"] / loop["readings"], 2),  # format 2
        "wire_bytes_per_reading_v1": round(loop1["tx_bytes"] / loop1["readings"], 2),
        "baseline_wire_bytes_per_reading": round(base["tx_bytes"] / base["readings"], 2),
        "batch_readings": BATCH,
        "window": WINDOW,
        # the writer alone, 100-reading batches of six drifting channels (fwd_bench.py encode)
        "encode_v1_readings_per_s": enc[1]["readings_per_s"],
        "encode_v2_readings_per_s": enc[2]["readings_per_s"],
        "encode_v1_payload_bytes_per_reading": round(enc[1]["payload_bytes_per_reading"], 2),
        "encode_v2_payload_bytes_per_reading": round(enc[2]["payload_bytes_per_reading"], 2),
        "encode_v2_alloc_bytes_per_batch": enc[2]["alloc_bytes_per_batch"],
    }


def bench_memory(args=None) -> dict:
    """Code heap and data-path working set over 1,000,000 readings (sample->store->forward).

    code_heap_bytes: every module the agent imports, loaded before it starts (late_imports
    lists any module loaded afterwards, whose code would then count as working set).
    working_set_bytes: the peak of heap in use after collections beyond the code and beyond
    the emulated flash device (emulated_flash_bytes, reported on its own: it stands in for
    hardware); littlefs's buffers, the store, the client and everything else count.
    startup_bytes: the same measure once the agent is built, before any reading.
    code_heap_bytes_mpy, code_heap_bytes_romfs and heap32_*: the agent's compiled modules
    imported from files and from a ROMFS image, on this port and on the 32-bit WebAssembly
    port (host_tools/bench/heap32.py; docs/MEMORY.md); tls_*: the GC heap of the agent's TLS
    context and one session (host_tools/bench/tlsheap.py)."""
    with broker_mod.start(prefer="mosquitto") as b:
        m = run_mp("memory", b.port, _scale(1_000_000), BATCH, WINDOW, heap="1M", timeout=900)
    two = heap32.measure(_scale(100_000), local_mpy())
    tls = tlsheap.measure()
    return {
        "readings": m["readings"],
        "code_heap_bytes": m["code_heap_bytes"],
        "emulated_flash_bytes": m["emulated_flash_bytes"],
        "startup_bytes": m["startup_bytes"],
        "working_set_bytes": m["working_set_bytes"],
        "working_set_first_bytes": m["working_set_first_bytes"],
        "working_set_last_bytes": m["working_set_last_bytes"],
        "working_set_growth_bytes": m["working_set_growth_bytes"],
        "late_imports": ",".join(m["late_imports"]),
        "readings_per_s": m["readings_per_s"],
        "sampler_held_ms": m["sampler_held_ms"],
        "dropped": sum(m["dropped"].values()),
        "offline_working_set_bytes": m["offline_working_set_bytes"],
        **two,
        **tls,
    }
