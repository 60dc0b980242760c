# Unix HAL: wall clock from the host, ticks (real or virtual), a filesystem root on the host
# (VfsPosix), UARTs over ptys/ttys, and simulated I2C / 1-Wire / ADC / pulse inputs (issue 6).

import os
import time

from edge.hal import unix_sim

_FLASH_MOUNT = "/flash"


class Hal:
    platform = "unix"

    def __init__(self):
        self.reset_cause = "power_on"
        self._virtual = None  # ms since start when the virtual clock is on

    # -- clock ---------------------------------------------------------------------------------
    def ticks_ms(self):
        if self._virtual is not None:
            return self._virtual & 0x3FFFFFFF
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def use_virtual_clock(self, start_ms=0):
        """Deterministic runs: ticks_ms() only moves when advance() is called."""
        self._virtual = start_ms

    def advance(self, ms):
        self._virtual += ms

    def wall_ms(self):
        """Unix time in ms, or None while the clock is not set (never on unix)."""
        return time.time_ns() // 1000000

    def mount_store(self, path):
        """Mount the store's flash like the ESP32 does (littlefs v2 on 4096-byte NOR blocks,
        issue 3): an emulated 2 MiB flash kept in the image file `path`.img so data
        survives a restart. Returns the store's directory on it.

        When the root filesystem is already littlefs (the virtual board of issue 7, like a
        real ESP32), the store is a plain directory on it."""
        if _root_is_littlefs():
            _makedirs(path)
            return path
        from edge.hal import flashdev

        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            _makedirs(parent)
        self.flash = flashdev.FlashDev(image=path + ".img")
        flashdev.mount(self.flash, _FLASH_MOUNT)
        return _FLASH_MOUNT + "/store"

    def free_heap(self):
        import gc

        return gc.mem_free()

    # -- buses and sensors (same signatures as edge/hal/esp32.py) ------------------------------
    def uart(self, spec):
        """spec: {"path": pty or tty, "baud": n}. Non-blocking readinto/write."""
        path = spec.get("path")
        if not path:
            raise ValueError("uart needs 'path' on unix (a pty or tty)")
        return PtyUART(path)

    def i2c(self, spec, attached):
        """A simulated I2C bus with the attached sensors answering their real protocol."""
        return unix_sim.SimI2C(attached, self.ticks_ms)

    def onewire(self, spec, attached):
        return unix_sim.SimOneWire(attached, self.ticks_ms)

    def adc(self, spec, attached):
        return unix_sim.SimADC(attached.get("sim", 0), self.ticks_ms)

    def counter(self, spec, attached):
        """Pulse counter: value() is the cumulative count of edges on the pin."""
        return unix_sim.SimCounter(attached.get("sim", 0), self.ticks_ms)

    def wdt(self, timeout_ms):
        return unix_sim.SimWDT(timeout_ms, self.ticks_ms)


class PtyUART:
    """A pty or tty opened raw with VMIN=VTIME=0, so readinto() returns what is there
    (0 when nothing) instead of blocking (../shared/TOOLCHAIN.md 6)."""

    def __init__(self, path):
        import termios

        self._f = open(path, "r+b")
        fd = self._f.fileno()
        termios.setraw(fd)
        a = termios.tcgetattr(fd)
        a[6][6] = 0  # VMIN
        a[6][5] = 0  # VTIME
        termios.tcsetattr(fd, termios.TCSANOW, a)

    def readinto(self, buf):
        try:
            return self._f.readinto(buf)
        except OSError:
            return 0  # EAGAIN / the writer closed its side: nothing to read now

    def write(self, buf):
        return self._f.write(buf)

    def close(self):
        self._f.close()


def _root_is_littlefs():
    import vfs

    try:
        for fs, mountpoint in vfs.mount():
            if mountpoint == "/":
                return "Lfs" in str(type(fs))
    except (TypeError, ValueError, OSError):
        pass
    return False


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
