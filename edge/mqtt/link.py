# Connection supervisor (docs/MQTT.md 3): builds the MQTT client from config (TLS, credentials,
# Last Will), keeps the persistent session up with capped exponential backoff + full jitter,
# keepalive.

import asyncio
import random

from micropython import const

from edge.mqtt.client import Client, MQTTError, tls_context

_BACKOFF_BASE_MS = const(250)
_BACKOFF_CAP_MS = const(4000)  # resume within 5 s of the broker's return (docs/MQTT.md 3)
_TICK_MS = const(100)
_RC_BAD_AUTH = const(4)
_RC_NOT_AUTHORISED = const(5)


def backoff_ms(attempt, floor=0):
    """Exponential backoff with full jitter: uniform in [floor, min(cap, base * 2^attempt)]."""
    ceiling = min(_BACKOFF_CAP_MS, _BACKOFF_BASE_MS << min(attempt, 10))
    if floor >= ceiling:
        ceiling = _BACKOFF_CAP_MS  # a floor (refused login) jitters between floor and the cap
    return floor + ((random.getrandbits(16) * (ceiling - floor)) >> 16)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def make_client(cfg, max_packet):
    """The device's client: client id = device id, persistent session, optional TLS."""
    m = cfg["mqtt"]
    tls = None
    t = m.get("tls")
    if t:
        # DER only: this MicroPython has no PEM parser (docs/MQTT.md 5); the host converts
        ctx = tls_context(
            _read(t["ca"]),
            _read(t["cert"]) if t.get("cert") else None,
            _read(t["key"]) if t.get("key") else None,
        )
        tls = (ctx, t.get("server_hostname") or m["host"])
    return Client(
        cfg["device_id"],
        max_packet,
        m["window"],
        m["keepalive"],
        m.get("user"),
        m.get("password"),
        tls,
    )


class Link:
    """Owns the connection life cycle of `client`; `run()` is the supervisor task.
    subscriptions: [(topic filter, qos)] made on every new session; birth: coroutine function
    that publishes the birth messages (the retained `online` status and channel metadata)."""

    def __init__(self, client, cfg, subscriptions, birth, log):
        self.client = client
        self.host = cfg["mqtt"]["host"]
        self.port = cfg["mqtt"]["port"]
        self.subscriptions = subscriptions
        self.birth = birth
        self.log = log
        self.stats = {"connect_failures": 0, "auth_failures": 0, "tls_failures": 0, "sessions": 0}
        self.last_error = ""

    async def _session(self):
        """CONNECT (clean session off, 3.1.2.4), subscribe, birth message."""
        c = self.client
        await c.connect(self.host, self.port, clean=False)
        for topic, qos in self.subscriptions:
            await c.subscribe(topic, qos)
        try:
            await self.birth()
        except (ValueError, MemoryError) as e:
            # a status that cannot be built this time is not a reason to drop the session
            self.log("birth message not sent: %s" % e)

    async def run(self, hb=None, net_up=None):
        """Task: keep the MQTT session up; keepalive pings and dead-link detection.
        hb: its watchdog heartbeat (edge/watchdog.py); net_up: an Event set while the network
        is up (the Wi-Fi station, edge/net.py), or None when the network is always there."""
        attempt = 0
        c = self.client
        while True:
            if hb is not None:
                hb.beat()
            if net_up is not None and not net_up.is_set() and not c.connected.is_set():
                await net_up.wait()  # nothing to connect over yet: no failed CONNECTs meanwhile
                attempt = 0
                continue
            if c.connected.is_set():
                try:
                    await c.keepalive_check()
                except OSError:
                    c._close()
                await asyncio.sleep_ms(_TICK_MS)
                continue
            floor = 0
            try:
                await self._session()
                attempt = 0
                self.stats["sessions"] += 1
                continue
            except MQTTError as e:
                msg = str(e)
                if e.code in (_RC_BAD_AUTH, _RC_NOT_AUTHORISED):
                    # a refused login will not heal by retrying fast: back off at least half
                    # the cap so a wrong password never becomes a hot loop
                    self.stats["auth_failures"] += 1
                    msg += ": check mqtt.user / mqtt.password and the broker's ACL"
                    floor = _BACKOFF_CAP_MS // 2
                elif msg.startswith("TLS"):
                    self.stats["tls_failures"] += 1
                    floor = _BACKOFF_CAP_MS // 2
            except OSError as e:
                msg = "connect to %s:%d failed: %r" % (self.host, self.port, e)
            c._close()
            self.stats["connect_failures"] += 1
            if msg != self.last_error or self.stats["connect_failures"] % 20 == 1:
                self.log("mqtt: " + msg)
            self.last_error = msg
            await asyncio.sleep_ms(backoff_ms(attempt, floor))
            attempt += 1
