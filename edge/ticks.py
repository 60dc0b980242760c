# Millisecond tick arithmetic shared by the bus and sensor drivers (STYLE 7.1.7).
# MicroPython's time.ticks_* wrap; the CPython fallback lets the host fuzz the parsers in-process.

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython (host-side tests and fuzzing)
    import time as _time

    _PERIOD = 1 << 30
    _HALF = 1 << 29

    def ticks_ms():  # type: ignore[misc]
        ms = int(_time.monotonic() * 1000)  # type: ignore[attr-defined]
        return ms & (_PERIOD - 1)

    def ticks_diff(a, b):  # type: ignore[misc,no-redef]
        return ((a - b + _HALF) & (_PERIOD - 1)) - _HALF

    def ticks_add(a, delta):  # type: ignore[misc]
        return (a + delta) & (_PERIOD - 1)


__all__ = ["ticks_add", "ticks_diff", "ticks_ms"]
