# Sampler policy per channel (docs/INPUTS.md 1): deadband, minimum report interval and maximum
# silent interval, applied between the sources and the agent's emit. Integers only.
#
# Per channel (config "channels": [{"id", ..., "deadband", "interval_ms", "max_silent_ms"}]):
# Case 1: first reading -> reported.
# Case 2: |v - last reported| > deadband -> reported, unless less than interval_ms passed since
#         the last report: then held, and the latest held value is reported once interval_ms
#         has passed (a later reading back within the deadband cancels it).
# Case 3: within the deadband -> dropped, unless max_silent_ms passed since the last report:
#         then reported (a heartbeat that proves the input is alive; a silent input is not
#         re-reported, so a dead sensor shows as a gap).
# Channels without any of the three keys pass through untouched.

from edge.ticks import ticks_diff

_KEYS = ("deadband", "interval_ms", "max_silent_ms")


def _nowhere(ch, v):
    pass


class Deadband:
    def __init__(self, channels):
        self._pol = {}
        for i, ch in enumerate(channels):
            if not any(k in ch for k in _KEYS):
                continue
            vals = []
            for k in _KEYS:
                v = ch.get(k, 0)
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ValueError(
                        "config key 'channels[%d].%s' must be an integer >= 0" % (i, k)
                    )
                vals.append(v)
            # [deadband, interval, max_silent, last, last_ms, reported?, held?, held value]
            self._pol[ch["id"]] = [vals[0], vals[1], vals[2], 0, 0, False, False, 0]
        self.now = 0
        self.down = _nowhere
        self.emitted = 0
        self.suppressed = 0
        self.filter = self._filter  # bound once: sources get the same callable every poll

    def active(self):
        return bool(self._pol)

    def _report(self, st, ch, v):
        st[3] = v
        st[4] = self.now
        st[5] = True
        st[6] = False
        self.emitted += 1
        self.down(ch, v)

    def _filter(self, ch, v):
        st = self._pol.get(ch)
        if st is None:
            self.emitted += 1
            self.down(ch, v)
            return
        if not st[5]:
            self._report(st, ch, v)
            return
        elapsed = ticks_diff(self.now, st[4])
        d = v - st[3]
        if d > st[0] or -d > st[0] or (st[0] == 0 and d != 0):
            if st[1] and elapsed < st[1]:
                st[6] = True
                st[7] = v
                self.suppressed += 1
            else:
                self._report(st, ch, v)
        elif st[2] and elapsed >= st[2]:
            self._report(st, ch, v)
        else:
            st[6] = False
            self.suppressed += 1

    def flush(self, now_ms, emit):
        """Report held values whose interval has passed. Returns readings emitted."""
        self.now = now_ms
        self.down = emit
        n0 = self.emitted
        for ch in self._pol:
            st = self._pol[ch]
            if st[6] and ticks_diff(now_ms, st[4]) >= st[1]:
                self._report(st, ch, st[7])
        return self.emitted - n0


class Gate:
    """Wraps a source so its readings pass through a shared Deadband; same poll() contract."""

    def __init__(self, source, db):
        self.source = source
        self._db = db

    def poll(self, now_ms, emit):
        db = self._db
        n = db.flush(now_ms, emit)
        n0 = db.emitted
        self.source.poll(now_ms, db.filter)
        return n + db.emitted - n0

    def stats(self):
        return self.source.stats()

    def wake_ms(self, now_ms):
        f = getattr(self.source, "wake_ms", None)
        return f(now_ms) if f is not None else None

    def flush(self, emit):
        f = getattr(self.source, "flush", None)
        if f is None:
            return 0
        self._db.down = emit
        return f(self._db.filter)
