# Line formats that need the whole line as an object: JSON lines and regular expressions
# (edge/bus/line.py holds the buffering and the index-based formats). docs/INPUTS.md 3.1.
#
# MicroPython's `re` (a subset of CPython's, the same on the unix port and the ESP32): no named
# groups, no match.groups(), no span(); character classes, alternation, `?`, `*`, `+`, `{m,n}`
# and `(?:...)` work. So a pattern's `(?P<name>...)` groups are rewritten here to numbered
# groups at config time and the names kept in order; `match.group(n)` is all that runs.

import json
import re

_MAX_GROUPS = 9  # MicroPython's re keeps at most 9 groups (group 0 is the whole match)


def translate(pattern, path):
    """(pattern with plain groups, [name or None per capturing group])."""
    out = []
    names = []
    i = 0
    n = len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # "[]...]": the first ] is a literal
                out.append("[]")
                i += 2
                continue
        elif c == "(":
            if pattern.startswith("(?P<", i):
                j = pattern.find(">", i)
                name = pattern[i + 4 : j] if j > 0 else ""
                if not name or name in names:
                    raise ValueError("config key '%s.pattern': bad group name at %d" % (path, i))
                names.append(name)
                out.append("(")
                i = j + 1
                continue
            if not pattern.startswith("(?", i):
                names.append(None)
        out.append(c)
        i += 1
    if len(names) > _MAX_GROUPS:
        raise ValueError("config key '%s.pattern' has more than %d groups" % (path, _MAX_GROUPS))
    return "".join(out), names


class TextFormat:
    def __init__(self, fmt, spec, path, decimals):
        from edge.bus import line

        self.fmt = fmt
        if fmt == "json":
            self.targets = line.table(spec, "keys", path, decimals)[1]
            # sorted: the same emit order on every port (MicroPython dicts keep no order)
            self.paths = [(k, k.split(".")) for k in sorted(self.targets)]
            return
        pat = spec.get("pattern")
        if not isinstance(pat, str) or not pat:
            raise ValueError("config key '%s.pattern' must be a regular expression" % path)
        plain, names = translate(pat, path)
        try:
            self.re = re.compile(plain.encode())
        except (
            Exception
        ) as e:  # MicroPython raises ValueError("regex too complex"), CPython re.error
            raise ValueError("config key '%s.pattern': %s" % (path, e)) from None
        groups = line.table(spec, "groups", path, decimals)[1]
        self.groups = []
        for k in groups:
            if k in names:
                g = names.index(k) + 1
            else:
                try:
                    g = int(k)
                except ValueError:
                    g = 0
                if not 1 <= g <= len(names):
                    raise ValueError("config key '%s.groups.%s': no such group" % (path, k))
            self.groups.append((g, groups[k]))
        self.groups.sort(key=lambda e: e[0])  # in group order on every port

    def line(self, p, buf, s, n, emit):
        data = bytes(buf[s:n])
        if self.fmt == "regex":
            m = self.re.search(data)
            if m is None:
                p.reject("no_match")
                return
            for g, t in self.groups:
                v = m.group(g)
                if v is None:
                    p.reject("missing_field")
                else:
                    p.value(t, v, 0, len(v), emit)
            return
        try:
            doc = json.loads(data)
        except (ValueError, RuntimeError, MemoryError):
            # RuntimeError: CPython's recursion limit on deeply nested input (the host fuzz)
            p.reject("bad_json")
            return
        if not isinstance(doc, dict):
            p.reject("bad_json")
            return
        for key, parts in self.paths:
            v = doc
            for part in parts:
                v = v.get(part) if isinstance(v, dict) else None
            if v is not None:
                self._json_value(p, self.targets[key], v, emit)

    def _json_value(self, p, t, v, emit):
        if isinstance(v, bool):
            ok = t.emit(emit, 1 if v else 0)
        elif isinstance(v, int):
            ok = t.emit_decimal(emit, v, 0)
        elif isinstance(v, float):
            ok = t.emit_float(emit, v)
        elif isinstance(v, str):
            b = v.encode()
            p.value(t, b, 0, len(b), emit)
            return
        else:
            p.reject("bad_value")
            return
        if ok:
            p.accepted += 1
            p.mark_decoded()
        else:
            p.reject("value_range")
