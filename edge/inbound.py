# Checks on anything that arrives from outside, made before it is parsed or echoed
# (docs/SECURITY.md 2): JSON nesting depth, the strings of a document, and the length of a
# string a reply repeats.
# MicroPython's json.loads recurses per nesting level and allocates per container, so a short
# deeply nested document exhausts a small heap: the depth is counted first, without allocating.

try:
    from micropython import const
except ImportError:  # CPython: edge.config (which uses this module) is imported by host tests

    def const(x):  # type: ignore[misc]
        return x


_QUOTE = const(0x22)
_BACKSLASH = const(0x5C)
_OPEN_ARRAY = const(0x5B)
_OPEN_OBJECT = const(0x7B)
_CLOSE_ARRAY = const(0x5D)
_CLOSE_OBJECT = const(0x7D)
ECHO_MAX = const(32)  # characters of an untrusted string a reply or log line repeats


def json_shape(data, limit, longest):
    """(depth, strings) of JSON text `data` (bytes, str or a memoryview of the receive buffer),
    counted without allocating: the nesting depth outside strings, or limit + 1 as soon as it
    exceeds limit; the number of strings (keys and values), or -1 as soon as one is longer than
    `longest` bytes (escapes counted as written). Malformed text is left to json.loads."""
    depth = 0
    deepest = 0
    n = 0
    size = 0
    in_str = False
    esc = False
    for c in data:
        if isinstance(c, str):
            c = ord(c)
        if in_str:
            if esc:
                esc = False
            elif c == _BACKSLASH:
                esc = True
            elif c == _QUOTE:
                in_str = False
                continue
            size += 1
            if size > longest:
                return deepest, -1
        elif c == _QUOTE:
            in_str = True
            size = 0
            n += 1
        elif c == _OPEN_ARRAY or c == _OPEN_OBJECT:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return limit + 1, n
        elif c == _CLOSE_ARRAY or c == _CLOSE_OBJECT:
            depth -= 1
    return deepest, n


def json_depth(data, limit):
    """The nesting depth of JSON text `data`, or limit + 1 as soon as it exceeds limit."""
    return json_shape(data, limit, len(data))[0]


def echo(value):
    """repr() of an untrusted value, at most ECHO_MAX characters (a reply that repeats a
    name, id or key must not grow with it: the reply has a fixed budget)."""
    if isinstance(value, str) and len(value) > ECHO_MAX:
        return repr(value[:ECHO_MAX]) + "..."
    r = repr(value)
    return r if len(r) <= ECHO_MAX + 2 else r[:ECHO_MAX] + "..."
