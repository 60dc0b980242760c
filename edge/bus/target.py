# A mapping target: where a bus value goes (channel) and how it becomes the channel's
# fixed-point integer. Shared by every bus so the config reads the same everywhere
# (docs/INPUTS.md section 2.1).
#
# Three kinds of raw value reach a target:
# - an integer count (Modbus integer registers, Tuya value/enum/bitmap DPs, RAW slices):
#   without `scale`/`offset` it passes through as raw * mul // div (already fixed point);
# - a decimal text number (line protocols) or a float (float registers, JSON): an engineering
#   value, stored as round(value * 10**decimals) of the channel (text: truncated, exactly);
# - with `scale` or `offset` every raw value is engineering: value = raw * mul / div * scale +
#   offset, stored as round(value * 10**decimals).
# The stored value is a signed 32-bit integer (docs/FORMAT.md record layout); anything outside
# that range, or not a number (NaN, inf), is rejected and counted by the caller.

_I32_MAX = 0x7FFFFFFF
_I32_MIN = -0x80000000
_KEYS = ("ch", "mul", "div", "scale", "offset")
_MAX_DIGITS = 12  # a longer decimal text is out of any i32 range anyway


def _num(v):
    return (isinstance(v, int) or isinstance(v, float)) and not isinstance(v, bool)


class Target:
    """Channel id plus the conversion to its fixed-point integer. emit_* return 1 when a reading
    was emitted, 0 when the value was out of range (the caller counts the reason)."""

    def __init__(self, ch, mul=1, div=1, extra=None, scale=None, offset=None, decimals=0):
        self.ch = ch
        self.mul = mul
        self.div = div
        self.extra = extra  # bus-specific options (enum table, raw slice, word type, ...)
        self.eng = scale is not None or offset is not None
        self.scale = 1 if scale is None else scale
        self.offset = 0 if offset is None else offset
        self.p10 = 10**decimals

    def _out(self, emit, v):
        if v > _I32_MAX or v < _I32_MIN:
            return 0
        emit(self.ch, v)
        return 1

    def emit(self, emit, raw):
        """An integer count from the bus."""
        if self.eng:
            return self.emit_float(emit, raw)
        if self.mul != 1:
            raw *= self.mul
        if self.div != 1:
            raw //= self.div
        if raw > _I32_MAX or raw < _I32_MIN:
            return 0
        emit(self.ch, raw)  # inline: the hot path of every integer bus value
        return 1

    def emit_float(self, emit, x):
        """An engineering value (float register, JSON number)."""
        v = (x * self.mul / self.div * self.scale + self.offset) * self.p10
        if v != v or v > _I32_MAX or v < _I32_MIN:  # NaN compares unequal to itself
            return 0
        return self._out(emit, int(round(v)))

    def emit_decimal(self, emit, mant, frac):
        """A decimal text number mant * 10**-frac; integer maths unless scale/offset is set."""
        if self.eng:
            return self.emit_float(emit, mant / 10**frac)
        neg = mant < 0
        if neg:
            mant = -mant
        v = mant * self.mul * self.p10 // (self.div * 10**frac)  # truncated towards zero
        return self._out(emit, -v if neg else v)


def decimal(buf, s, e):
    """Decimal text in buf[s:e] as (mantissa, fraction digits), or None."""
    neg = False
    if s < e and (buf[s] == 0x2D or buf[s] == 0x2B):
        neg = buf[s] == 0x2D
        s += 1
    v = 0
    digits = 0
    frac = -1
    for i in range(s, e):
        b = buf[i]
        if b == 0x2E and frac < 0:
            frac = 0
            continue
        if b < 0x30 or b > 0x39 or digits >= _MAX_DIGITS:
            return None
        v = v * 10 + b - 0x30
        digits += 1
        if frac >= 0:
            frac += 1
    if not digits:
        return None
    return (-v if neg else v), (frac if frac > 0 else 0)


def parse(spec, path, extra_keys=(), decimals=None):
    """Build a Target from config: an int (channel id) or {"ch": id, "mul": m, "div": d,
    "scale": x, "offset": y, ...}. decimals: {channel id: decimals} from the channel list.
    Raises ValueError naming the config path."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = {"ch": spec}
    if not isinstance(spec, dict):
        raise ValueError("config key '%s' must be a channel id or an object" % path)
    ch = spec.get("ch")
    if not isinstance(ch, int) or isinstance(ch, bool) or not 0 <= ch <= 255:
        raise ValueError("config key '%s.ch' must be a channel id 0..255" % path)
    mul = spec.get("mul", 1)
    div = spec.get("div", 1)
    for k, v in (("mul", mul), ("div", div)):
        if not isinstance(v, int) or isinstance(v, bool) or v == 0:
            raise ValueError("config key '%s.%s' must be a non-zero integer" % (path, k))
    scale = spec.get("scale")
    offset = spec.get("offset")
    for k, v in (("scale", scale), ("offset", offset)):
        if v is not None and not _num(v):
            raise ValueError("config key '%s.%s' must be a number" % (path, k))
    if scale == 0:
        raise ValueError("config key '%s.scale' must not be 0" % path)
    for k in spec:
        if k not in _KEYS and k not in extra_keys:
            raise ValueError("config key '%s.%s' is not known" % (path, k))
    dec = (decimals or {}).get(ch, 0)
    return Target(ch, mul, div, spec, scale, offset, dec)
