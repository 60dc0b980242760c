# A virtual clock for `edgectl bench day` (host_tools/bench/day.py): this file is first on the
# MicroPython path of the day run, so `import time` anywhere (the agent, the unix HAL, asyncio's
# scheduler) gets it instead of the built-in, which it extends (MicroPython loads a module of a
# built-in's name from the path first and lets it import the built-in with an empty path).
#
# Virtual time = real ticks + `skipped`: it runs at the real rate, and jump(ms) moves it ahead
# at once. The day driver (day_agent.py) jumps when every task sleeps and no exchange with the
# broker is outstanding, so a day of an appliance runs in seconds while the agent, the MQTT
# client and asyncio keep all their own timing code. C parts of asyncio that stamp a task with
# the real ticks see it as overdue by `skipped`, which only means "run now"; that holds while
# `skipped` < 2^29 ms (6.2 days).

import sys

_path = sys.path
sys.path = []
try:
    from time import *  # noqa: F403  (the built-in: localtime, gmtime, mktime ...)
    import time as _rt
finally:
    sys.path = _path
del _path

_MASK = 0x3FFFFFFF  # ticks wrap at 2^30 (MicroPython's ticks period)
skipped = 0
_t0 = _rt.ticks_ms()
_wall0_ms = _rt.time_ns() // 1000000


def jump(ms):
    global skipped
    skipped += ms


def elapsed_ms():
    """Virtual ms since the import, unmasked."""
    return _rt.ticks_diff(_rt.ticks_ms(), _t0) + skipped


def set_wall(ms):
    """Unix ms the virtual clock reads now."""
    global _wall0_ms
    _wall0_ms = ms - elapsed_ms()


def ticks_ms():
    return (_rt.ticks_ms() + skipped) & _MASK


def ticks_us():
    return (_rt.ticks_us() + skipped * 1000) & _MASK


def time_ns():
    return (_wall0_ms + elapsed_ms()) * 1000000


def time():
    return (_wall0_ms + elapsed_ms()) // 1000


def sleep_ms(ms):
    jump(ms)


def sleep(s):
    jump(int(s * 1000))
