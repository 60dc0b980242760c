# Shared timing and error counting for the periodic sensor drivers.

from edge.ticks import ticks_diff


class Periodic:
    REASONS = ("bus", "crc", "range", "absent")

    def __init__(self, interval_ms):
        if not isinstance(interval_ms, int) or interval_ms < 10:
            raise ValueError("config key 'interval_ms' must be an integer >= 10")
        self.interval_ms = interval_ms
        self._next = None
        self.reads = 0
        self.errors = {}
        for r in self.REASONS:
            self.errors[r] = 0

    def due(self, now_ms):
        """True once per interval; the first poll is due at once."""
        if self._next is not None and ticks_diff(now_ms, self._next) < 0:
            return False
        self._next = now_ms + self.interval_ms
        return True

    def stats(self):
        d = {"accepted": self.reads}
        for k in self.errors:
            d[k] = self.errors[k]
        return d


def channel(channels, name, path, required=True):
    """channels: {"temp": 1, ...} -> id or None; validates the id."""
    ch = channels.get(name)
    if ch is None and not required:
        return None
    if not isinstance(ch, int) or isinstance(ch, bool) or not 0 <= ch <= 255:
        raise ValueError("config key '%s.channels.%s' must be a channel id 0..255" % (path, name))
    return ch
