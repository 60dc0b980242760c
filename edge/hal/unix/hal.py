# Unix HAL: wall clock from the host, ticks (real or virtual), a filesystem root on the host
# (VfsPosix), UARTs over ptys/ttys, and simulated I2C / 1-Wire / ADC / pulse inputs.

import os
import time

from micropython import const

from edge.hal.unix import sim as unix_sim

_FLASH_MOUNT = "/flash"
VBOARD_UARTS = "/dev/uart"  # where the virtual board mounts its UART bridges (vboard_boot.py)
_WALL_CHECK_MS = const(1000)  # wall_ms(): compare with the host clock at most this often
_WALL_SLACK_MS = const(2)  # ...and follow it when they differ by more


class Hal:
    platform = "unix"

    def __init__(self):
        self.reset_cause = "power_on"  # read from the reset marker in mount_store()
        self.reset_detail = None
        self._marker = None
        self._virtual = None  # ms since start when the virtual clock is on
        self._t0 = self.ticks_ms()
        self._ntp_at = None  # simulate_ntp(): ms after start when NTP first succeeds
        self._wall_set = True
        self._wall0 = None  # wall ms at ticks _wall_t (wall_ms)
        self._wall_t = time.ticks_ms()

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
        """Unix time in ms, or None while the clock is not set (only with simulate_ntp)."""
        if not self._wall_set:
            return None
        # Called per reading: time_ns() arithmetic allocates (big ints, 128 bytes a call), so the
        # ms come from the monotonic ticks, checked against the host clock once a second
        # (docs/DESIGN.md "Requirements", bounded RAM). Small drift is kept, so stamps never step
        # back by a ms.
        t = time.ticks_ms()
        d = time.ticks_diff(t, self._wall_t)
        if self._wall0 is not None and d < _WALL_CHECK_MS:
            return self._wall0 + d
        now = time.time_ns() // 1000000
        ms = now if self._wall0 is None else self._wall0 + d
        if ms - now > _WALL_SLACK_MS or now - ms > _WALL_SLACK_MS:
            ms = now
        self._wall0 = ms
        self._wall_t = t
        return ms

    def ntp_sync(self, host="pool.ntp.org"):
        """The host's clock is already set; with simulate_ntp() an attempt fails until the
        simulated server answers (config clock.synced_at_ms, docs/FORMAT.md 4)."""
        if self._ntp_at is not None and time.ticks_diff(self.ticks_ms(), self._t0) >= self._ntp_at:
            self._wall_set = True
        return self._wall_set

    def simulate_ntp(self, after_ms):
        """Start with an unset wall clock; NTP succeeds from `after_ms` after start."""
        self._t0 = self.ticks_ms()
        self._ntp_at = after_ms
        self._wall_set = False

    def mount_store(self, path):
        """Mount the store's flash like the ESP32 does (littlefs v2 on 4096-byte NOR blocks,
        docs/FORMAT.md 2): an emulated 2 MiB flash kept in the image file `path`.img so data
        survives a restart. Returns the store's directory on it.

        When the root filesystem is already littlefs (the virtual board, docs/DEPLOY.md 0, like a
        real ESP32), the store is a plain directory on it.

        Also reads the reset marker `path`.reset (note_reset) for reset_cause."""
        self._read_marker(path + ".reset")
        if _root_is_littlefs():
            _makedirs(path)
            return path
        from edge.hal.unix import flashdev

        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            _makedirs(parent)
        self.flash = flashdev.FlashDev(image=path + ".img")
        flashdev.mount(self.flash, _FLASH_MOUNT)
        _makedirs(_FLASH_MOUNT + "/store")  # consent state lives there with either backend
        return _FLASH_MOUNT + "/store"

    def log_device(self, path, spec):
        """The raw log partition (docs/FORMAT.md 8), None when there is none. On the virtual
        board: the emulated partition its boot script opened before the root switch. Else an
        emulated NOR partition of the board's `log_partition` size in the image file
        `path`.log, with the raw-partition rules enforced."""
        if _root_is_littlefs():
            try:
                import _vboard_log  # type: ignore[import-not-found]  # set by the vboard boot

                return _vboard_log.dev
            except ImportError:
                return None
        size = spec.get("size", 0)
        if not isinstance(size, int) or size < 4096:
            return None
        from edge.hal.unix import flashdev

        self.log_flash = flashdev.FlashDev(size // 4096, image=path + ".log", nor=True)
        return self.log_flash

    def free_heap(self):
        import gc

        return gc.mem_free()

    # -- reset cause (docs/HEALTH.md 3) -------------------------------------------------------
    # A process has no reset register: a marker file beside the store says how the last run
    # ended. "running" while the agent runs, "stopped" after a clean exit, "watchdog" or
    # "crash" when the agent knew why it stopped. A run that left "running" was killed
    # without notice (a power cut or reset button on a board): reported as "hard".
    def _read_marker(self, path):
        self._marker = path
        try:
            with open(path) as f:
                word, _, detail = f.read().strip().partition(" ")
        except OSError:
            word, detail = "", ""  # first start
        if word in ("watchdog", "crash"):
            self.reset_cause = word
            self.reset_detail = detail or None
        elif word == "running":
            self.reset_cause = "hard"
        elif word == "soft":  # the agent asked for the reset (cmd/reboot, an update)
            self.reset_cause = "soft"
        self.note_reset("running")

    def note_reset(self, cause, detail=""):
        """Persist why this run is about to end (read back as reset_cause by the next run).
        Safe to call from the watchdog's monitor thread: a plain host file, not the store."""
        if self._marker is None:
            return
        try:
            with open(self._marker, "w") as f:
                f.write(cause + (" " + detail if detail else "") + "\n")
        except OSError:
            pass

    # -- buses and sensors (same signatures as edge/hal/esp32.py) ------------------------------
    def uart(self, spec):
        """spec: {"path": pty or tty, "baud": n, "name": board UART name}. Non-blocking
        readinto/write. On a virtual board (root on littlefs) the host's paths are out of
        reach: its UARTs are the bridges `edgectl vboard --uart NAME=...` mounts at
        /dev/uart/NAME (docs/DEPLOY.md 0). Raises ValueError naming the UART and the path."""
        name = spec.get("name")
        path = spec.get("path")
        label = "uart %r" % name if name else "uart"
        if _is_mounted(VBOARD_UARTS):
            if not name:
                raise ValueError(
                    "%s: a virtual board reaches only the UARTs bridged by board name "
                    "(edgectl vboard --uart NAME=PATH)" % label
                )
            path = VBOARD_UARTS + "/" + name
            try:
                os.stat(path)
            except OSError:
                have = ", ".join(sorted(os.listdir(VBOARD_UARTS))) or "none"
                raise ValueError(
                    "%s is not bridged on this virtual board (bridged: %s): start it with "
                    "`edgectl vboard --uart %s=PTY_OR_URL`" % (label, have, name)
                ) from None
        elif not path:
            raise ValueError("%s needs 'path' on unix (a pty or tty)" % label)
        try:
            return PtyUART(path)
        except OSError as e:
            raise ValueError("%s: cannot open %s: %s" % (label, path, e)) from None

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

    def wdt(self, timeout_ms, on_expire=None):
        """A simulated watchdog; with on_expire it ends the process when it expires."""
        return unix_sim.SimWDT(timeout_ms, self.ticks_ms, on_expire)


class PtyUART:
    """A pty or tty opened raw with VMIN=VTIME=0, so readinto() returns what is there
    (0 when nothing) instead of blocking."""

    def __init__(self, path):
        # unix-only module, absent from the esp32 stubs
        import termios  # type: ignore[import-not-found]

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


def _is_mounted(path):
    import vfs

    try:
        for _fs, mountpoint in vfs.mount():
            if mountpoint == path:
                return True
    except (TypeError, ValueError, OSError):
        pass
    return False


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
