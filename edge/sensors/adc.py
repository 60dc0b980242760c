# ADC channel with two-point calibration and oversampling.
# value = v0 + (raw - r0) * (v1 - v0) / (r1 - r0), integers only; raw is read_u16() averaged
# over `samples` reads. Calibrate by measuring two known inputs (docs/INPUTS.md).

from edge.sensors.base import Periodic


class ADCChannel(Periodic):
    def __init__(self, adc, ch, cal=None, samples=4, interval_ms=1000):
        Periodic.__init__(self, interval_ms)
        if cal is None:
            cal = [[0, 0], [65535, 65535]]
        if (
            not isinstance(cal, list)
            or len(cal) != 2
            or not all(isinstance(p, list) and len(p) == 2 for p in cal)
        ):
            raise ValueError("config key 'cal' must be [[raw0, value0], [raw1, value1]]")
        (r0, v0), (r1, v1) = cal
        if r0 == r1:
            raise ValueError("config key 'cal' needs two different raw points")
        if not isinstance(samples, int) or not 1 <= samples <= 64:
            raise ValueError("config key 'samples' must be 1..64")
        self._adc = adc
        self._ch = ch
        self._r0, self._v0, self._dr, self._dv = r0, v0, r1 - r0, v1 - v0
        self._samples = samples

    def convert(self, raw):
        return self._v0 + ((raw - self._r0) * self._dv) // self._dr

    def poll(self, now_ms, emit):
        if not self.due(now_ms):
            return 0
        acc = 0
        try:
            for _ in range(self._samples):
                acc += self._adc.read_u16()
        except OSError:
            self.errors["bus"] += 1
            return 0
        self.reads += 1
        emit(self._ch, self.convert(acc // self._samples))
        return 1
