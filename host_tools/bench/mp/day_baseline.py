# The baseline of `edgectl bench day` (host_tools/bench/day.py): the same readings the agent
# delivered, each sent the way simple firmware does, one JSON PUBLISH (QoS 1) per reading when
# it is sampled, with the project's own MQTT client on the same virtual clock. Nothing else is
# sent: no status, no receipts (which makes the baseline cheaper than real per-reading firmware,
# so the ratio is a lower bound). Usage:
#   micropython day_baseline.py SPEC.json
# SPEC: {"host", "port", "device", "prefix", "keepalive", "wall0_ms", "burst_gap_ms",
#        "categories": names, "readings": FILE of lines "ts seq category channel value", in time order}
# Prints one line `@day {json}`.

import time  # noqa: I001  (vclock/time.py first)

import asyncio
import json
import sys

from edge.mqtt.client import Client

from day_probe import Latency, Radio
from vloop import VirtualLoop

_TICK_MS = 1000  # keepalive check while idle (the agent's link checks at least this often)


async def run(spec, c, lat):
    await c.connect(spec["host"], spec["port"], clean=False)
    topics = {}
    n = 0
    with open(spec["readings"]) as f:
        for line in f:
            ts, seq, cat, ch, val = line.split()
            ts = int(ts)
            while True:
                wait = ts - time.time_ns() // 1000000
                if wait <= 0:
                    break
                await c.keepalive_check()
                await asyncio.sleep_ms(min(wait, _TICK_MS))
            t = topics.get(cat)
            if t is None:
                t = topics[cat] = ("%s/%s/t/%s" % (spec["prefix"], spec["device"], cat)).encode()
            payload = b'{"seq":%s,"ts":%d,"ch":%s,"v":%s}' % (seq.encode(), ts, ch, val)
            await c.publish(t, payload, 1)
            lat.add(cat, time.time_ns() // 1000000 - ts)
            n += 1
    while c.inflight:
        await asyncio.sleep_ms(10)
    await c.disconnect()
    return n


def main(path):
    with open(path) as f:
        spec = json.load(f)
    time.set_wall(spec["wall0_ms"])
    c = Client(spec["device"] + "-baseline", 512, 8, spec["keepalive"])
    # the clock waits in real time for the connection, a PINGRESP and a full window only:
    # a reading's latency is taken when its PUBLISH leaves (one per reading, nothing to batch)
    vl = VirtualLoop(
        lambda: not c.connected.is_set() or c.ping_due or c.inflight >= c.window,
    )
    radio = Radio(c, spec["burst_gap_ms"])
    vl.on_wait = radio.sample
    lat = Latency(spec["categories"])
    t0 = time.elapsed_ms()
    try:
        n = asyncio.run(run(spec, c, lat))
    finally:
        asyncio.new_event_loop()
        vl.close()
    res = {
        "virtual_ms": time.elapsed_ms() - t0,
        "published": n,
        "latency": lat.report(),
        "latency_unknown": lat.unknown,
        "radio": radio.report(),
        "mqtt": c.stats,
    }
    print("@day " + json.dumps(res))


if __name__ == "__main__":
    main(sys.argv[1])
