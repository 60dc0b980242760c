# MicroPython side of `edgectl bench forward|memory` (docs/MQTT.md 6): drives the real edge
# modules. Usage: micropython fwd_bench.py forward HOST PORT N BATCH WINDOW WORKDIR [FORMAT]
#        micropython fwd_bench.py memory HOST PORT N BATCH WINDOW WORKDIR [FORMAT]
#        micropython fwd_bench.py encode - - N BATCH - WORKDIR FORMAT
# FORMAT is the batch payload format (config batch.format, docs/FORMAT.md 3), default: the
# config's default.
# Prints one line `@bench {json}`.

import gc
import sys

gc.collect()
_BASE = gc.mem_alloc()
import asyncio  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import agent_code  # noqa: E402,F401  (every module the agent imports: the code footprint)

from edge import config  # noqa: E402
from edge.agent import Agent  # noqa: E402
from edge.hal import load as load_hal  # noqa: E402
from edge.hal.unix import flashdev  # noqa: E402

gc.collect()
_CODE = gc.mem_alloc() - _BASE
_MODULES = set(sys.modules)  # a module loaded later counts as working set: `late_imports`
_CHUNK = 25000  # readings per fill: 700 KB of records, inside the store's 1 MiB quota


def make_cfg(host, port, n, batch, window, workdir, rate, fmt):
    batch_cfg = {"max_readings": batch, "latency_ms": 5}
    if fmt:
        batch_cfg["format"] = fmt
    return config.load(
        None,
        {
            "device_id": "bench-0001",
            "mqtt": {"host": host, "port": port, "window": window, "keepalive": 30},
            "channels": [{"id": 1, "name": "t", "category": "essential"}],
            "store": {"path": workdir + "/store"},
            "batch": batch_cfg,
            "sim": {"enabled": True, "rate_hz": rate, "count": n},
            "status_ms": 60000,
        },
    )


def quiet(line):
    pass


async def forward(agent, n):
    """Fill the store with committed readings in chunks that fit the emulated flash, and time
    only the forwarding of each chunk until its last reading is acknowledged."""
    tasks = [asyncio.create_task(agent.link.run()), asyncio.create_task(agent.fwd.run())]
    while not agent.client.connected.is_set():
        await asyncio.sleep_ms(5)
    dt = 0
    done = 0
    while done < n:
        k = min(_CHUNK, n - done)
        for i in range(k):
            agent.emit(1, i & 0xFFFF)
        agent.store.commit()
        done += k
        t0 = time.ticks_ms()
        while agent.fwd.stats["acked_readings"] < done:
            await asyncio.sleep_ms(0)
        dt += time.ticks_diff(time.ticks_ms(), t0)
    for t in tasks:
        t.cancel()
    c = agent.client.stats
    return {
        "readings": n,
        "ms": dt,
        "readings_per_s": n * 1000 // max(dt, 1),
        "tx_bytes": c["tx_bytes"],
        "published": c["published"],
        "reconnects": agent.link.stats["sessions"],
        "dropped": agent.store.stats["dropped"],
    }


def flash_heap_bytes(workdir):
    """Heap held by the emulated NOR flash devices the unix HAL opens (edge/hal/unix/flashdev.py,
    file-backed: the littlefs image and the raw log partition): they stand in for hardware, so
    they are measured on their own and left out of the working set (on an ESP32 the flash is
    not on the heap). littlefs's own buffers, open files and the raw log's block table are not
    part of it: they count, as they do on a board."""
    gc.collect()
    a = gc.mem_alloc()
    fs = flashdev.FlashDev(image=workdir + "/probe.img")
    log = flashdev.FlashDev(256, image=workdir + "/probe.log", nor=True)
    gc.collect()
    n = gc.mem_alloc() - a
    import os

    for dev, name in ((fs, "/probe.img"), (log, "/probe.log")):
        dev.close()
        os.remove(workdir + name)
    return n


