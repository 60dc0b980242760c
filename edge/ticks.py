# Millisecond tick arithmetic shared by the bus and sensor drivers.
# MicroPython's time.ticks_* wrap at 2^30; the CPython fallback (edge/wire.py's arithmetic)
# lets the host fuzz the parsers in-process.

try:
    from time import ticks_add, ticks_diff, ticks_ms
except ImportError:  # CPython (host-side tests and fuzzing)
    import time as _time

    from edge.wire import TICKS_PERIOD, ticks_diff  # type: ignore[no-redef]

    def ticks_ms():  # type: ignore[misc]
        ms = int(_time.monotonic() * 1000)  # type: ignore[attr-defined]
        return ms & (TICKS_PERIOD - 1)

    def ticks_add(a, delta):  # type: ignore[misc]
        return (a + delta) & (TICKS_PERIOD - 1)


__all__ = ["ticks_add", "ticks_diff", "ticks_ms"]
