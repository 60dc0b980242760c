# Line protocols: an appliance console printing one record per text line, mapped to channels
# from config alone (docs/INPUTS.md section 3.1). Bytes are collected into a preallocated line
# buffer; each complete line (ended by LF or CR) is parsed by its format:
#
#   kv      KEY=VALUE;KEY=VALUE (sep and assign configurable; assign " " = key value key value)
#   fields  positional fields split by whitespace or one separator byte
#   csv     cells named by a header line learned from the stream (or given in config)
#   json    one JSON object per line (edge/bus/line_text.py)
#   regex   a pattern with named groups (edge/bus/line_text.py)
#
# A value is a decimal number (edge/bus/target.py: truncated to the channel's decimals) or a
# label of the target's "enum" table. A bad field is counted by reason and skipped; every byte
# lands in the ledger (edge/bus/ledger.py) with its line (kv: with its pair).

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus import keys, target
from edge.bus.ledger import Ledger, source_stats

_DECODED = const(0)
_UNHANDLED = const(1)
_REJECTED = const(2)

FORMATS = ("kv", "fields", "csv", "json", "regex")
REASONS = (
    "too_long",
    "empty_key",
    "no_value",
    "bad_value",
    "value_range",
    "unknown_key",
    "unknown_label",
    "missing_field",
    "no_header",
    "bad_json",
    "no_match",
)
TARGET_KEYS = ("enum",)


def _space(b):
    return b == 0x20 or b == 0x09


def make_target(spec, path, decimals):
    t = target.parse(spec, path, TARGET_KEYS, decimals)
    en = t.extra.get("enum")
    if en is not None:
        if not isinstance(en, dict):
            raise ValueError("config key '%s.enum' must be an object" % path)
        for label in en:
            v = en[label]
            if not isinstance(v, int) or isinstance(v, bool) or not label:
                raise ValueError("config key '%s.enum.%s' must map to an int" % (path, label))
        en = keys.KeyTable(en)
    t.enum = en
    return t


def table(spec, key, path, decimals):
    """{name: target} from config as a KeyTable of targets (and the names in order)."""
    m = spec.get(key)
    if not isinstance(m, dict) or not m:
        raise ValueError("config key '%s.%s' must map names to channels" % (path, key))
    out = {}
    for k in m:
        if not k:
            raise ValueError("config key '%s.%s.': empty name" % (path, key))
        out[k] = make_target(m[k], "%s.%s.%s" % (path, key, k), decimals)
    return keys.KeyTable(out), out


def _sep(spec, key, default, path):
    v = spec.get(key, default)
    if not isinstance(v, str) or len(v) != 1:
        raise ValueError("config key '%s.%s' must be one character" % (path, key))
    return ord(v)


