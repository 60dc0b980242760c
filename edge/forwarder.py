# Batcher/forwarder: store -> batch -> PUBLISH QoS 1 -> PUBACK -> ack cursor (DESIGN.md 3).
# Delivery is at-least-once: the cursor moves only on PUBACK; after a reconnect the
# unacknowledged tail is sent again and the collector removes duplicates.

import asyncio

from micropython import const

from edge import codec
from edge.mqtt import MQTTError

_IDLE_MS = const(20)


class Forwarder:
    def __init__(self, store, client, consent, cfg, categories):
        self.store = store
        self.client = client
        self.consent = consent
        self.categories = categories
        prefix = cfg["mqtt"]["prefix"]
        dev = cfg["device_id"]
        self.topics = [codec.topic(prefix, dev, "t", name) for name in categories]
        self.max_readings = cfg["batch"]["max_readings"]
        self.linger_ms = cfg["batch"]["linger_ms"]
        self.writer = codec.BatchWriter(
            dev, codec.batch_header_len(dev, "x" * 64) + self.max_readings * codec.ENTRY_LEN
        )
        # in-flight publishes, oldest first: [pid, category, last seq, segno, offset]
        self.inflight = []
        self.stats = {"batches": 0, "forwarded": 0, "acked_readings": 0, "resends": 0}
        self.acked_counts = [0] * len(categories)
        self.wake = asyncio.Event()
        self.stamp = None  # edge/clock.py Stamper: unsynced stamps -> wall ms (FORMAT.md 4)
        self.hb = None  # edge/watchdog.py Heartbeat
        client.on_puback = self._on_puback

    def _on_puback(self, pid):
        # 4.6: PUBACKs arrive in the order the PUBLISHes were sent on this connection, so
        # ours match the head of the queue; other ids belong to command replies.
        if not self.inflight or self.inflight[0][0] != pid:
            return
        _pid, cat, seq, seg, off, n = self.inflight.pop(0)
        self.store.ack(cat, seq, seg, off)
        self.stats["acked_readings"] += n
        self.acked_counts[cat] += n

    def on_reconnect(self):
        """Forget in-flight publishes and re-send from each category's ack cursor."""
        if self.inflight:
            self.stats["resends"] += 1
        self.inflight = []
        for i in range(len(self.categories)):
            self.store.rewind(i)

    def idle(self):
        """True when nothing is in flight and nothing committed is waiting."""
        if self.inflight:
            return False
        for i in range(len(self.categories)):
            if self.store.unsent(i):
                return False
        return True

    async def run(self):
        """Task: forward committed readings while connected."""
        w = self.writer
        while True:
            if self.hb is not None:
                self.hb.beat()
            if not self.client.connected.is_set():
                await self.client.connected.wait()
            partial = False
            sent = False
            for cat in range(len(self.categories)):
                # enforcement again at forward time: a revoked category is never sent
                if not self.consent.allowed[cat]:
                    continue
                w.start(self.categories[cat], self.store.boot, 0)
                n, seg, off = self.store.fill(cat, self.stamp or w)
                if not n:
                    continue
                payload = w.finish()
                try:
                    await self.client.wait_slot()
                    # record the publish before yielding: its PUBACK may be parsed next
                    pid = self.client.send_publish(self.topics[cat], payload, 1)
                    self.inflight.append([pid, cat, w.last_seq, seg, off, n])
                    await self.client.drain()
                except (OSError, MQTTError):
                    break  # the connection went away; the supervisor reconnects and rewinds
                self.stats["batches"] += 1
                self.stats["forwarded"] += n
                sent = True
                if n < self.max_readings:
                    partial = True
            if not sent:
                await asyncio.sleep_ms(_IDLE_MS)
            elif partial:
                await asyncio.sleep_ms(self.linger_ms)
            else:
                await asyncio.sleep_ms(0)
