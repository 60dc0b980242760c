# Fakes at the hardware edge for running the ESP32 HAL under unix MicroPython: `machine`,
# `network` (a station whose AP answers as scripted) and `ntptime`. install() puts them into
# sys.modules; used by tests/mp/wifi_driver.py and tests/mp/selftest_esp32.py.
import sys


class _Machine:
    PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

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


WLAN = _WLAN
Network = _Network


def install():
    sys.modules["machine"] = _Machine
    sys.modules["network"] = _Network
    sys.modules["ntptime"] = _Ntptime
