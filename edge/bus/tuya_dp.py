# Tuya datapoint (DP) units and their mapping to channels (docs/INPUTS.md section 3.2).
#
# DP unit (Tuya MCU serial protocol, "status data unit"): dpid u8 | type u8 | len u16 BE |
# value[len], big-endian. Types: 0 raw (any length), 1 bool (1), 2 value (4, signed),
# 3 string, 4 enum (1), 5 bitmap (1, 2 or 4).
#
# A DP maps to one target or to a list of them. A target may carry "map" ({"label": int},
# string DPs) and "slice" ({"offset": o, "type": ..., "swap": ..., "bits": ...}, edge/bus/value.py:
# a value taken from the DP's bytes; "raw" is the older name, with "size"/"signed"), so a RAW DP
# of any length feeds several channels.

from edge.bus import keys, target, value

_T_RAW = 0
_T_BOOL = 1
_T_VALUE = 2
_T_STRING = 3
_T_ENUM = 4
_T_BITMAP = 5

REASONS = ("dp_truncated", "dp_len", "dp_value", "dp_type", "value_range")
_LEGACY_SIZES = {1: "8", 2: "16", 4: "32"}


def _uint(buf, start, n):
    v = 0
    for i in range(start, start + n):
        v = (v << 8) | buf[i]
    return v


def _slice(spec, path):
    """The value layout of a "slice" (or older "raw") spec, with its byte offset."""
    if not isinstance(spec, dict):
        raise ValueError("config key '%s' must be an object" % path)
    spec = dict(spec)
    off = spec.pop("offset", 0)
    if not isinstance(off, int) or isinstance(off, bool) or off < 0:
        raise ValueError("config key '%s.offset' must be an integer >= 0" % path)
    if "size" in spec or "signed" in spec:  # older form: size 1/2/4, signed flag
        size = spec.pop("size", 4)
        if size not in _LEGACY_SIZES:
            raise ValueError("config key '%s.size' must be 1, 2 or 4" % path)
        spec["type"] = ("i" if spec.pop("signed", False) else "u") + _LEGACY_SIZES[size]
    for k in spec:
        if k not in value.KEYS:
            raise ValueError("config key '%s.%s' is not known" % (path, k))
    return off, value.Layout(spec, path, "u32")


class DPTable:
    """dpid -> [Target] with per-target .map / .layout / .off. decode() emits readings."""

    def __init__(self, dps, decimals=None):
        self._dps = {}
        for k in dps:
            path = "dps.%s" % k
            try:
                dpid = int(k)
            except ValueError:
                raise ValueError("config key '%s': DP id must be 1..255" % path) from None
            if not 1 <= dpid <= 255:
                raise ValueError("config key '%s': DP id must be 1..255" % path)
            specs = dps[k] if isinstance(dps[k], list) else [dps[k]]
            if not specs:
                raise ValueError("config key '%s' must not be an empty list" % path)
            ts = []
            for i, spec in enumerate(specs):
                p = path if len(specs) == 1 else "%s[%d]" % (path, i)
                t = target.parse(spec, p, ("map", "slice", "raw"), decimals)
                m = t.extra.get("map")
                t.map = keys.KeyTable(m) if isinstance(m, dict) else None
                sl = t.extra.get("slice", t.extra.get("raw"))
                t.layout = None
                t.off = 0
                if sl is not None:
                    t.off, t.layout = _slice(sl, p + (".slice" if "slice" in t.extra else ".raw"))
                ts.append(t)
            self._dps[dpid] = ts
        self.unmapped = 0
        self.mapped = 0  # DPs with a target in the last decode()
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0

    def decode(self, w, off, end, emit):
        """DP units in w[off:end]. Returns readings emitted; `mapped` holds how many DPs had
        a target (no tuple per frame)."""
        out = 0
        mapped = 0
        err = self.errors
        while off < end:
            if end - off < 4:
                err["dp_truncated"] += 1
                break
            dpid = w[off]
            typ = w[off + 1]
            ln = (w[off + 2] << 8) | w[off + 3]
            v0 = off + 4
            off = v0 + ln
            if off > end:
                err["dp_truncated"] += 1
                break
            ts = self._dps.get(dpid)
            if ts is None:
                self.unmapped += 1
                continue
            mapped += 1
            if typ > _T_BITMAP:
                err["dp_type"] += 1
                continue
            t = ts[0]
            if len(ts) == 1 and t.layout is None:
                # the common cases inline: one target, a well-formed value / bool / enum
                if typ == _T_VALUE and ln == 4:
                    v = (w[v0] << 24) | (w[v0 + 1] << 16) | (w[v0 + 2] << 8) | w[v0 + 3]
                    if v & 0x80000000:
                        v -= 0x100000000
                elif (typ == _T_BOOL or typ == _T_ENUM) and ln == 1:
                    v = w[v0]
                    if typ == _T_BOOL and v:
                        v = 1
                else:
                    v = None
                if v is not None:
                    if t.emit(emit, v):
                        out += 1
                    else:
                        err["value_range"] += 1
                    continue
            for t in ts:
                out += self._one(t, typ, w, v0, ln, emit)
        self.mapped = mapped
        return out

    def _one(self, t, typ, w, v0, ln, emit):
        err = self.errors
        if t.layout is not None:  # a slice of the DP's bytes, whatever its type
            if ln < t.off + t.layout.size:
                err["dp_len"] += 1
                return 0
            n = t.layout.emit(w, v0 + t.off, t, emit)
        elif typ == _T_STRING:
            if t.map is not None:
                v = t.map.get_bytes(w, v0, v0 + ln)
                if v is None:
                    err["dp_value"] += 1
                    return 0
                n = t.emit(emit, v)
            else:
                d = target.decimal(w, v0, v0 + ln)
                if d is None:
                    err["dp_value"] += 1
                    return 0
                n = t.emit_decimal(emit, d[0], d[1])
        else:
            if typ == _T_BOOL or typ == _T_ENUM:
                ok = ln == 1
            elif typ == _T_VALUE:
                ok = ln == 4
            elif typ == _T_BITMAP:
                ok = ln == 1 or ln == 2 or ln == 4
            else:  # raw without a slice: the whole value, unsigned, up to 4 bytes
                ok = 1 <= ln <= 4
            if not ok:
                err["dp_len"] += 1
                return 0
            v = _uint(w, v0, ln)
            if typ == _T_BOOL:
                v = 1 if v else 0
            elif typ == _T_VALUE and v & 0x80000000:
                v -= 0x100000000
            n = t.emit(emit, v)
        if not n:
            err["value_range"] += 1
        return n
