"""Simulated devices for the cluster tier's tests and benchmarks (docs/BACKEND.md 7).

A `SimDevices` is many devices on one MQTT connection that speak the agent's wire format:
binary batches (docs/FORMAT.md 3) with rising seqs on `{prefix}/{device}/t/{category}`, QoS 1,
and end-to-end mode (docs/MQTT.md 8): a batch stays in flight until the collector's ack on
`{prefix}/{device}/ack` names its first and last seq, and is published again when no ack came
within `resend_s` (a PUBACK from a broker node that then dies, or a stream that had no leader,
proves nothing). The connection fails over along a list of brokers, as the agent does with
`mqtt.brokers`, after `failover_s` without a connection.

It is a load generator and a checker, not the agent: the real agent runs under unix
MicroPython (host_tools/agent/).
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from collections import deque

import paho.mqtt.client as mqtt

from edge import codec

_ids = itertools.count(1)


def batch(device: str, category: str, first: int, n: int, boot: int = 1) -> bytes:
    """n readings seq first..first+n-1 of device, channel 1, values derived from the seq."""
    w = codec.BatchWriter(device, 64 + n * codec.ENTRY_LEN)
    w.start(category, boot, 0)
    for seq in range(first, first + n):
        w.add(seq, 1_700_000_000_000 + 100 * seq, boot, 0, 1, seq % 1000)
    return bytes(w.finish())


def rotated(brokers: list[tuple[str, int]], i: int) -> list[tuple[str, int]]:
    """The broker list starting at its i-th entry (modulo): spreads connections over nodes."""
    k = i % len(brokers)
    return brokers[k:] + brokers[:k]


class SimDevices:
    """`devices` on one connection; `publish(batches_per_device)` queues and sends, then
    `wait_acked()` until every batch is acknowledged end to end."""

    def __init__(
        self,
        brokers: list[tuple[str, int]],
        devices: list[str],
        prefix: str = "edge",
        category: str = "essential",
        per_batch: int = 50,
        resend_s: float = 3.0,
        failover_s: float = 1.0,
        client_id: str | None = None,
        window: int = 4,
    ) -> None:
        if not brokers:
            raise ValueError("SimDevices needs at least one broker")
        self.brokers = brokers
        self.devices = devices
        self.prefix = prefix
        self.category = category
        self.per_batch = per_batch
        self.resend_s = resend_s
        self.failover_s = failover_s
        self.next_seq = {d: 1 for d in devices}
        # (device, first & 0xffffffff) -> [topic, payload, sent at, wait before a re-send]
        self.inflight: dict[tuple[str, int], list] = {}
        # like the agent's window: at most `window` batches of a device unacknowledged; the
        # rest waits on the device (a re-send storm would otherwise bury a loaded tier)
        self.window = window
        self.queued: dict[str, deque] = {d: deque() for d in devices}
        self.in_flight: dict[str, int] = {d: 0 for d in devices}
        self.lock = threading.Lock()
        self.broker = 0
        self.stats = {"published": 0, "resent": 0, "acked": 0, "failovers": 0, "connects": 0}
        self.failover_times: list[float] = []  # s from losing a node to a session on the next
        self._lost_at: float | None = None
        self._rotated_at = 0.0
        self._stop = threading.Event()
        cid = client_id or f"edgectl-sim-{next(_ids)}-{id(self) & 0xFFFF:x}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=cid,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(64)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._timer = threading.Thread(target=self._resender, name="sim-resend", daemon=True)

    # --- connection ------------------------------------------------------------------------
    def start(self) -> SimDevices:
        host, port = self.brokers[0]
        self.client.connect_async(host, port, keepalive=5)
        self.client.reconnect_delay_set(1, 1)
        self.client.loop_start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:
        if rc != 0:
            return
        self.stats["connects"] += 1
        if self._lost_at is not None:
            self.failover_times.append(time.monotonic() - self._lost_at)
            self._lost_at = None
        client.subscribe(f"{self.prefix}/+/ack", qos=0)

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:
        if self._lost_at is None and not self._stop.is_set():
            self._lost_at = time.monotonic()

    def _rotate(self) -> None:
        """After failover_s without a session: the next broker of the list."""
        self.broker = (self.broker + 1) % len(self.brokers)
        self.stats["failovers"] += 1
        host, port = self.brokers[self.broker]
        self.client.connect_async(host, port, keepalive=5)

    # --- end-to-end acks -------------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 3 or parts[2] != "ack":
            return
        device, data = parts[1], msg.payload
        with self.lock:
            for i in range(0, len(data) - 7, 8):
                first, _last = struct.unpack_from(">II", data, i)
                if self.inflight.pop((device, first), None) is not None:
                    self.stats["acked"] += 1
                    self.in_flight[device] -= 1
        self._pump(device)

    # --- sending -------------------------------------------------------------------------------
    def publish(self, batches_per_device: int) -> int:
        """Queue batches_per_device new batches for every device and send what each device's
        window allows; returns the readings queued."""
        n = 0
        for _ in range(batches_per_device):
            for d in self.devices:
                first = self.next_seq[d]
                self.next_seq[d] = first + self.per_batch
                payload = batch(d, self.category, first, self.per_batch)
                with self.lock:
                    self.queued[d].append((first, payload))
                n += self.per_batch
        for d in self.devices:
            self._pump(d)
        return n

    def _pump(self, device: str) -> None:
        """Send the device's queued batches while its window has room."""
        topic = f"{self.prefix}/{device}/t/{self.category}"
        out = []
        with self.lock:
            q = self.queued.get(device)
            while q and self.in_flight[device] < self.window:
                first, payload = q.popleft()
                self.inflight[(device, first & codec.SEQ_LOW)] = [
                    topic, payload, time.monotonic(), self.resend_s,
                ]  # fmt: skip
                self.in_flight[device] += 1
                out.append(payload)
        for payload in out:
            self.client.publish(topic, payload, qos=1)
            self.stats["published"] += 1

    def _resender(self) -> None:
        while not self._stop.wait(0.25):
            if not self.client.is_connected():
                now = time.monotonic()
                lost = self._lost_at
                if lost is not None and now - max(lost, self._rotated_at) > self.failover_s:
                    self._rotated_at = now
                    self._rotate()
                continue
            now = time.monotonic()
            with self.lock:
                due = [e for e in self.inflight.values() if now - e[2] >= e[3]]
                for e in due:  # each batch waits twice as long before its next re-send
                    e[2], e[3] = now, min(e[3] * 2, 30.0)
            for topic, payload, _t, _w in due:
                self.client.publish(topic, payload, qos=1)
                self.stats["resent"] += 1

    def pending(self) -> int:
        """Batches not yet acknowledged end to end (in flight or waiting for the window)."""
        with self.lock:
            return len(self.inflight) + sum(len(q) for q in self.queued.values())

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending():
                return True
            time.sleep(0.05)
        return not self.pending()

    def sent_readings(self) -> dict[str, int]:
        """device -> last seq sent (every seq 1..last must end up stored exactly once)."""
        return {d: s - 1 for d, s in self.next_seq.items()}
