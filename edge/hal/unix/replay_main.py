# Deterministic replay entry point (issue 8): `micropython -m edge.hal.unix.replay_main CONFIG.json`.
# The real agent, with edge/hal/unix/replay.py as its HAL: UARTs read a capture feed and the
# clock is virtual, stepped here from one due chunk to the next instead of sleeping.

import asyncio
import json
import sys

from micropython import const

from edge import config
from edge.agent import Agent
from edge.hal.unix import replay

_BACKLOG_BYTES = const(65536)  # per category: let the forwarder catch up before moving on


class Driver:
    """Wraps the agent's sources: after a poll that produced nothing, step the virtual clock.
    Holds the clock while the store's unacknowledged backlog is large, so quota eviction
    never depends on how fast the broker answered (same readings on every run)."""

    def __init__(self, sources, hal, store, ncat):
        self.sources = sources
        self.hal = hal
        self.store = store
        self.ncat = ncat

    def _backlogged(self):
        for c in range(self.ncat):
            if self.store.backlog(c) > _BACKLOG_BYTES:
                return True
        return False

    def poll(self, now, emit):
        n = 0
        for s in self.sources:
            n += s.poll(now, emit)
        if n or self._backlogged():
            return n  # 0 when backlogged: the sampler sleeps and the forwarder runs
        return 1 if self.hal.step() else 0  # 1: time moved, poll again without sleeping

    def done(self):
        return self.hal.exhausted()


def run(path):
    with open(path) as f:
        doc = json.load(f)
    spec = doc.pop("replay")
    cfg = config.load(json.dumps(doc))
    hal = replay.Hal(spec)
    agent = Agent(cfg, hal)
    agent.sources = [Driver(agent.sources, hal, agent.store, len(agent.categories))]
    try:
        asyncio.run(agent.main())
    finally:
        asyncio.new_event_loop()
    rx = 0
    for u in hal.uarts:
        rx += u.rx_bytes
    print(
        "@replay "
        + json.dumps({"virtual_ms": hal.now, "rx_bytes": rx, "mqtt": agent.client.stats})
    )


if __name__ == "__main__":
    try:
        run(sys.argv[1])
    except (config.ConfigError, ValueError) as e:
        sys.stderr.write("edge: replay error: %s\n" % e)
        sys.exit(2)
