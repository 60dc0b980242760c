"""One way for every host tool to connect to the broker (docs/MQTT.md section 7).

- Credentials: `--user/--password`, or `--credentials FILE` (a JSON object with `user` and
  `password`, as `edgectl provision` writes `broker/ops.json`).
- TLS: `--tls-ca` (PEM CA that signed the broker's certificate), `--tls-cert`/`--tls-key` (a
  client certificate, when the broker requires one). The broker's certificate must match
  `--host`; there is no switch that turns verification off.
- A unique client id per client (`edgectl-ROLE-<random>`), unless the caller needs a fixed one
  (the collector's persistent session). Brokers kick the older of two clients with one id
  (MQTT 3.1.1 section 3.1.4), and some merge the sessions of empty ids.
- MQTT 5 first, MQTT 3.1.1 when the broker refuses 5 (amqtt, NATS): under 5 the broker tells a
  publisher that it refused a publish (PUBACK reason code 0x87, MQTT 5 section 3.4.2.1); under
  3.1.1 a refused publish is acknowledged like any other (section 4.1 leaves it to the broker).
- A refused login is one line: `the broker at H:P refused the login: <reason> ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from host_tools.errors import ToolError
from host_tools import argtypes

# CONNACK codes that mean "the protocol level", not "who you are" (MQTT 5 section 3.2.2.2;
# 3.1.1's return code 1 arrives through paho as the same reason)
_UNSUPPORTED_PROTOCOL = 132
_LOGIN_REFUSED = {4, 5, 134, 135, 138, 140}  # bad user name or password / not authorised / banned
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 section 3.1.2.11.2


@dataclass
class ConnectOptions:
    """Where and how to log in; build it from argparse with options_from_args()."""

    host: str = "127.0.0.1"
    port: int = 1883
    user: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    protocol: str = "auto"  # "auto" (5, then 3.1.1), "5", "3.1.1"
    keepalive: int = 30

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def add_arguments(p: argparse.ArgumentParser, default_port: int = 1883) -> None:
    """The connection options every connecting tool takes."""
    g = p.add_argument_group("broker connection")
    g.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    g.add_argument("--port", type=argtypes.tcp_port, default=default_port, help="broker port")
    g.add_argument("--user", help="MQTT user name")
    g.add_argument("--password", help="MQTT password (prefer --credentials: argv is visible)")
    g.add_argument(
        "--credentials",
        metavar="FILE",
        type=argtypes.input_file,
        help="JSON file with `user` and `password` (edgectl provision's broker/ops.json)",
    )
    g.add_argument(
        "--tls-ca",
        metavar="PEM",
        type=argtypes.input_file,
        help="CA certificate: connect with TLS, verified",
    )
    g.add_argument(
        "--tls-cert",
        metavar="PEM",
        type=argtypes.input_file,
        help="client certificate (with --tls-key)",
    )
    g.add_argument("--tls-key", metavar="PEM", type=argtypes.input_file, help="client private key")
    g.add_argument(
        "--mqtt-version",
        choices=["auto", "5", "3.1.1"],
        default="auto",
        help="protocol level (auto: 5, then 3.1.1 if the broker refuses 5)",
    )


def read_json(path: str, what: str):
    """A JSON document from a file the user named; ToolError (one line) if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ToolError(f"cannot read {what} {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise ToolError(f"{what} {path} is not JSON: {e}") from e


def load_credentials(path: str) -> tuple[str, str]:
    """(user, password) from a credentials file: a JSON object with both as strings."""
    doc = read_json(path, "credentials file")
    if not isinstance(doc, dict):
        raise ToolError(f"credentials file {path} must hold a JSON object")
    user, password = doc.get("user"), doc.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, str):
        raise ToolError(f"credentials file {path} needs string fields `user` and `password`")
    return user, password


def options_from_args(args: argparse.Namespace) -> ConnectOptions:
    """ConnectOptions from the arguments add_arguments() declared (validated)."""
    user, password = getattr(args, "user", None), getattr(args, "password", None)
    cred = getattr(args, "credentials", None)
    if cred:
        if user or password:
            raise ToolError("give either --credentials or --user/--password, not both")
        user, password = load_credentials(cred)
    elif password is not None and not user:
        raise ToolError("--password needs --user")
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if bool(cert) != bool(key):
        raise ToolError("--tls-cert and --tls-key go together")
    ca = getattr(args, "tls_ca", None)
    if cert and not ca:
        raise ToolError("--tls-cert needs --tls-ca (the CA that signed the broker)")
    for flag, path in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if path and not os.path.isfile(path):
            raise ToolError(f"{flag} {path}: no such file")
    return ConnectOptions(
        host=args.host,
        port=args.port,
        user=user,
        password=password,
        tls_ca=ca,
        tls_cert=cert,
        tls_key=key,
        protocol=getattr(args, "mqtt_version", "auto") or "auto",
    )


