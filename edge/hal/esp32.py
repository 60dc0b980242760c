# ESP32 HAL: machine.UART / I2C / ADC / Pin / WDT, onewire, network.WLAN with
# reconnect, ntptime, reset cause. Same method names and signatures as edge/hal/unix/hal.py; only
# this file knows it runs on an ESP32. Checked against micropython-esp32-stubs (tests/
# test_stub_typecheck.py).

import gc
import time

import machine

_CAUSES = {
    machine.PWRON_RESET: "power_on",
    machine.HARD_RESET: "hard",
    machine.WDT_RESET: "watchdog",
    machine.DEEPSLEEP_RESET: "deepsleep",
    machine.SOFT_RESET: "soft",
}
# ESP32 ports older than v1.22 count time from 2000-01-01; convert to the Unix epoch.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
_VALID_AFTER = 1700000000  # before this, the RTC was never set (no NTP yet)


class Hal:
    platform = "esp32"

    def __init__(self):
        self.reset_cause = _CAUSES.get(machine.reset_cause(), "unknown")
        self.reset_detail = None
        self._read_marker()
        self._wlan = None
        self._sec = 0  # the last whole second time.time() gave, and the ticks when it began
        self._sec_ticks = 0

    # -- clock ---------------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def wall_ms(self):
        """Unix time in ms, or None until NTP has set the clock. time.time() has whole
        seconds here; the milliseconds come from ticks since that second was first seen."""
        s = int(time.time()) + _EPOCH_OFFSET  # an int on the ESP32; a float on some ports
        if s < _VALID_AFTER:
            return None
        now = time.ticks_ms()
        if s != self._sec:
            self._sec = s
            self._sec_ticks = now  # type: ignore[assignment]  # ticks are small ints at run time
        return s * 1000 + min(999, time.ticks_diff(now, self._sec_ticks))

    def ntp_sync(self, host="pool.ntp.org"):
        """One NTP attempt; True on success (edge/clock.py retries with backoff)."""
        import ntptime

        ntptime.host = host
        try:
            ntptime.settime()
        except (OSError, OverflowError):
            return False
        return True

    # -- storage -------------------------------------------------------------------------------
    def mount_store(self, path):
        """The firmware mounts littlefs at /; create the store directory on it."""
        import os

        cur = ""
        for part in path.split("/"):
            if part:
                cur = cur + "/" + part if cur else part
                try:
                    os.mkdir(cur)
                except OSError:
                    pass
        return path

    def log_device(self, path, spec):
        """The raw log partition (docs/FORMAT.md 8): the data partition labelled
        spec["label"] (default "log") in the flashed partition table, None when there is
        none. esp32.Partition.writeblocks with an offset programs without erasing; ioctl 6
        erases one 4096-byte block, which is what the log needs. An encrypted partition is
        refused: flash encryption cannot program a page in several parts."""
        import esp32

        found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=spec.get("label", "log"))
        if not found:
            return None
        part = found[0]
        if part.info()[5]:
            raise OSError("log partition %s is encrypted" % spec.get("label", "log"))
        return part

    def free_heap(self):
        return gc.mem_free()

    # -- reset cause (docs/HEALTH.md 3) -------------------------------------------------------
    # RTC memory survives every reset but a power cut: note_reset() leaves the reason there
    # ("crash ...", or "watchdog <task>" when the supervisor stops feeding), so the next boot
    # reports what the hardware cause alone cannot tell.
    def _read_marker(self):
        try:
            rtc = machine.RTC()
            word, _, detail = bytes(rtc.memory()).decode().partition(" ")
            rtc.memory(b"running")
        except (AttributeError, OSError, ValueError):
            return
        if self.reset_cause != "power_on" and word in ("watchdog", "crash"):
            self.reset_cause = word
            self.reset_detail = detail or None

    def note_reset(self, cause, detail=""):
        """Persist why this run is about to end, for the next boot's reset_cause."""
        try:
            machine.RTC().memory((cause + (" " + detail if detail else ""))[:64].encode())
        except (AttributeError, OSError):
            pass

    # -- network -------------------------------------------------------------------------------
    # Station mode only; edge/net.py decides when to (re)connect and how long to back off. Every
    # call returns at once: WLAN.connect() starts the association in the background.
    def wifi_connect(self, ssid, password, hostname=None):
        """Start (or restart) associating with ssid; never blocks."""
        import network

        if self._wlan is None:
            if hostname:
                try:
                    network.hostname(hostname)
                except (AttributeError, ValueError, OSError):
                    pass  # older firmware: no network.hostname(); the default name stays
            self._wlan = network.WLAN(network.WLAN.IF_STA)
        w = self._wlan
        w.active(True)
        try:
            w.disconnect()  # a connect while still associating raises on some firmware
        except OSError:
            pass
        w.connect(ssid, password)

    def wifi_status(self):
        """(connected, rssi or None, status code) of the station; (False, None, None) before
        the first connect."""
        w = self._wlan
        if w is None:
            return (False, None, None)
        up = bool(w.isconnected())
        rssi = None
        if up:
            try:
                rssi = w.status("rssi")
            except (OSError, ValueError):
                pass
        return (up, rssi, w.status())

    # -- buses and sensors ---------------------------------------------------------------------
    def uart(self, spec):
        u = machine.UART(
            spec["id"],
            baudrate=spec.get("baud", 9600),
            tx=spec["tx"],
            rx=spec["rx"],
            timeout=0,
            rxbuf=512,
        )
        de = spec.get("de")
        return RS485(u, machine.Pin(de, machine.Pin.OUT, value=0)) if de is not None else u

    def i2c(self, spec, attached):
        return machine.I2C(
            spec.get("id", 0),
            scl=machine.Pin(spec["scl"]),
            sda=machine.Pin(spec["sda"]),
            freq=spec.get("freq", 400000),
        )

    def onewire(self, spec, attached):
        import onewire

        return onewire.OneWire(machine.Pin(spec["pin"]))

    def adc(self, spec, attached):
        return machine.ADC(machine.Pin(spec["pin"]), atten=machine.ADC.ATTN_11DB)

    def counter(self, spec, attached):
        return IrqCounter(
            machine.Pin(spec["pin"], machine.Pin.IN, machine.Pin.PULL_UP),
            spec.get("debounce_ms", 0),
        )

    def wdt(self, timeout_ms, on_expire=None):
        """The hardware watchdog: it resets the chip itself, so on_expire is never called;
        the next boot reports reset_cause "watchdog" (machine.WDT_RESET)."""
        return machine.WDT(timeout=timeout_ms)


class RS485:
    """Half-duplex transceiver: DE high while sending, low again once the last bit is out."""

    def __init__(self, uart, de):
        self._u = uart
        self._de = de

    def write(self, buf):
        self._de.value(1)
        n = self._u.write(buf)
        self._u.flush()  # returns when the TX FIFO has drained
        self._de.value(0)
        return n

    def readinto(self, buf):
        return self._u.readinto(buf)


class IrqCounter:
    """Counts falling edges (S0 output / LED photodiode) in an IRQ; no allocation in the ISR."""

    def __init__(self, pin, debounce_ms):
        self._n = 0
        self._last = time.ticks_ms()
        self._db = debounce_ms
        self._cb = self._edge  # bind once; an ISR must not allocate
        pin.irq(trigger=machine.Pin.IRQ_FALLING, handler=self._cb)

    def _edge(self, pin):
        t = time.ticks_ms()
        if self._db and time.ticks_diff(t, self._last) < self._db:
            return
        self._last = t
        self._n += 1

    def value(self):
        return self._n
