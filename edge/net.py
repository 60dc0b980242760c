# Wi-Fi station supervisor (docs/CONFIG.md `wifi`): brings the network up through the HAL and
# keeps it up. Credentials come from config key `wifi`, else from the provisioned secrets file.
# It only polls the HAL and sleeps, so the sampler never waits on the radio; a failed or timed
# out association backs off with the same helper as the MQTT link (edge/mqtt/link.py).

import asyncio
import json

from micropython import const

from edge.mqtt.link import backoff_ms

SECRETS = "/secrets/wifi.json"  # written by provisioning, copied by deploy (docs/DEPLOY.md)
_TIMEOUT_MS = const(20000)  # one association attempt; config `wifi.timeout_ms`
_POLL_MS = const(250)
_UP_POLL_MS = const(1000)


class WifiError(ValueError):
    pass


def credentials(cfg, secrets=SECRETS):
    """(ssid, password, hostname, timeout_ms) from config `wifi`, else the secrets file, else
    None (no Wi-Fi configured: the network is left as it is). Raises WifiError naming the key
    or the file when they are unusable."""
    w = cfg.get("wifi")
    src = "config key 'wifi'"
    if w is None:
        try:
            with open(secrets) as f:
                w = json.loads(f.read())
        except OSError:
            return None
        except ValueError as e:
            raise WifiError("%s is not valid JSON: %s" % (secrets, e)) from None
        src = secrets
    if not isinstance(w, dict) or not isinstance(w.get("ssid"), str) or not w["ssid"]:
        raise WifiError("%s needs an 'ssid' string" % src)
    pw = w.get("password")
    if pw is not None and not isinstance(pw, str):
        raise WifiError("%s: 'password' must be a string" % src)
    return (
        w["ssid"],
        pw or "",
        w.get("hostname") or cfg.get("device_id"),
        w.get("timeout_ms") or _TIMEOUT_MS,
    )


class Station:
    """Task owner for the Wi-Fi station. `up` is set while associated (connectivity as an
    Event); status() goes into the health message."""

    def __init__(self, hal, creds, log):
        self.hal = hal
        self.creds = creds
        self.log = log
        self.up = asyncio.Event()
        self.attempts = 0  # failed associations since the last success
        self.connects = 0
        self.drops = 0
        self.rssi = None

    def status(self):
        return {
            "connected": self.up.is_set(),
            "rssi": self.rssi,
            "connects": self.connects,
            "drops": self.drops,
            "failures": self.attempts,
        }

    async def _associate(self, hb):
        """Case 1: associated within the timeout -> True. Case 2: timed out -> False."""
        ssid, pw, host, timeout = self.creds
        self.hal.wifi_connect(ssid, pw, host)
        t0 = self.hal.ticks_ms()
        while self.hal.ticks_diff(self.hal.ticks_ms(), t0) < timeout:
            if hb is not None:
                hb.beat()
            ok, rssi, _st = self.hal.wifi_status()
            if ok:
                self.rssi = rssi
                return True
            await asyncio.sleep_ms(_POLL_MS)
        return False

    async def join(self, hb=None):
        """One association attempt within the timeout; True (and `up` set) when associated.
        The supervisor's step, and the deploy self-test's network check."""
        if not await self._associate(hb):
            return False
        self.up.set()
        self.connects += 1
        self.attempts = 0
        return True

    async def run(self, hb=None):
        """Task: associate, watch the link, re-associate with backoff after a drop."""
        while True:
            if hb is not None:
                hb.beat()
            ok, rssi, _st = self.hal.wifi_status()
            if ok:
                self.rssi = rssi
                await asyncio.sleep_ms(_UP_POLL_MS)
                continue
            if self.up.is_set():
                self.up.clear()
                self.drops += 1
                self.log("wifi: link lost")
            if await self.join(hb):
                self.log("wifi: connected to %s, rssi %s" % (self.creds[0], self.rssi))
                continue
            self.attempts += 1
            wait = backoff_ms(self.attempts)
            self.log(
                "wifi: no association with %s (attempt %d), retry in %d ms"
                % (self.creds[0], self.attempts, wait)
            )
            await asyncio.sleep_ms(wait)
