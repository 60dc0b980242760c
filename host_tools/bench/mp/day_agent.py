# MicroPython side of `edgectl bench day` (host_tools/bench/day.py): the real agent, its real
# bus drivers reading a simulated appliance (day_hal.py), on a virtual clock (vclock/time.py,
# vloop.py), against the broker, for the run's virtual seconds. Usage:
#   micropython day_agent.py CONFIG.json
# CONFIG is a device config plus "bench": {"wall0_ms", "seed", "burst_gap_ms"}; the run length
# is the config's sim.seconds. Prints one line `@day {json}` at the end: what the device side
# measures (reading latency per category, radio wake-ups, the clock); the bytes and messages
# are counted on the wire by the host.

import time  # noqa: I001  (vclock/time.py: must come before asyncio binds time's functions)

import asyncio
import gc
import json
import sys

from edge import config
from edge.agent import Agent

import day_hal
from day_probe import Latency, LatencyTap, Radio
from vloop import VirtualLoop


_died = []  # the first reports of a task that died (the host names them in its error)


def _quiet(line):
    if "died" in line and len(_died) < 3:
        _died.append(line)


def main(path):
    with open(path) as f:
        doc = json.load(f)
    bench = doc.pop("bench")
    time.set_wall(bench["wall0_ms"])
    cfg = config.load(json.dumps(doc))
    # the probe's histograms first, while the heap is empty (day_probe.Latency)
    grants = (bench.get("consent") or {}).get("grants") or {}
    lat = Latency([n for n in config.category_ids(cfg) if grants.get(n)])
    hal = day_hal.Hal(bench.get("seed", 1), bench.get("consent"))
    agent = Agent(cfg, hal, out=_quiet)
    c = agent.client

    def busy():
        s = c.stream
        return (
            not c.connected.is_set()
            or c.inflight > 0
            or c.ping_due
            or (s is not None and bool(getattr(s, "out_buf", b"")))
        )

    fwd = agent.fwd
    tap = LatencyTap(fwd.writer, fwd.writer, hal, lat)
    fwd.stamp.writer = tap  # behind the clock's stamper (edge/clock.py): wall-clock stamps
    radio = Radio(c, bench.get("burst_gap_ms", 2000))
    vl = VirtualLoop(busy)
    vl.on_wait = radio.sample
    t0 = time.elapsed_ms()
    try:
        asyncio.run(agent.main())
    finally:
        asyncio.new_event_loop()
        vl.close()
    gc.collect()
    flash = getattr(hal, "log_flash", None)
    res = {
        "virtual_ms": time.elapsed_ms() - t0,
        "latency": tap.report(),
        "latency_unknown": tap.lat.unknown,
        "radio": radio.report(),
        "jumps": vl.jumps,
        "mqtt": c.stats,
        "forwarder": fwd.stats,
        "fallbacks": getattr(fwd.writer, "fallbacks", 0),
        "sampled": agent.sampled,
        "appended": agent.store.stats["appended"],
        "task_restarts": sum(agent.restarts.values()),
        # the raw log's emulated partition (edge/hal/unix/hal.py log_device): real wear
        "flash": {
            "blocks": flash.blocks if flash else 0,
            "erases": flash.erases if flash else 0,
            "progs": flash.progs if flash else 0,
            "commits": agent.store.stats["commits"],
        },
        "task_deaths": _died,
        "uart": [{"rx": p.rx_bytes, "tx": p.tx_bytes} for p in hal.ports],
    }
    print("@day " + json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