class LineParser:
    """Feed bytes; calls emit(channel, int) per mapped field. spec: the input's config
    (format and its keys); decimals: {channel id: decimals}."""

    def __init__(self, spec, decimals=None, path="line"):
        fmt = spec.get("format", "kv")
        if fmt not in FORMATS:
            raise ValueError(
                "config key '%s.format' must be one of %s" % (path, " ".join(FORMATS))
            )
        self.fmt = fmt
        n = spec.get("max_line", 256)
        if not isinstance(n, int) or isinstance(n, bool) or not 16 <= n <= 2048:
            raise ValueError("config key '%s.max_line' must be 16..2048" % path)
        self._buf = bytearray(n)
        self._n = 0
        self._len = 0
        self._over = False  # the line outgrew the buffer: rejected up to its end
        prefix = spec.get("prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise ValueError("config key '%s.prefix' must be a non-empty string" % path)
        self._prefix = prefix.encode() if prefix else None
        self.sep = _sep(spec, "sep", {"kv": ";", "csv": ","}.get(fmt, " "), path)
        self.assign = _sep(spec, "assign", "=", path)
        self._sepb = bytes((self.sep,))
        self._assignb = bytes((self.assign,))
        self.header = None  # csv: targets per column, once known
        if fmt == "kv":
            self.keys = table(spec, "keys", path, decimals)[0]
        elif fmt == "fields":
            self.fields = []
            for k, t in table(spec, "fields", path, decimals)[1].items():
                try:
                    self.fields.append((int(k), t))
                except ValueError:
                    raise ValueError(
                        "config key '%s.fields.%s' must be a field index" % (path, k)
                    ) from None
            self.fields.sort(key=lambda e: e[0])  # in field order on every port
        elif fmt == "csv":
            self.keys, named = table(spec, "columns", path, decimals)
            self._ncols = len(named)
            fixed = spec.get("header")
            if fixed is not None:
                if not isinstance(fixed, list) or not all(isinstance(c, str) for c in fixed):
                    raise ValueError("config key '%s.header' must be a list of names" % path)
                self.header = [named.get(c) for c in fixed]
            self._fixed = fixed is not None
        else:
            from edge.bus import line_text

            self.text = line_text.TextFormat(fmt, spec, path, decimals)
        self.accepted = 0
        self.lines = 0
        self.ledger = Ledger()
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0

    def stats(self):
        d = source_stats(self.accepted, self.ledger, self.errors)
        d["lines"] = self.lines
        return d

    # -- input ---------------------------------------------------------------------------------

    def feed(self, buf, n, emit, now_ms=0):
        """Parse buf[0:n]. Returns the number of readings emitted."""
        out = 0
        lb = self._buf
        cap = len(lb)
        self.ledger.fed += n
        for i in range(n):
            b = buf[i]
            if b == 0x0A or b == 0x0D:
                out += self._end_line(emit)
            elif self._over:
                self.ledger.rejected += 1
            elif self._n < cap:
                lb[self._n] = b
                self._n += 1
            else:
                self._over = True
                self.errors["too_long"] += 1
                self.ledger.rejected += self._n + 1
                self._n = 0
        return out

    def flush(self, emit):
        """End of input: a last line without its line break is parsed as it is."""
        if self._n or self._over:
            return self._line(emit, 0)
        return 0

    def _end_line(self, emit):
        if self._over:
            self._over = False
            self.ledger.rejected += 1  # the line break of the over-long line
            return 0
        if not self._n:
            self.ledger.garbage += 1  # an empty line, or the LF of a CR LF pair
            return 0
        return self._line(emit, 1)

    def _line(self, emit, term):
        n = self._n
        self._n = 0
        self._len = n
        self._over = False
        self.lines += 1
        s = 0
        p = self._prefix
        if p is not None:
            lb = self._buf
            while s < n and _space(lb[s]):
                s += 1
            k = len(p)
            if n - s < k or lb[s : s + k] != p:
                self.ledger.unhandled += n + term  # another kind of line
                return 0
            s += k
        self._kind = _UNHANDLED
        self._pair = 0  # kv: bytes of this line already put in the ledger pair by pair
        before = self.accepted
        if self.fmt == "kv":
            self._kv(s, n, emit)
        elif self.fmt == "fields":
            self._fields(s, n, emit)
        elif self.fmt == "csv":
            self._csv(s, n, emit)
        else:
            self.text.line(self, self._buf, s, n, emit)
        out = self.accepted - before
        rest = n + term - self._pair
        if self._kind == _DECODED or out:
            self.ledger.decoded += rest
        elif self._kind == _REJECTED:
            self.ledger.rejected += rest
        else:
            self.ledger.unhandled += rest
        return out

    # -- values --------------------------------------------------------------------------------

    def mark_decoded(self):
        self._kind = _DECODED

    def reject(self, reason):
        self.errors[reason] += 1
        if self._kind != _DECODED:
            self._kind = _REJECTED

    def value(self, t, buf, s, e, emit):
        """The text buf[s:e] (spaces and quotes trimmed) into target t. True when emitted."""
        while s < e and (_space(buf[s]) or buf[s] == 0x22):
            s += 1
        while e > s and (_space(buf[e - 1]) or buf[e - 1] == 0x22):
            e -= 1
        if s == e:
            self.reject("no_value")
            return False
        d = target.decimal(buf, s, e)
        if d is not None:
            ok = t.emit_decimal(emit, d[0], d[1])
        elif t.enum is None:
            self.reject("bad_value")
            return False
        else:
            v = t.enum.get_bytes(buf, s, e)
            if v is None:
                self.reject("unknown_label")
                return False
            ok = t.emit(emit, v)
        if not ok:
            self.reject("value_range")
            return False
        self.accepted += 1
        self._kind = _DECODED
        return True

    # -- formats -------------------------------------------------------------------------------

    def _kv(self, s, n, emit):
        lb = self._buf
        sep = self.sep
        words = self.assign == 0x20  # key value key value ...
        if words or sep == 0x20:
            return self._kv_words(s, n, emit, words)
        sepb = self._sepb
        while s < n:
            e = lb.find(sepb, s, n)  # in C: no Python loop per byte
            if e < 0:
                e = n
            self._kv_pair(s, e, emit)
            s = e + 1

    def _kv_pair(self, s, e, emit):
        """One KEY=VALUE pair in buf[s:e]; its bytes (and its separator) go to the ledger."""
        lb = self._buf
        a = lb.find(self._assignb, s, e)
        if a < 0:
            a = e
        k0, k1 = s, a
        while k0 < k1 and _space(lb[k0]):
            k0 += 1
        while k1 > k0 and _space(lb[k1 - 1]):
            k1 -= 1
        kind = _UNHANDLED
        if k0 == k1:
            if a < e:  # "=value": a pair without a key
                self.errors["empty_key"] += 1
                kind = _REJECTED
        elif a == e:
            self.errors["no_value"] += 1
            kind = _REJECTED
        else:
            t = self.keys.get_bytes(lb, k0, k1)
            if t is None:
                self.errors["unknown_key"] += 1
            else:
                was = self._kind
                self._kind = _UNHANDLED
                kind = _DECODED if self.value(t, lb, a + 1, e, emit) else _REJECTED
                self._kind = was
        k = e - s + (1 if e < self._len else 0)  # its separator
        self._pair += k
        if kind == _DECODED:
            self.ledger.decoded += k
            self._kind = _DECODED
        elif kind == _REJECTED:
            self.ledger.rejected += k
            if self._kind != _DECODED:
                self._kind = _REJECTED
        else:
            self.ledger.unhandled += k

    def _tokens(self, s, n, sep):
        """(start, end) of each field of buf[s:n]; sep 0x20 splits on runs of spaces/tabs."""
        lb = self._buf
        out = []
        if sep == 0x20:
            while s < n:
                while s < n and _space(lb[s]):
                    s += 1
                if s == n:
                    break
                e = s
                while e < n and not _space(lb[e]):
                    e += 1
                out.append((s, e))
                s = e
            return out
        while True:
            e = s
            while e < n and lb[e] != sep:
                e += 1
            out.append((s, e))
            if e >= n:
                return out
            s = e + 1

    def _kv_words(self, s, n, emit, words):
        lb = self._buf
        toks = self._tokens(s, n, 0x20)
        if not words:  # whitespace-separated KEY=VALUE pairs
            for a, e in toks:
                self._kv_pair(a, e, emit)
            return
        for i in range(0, len(toks) - 1, 2):
            t = self.keys.get_bytes(lb, toks[i][0], toks[i][1])
            if t is None:
                self.errors["unknown_key"] += 1
            else:
                self.value(t, lb, toks[i + 1][0], toks[i + 1][1], emit)
        if len(toks) % 2:
            self.reject("no_value")

    def _fields(self, s, n, emit):
        toks = self._tokens(s, n, self.sep)
        for i, t in self.fields:
            if i < len(toks):
                self.value(t, self._buf, toks[i][0], toks[i][1], emit)
            else:
                self.reject("missing_field")

    def _csv(self, s, n, emit):
        lb = self._buf
        toks = self._tokens(s, n, self.sep)
        cells = []
        numeric = False
        named = 0
        for a, e in toks:
            while a < e and (_space(lb[a]) or lb[a] == 0x22):
                a += 1
            while e > a and (_space(lb[e - 1]) or lb[e - 1] == 0x22):
                e -= 1
            if target.decimal(lb, a, e) is not None:
                numeric = True
            t = self.keys.get_bytes(lb, a, e)
            if t is not None and t not in cells:
                named += 1
            cells.append(t)
        if named == self._ncols and not numeric and not self._fixed:
            # a header line: every configured column named, no number (again after an
            # appliance restart; a noisy line cannot re-map the columns)
            self.header = cells
            self._kind = _DECODED
            return
        if self.header is None:
            self.reject("no_header")
            return
        h = self.header
        for i in range(len(h)):
            if h[i] is None:
                continue
            if i < len(toks):
                self.value(h[i], lb, toks[i][0], toks[i][1], emit)
            else:
                self.reject("missing_field")
