# What both store backends share (edge/store/store.py on littlefs, edge/store/rawlog.py on a
# raw partition): the counters, group commit by time, drop accounting, lazy cursor saves and
# eviction by category size. A backend provides _commit_stream, _save_state, _delete_oldest,
# _units (its segments or blocks of a category) and _evictable.

from micropython import const

_CURSOR_MS = const(10000)  # cursor writes at most this often (save_cursor)
_LOW = const(0xFFFFFFFF)


def new_stats():
    """The store counters (docs/HEALTH.md): every drop by reason and category."""
    return {
        "appended": 0,
        "committed": 0,
        "commits": 0,
        "acked": 0,
        "deleted_segments": 0,
        "corrupt_records": 0,
        "torn_tails": 0,
        "bad_segments": 0,
        "dropped": {},
    }


class StoreBase:
    def tick(self, now):
        """Group commit by time (default every 1 s)."""
        if self.hal.ticks_diff(now, self.last_commit) >= self.flush_ms:
            self.commit()

    def commit(self):
        """Make every buffered reading durable."""
        for s in self.streams:
            if s.n:
                self._commit_stream(s)
        self.last_commit = self.hal.ticks_ms()

    def pending(self):
        n = 0
        for s in self.streams:
            n += s.n
        return n

    def used_bytes(self):
        n = 0
        for s in self.streams:
            n += s.bytes
        return n

    def _drop(self, reason, s, n):
        d = self.stats["dropped"]
        key = reason + ":" + s.name
        d[key] = d.get(key, 0) + n

    def whole(self, low):
        """The whole seq whose low 32 bits are `low`, among the last 2^32 handed out (the
        forwarder keeps only the low bits of the batches in flight, docs/FORMAT.md 1)."""
        n = self.next_seq
        seq = n - (n & _LOW) + low
        return seq if seq < n else seq - _LOW - 1

    def save_cursor(self, force=False):
        """Persist the ack cursors, lazily: an unsaved ack only means duplicates later, and
        every state write costs flash programs and, in time, erases. Writes only when a
        cursor moved, and then at most every 10 s unless `force`."""
        now = self.hal.ticks_ms()
        if not force:
            moved = False
            for s in self.streams:
                if s.acked != s.saved:
                    moved = True
            if not moved or self.hal.ticks_diff(now, self.last_save) < _CURSOR_MS:
                return
        self._save_state()

    def _enforce_quota(self, s):
        while s.quota and s.bytes > s.quota and self._units(s) > 1:
            self._delete_oldest(s, "quota")
        while self.total_bytes and self.used_bytes() > self.total_bytes:
            if not self._evict_any(None, "full"):
                break

    def _evict_any(self, keep, reason):
        """Delete the oldest segment or block of the biggest category (never one taking
        appends, nor the last one of `keep`). False when there is nothing to delete."""
        big = None
        for t in self.streams:
            if self._evictable(t, keep) > 0 and (big is None or t.bytes > big.bytes):
                big = t
        if big is None:
            return False
        self._delete_oldest(big, reason)
        return True
