# Device-side measurements of `edgectl bench day` (day_agent.py, day_baseline.py): reading
# latency per category and radio wake-ups, both in virtual time (vclock/time.py).

import time
from array import array

# latency histogram: 100 ms buckets to 120 s, then 1 s buckets to 1 h, then one overflow bucket
_FINE = 1200
_COARSE = 3480


def _bucket(ms):
    if ms < 120000:
        return ms // 100 if ms > 0 else 0
    s = ms // 1000
    return _FINE + s - 120 if s < 3600 else _FINE + _COARSE


def _bucket_ms(b):
    """Upper end of a bucket in ms (a percentile is reported as its bucket's upper end)."""
    return (b + 1) * 100 if b < _FINE else (b - _FINE + 121) * 1000


class Latency:
    """A latency histogram per category name (a writer may name it as str or bytes). All
    histograms are made here, with the names, before the agent is built: an 18 KB histogram
    allocated later, inside the agent's forwarder pass, can fail in its fragmented heap and
    would kill the very task it measures. A reading of another category is only counted."""

    def __init__(self, names=()):
        self.hist = {}
        self.by_bytes = {}  # the same arrays under bytes keys (no str/bytes comparisons)
        self.unknown = 0
        for name in names:
            self.hist[name] = self.by_bytes[name.encode()] = array(
                "I", bytes(4 * (_FINE + _COARSE + 1))
            )

    def add(self, cat, ms):
        h = (self.by_bytes if isinstance(cat, bytes) else self.hist).get(cat)
        if h is None:
            self.unknown += 1
        else:
            h[_bucket(ms)] += 1

    def report(self):
        out = {}
        for cat, h in self.hist.items():
            if sum(h) == 0:
                continue
            n = sum(h)
            p = {"readings": n}
            for q in (50, 95, 99, 100):
                want = (n * q + 99) // 100
                acc = 0
                for b in range(len(h)):
                    acc += h[b]
                    if acc >= want:
                        p["p%d_ms" % q] = _bucket_ms(b)
                        break
            out[cat] = p
        return out


class LatencyTap:
    """Sits in front of the forwarder's batch writer: every reading it packs is about to be
    published (the forwarder publishes a batch as soon as it is packed), so the wall clock now
    minus the reading's timestamp is its latency from sampling to sending."""

    def __init__(self, inner, writer, hal, lat):
        self.inner = inner
        self.writer = writer
        self.hal = hal
        self.lat = lat

    def add(self, seq, ts, boot, flags, ch, val):
        ok = self.inner.add(seq, ts, boot, flags, ch, val)
        if ok:
            self.lat.add(self.writer.category, self.hal.wall_ms() - ts)
        return ok

    def report(self):
        return self.lat.report()


class Radio:
    """Radio wake-ups: a send burst is a run of transmissions with gaps under burst_gap_ms
    (virtual); a connection is a CONNECT. Radio-on time: every transmission keeps the radio on
    until burst_gap_ms after it (a Wi-Fi power-save or LTE inactivity tail). Sampled at every
    wait of the event loop."""

    def __init__(self, client, gap_ms):
        self.client = client
        self.gap = gap_ms
        self.tx = 0
        self.last_tx_ms = -1
        self.bursts = 0
        self.on_ms = 0

    def sample(self):
        tx = self.client.stats["tx_bytes"]
        if tx == self.tx:
            return
        self.tx = tx
        now = time.elapsed_ms()
        if self.last_tx_ms < 0 or now - self.last_tx_ms > self.gap:
            self.bursts += 1
            if self.last_tx_ms >= 0:
                self.on_ms += self.gap  # the tail of the burst before
        else:
            self.on_ms += now - self.last_tx_ms
        self.last_tx_ms = now

    def report(self):
        return {
            "send_bursts": self.bursts,
            "connects": self.client.stats["connects"],
            "burst_gap_ms": self.gap,
            "radio_on_ms": self.on_ms + (self.gap if self.bursts else 0),
        }
