"""The collector's MQTT source: a persistent session with manual acknowledgements
(docs/BACKEND.md 2).

- Fixed client id, clean session off (MQTT 3.1.1 section 3.1.2.4; MQTT 5 clean start 0 with a
  session that never expires): while the collector is away the broker queues its QoS 1
  messages, and after a crash it re-sends every message the collector had not acknowledged
  (MQTT-4.4.0-1).
- Manual acknowledgement: paho sends the PUBACK of a message only when the worker calls ack(),
  which it does after the database commit and the device's end-to-end ack.
- paho's network thread only checks sizes and enqueues; nothing it runs can raise out of the
  callback (an exception there would stop the thread).
"""

from __future__ import annotations

import threading
from typing import Callable

import paho.mqtt.client as mqtt

from edge import wire
from host_tools.backend import connect as conn_mod
from host_tools.backend.connect import ConnectOptions
from host_tools.backend.ingest import Delivery


def _not_started(d: Delivery) -> None:
    raise RuntimeError("the source is not started")


MAX_TOPIC = 200  # bytes; `{prefix}/{64-char id}/t/{64-char category}` fits with room


class MqttSource:
    """Source for the worker (docs/BACKEND.md 2): start(deliver), ack(token), send(device,
    topic suffix, payload), stop(), alive()."""

    def __init__(
        self,
        opts: ConnectOptions,
        prefix: str = "edge",
        client_id: str | None = None,
        share_group: str | None = None,
        max_payload: int = 65536,
        on_error=None,
        on_refuse=None,
    ) -> None:
        self.opts = opts
        self.prefix = prefix
        self.client_id = client_id  # None: a clean session under a unique id
        self.share_group = share_group
        self.max_payload = max_payload
        self.on_error = on_error or (lambda reason, msg: None)  # an exception in the callback
        self.on_refuse = on_refuse or (lambda reason, msg: None)  # a message refused here
        self.conn: conn_mod.Connection | None = None
        # paho's client, known from the first callback: a kept session may deliver messages
        # (and the worker acknowledge them) before connect() has returned
        self._paho: mqtt.Client | None = None
        self.deliver: Callable[[Delivery], None] = _not_started
        self.closing = threading.Event()

    @property
    def client(self) -> mqtt.Client:
        if self._paho is None:
            raise RuntimeError("the MQTT source is not started")
        return self._paho

    def subscriptions(self) -> list[tuple[str, int]]:
        # subscribing again on every connect also re-sends the retained receipts and statuses
        # (MQTT 3.1.1 section 3.8.4), so a collector that lost its document store relearns them
        root = f"{self.prefix}/+/"
        out = []
        batches = wire.T_TELEMETRY + "/+"
        for s in (batches, wire.T_RECEIPT, wire.T_STATUS, wire.T_META, wire.T_REPLY + "/+"):
            topic = root + s
            if self.share_group and s == batches:
                topic = f"$share/{self.share_group}/{topic}"
            out.append((topic, 1))
        return out

    def _on_message(self, client, userdata, msg) -> None:
        self._paho = client
        try:
            if self.closing.is_set():
                return  # not acknowledged: the broker re-sends it to the next session
            topic_b = msg._topic
            if len(topic_b) > MAX_TOPIC:
                self.on_refuse("topic_too_long", f"topic of {len(topic_b)} bytes")
                self._ack_now(msg)
                return
            if len(msg.payload) > self.max_payload:
                self.on_refuse(
                    "oversize", f"{topic_b[:80]!r}: payload of {len(msg.payload)} bytes"
                )
                self._ack_now(msg)
                return
            topic = topic_b.decode("utf-8", "replace")
            self.deliver(Delivery(topic, msg.payload, (msg.mid, msg.qos)))
        except Exception as e:  # never out of paho's thread
            self.on_error("callback", f"{type(e).__name__}: {e}")

    def _ack_now(self, msg) -> None:
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    # --- the source interface -------------------------------------------------------------
    def start(self, deliver) -> None:
        self.deliver = deliver
        self.conn = conn_mod.connect(
            self.opts,
            "collect",
            client_id=self.client_id,
            persistent=self.client_id is not None,
            manual_ack=True,
            on_message=self._on_message,
            subscriptions=self.subscriptions(),
        )
        self._paho = self.conn.client

    def ack(self, token) -> None:
        mid, qos = token
        if qos:
            self.client.ack(mid, qos)

    def send(self, device: str, suffix: str, payload: bytes) -> None:
        """Publish to the device (`{prefix}/{device}/{suffix}`), QoS 0: a lost ack is made up
        by the device's re-send, which the key de-duplicates and the worker acks again."""
        self.client.publish(f"{self.prefix}/{device}/{suffix}", payload, qos=0)

    def pause(self) -> None:
        """Deliver nothing more; what arrives from now on stays unacknowledged."""
        self.closing.set()

    def stop(self) -> None:
        self.closing.set()
        if self.conn is not None:
            self.conn.close()

    def alive(self) -> bool:
        t = getattr(self.conn.client, "_thread", None) if self.conn else None
        return t is not None and t.is_alive()


class QueueSource:
    """An in-process source (tests, benchmarks): put() deliveries; acks are recorded, and
    `all_acked` is set when `expect` of them have come."""

    def __init__(self, expect: int = 0) -> None:
        self.acked: list = []
        self.sent: list[tuple[str, str, bytes]] = []
        self.deliver: Callable[[Delivery], None] = _not_started
        self.expect = expect
        self.all_acked = threading.Event()

    def start(self, deliver: Callable[[Delivery], None]) -> None:
        self.deliver = deliver

    def put(self, topic: str, payload: bytes, token=None) -> None:
        self.deliver(Delivery(topic, payload, token))

    def ack(self, token) -> None:
        if token is not None:
            self.acked.append(token)
            if self.expect and len(self.acked) >= self.expect:
                self.all_acked.set()

    def send(self, device: str, suffix: str, payload: bytes) -> None:
        self.sent.append((device, suffix, payload))

    def pause(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def alive(self) -> bool:
        return True
