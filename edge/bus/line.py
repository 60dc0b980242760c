# Line protocol parser: `KEY=VALUE;KEY=VALUE\n` (issue 6 item 2). Streaming, one byte at a time,
# no allocation per byte: keys are hashed as they arrive and numbers accumulated as integers.
#
# Grammar (docs/INPUTS.md): pairs separated by ';', lines ended by '\n' or '\r'. VALUE is a
# decimal number (optional sign, optional '.'), or a label the key's "enum" table maps to an int.
# A bad pair is rejected and counted; parsing resumes at the next ';' or end of line.

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus import keys, target

_KEY = const(0)
_VAL = const(1)
_SKIP = const(2)
_MAX_KEY = const(16)
_MAX_LABEL = const(16)
_LIMIT = const(100000000)  # 9 digits: value * 10**scale stays a small int on the ESP32

REASONS = (
    "key_too_long",
    "empty_key",
    "no_value",
    "bad_byte",
    "bad_value",
    "value_range",
    "unknown_key",
    "unknown_label",
)


class LineParser:
    """Feed bytes; calls emit(channel, int) per accepted pair.

    keymap: {"KEY": target spec}; a spec may carry "scale" (decimal places kept, default 0)
    and "enum" ({"LABEL": int}). See edge/bus/target.py for ch/mul/div."""

    def __init__(self, keymap):
        tmap = {}
        for k in keymap:
            path = "keys.%s" % k
            if not k or len(k) > _MAX_KEY:
                raise ValueError("config key '%s': key must be 1..%d bytes" % (path, _MAX_KEY))
            t = target.parse(keymap[k], path, ("scale", "enum"))
            scale = t.extra.get("scale", 0)
            if not isinstance(scale, int) or not 0 <= scale <= 6:
                raise ValueError("config key '%s.scale' must be 0..6" % path)
            t.scale = scale
            t.pow = 10**scale
            en = t.extra.get("enum")
            if en is not None:
                if not isinstance(en, dict):
                    raise ValueError("config key '%s.enum' must be an object" % path)
                for label in en:
                    v = en[label]
                    if not isinstance(v, int) or isinstance(v, bool) or not label:
                        raise ValueError(
                            "config key '%s.enum.%s' must map to an int" % (path, label)
                        )
                en = keys.KeyTable(en)
            t.enum = en
            tmap[k] = t
        self._keys = keys.KeyTable(tmap)
        self._kbuf = bytearray(_MAX_KEY)
        self._lbuf = bytearray(_MAX_LABEL)
        self.accepted = 0
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self._reset()

    def _reset(self):
        self._state = _KEY
        self._klen = 0
        self._khash = keys.seed()
        self._t = None
        self._scale = 0

    def _reject(self, reason):
        self.errors[reason] += 1
        self._state = _SKIP

    def _start_value(self):
        self._acc = 0
        self._neg = False
        self._digits = 0
        self._frac = -1  # -1: no '.', else digits after it
        self._llen = 0
        self._lhash = keys.seed()
        self._label = False

    def _finish(self, emit):
        """End of a value: convert and emit. Returns 1 if a reading was emitted."""
        t = self._t
        if t is None:
            return 0  # unknown key: counted when the '=' arrived
        if self._label:
            if t.enum is None:
                self.errors["bad_value"] += 1
                return 0
            v = t.enum.get(self._lbuf, self._llen, self._lhash)
            if v is None:
                self.errors["unknown_label"] += 1
                return 0
            t.emit(emit, v)
            self.accepted += 1
            return 1
        if self._digits == 0:
            self.errors["no_value"] += 1
            return 0
        v = self._acc
        frac = self._frac if self._frac > 0 else 0
        while frac < t.scale:
            v *= 10
            frac += 1
        if v >= _LIMIT * 10:
            self.errors["value_range"] += 1
            return 0
        t.emit(emit, -v if self._neg else v)
        self.accepted += 1
        return 1

    def feed(self, buf, n, emit, now_ms=0):
        """Parse buf[0:n]. Returns the number of readings emitted."""
        out = 0
        for i in range(n):
            b = buf[i]
            if b == 0x0A or b == 0x0D:  # end of line ends any pair
                if self._state == _VAL:
                    out += self._finish(emit)
                elif self._state == _KEY and self._klen:
                    self.errors["no_value"] += 1
                self._reset()
                continue
            st = self._state
            if st == _SKIP:
                if b == 0x3B:  # ';'
                    self._reset()
            elif st == _KEY:
                if b == 0x3D:  # '='
                    if not self._klen:
                        self._reject("empty_key")
                        continue
                    self._t = self._keys.get(self._kbuf, self._klen, self._khash)
                    if self._t is None:
                        self._reject("unknown_key")
                        continue
                    self._state = _VAL
                    self._scale = self._t.scale
                    self._start_value()
                elif b == 0x3B:
                    if self._klen:
                        self.errors["no_value"] += 1
                    self._reset()
                elif b < 0x21 or b > 0x7E:
                    self._reject("bad_byte")
                elif self._klen >= _MAX_KEY:
                    self._reject("key_too_long")
                else:
                    self._kbuf[self._klen] = b
                    self._klen += 1
                    self._khash = keys.step(self._khash, b)
            else:  # _VAL
                if b == 0x3B:
                    out += self._finish(emit)
                    self._reset()
                elif b < 0x21 or b > 0x7E:
                    self._reject("bad_byte")
                else:
                    self._value_byte(b)
        return out

    def _value_byte(self, b):
        # Every byte also goes into the label buffer so "ON"/"OPEN" can match an enum table.
        if self._llen < _MAX_LABEL:
            self._lbuf[self._llen] = b
            self._llen += 1
            self._lhash = keys.step(self._lhash, b)
        elif self._label:
            self._reject("bad_value")
            return
        if self._label:
            return
        if 0x30 <= b <= 0x39:
            if self._frac >= 0:
                if self._frac >= self._scale:
                    return  # digits beyond the configured scale are truncated
                self._frac += 1
            if self._acc >= _LIMIT:
                self._reject("value_range")
                return
            self._acc = self._acc * 10 + (b - 0x30)
            self._digits += 1
        elif b == 0x2D and self._llen == 1:  # leading '-'
            self._neg = True
        elif b == 0x2B and self._llen == 1:  # leading '+'
            pass
        elif b == 0x2E and self._frac < 0:  # '.'
            self._frac = 0
        else:
            self._label = True
