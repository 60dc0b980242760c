# Wall clock (issue 6 item 6): NTP sync with capped exponential backoff. Before the first sync
# readings carry (boot id, ticks) with FLAG_CLOCK_UNSYNCED; to_wall() converts such a tick
# stamp once time is known (docs/INPUTS.md, "Clock").

from edge.ticks import ticks_diff

_RETRY_MIN_MS = 2000
_RETRY_MAX_MS = 300000
_RESYNC_MS = 6 * 3600 * 1000


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
        return self.sync_wall + ticks_diff(ticks, self.sync_ticks)