def unique_client_id(role: str) -> str:
    """`edgectl-ROLE-<12 hex>`: unique per client, at most 23 characters for short roles
    (the length every 3.1.1 server must accept, section 3.1.3.1)."""
    return f"edgectl-{role}-{secrets.token_hex(6)}"[:64]


class Connection:
    """A connected paho client plus what the helper learnt: the CONNACK, the protocol level,
    and per-publish outcomes. `client` is the paho client; set callbacks via the arguments of
    connect() (the helper owns on_connect and on_publish)."""

    def __init__(self, client: mqtt.Client, opts: ConnectOptions, mqtt5: bool) -> None:
        self.client = client
        self.opts = opts
        self.mqtt5 = mqtt5
        self.connected = threading.Event()
        self.session_present = False
        self.refused: str | None = None
        self._refused_code = 0
        self._answered = threading.Event()
        self._acks: dict[int, int | None] = {}
        self._ack_cv = threading.Condition()
        self._user_on_connect: Callable | None = None
        self.subscriptions: list[tuple[str, int]] = []
        self.subscribed = threading.Event()
        self.sub_refused: str | None = None
        self._sub_mid: int | None = None

    # --- callbacks owned by the helper -----------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = f"{reason_code} (CONNACK code {reason_code.value})"
            self._refused_code = reason_code.value
            self._answered.set()
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.subscriptions:
            # one SUBSCRIBE with every filter, again after each reconnect (a broker that lost
            # the session lost the subscriptions too)
            self._sub_mid = client.subscribe(self.subscriptions)[1]
        if self._user_on_connect is not None:
            self._user_on_connect(self)
        self.connected.set()
        self._answered.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._sub_mid:
            return
        bad = [
            f"{t} ({rc})" for (t, _), rc in zip(self.subscriptions, reason_codes, strict=False)
            if rc.is_failure
        ]  # fmt: skip
        if bad:
            self.sub_refused = ", ".join(bad)
        self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._ack_cv:
            if mid in self._acks:
                self._acks[mid] = reason_code.value if reason_code is not None else 0
                self._ack_cv.notify_all()

    # --- publishing -----------------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Publish without waiting (what a hot path wants); see publish_checked()."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_checked(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 10.0,
    ) -> bool | None:
        """Publish QoS 1 and wait for the broker's PUBACK. True: accepted; None: acknowledged
        but the protocol level cannot say whether the broker kept it (3.1.1). Raises ToolError
        when the broker refuses it (MQTT 5 reason code >= 0x80) or does not acknowledge it."""
        if qos < 1:
            raise ValueError("publish_checked needs QoS 1")
        with self._ack_cv:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise ToolError(
                    f"cannot publish to {topic}: {mqtt.error_string(info.rc)} "
                    f"(connection to {self.opts.where} lost?)"
                )
            self._acks.setdefault(info.mid, None)
            ok = self._ack_cv.wait_for(lambda: self._acks.get(info.mid) is not None, timeout)
            code = self._acks.pop(info.mid, None)
        if not ok:
            raise ToolError(
                f"the broker at {self.opts.where} did not acknowledge the publish to {topic} "
                f"within {timeout:g} s"
            )
        if code is not None and code >= 0x80:
            from paho.mqtt.reasoncodes import ReasonCode

            why = ReasonCode(PacketTypes.PUBACK, identifier=code)
            raise ToolError(
                f"the broker at {self.opts.where} refused the publish to {topic}: {why} "
                f"(reason code {code}); check the login's ACL"
            )
        return True if self.mqtt5 else None

    def close(self) -> None:
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except OSError:
            pass


