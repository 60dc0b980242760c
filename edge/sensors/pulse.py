# Pulse counter: energy-meter LED or S0 output. The HAL counts edges (an IRQ
# or the PCNT unit on the ESP32, a rate script on unix); this driver reports, every interval,
# the cumulative count scaled by mul/div (e.g. Wh with 1000 imp/kWh: mul 1, div 1) and,
# optionally, the pulses in the last interval.

from edge.sensors.base import Periodic


class PulseCounter(Periodic):
    def __init__(self, counter, ch_total, ch_delta=None, mul=1, div=1, interval_ms=10000):
        Periodic.__init__(self, interval_ms)
        if not isinstance(mul, int) or not isinstance(div, int) or not mul or not div:
            raise ValueError("config key 'mul'/'div' must be non-zero integers")
        self._c = counter
        self._ch = ch_total
        self._ch_d = ch_delta
        self._mul = mul
        self._div = div
        self._last = None

    def poll(self, now_ms, emit):
        if not self.due(now_ms):
            return 0
        n = self._c.value()
        self.reads += 1
        emit(self._ch, (n * self._mul) // self._div)
        if self._ch_d is None:
            return 1
        d = 0 if self._last is None else n - self._last
        self._last = n
        if d < 0:  # counter restarted (reboot of the counting side)
            self.errors["range"] += 1
            d = n
        emit(self._ch_d, d)
        return 2
