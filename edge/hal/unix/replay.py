# Replay HAL: the unix HAL with a virtual clock and UARTs fed from a capture (docs/REPLAY.md 3).
# `edgectl replay --agent` converts a capture into a feed file (line, Tuya: bytes at their
# times) or a serve file (Modbus: edge/hal/unix/replay_serve.py); time only moves when the
# replay driver (edge/hal/unix/replay_main.py) steps it, so every run yields the same readings.
#
# Feed file (host_tools/agent/replay.py writes it; the record is edge/wire.py's, docs/FORMAT.md
# 5.4): ts_ms u32 LE | len u16 LE | data[len] (len <= 256, ts non-decreasing). ts_ms counts
# from the start of the replayed range; bytes are due when the clock reaches it.

import json

from micropython import const

from edge import wire
from edge.hal.unix import hal as unix

_END = const(0x7FFFFFFF)  # next_due of an exhausted feed


class FeedUART:
    """A UART whose receive side plays a feed file against the virtual clock.
    Writes (e.g. Tuya heartbeats) are counted and dropped: a capture cannot answer."""

    def __init__(self, hal, path):
        self._hal = hal
        self._f = open(path, "rb")
        self._head = bytearray(wire.FEED_HEAD_LEN)
        self._data = bytearray(wire.FEED_MAX)
        self._mv = memoryview(self._data)
        self._pos = 0
        self._left = 0
        self.next_due = _END
        self.rx_bytes = 0
        self.tx_bytes = 0
        self._load()

    def _load(self):
        if self._f.readinto(self._head) < wire.FEED_HEAD_LEN:
            self.next_due = _END
            return
        due, n = wire.feed_head(self._head)
        if self._f.readinto(self._mv[:n]) < n:
            raise ValueError("replay feed: truncated record")
        self.next_due = due
        self._pos = 0
        self._left = n

    def due(self):
        """True when bytes are waiting at the current virtual time."""
        return self.next_due <= self._hal.now

    def readinto(self, buf):
        if self.next_due > self._hal.now:
            return 0
        n = min(len(buf), self._left)
        buf[0:n] = self._mv[self._pos : self._pos + n]
        self._pos += n
        self._left -= n
        self.rx_bytes += n
        if not self._left:
            self._load()
        return n

    def write(self, buf):
        self.tx_bytes += len(buf)
        return len(buf)

    def close(self):
        self._f.close()


class Hal(unix.Hal):
    """spec: {"wall0_ms": Unix ms at feed time 0, "max_step_ms": longest clock jump,
    "consent": {"version": n, "grants": {category: bool}} written before the agent boots}.
    UART specs with a "feed" key read that feed file; others fall back to the unix HAL."""

    def __init__(self, spec):
        unix.Hal.__init__(self)
        self.use_virtual_clock(0)
        self.now = 0  # unmasked virtual ms (ticks_ms() wraps it like the real ticks)
        self.wall0 = spec.get("wall0_ms", 0)
        self.max_step = spec.get("max_step_ms", 1000)
        self.uarts = []
        self._consent = spec.get("consent")

    def mount_store(self, path):
        """The unix store, seeded with the run's consent state (edge/consent.py reads it at
        boot), so which categories are kept never depends on when a command arrives."""
        root = unix.Hal.mount_store(self, path)
        if self._consent is not None:
            unix._makedirs(root)
            with open(root + "/consent.json", "w") as f:
                f.write(json.dumps(self._consent))
        return root

    def advance(self, ms):
        self.now += ms
        self._virtual = self.now

    def wall_ms(self):
        return self.wall0 + self.now

    def uart(self, spec):
        path = spec.get("feed")
        if spec.get("serve"):
            from edge.hal.unix.replay_serve import ServeUART

            u = ServeUART(self, spec["serve"])  # type: object
        elif path:
            u = FeedUART(self, path)
        else:
            return unix.Hal.uart(self, spec)
        self.uarts.append(u)
        return u

    def exhausted(self):
        for u in self.uarts:
            f = getattr(u, "finished", None)  # a Modbus serve UART knows when it is done
            done = f() if f is not None else u.next_due == _END
            if not done:
                return False
        return True

    def step(self, wake=None):
        """Move the clock to the next due byte or to `wake` (the earliest timer of a source,
        virtual ms), at most max_step ahead: the sources' inter-frame and timeout timers fire
        at their tick. Returns False when there is nothing left to replay; no move while bytes
        are still due now."""
        nxt = _END
        for u in self.uarts:
            if u.next_due < nxt:
                nxt = u.next_due
        if nxt == _END and self.exhausted():
            return False
        if wake is not None and wake < nxt:
            nxt = wake
        if nxt == _END:
            nxt = self.now + self.max_step
        if nxt > self.now:
            self.advance(min(nxt - self.now, self.max_step))
        return True
