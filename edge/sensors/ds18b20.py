# Maxim DS18B20 1-Wire thermometer. Datasheet: CONVERT T 0x44 (750 ms at
# 12 bits), READ SCRATCHPAD 0xBE (9 bytes, byte 8 = CRC-8 x^8+x^5+x^4+1), SKIP ROM 0xCC,
# MATCH ROM 0x55. Temperature: signed 16-bit, 1/16 C per LSB; emitted as centi-degrees.
# The power-on scratchpad value 0x0550 (85.00 C) means "no conversion yet" and is rejected.

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus.crc import crc8_maxim
from edge.sensors.base import Periodic
from edge.ticks import ticks_diff

_CONV_MS = const(750)
_POWER_ON = const(0x0550)


class DS18B20(Periodic):
    def __init__(self, ow, ch, rom=None, interval_ms=5000):
        Periodic.__init__(self, max(interval_ms, _CONV_MS + 50))
        self._ow = ow
        self._ch = ch
        self._rom = rom
        self._pad = bytearray(9)
        self._started = None

    def _address(self):
        if self._rom is None:
            self._ow.writebyte(0xCC)  # SKIP ROM: one sensor on the wire
        else:
            self._ow.select_rom(self._rom)

    def poll(self, now_ms, emit):
        if self._started is not None:
            if ticks_diff(now_ms, self._started) < _CONV_MS:
                return 0
            self._started = None
            return self._read(emit)
        if not self.due(now_ms):
            return 0
        try:
            if not self._ow.reset():
                self.errors["absent"] += 1
                return 0
            self._address()
            self._ow.writebyte(0x44)
            self._started = now_ms
        except OSError:
            self.errors["bus"] += 1
        return 0

    def _read(self, emit):
        p = self._pad
        try:
            if not self._ow.reset():
                self.errors["absent"] += 1
                return 0
            self._address()
            self._ow.writebyte(0xBE)
            self._ow.readinto(p)
        except OSError:
            self.errors["bus"] += 1
            return 0
        if crc8_maxim(p, 0, 8) != p[8]:
            self.errors["crc"] += 1  # also catches an all-0xFF read from a missing sensor
            return 0
        raw = p[0] | (p[1] << 8)
        if raw == _POWER_ON:
            self.errors["range"] += 1
            return 0
        if raw & 0x8000:
            raw -= 0x10000
        self.reads += 1
        emit(self._ch, (raw * 25) // 4)  # raw/16 C = raw*100/16 centi-degrees
        return 1
