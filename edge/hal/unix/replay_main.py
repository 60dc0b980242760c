# Deterministic replay entry point: `micropython -m edge.hal.unix.replay_main CONFIG.json`.
# The real agent, with edge/hal/unix/replay.py as its HAL: UARTs read a capture feed and the
# clock is virtual, stepped here to the next due chunk or the next timer of a source (a Modbus
# gap or timeout, a Tuya heartbeat) instead of sleeping. docs/REPLAY.md 3.

import asyncio
import json
import sys

from micropython import const

from edge import config
from edge.agent import Agent
from edge.hal.unix import replay
from edge.ticks import ticks_diff

_BACKLOG_BYTES = const(65536)  # per category: let the forwarder catch up before moving on


class Driver:
    """Wraps the agent's sources: after a poll that produced nothing, step the virtual clock.
    Holds the clock while the store's unacknowledged backlog is large, so quota eviction
    never depends on how fast the broker answered (same readings on every run). `sources`
    stays visible, so health's `inputs` reports them during a replay (edge.inputs.stats)."""

    def __init__(self, sources, hal, store, ncat):
        self.sources = sources
        self.hal = hal
        self.store = store
        self.ncat = ncat
        self.flushed = False

    def _backlogged(self):
        for c in range(self.ncat):
            if self.store.backlog(c) > _BACKLOG_BYTES:
                return True
        return False

    def _wake(self, now):
        """The earliest source timer as virtual ms, or None."""
        best = None
        for s in self.sources:
            f = getattr(s, "wake_ms", None)
            w = f(now) if f is not None else None
            if w is not None:
                d = ticks_diff(w, now)
                # a timer due now had its poll just now: only a future one moves the clock
                # (a stale timer must never hold the clock still)
                if d > 0 and (best is None or d < best):
                    best = d
        return None if best is None else self.hal.now + best

    def poll(self, now, emit):
        n = 0
        for s in self.sources:
            n += s.poll(now, emit)
        if n or self._backlogged():
            return n  # 0 when backlogged: the sampler sleeps and the forwarder runs
        if self.hal.step(self._wake(now)):
            return 1  # time moved: poll again without sleeping
        if not self.flushed:
            # the capture is played: what the parsers still hold is classified (a last line
            # without its line break is parsed, a partial frame rejected)
            self.flushed = True
            for s in self.sources:
                f = getattr(s, "flush", None)
                if f is not None:
                    n += f(emit)
            return n + 1
        return 0

    def done(self):
        return self.flushed and self.hal.exhausted()


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
    serve = {}
    for u in hal.uarts:
        rx += u.rx_bytes
        st = getattr(u, "stats", None)
        if st is not None:
            serve = st()  # the Modbus serve UART: requests served, unmatched, left over
    from edge import inputs

    doc = {
        "virtual_ms": hal.now,
        "rx_bytes": rx,
        "mqtt": agent.client.stats,
        "inputs": inputs.stats(agent.sources),
        "serve": serve,
        "counters": {
            "sampled": agent.sampled,
            "unknown_channel": agent.unknown_channel,
            "dropped_by_consent": sum(agent.consent.stats["dropped"]),
        },
    }
    print("@replay " + json.dumps(doc))


if __name__ == "__main__":
    try:
        run(sys.argv[1])
    except (config.ConfigError, ValueError) as e:
        sys.stderr.write("edge: replay error: %s\n" % e)
        sys.exit(2)
