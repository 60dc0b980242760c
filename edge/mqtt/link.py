# Connection supervisor (docs/MQTT.md 3, 10): builds the MQTT client from config (TLS,
# credentials, Last Will), keeps the persistent session up on one of the configured brokers with
# capped exponential backoff + full jitter, keepalive.

import asyncio
import random
import socket
import time

from micropython import const

from edge.mqtt.client import Client, MQTTError, tls_context

_BACKOFF_BASE_MS = const(250)
BACKOFF_CAP_MS = const(30000)  # a long outage's reconnects spread over 30 s (docs/MQTT.md 3)
_QUICK_CAP_MS = const(4000)  # the cap while an outage is young: resume within 5 s of its end
_QUICK_FOR_MS = const(60000)  # how long an outage is young
_TICK_MS = const(100)
_RC_BAD_AUTH = const(4)
_RC_NOT_AUTHORISED = const(5)


def backoff_ms(attempt, floor=0, cap=BACKOFF_CAP_MS, down_ms=0):
    """Exponential backoff with full jitter: uniform in [floor, min(cap, base * 2^attempt)].
    Two phases (docs/MQTT.md 3): for the first minute of an outage (`down_ms`) the cap is at most
    4 s, so a short outage ends for every device within ~5 s of the broker's return; after that
    the configured cap, so a fleet redialling after a long outage arrives spread over it."""
    if down_ms < _QUICK_FOR_MS and cap > _QUICK_CAP_MS:
        cap = _QUICK_CAP_MS
        floor = min(floor, cap // 2)  # a refused login: uniform(cap / 2, cap) of this phase
    ceiling = min(cap, _BACKOFF_BASE_MS << min(attempt, 12))
    if floor >= ceiling:
        ceiling = cap  # a floor (refused login) jitters between floor and the cap
    return floor + ((random.getrandbits(16) * (ceiling - floor)) >> 16)


def brokers(m):
    """[(host, port, TLS server name or None)] from the `mqtt` config: `mqtt.brokers` in order,
    else `mqtt.host` / `mqtt.port` (docs/MQTT.md 10)."""
    out = []
    for b in m.get("brokers") or ():
        out.append((b["host"], b.get("port") or 1883, b.get("server_name")))
    return out or [(m["host"], m["port"], None)]


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
        self.brokers = brokers(cfg["mqtt"])
        self.cap = cfg["mqtt"].get("backoff_cap_ms") or BACKOFF_CAP_MS
        self.current = 0  # index into brokers: the one in use or tried next
        self.subscriptions = subscriptions
        self.birth = birth
        self.log = log
        self.stats = {
            "connect_failures": 0,
            "auth_failures": 0,
            "tls_failures": 0,
            "sessions": 0,
            "failovers": 0,  # sessions opened on another broker than the one before
        }
        self.last_error = ""
        self.broker = ""  # "host:port" of the session (the status reports it)

    async def _session(self):
        """CONNECT (clean session off, 3.1.2.4) to the current broker, trying every address
        its name resolves to in turn; subscribe, birth message."""
        c = self.client
        host, port, name = self.brokers[self.current]
        addrs = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        for i, ai in enumerate(addrs):
            try:
                await c.connect(host, port, False, name, ai)
                break
            except OSError:
                if i == len(addrs) - 1:
                    raise
            except MQTTError as e:
                # a refusal or a bad certificate is the broker's answer, not the address's
                if e.code or i == len(addrs) - 1 or str(e).startswith("TLS"):
                    raise
        was = self.broker
        self.broker = "%s:%d" % (host, port)
        if was and was != self.broker:
            self.stats["failovers"] += 1
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
        start = self.current  # the broker a round of attempts began with
        down_at = None  # ticks of the first failed attempt of this outage
        c = self.client
        while True:
            if hb is not None:
                hb.beat()
            if net_up is not None and not net_up.is_set() and not c.connected.is_set():
                await net_up.wait()  # nothing to connect over yet: no failed CONNECTs meanwhile
                attempt = 0
                down_at = None
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
                down_at = None
                start = self.current
                self.stats["sessions"] += 1
                continue
            except MQTTError as e:
                msg = str(e)
                if e.code in (_RC_BAD_AUTH, _RC_NOT_AUTHORISED):
                    # a refused login will not heal by retrying fast: back off at least half
                    # the cap so a wrong password never becomes a hot loop
                    self.stats["auth_failures"] += 1
                    msg += ": check mqtt.user / mqtt.password and the broker's ACL"
                    floor = self.cap // 2
                elif msg.startswith("TLS"):
                    self.stats["tls_failures"] += 1
                    floor = self.cap // 2
            except OSError as e:
                host, port = self.brokers[self.current][:2]
                msg = "connect to %s:%d failed: %r" % (host, port, e)
            c._close()
            self.stats["connect_failures"] += 1
            if msg != self.last_error or self.stats["connect_failures"] % 20 == 1:
                self.log("mqtt: " + msg)
            self.last_error = msg
            # the next broker of the list after a short jitter; the full backoff only after a
            # round in which every broker failed (docs/MQTT.md 10)
            self.current = (self.current + 1) % len(self.brokers)
            now = time.ticks_ms()
            if down_at is None:
                down_at = now
            down = time.ticks_diff(now, down_at)
            if self.current == start:
                await asyncio.sleep_ms(backoff_ms(attempt, floor, self.cap, down))
                attempt += 1
            else:
                await asyncio.sleep_ms(backoff_ms(0, floor, self.cap, down))
