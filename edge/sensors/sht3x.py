# Sensirion SHT3x temperature / humidity over I2C. Single-shot, high
# repeatability, no clock stretching (datasheet 4.3, table 9: 0x2400; max 15.5 ms, 4.3 table 4).
# Result: T msb, T lsb, CRC, RH msb, RH lsb, CRC; CRC-8 0x31 init 0xFF (4.12).
# Conversion (4.13): T = -45 + 175 * S / 65535 C; RH = 100 * S / 65535 %. Emitted as
# centi-degrees and centi-percent.

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus.crc import crc8_sensirion
from edge.sensors.base import Periodic
from edge.ticks import ticks_diff

_MEAS_MS = const(16)
_CMD = b"\x24\x00"


class SHT3x(Periodic):
    def __init__(self, i2c, addr, ch_temp, ch_rh=None, interval_ms=2000):
        Periodic.__init__(self, interval_ms)
        if addr not in (0x44, 0x45):
            raise ValueError("config key 'addr' must be 0x44 (68) or 0x45 (69) for SHT3x")
        self._i2c = i2c
        self._addr = addr
        self._ch_t = ch_temp
        self._ch_rh = ch_rh
        self._buf = bytearray(6)
        self._started = None

    def poll(self, now_ms, emit):
        if self._started is not None:
            if ticks_diff(now_ms, self._started) < _MEAS_MS:
                return 0
            self._started = None
            return self._read(emit)
        if self.due(now_ms):
            try:
                self._i2c.writeto(self._addr, _CMD)
                self._started = now_ms
            except OSError:
                self.errors["bus"] += 1
        return 0

    def _read(self, emit):
        b = self._buf
        try:
            self._i2c.readfrom_into(self._addr, b)
        except OSError:
            self.errors["bus"] += 1
            return 0
        if crc8_sensirion(b, 0, 2) != b[2] or crc8_sensirion(b, 3, 5) != b[5]:
            self.errors["crc"] += 1
            return 0
        self.reads += 1
        st = (b[0] << 8) | b[1]
        emit(self._ch_t, -4500 + (17500 * st) // 65535)
        if self._ch_rh is None:
            return 1
        srh = (b[3] << 8) | b[4]
        emit(self._ch_rh, (10000 * srh) // 65535)
        return 2