async def memory(agent, n, flash, hold):
    """Sample, store and forward n readings; heap in use sampled after collections, beyond
    the code and the emulated flash device. The simulator runs at its rate (20,000/s) but is
    held while more than `hold` readings wait for their acknowledgement: on a loaded machine
    the data path may not sustain the rate, and a growing backlog is measured on its own
    (offline_working_set_bytes), not mixed into the data path's working set."""
    tasks = [asyncio.create_task(agent.link.run()), asyncio.create_task(agent.fwd.run())]
    gc.collect()
    start = gc.mem_alloc() - flash
    first = last = 0
    peaks = []
    step = max(n // 20, 1)
    mark = step
    src = agent.sources[0]
    held = 0
    t0 = prev = time.ticks_ms()
    while agent.fwd.stats["acked_readings"] < n:
        t = time.ticks_ms()
        room = hold - (src.emitted - agent.fwd.stats["acked_readings"])
        if room <= 0:
            held += time.ticks_diff(t, prev)
        prev = t
        now = time.ticks_add(t, -held)  # the simulator's clock stands still while held
        src.poll(now, agent.emit, min(max(room, 0), 512))
        agent.store.tick(t)
        if src.done():
            agent.store.commit()
        await asyncio.sleep_ms(0)
        if agent.fwd.stats["acked_readings"] >= mark or (
            src.done() and not agent.store.pending() and agent.fwd.idle()
        ):
            gc.collect()
            used = gc.mem_alloc() - _BASE - _CODE - flash
            peaks.append(used)
            mark += step
            if agent.fwd.idle() and src.done():
                break
    dt = time.ticks_diff(time.ticks_ms(), t0)
    for t in tasks:
        t.cancel()
    k = max(len(peaks) // 10, 1)
    first = max(peaks[:k])
    last = max(peaks[-k:])
    return {
        "readings": agent.fwd.stats["acked_readings"],
        "readings_per_s": agent.fwd.stats["acked_readings"] * 1000 // max(dt, 1),
        "sampler_held_ms": held,
        "code_heap_bytes": _CODE,
        "interp_heap_bytes": _BASE,
        "startup_bytes": start - _BASE - _CODE,
        "emulated_flash_bytes": flash,
        "late_imports": sorted(k for k in sys.modules if k not in _MODULES),
        "working_set_bytes": max(peaks),
        "working_set_first_bytes": first,
        "working_set_last_bytes": last,
        "working_set_growth_bytes": last - first,
        "samples": peaks,
        "dropped": dict(agent.store.stats["dropped"]),  # before offline() fills the quota
        "offline_working_set_bytes": offline(agent, flash),
    }


def offline(agent, flash):
    """Heap in use beyond the code and the flash device with the store's first category at
    its quota and nothing acknowledged: the broker is gone (the store keeps an entry per
    segment file, so its RAM follows the backlog up to the quota)."""
    agent.client._close()
    s = agent.store.streams[0]
    quota = s.quota or agent.store.total_bytes
    i = 0
    peak = 0
    while s.bytes < quota and not agent.store.stats["dropped"]:
        for _ in range(1000):
            agent.emit(1, i & 0xFFFF)
            i += 1
        agent.store.commit()
        gc.collect()
        peak = max(peak, gc.mem_alloc() - _BASE - _CODE - flash)
    return peak


def encode(n, batch, fmt):
    """The batch writer alone (what the forwarder runs per reading and per batch): readings of
    six channels the way an appliance reports them (slow drifts, small steps), and the heap
    allocated while adding and finishing, counted with the collector off."""
    from edge import codec

    if fmt == 2:
        from edge.batchv2 import BatchWriter2

        w = BatchWriter2("bench-0001", batch)
    else:
        w = codec.BatchWriter(
            "bench-0001",
            codec.batch_header_len(b"bench-0001", b"x" * 64, 1) + batch * codec.ENTRY_LEN,
        )
    vals = [412, -1834, 1200, 3, 7, 21]
    seq = 1
    ts = 1795000000000
    size = 0
    alloc = 0
    t0 = time.ticks_us()
    for _b in range(n // batch):
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        w.start("essential", 1, 0)
        for i in range(batch):
            ch = i % 6
            vals[ch] += (seq * 7919) % 31 - 15
            w.add(seq, ts, 1, 0, ch + 1, vals[ch])
            seq += 1
            ts += 167 + (seq & 3)
        size += len(w.finish())
        alloc += gc.mem_alloc() - a0
        gc.enable()
    dt = time.ticks_diff(time.ticks_us(), t0)
    done = (n // batch) * batch
    return {
        "readings": done,
        "readings_per_s": done * 1000000 // max(dt, 1),
        "payload_bytes_per_reading": size / done,
        "alloc_bytes_per_batch": alloc // (n // batch),
    }


def main():
    mode, host, port, n, batch, window, workdir = sys.argv[1:8]
    fmt = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    n = int(n)
    if mode == "encode":
        print("@bench " + json.dumps(encode(n, int(batch), fmt)))
        return
    flash = flash_heap_bytes(workdir) if mode == "memory" else 0
    cfg = make_cfg(
        host,
        int(port),
        n,
        int(batch),
        int(window),
        workdir,
        100000 if mode == "forward" else 20000,  # forward emits itself: the rate is unused
        fmt,
    )
    agent = Agent(cfg, load_hal(), out=quiet)
    try:
        hold = int(window) * int(batch)  # the readings the forwarder has in flight at most
        res = asyncio.run(
            forward(agent, n) if mode == "forward" else memory(agent, n, flash, hold)
        )
    finally:
        asyncio.new_event_loop()
    res["code_heap_bytes"] = _CODE
    print("@bench " + json.dumps(res))


main()
