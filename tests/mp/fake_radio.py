# Fakes at the hardware edge for running the ESP32 HAL under unix MicroPython: `machine`
# (reset cause, WDT), `network` (a station whose AP answers as scripted) and `ntptime`.
# install() puts them into sys.modules; used by tests/mp/wifi_driver.py, selftest_esp32.py
# and agent_esp32.py.
import sys
import time


class _WDT:
    """machine.WDT that records the longest gap between feeds (a real one resets the chip
    when a gap exceeds its timeout)."""

    timeout = 0
    feeds = 0
    max_gap_ms = 0
    _last = None

    def __init__(self, timeout=5000):
        _WDT.timeout = timeout
        _WDT._last = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        _WDT.max_gap_ms = max(_WDT.max_gap_ms, time.ticks_diff(now, _WDT._last))
        _WDT._last = now
        _WDT.feeds += 1


class _Machine:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
    WDT = _WDT

    @staticmethod
    def reset_cause():
        return 1


class _WLAN:
    """A station whose AP ignores the first `refuse` associations, then joins after 3 polls."""

    IF_STA = 0
    log = []
    refuse = 1
    drop = False

    def __init__(self, iface):
        self.polls = -1
        self.joined = False

    def active(self, on):
        _WLAN.log.append("active %s" % on)

    def disconnect(self):
        self.joined = False

    def connect(self, ssid, pw):
        _WLAN.log.append("connect %s %s" % (ssid, pw))
        self.polls = -1 if _WLAN.refuse > 0 else 3
        _WLAN.refuse -= 1

    def isconnected(self):
        if _WLAN.drop:
            _WLAN.drop = False
            self.joined = False
            self.polls = -1
        if self.polls > 0:
            self.polls -= 1
            if self.polls == 0:
                self.joined = True
        return self.joined

    def status(self, what=None):
        if what == "rssi":
            return -61
        return 1010 if self.joined else 1001


class _Network:
    WLAN = _WLAN
    names = []

    @staticmethod
    def hostname(name):
        _Network.names.append(name)


class _Ntptime:
    host = "pool.ntp.org"

    @staticmethod
    def settime():
        raise OSError(110)  # no NTP server on the bench: the clock retries with backoff


class _Esp32:
    """The esp32 module of a board flashed without a raw log partition: the agent's `auto`
    store backend falls back to littlefs segments (docs/FORMAT.md 8.8)."""

    class Partition:
        TYPE_DATA = 1

        @staticmethod
        def find(kind, label=None):
            return []


WLAN = _WLAN
Network = _Network
WDT = _WDT


def install():
    sys.modules["machine"] = _Machine
    sys.modules["network"] = _Network
    sys.modules["ntptime"] = _Ntptime
    sys.modules["esp32"] = _Esp32
