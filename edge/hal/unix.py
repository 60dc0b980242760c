# Unix HAL: wall clock from the host, ticks, a filesystem root on the host (VfsPosix).
# Used by CI and the simulator; hardware (UART, sensors) comes in with issue 6.

import os
import time


class Hal:
    platform = "unix"

    def __init__(self):
        self.reset_cause = "power_on"

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def wall_ms(self):
        """Unix time in ms, or None while the clock is not set (never on unix)."""
        return time.time_ns() // 1000000

    def mount_store(self, path):
        """Make sure the store directory exists; returns its path."""
        _makedirs(path)
        return path

    def free_heap(self):
        import gc

        return gc.mem_free()


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/"
            continue
        cur = cur + part if cur.endswith("/") or not cur else cur + "/" + part
        try:
            os.mkdir(cur)
        except OSError:
            pass
