# Simulated appliance (a fridge) for the unix board: deterministic readings on every channel
# of the config, so runs can be compared reading by reading.


class SimFridge:
    """A source: poll(now_ms, emit) emits the readings that are due at rate_hz."""

    def __init__(self, cfg, hal):
        sim = cfg["sim"]
        self.rate = sim["rate_hz"]
        self.limit = sim["count"]
        self.channels = [ch["id"] for ch in cfg["channels"]]
        self.state = sim.get("seed", 1) & 0x7FFFFFFF or 1
        self.hal = hal
        self.t0 = hal.ticks_ms()
        self.emitted = 0

    def done(self):
        return self.limit and self.emitted >= self.limit

    def _next_value(self, ch):
        # LCG (Numerical Recipes constants), 31-bit so it stays a small int on an ESP32
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        base = (2, -18, 120, 0, 0, 0)[(ch - 1) % 6] * 100
        return base + (self.state >> 16) % 200 - 100

    def poll(self, now, emit, budget=256):
        due = self.hal.ticks_diff(now, self.t0) * self.rate // 1000 - self.emitted
        if self.limit:
            due = min(due, self.limit - self.emitted)
        due = min(due, budget)
        chans = self.channels
        for _ in range(due):
            ch = chans[self.emitted % len(chans)]
            emit(ch, self._next_value(ch))
            self.emitted += 1
        return max(due, 0)
