# A mapping target: where a bus value goes (channel) and its fixed-point conversion.
# Shared by the line, Tuya and Modbus mappings so the config reads the same everywhere.


class Target:
    """Channel id plus value = raw * mul // div (integer only, STYLE 7.1.4)."""

    def __init__(self, ch, mul=1, div=1, extra=None):
        self.ch = ch
        self.mul = mul
        self.div = div
        self.extra = extra  # bus-specific options (scale, enum table, raw layout, word type)

    def emit(self, emit, raw):
        if self.mul != 1:
            raw *= self.mul
        if self.div != 1:
            raw //= self.div
        emit(self.ch, raw)


def parse(spec, path, extra_keys=()):
    """Build a Target from config: an int (channel id) or {"ch": id, "mul": m, "div": d, ...}.
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
    for k in spec:
        if k not in ("ch", "mul", "div") and k not in extra_keys:
            raise ValueError("config key '%s.%s' is not known" % (path, k))
    return Target(ch, mul, div, spec)
