# Binary value layouts: how a register group or a byte slice becomes a number (docs/INPUTS.md
# section 2.2). Used by Modbus register maps and Tuya RAW DP slices.
#
# type: u8 i8 u16 i16 u24 i24 u32 i32 u64 i64 (two's complement) or f32 f64 (IEEE 754), read
# big-endian by default. swap: "none" | "byte" (bytes swapped inside each 16-bit word, BADC) |
# "word" (16-bit words in reverse order, CDAB) | "word_byte" (both: little-endian, DCBA);
# `true` is "word" (the older `swap` flag). bits: [lowest bit, count] of the unsigned integer
# (a bit field; `bit: n` is [n, 1]).

import struct

_TYPES = {
    "u8": (1, 0),
    "i8": (1, 1),
    "u16": (2, 0),
    "i16": (2, 1),
    "u24": (3, 0),
    "i24": (3, 1),
    "u32": (4, 0),
    "i32": (4, 1),
    "u64": (8, 0),
    "i64": (8, 1),
    "f32": (4, 2),
    "f64": (8, 2),
}
TYPE_NAMES = "u8 i8 u16 i16 u24 i24 u32 i32 u64 i64 f32 f64"
KEYS = ("type", "swap", "bits", "bit")
_SWAPS = ("none", "byte", "word", "word_byte")


class Layout:
    """One value's layout; decode(buf, off) -> int or float (flt tells which)."""

    def __init__(self, spec, path, default="u16"):
        typ = spec.get("type", default)
        if typ not in _TYPES:
            raise ValueError("config key '%s.type' must be one of %s" % (path, TYPE_NAMES))
        self.size, kind = _TYPES[typ]
        self.signed = kind == 1
        self.flt = kind == 2
        swap = spec.get("swap", "none")
        if swap is True:
            swap = "word"
        elif swap is False:
            swap = "none"
        if swap not in _SWAPS:
            raise ValueError("config key '%s.swap' must be one of none byte word word_byte" % path)
        if swap != "none" and self.size % 2:
            raise ValueError("config key '%s.swap' needs a type of whole 16-bit words" % path)
        self.byteswap = swap in ("byte", "word_byte")
        self.wordswap = swap in ("word", "word_byte")
        bits = spec.get("bits")
        if "bit" in spec:
            bits = [spec["bit"], 1]
        self.lo = 0
        self.mask = 0
        if bits is not None:
            if (
                self.flt
                or not isinstance(bits, list)
                or len(bits) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bits)
                or bits[0] < 0
                or bits[1] < 1
                or bits[0] + bits[1] > 8 * self.size
            ):
                raise ValueError(
                    "config key '%s.bits' must be [lowest bit, count] inside an integer type"
                    % path
                )
            self.lo = bits[0]
            self.mask = (1 << bits[1]) - 1
        self._tmp = bytearray(8)
        self._fmt = ">f" if self.size == 4 else ">d"

    def decode(self, buf, off):
        """The value at buf[off:off + size] (the caller checked the length)."""
        n = self.size
        if not (self.flt or self.byteswap or self.wordswap):
            # the common case, big-endian integers: straight from the buffer, no copy
            v = 0
            for i in range(off, off + n):
                v = (v << 8) | buf[i]
            if self.mask:
                return (v >> self.lo) & self.mask
            if self.signed and buf[off] & 0x80:
                v -= 1 << (8 * n)
            return v
        t = self._tmp
        words = n >> 1
        for i in range(n):
            j = i
            if self.wordswap:
                j = 2 * (words - 1 - (i >> 1)) + (i & 1)
            if self.byteswap:
                j ^= 1
            t[i] = buf[off + j]
        if self.flt:
            return struct.unpack_from(self._fmt, t, 0)[0]
        v = 0
        for i in range(n):
            v = (v << 8) | t[i]
        if self.mask:
            return (v >> self.lo) & self.mask
        if self.signed and t[0] & 0x80:
            v -= 1 << (8 * n)
        return v

    def emit(self, buf, off, target, emit):
        """Decode and hand to the target; 1 when a reading was emitted, 0 when out of range."""
        v = self.decode(buf, off)
        if self.flt:
            return target.emit_float(emit, v)
        return target.emit(emit, v)
