# Task supervision (docs/HEALTH.md 2): every long-lived task bumps its
# heartbeat; the supervisor feeds the HAL's watchdog only while every heartbeat is recent, so a
# hung task (or a blocked event loop) ends in a watchdog reset on an ESP32 and in a reported
# hang and a non-zero exit on unix (edge/hal/unix/sim.py SimWDT).

import asyncio

from micropython import const

_CHECKS_PER_TIMEOUT = const(4)
_MIN_TIMEOUT_MS = const(2000)


class Heartbeat:
    """One task's heartbeat: beat() in its loop, stop() when it ends normally. `parked`:
    a callable that is True while the task legitimately waits (e.g. for the network)."""

    def __init__(self, name, clock, parked):
        self.name = name
        self._clock = clock
        self.parked = parked
        self.t = clock()

    def beat(self):
        self.t = self._clock()

    def stop(self):
        self.t = None


class Watchdog:
    """The heartbeats of every long-lived task and the supervisor that feeds hal.wdt."""

    def __init__(self, hal, timeout_ms, log):
        self.hal = hal
        self.timeout_ms = timeout_ms
        self.log = log
        self.beats = []
        self.stats = {"feeds": 0, "stale": 0, "expired": 0}
        self.stale = None  # name of the task that stopped the feeding, while it lasts
        self.wdt = None

    def add(self, name, parked=None):
        hb = Heartbeat(name, self.hal.ticks_ms, parked)
        self.beats.append(hb)
        return hb

    def silent(self, now, limit=0):
        """(name, ms) of the first task whose heartbeat is older than `limit` (default: the
        watchdog's timeout), or None."""
        limit = limit or self.timeout_ms
        for hb in self.beats:
            if hb.t is None:
                continue
            if hb.parked is not None and hb.parked():
                hb.t = now
                continue
            age = self.hal.ticks_diff(now, hb.t)
            if age > limit:
                return hb.name, age
        return None

    def _expired(self, ms):
        # Called by the unix SimWDT's monitor thread just before it ends the process. The
        # marker may already name a silent task; otherwise the event loop itself was blocked.
        self.stats["expired"] += 1
        what = self.stale or "event loop blocked"
        self.log("watchdog: expired, no feed for %d ms (%s); resetting" % (ms, what))
        self.hal.note_reset("watchdog", what.replace(" ", "_"))

    async def run(self):
        """Task: the supervisor. Feeds the watchdog while every task is alive."""
        self.wdt = self.hal.wdt(self.timeout_ms, self._expired)
        period = max(self.timeout_ms // _CHECKS_PER_TIMEOUT, 10)
        try:
            while True:
                await asyncio.sleep_ms(period)
                bad = self.silent(self.hal.ticks_ms())
                if bad is None:
                    if self.stale is not None:
                        self.log("watchdog: task %s alive again" % self.stale)
                        self.stale = None
                        self.hal.note_reset("running")
                    self.wdt.feed()
                    self.stats["feeds"] += 1
                elif self.stale != bad[0]:
                    # Case 1: a task went silent: stop feeding and say which one, so the next
                    # boot reports it (reset_detail). Case 2: it stays silent: nothing more.
                    self.stale = bad[0]
                    self.stats["stale"] += 1
                    self.log("watchdog: task %s silent for %d ms, not feeding" % bad)
                    self.hal.note_reset("watchdog", bad[0])
        finally:
            deinit = getattr(self.wdt, "deinit", None)  # machine.WDT cannot be stopped
            if deinit is not None:
                deinit()

    def status(self):
        return {
            "timeout_ms": self.timeout_ms,
            "tasks": len(self.beats),
            "stale": self.stats["stale"],
            "feeds": self.stats["feeds"],
        }


def timeout_ms(cfg):
    """Config key "watchdog_ms", else the board's "watchdog_ms" (boards/README.md); 0 = off."""
    v = cfg.get("watchdog_ms")
    if v is None:
        from edge import board

        v = board.load(cfg).get("watchdog_ms", 0)
    # the housekeeping task beats once a second: a shorter timeout would reset a healthy agent
    if not isinstance(v, int) or isinstance(v, bool) or not (v == 0 or v >= _MIN_TIMEOUT_MS):
        raise ValueError(
            "config key 'watchdog_ms' must be 0 (off) or at least %d" % _MIN_TIMEOUT_MS
        )
    return v