def _client(
    opts: ConnectOptions,
    client_id: str,
    mqtt5: bool,
    persistent: bool,
    manual_ack: bool,
) -> mqtt.Client:
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        # MQTT 5 has no clean session flag: clean start goes with CONNECT (connect() below)
        clean_session=None if mqtt5 else not persistent,
        protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if opts.user:
        c.username_pw_set(opts.user, opts.password)
    if opts.tls_ca:
        try:
            c.tls_set(ca_certs=opts.tls_ca, certfile=opts.tls_cert, keyfile=opts.tls_key)
        except (OSError, ValueError) as e:
            files = ", ".join(f for f in (opts.tls_ca, opts.tls_cert, opts.tls_key) if f)
            raise ToolError(f"TLS files cannot be loaded ({files}): {e}") from e
    return c


def connect(
    opts: ConnectOptions,
    role: str,
    client_id: str | None = None,
    persistent: bool = False,
    manual_ack: bool = False,
    on_connect: Callable[[Connection], None] | None = None,
    on_message: Callable | None = None,
    subscriptions: list[tuple[str, int]] | None = None,
    timeout: float = 10.0,
) -> Connection:
    """Connect, start paho's network thread, and wait for CONNACK.

    persistent: keep the session across disconnects (3.1.1 clean session 0; MQTT 5 clean start
    0 with a session that never expires), with a fixed `client_id`. on_connect(conn) runs after
    every accepted CONNACK (subscribe there, so a reconnect subscribes again); on_message is
    paho's callback. subscriptions: (filter, qos) pairs subscribed after every CONNACK; the
    first SUBACK is awaited, so nothing published after connect() returns is missed. Raises
    ToolError with one line on every failure."""
    if persistent and not client_id:
        raise ValueError("a persistent session needs a fixed client id")
    cid = client_id or unique_client_id(role)
    levels = {"auto": (True, False), "5": (True,), "3.1.1": (False,)}[opts.protocol]
    last = ""
    for mqtt5 in levels:
        c = _client(opts, cid, mqtt5, persistent, manual_ack)
        conn = Connection(c, opts, mqtt5)
        conn._user_on_connect = on_connect
        conn.subscriptions = list(subscriptions or [])
        c.on_connect = conn._on_connect
        c.on_subscribe = conn._on_subscribe
        c.on_disconnect = conn._on_disconnect
        c.on_publish = conn._on_publish
        if on_message is not None:
            c.on_message = on_message
        props = None
        if mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_NEVER_EXPIRES if persistent else 0
        c.reconnect_delay_set(0.05, 1.0)  # type: ignore[arg-type]  # seconds, floats work
        try:
            if mqtt5:
                c.connect(opts.host, opts.port, opts.keepalive, clean_start=not persistent,
                          properties=props)  # fmt: skip
            else:
                c.connect(opts.host, opts.port, opts.keepalive)
        except (OSError, ValueError) as e:
            # ssl.SSLError is an OSError: a bad CA or host name lands here
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ToolError(f"cannot connect to the broker at {opts.where}: {why}") from e
        c.loop_start()
        # amqtt never answers an MQTT 5 CONNECT that carries properties: in auto mode a silent
        # broker gets a second try at 3.1.1 before the timeout counts as a failure
        trying = mqtt5 and len(levels) > 1
        if not conn._answered.wait(timeout / 2 if trying else timeout):
            conn.close()
            if trying:
                last = "no CONNACK to MQTT 5"
                continue
            raise ToolError(
                f"no CONNACK from {opts.where} within {timeout:g} s "
                f"(is it an MQTT broker? does it need --tls-ca?)"
            )
        if conn.refused is None:
            if conn.subscriptions and not conn.subscribed.wait(timeout):
                conn.close()
                raise ToolError(f"no SUBACK from {opts.where} within {timeout:g} s")
            if conn.sub_refused:
                conn.close()
                raise ToolError(
                    f"the broker at {opts.where} refused the subscription to "
                    f"{conn.sub_refused}; check the login's ACL"
                )
            return conn
        conn.close()
        code = conn._refused_code
        if code == _UNSUPPORTED_PROTOCOL and mqtt5 and len(levels) > 1:
            last = conn.refused
            continue  # the broker speaks 3.1.1 only (amqtt, NATS)
        if code in _LOGIN_REFUSED:
            raise ToolError(
                f"the broker at {opts.where} refused the login: {conn.refused}; "
                f"check --user/--password or --credentials and the broker's password file"
            )
        raise ToolError(f"the broker at {opts.where} refused the connection: {conn.refused}")
    raise ToolError(f"the broker at {opts.where} refused the connection: {last}")


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll predicate until it is true or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
