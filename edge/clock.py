# Wall clock (docs/FORMAT.md 4): NTP sync with capped exponential backoff.
# Before the first sync readings carry (boot id, ticks) with FLAG_CLOCK_UNSYNCED; the forwarder
# converts those of the current boot to wall-clock ms once time is known (Stamper).

from edge import codec, wire
from edge.ticks import ticks_diff

_RETRY_MIN_MS = 2000
_RETRY_MAX_MS = 300000
_RESYNC_MS = 6 * 3600 * 1000
_UNSYNCED = codec.FLAG_CLOCK_UNSYNCED


class Clock:
    def __init__(self, hal, host="pool.ntp.org"):
        self._hal = hal
        self._host = host
        self._retry = _RETRY_MIN_MS
        self._next = None
        self.sync_ticks = None  # ticks at the last successful sync
        self.sync_wall = None  # wall ms at that moment
        self.attempts = 0
        self.failures = 0

    def synced(self):
        return self.sync_ticks is not None

    def tick(self, now_ms):
        """Try NTP when due; returns True when a sync happened on this call."""
        if self._next is not None and ticks_diff(now_ms, self._next) < 0:
            return False
        self.attempts += 1
        if self._hal.ntp_sync(self._host):
            wall = self._hal.wall_ms()
            if wall is not None:
                self.sync_ticks = now_ms
                self.sync_wall = wall
                self._retry = _RETRY_MIN_MS
                self._next = now_ms + _RESYNC_MS
                return True
        self.failures += 1
        self._next = now_ms + self._retry
        self._retry = min(self._retry * 2, _RETRY_MAX_MS)
        return False

    def to_wall(self, ticks):
        """Wall ms for a tick stamp of this boot, or None before the first sync. Valid for
        stamps within ~6 days of the sync (ticks wrap at 2**30 ms)."""
        if self.sync_ticks is None or self.sync_wall is None:
            return None
        return wire.ticks_to_wall(ticks, self.sync_ticks, self.sync_wall)

    async def run(self, log, hb):
        """Task: time keeping. NTP when due (blocks up to ~1 s on an ESP32, ntptime)."""
        import asyncio

        while True:
            hb.beat()
            if self.tick(self._hal.ticks_ms()):
                log(
                    "clock: synced after %d attempts, wall %r ms at ticks %r"
                    % (self.attempts, self.sync_wall, self.sync_ticks)
                )
            await asyncio.sleep_ms(500)

    def status(self, boot):
        """The clock part of the status message: the mapping of this boot's ticks to wall
        time, so a backend can fix up flagged readings sent before the sync (FORMAT.md 4)."""
        return {
            "synced": self.synced(),
            "boot": boot,
            "sync_ticks": self.sync_ticks,
            "sync_wall_ms": self.sync_wall,
            "attempts": self.attempts,
            "failures": self.failures,
        }


class Stamper:
    """Stands in for a codec.BatchWriter while the store fills a batch: a reading of the
    current boot stamped in ticks (FLAG_CLOCK_UNSYNCED) leaves with wall-clock ms once the
    clock is synced. Readings of a past boot keep their flag: its ticks cannot be mapped."""

    def __init__(self, clock, writer, boot):
        self.clock = clock
        self.writer = writer
        self.boot = boot
        self.converted = 0

    def add(self, seq, ts, boot, flags, channel, value):
        if flags & _UNSYNCED and boot == self.boot and self.clock.sync_ticks is not None:
            ts = self.clock.to_wall(ts)
            flags &= ~_UNSYNCED
            self.converted += 1
        return self.writer.add(seq, ts, boot, flags, channel, value)


def from_config(cfg, hal):
    """A Clock for config key "clock": {"ntp_host": str, "synced_at_ms": int or null}.
    `synced_at_ms` (HALs with a simulated clock, i.e. unix): the wall clock reads as unset and
    NTP fails until that many ms after start. Raises ValueError naming the key."""
    c = cfg.get("clock") or {}
    if not isinstance(c, dict):
        raise ValueError("config key 'clock' must be an object")
    host = c.get("ntp_host", "pool.ntp.org")
    if not isinstance(host, str) or not host:
        raise ValueError("config key 'clock.ntp_host' must be a host name")
    at = c.get("synced_at_ms")
    if at is not None:
        if not isinstance(at, int) or isinstance(at, bool) or at < 0:
            raise ValueError("config key 'clock.synced_at_ms' must be a non-negative integer")
        sim = getattr(hal, "simulate_ntp", None)
        if sim is None:
            raise ValueError(
                "config key 'clock.synced_at_ms' needs a HAL with a simulated clock (unix)"
            )
        sim(at)
    return Clock(hal, host)
