# Batcher/forwarder: store -> batch -> PUBLISH QoS 1 -> PUBACK (-> end-to-end ack) -> ack cursor
# (DESIGN.md 3, issue 4, docs/MQTT.md). Delivery is at-least-once: the store's cursor moves only
# over delivered batches; after a reconnect everything after the cursor is sent again.

import asyncio
import time
from array import array

from micropython import const

from edge import codec
from edge.mqtt.client import MQTTError

_IDLE_MS = const(20)
_FULL_MS = const(2)
_RING = const(64)  # batches sent but not yet behind the store's cursor
# slot flags
_F_PUBACK = const(1)  # the broker acknowledged this PUBLISH on the current connection
_F_E2E = const(2)  # the collector acknowledged the batch (end-to-end mode)
_F_STORED = const(4)  # store.ack() has been called for it


class _Cap:
    """Wraps a BatchWriter so store.fill() adds at most `left` readings (the count limit; the
    writer's buffer is sized for the longest category name, so it only bounds bytes)."""

    def __init__(self, writer):
        self.w = writer
        self.left = 0

    def add(self, seq, ts, boot, flags, ch, val):
        if not self.left or not self.w.add(seq, ts, boot, flags, ch, val):
            return False
        self.left -= 1
        return True


class Forwarder:
    def __init__(self, store, client, consent, cfg, categories):
        self.store = store
        self.client = client
        self.consent = consent
        self.categories = categories
        prefix = cfg["mqtt"]["prefix"]
        dev = cfg["device_id"]
        self.topics = [codec.topic(prefix, dev, "t", name) for name in categories]
        self.ack_topic = codec.topic(prefix, dev, "ack")
        # end-to-end mode: a batch counts as delivered only when the collector acknowledges it
        # on ack_topic (a PUBACK only proves the broker had it, docs/MQTT.md 4)
        self.e2e = bool(cfg["mqtt"].get("e2e_ack"))
        self.ack_timeout_ms = cfg["mqtt"].get("e2e_timeout_ms", 5000)
        self.max_readings = cfg["batch"]["max_readings"]
        self.linger_ms = cfg["batch"]["linger_ms"]
        if cfg["batch"]["format"] == 2:  # columns per channel (docs/FORMAT.md 3.8)
            from edge.batchv2 import BatchWriter2

            self.writer = BatchWriter2(dev, self.max_readings, cfg["batch"]["names"])
        else:
            self.writer = codec.BatchWriter(
                dev,
                codec.batch_header_len(dev, "x" * 64, 1) + self.max_readings * codec.ENTRY_LEN,
            )
        self.cap = _Cap(self.writer)
        # the ring of sent batches, oldest first: preallocated, nothing allocated per batch
        self.r_pid = array("H", bytes(2 * _RING))
        self.r_cat = bytearray(_RING)
        self.r_flags = bytearray(_RING)
        self.r_n = array("H", bytes(2 * _RING))
        self.r_last = array("I", bytes(4 * _RING))
        self.r_seg = array("I", bytes(4 * _RING))
        self.r_off = array("I", bytes(4 * _RING))
        self.r_t = array("i", bytes(4 * _RING))
        self.head = 0
        self.count = 0
        self.gen = -1  # client.stats["connects"] the ring was last (re)sent on
        self.stats = {
            "batches": 0,
            "forwarded": 0,
            "acked_readings": 0,
            "resends": 0,
            "resent_batches": 0,
            "unknown_acks": 0,
            "e2e_acks": 0,
        }
        self.acked_counts = [0] * len(categories)
        self.stamp = None  # edge/clock.py Stamper: unsynced stamps -> wall ms (FORMAT.md 4)
        self.hb = None  # edge/watchdog.py Heartbeat
        # linger (DESIGN.md 3): a category with less than a full batch waits up to linger_ms
        # (HAL ticks, so virtual time in a replay) from when its data was first seen
        self.wait_since = [-1] * len(categories)
        self.full_bytes = self.max_readings * codec.REC_LEN
        self.flush = False  # set once sampling has ended: partial batches go at once
        client.on_puback = self._on_puback

    # --- ring ------------------------------------------------------------------------------
    def _delivered(self, k):
        return self.r_flags[k] & (_F_E2E if self.e2e else _F_PUBACK)

    def _on_puback(self, pid):
        for j in range(self.count):
            k = (self.head + j) % _RING
            if self.r_pid[k] == pid and not self.r_flags[k] & _F_PUBACK:
                self.r_flags[k] |= _F_PUBACK
                # a small int at run time (fits array 'i'); the stubs make ticks a class
                self.r_t[k] = time.ticks_ms()  # type: ignore[call-overload]
                if not self.e2e:
                    self._advance(self.r_cat[k])
                return
        self.stats["unknown_acks"] += 1

    def on_ack(self, payload):
        """End-to-end acknowledgements: (first seq u32, last seq u32) big-endian, repeated: the
        low 32 bits of whole seqs (docs/FORMAT.md 1); the batches in flight never lie 2^32
        seqs apart, so the low bits name one of them."""
        for p in range(0, len(payload) - 7, 8):
            last = (
                (payload[p + 4] << 24)
                | (payload[p + 5] << 16)
                | (payload[p + 6] << 8)
                | payload[p + 7]
            )
            for j in range(self.count):
                k = (self.head + j) % _RING
                if self.r_last[k] == last:
                    if not self.r_flags[k] & _F_E2E:
                        self.r_flags[k] |= _F_E2E
                        self.stats["e2e_acks"] += 1
                        self._advance(self.r_cat[k])
                    break

    def _advance(self, cat):
        """Move the category's store cursor over its delivered prefix; free the ring's head."""
        for j in range(self.count):
            k = (self.head + j) % _RING
            if self.r_cat[k] != cat or self.r_flags[k] & _F_STORED:
                continue
            if not self._delivered(k):
                break
            self.store.ack(cat, self.store.whole(self.r_last[k]), self.r_seg[k], self.r_off[k])
            self.r_flags[k] |= _F_STORED
            self.stats["acked_readings"] += self.r_n[k]
            self.acked_counts[cat] += self.r_n[k]
        while self.count and self.r_flags[self.head] & _F_STORED:
            self.head = (self.head + 1) % _RING
            self.count -= 1

    def idle(self):
        """True when nothing is in flight and nothing committed is waiting."""
        if self.count:
            return False
        for i in range(len(self.categories)):
            # ingest, not allowed: a granted category waits for its receipt's PUBACK
            # (edge/consent.py release()), and is not idle meanwhile
            if self.consent.ingest[i] and self.store.unsent(i):
                return False
        return True

    # --- sending -----------------------------------------------------------------------------
    async def _publish(self, k):
        # the packet id is in the ring before the PUBLISH leaves: its PUBACK may be parsed
        # before publish() returns
        self.r_pid[k] = self.client.next_pid()
        payload = self.writer.finish()
        await self.client.publish(self.topics[self.r_cat[k]], payload, 1, False, self.r_pid[k])

    def _restart(self):
        """Forget the ring and re-read from each category's cursor: everything not delivered
        (and, per category, whatever follows it) is published again under new packet ids.
        Re-reading from the store keeps RAM flat; duplicates are removed by the collector."""
        self.stats["resends"] += 1
        for j in range(self.count):
            if not self.r_flags[(self.head + j) % _RING] & _F_STORED:
                self.stats["resent_batches"] += 1
        self.count = 0
        for cat in range(len(self.categories)):
            self.store.rewind(cat)

    async def _resend_ring(self):
        """Re-send every batch of the ring the broker has not acknowledged, with its packet id
        and DUP set (MQTT 3.1.1 4.4, 3.3.1.1). Payloads are rebuilt from the store rather than
        kept in RAM: refilling from each category's cursor yields the same readings in the same
        order. If the store no longer holds them (evicted, purged), fall back to _restart()."""
        self.stats["resends"] += 1
        for cat in range(len(self.categories)):
            self.store.rewind(cat)
        w = self.writer
        # ring slots, oldest first; PUBACKs parsed during the re-send move the head
        slots = [(self.head + j) % _RING for j in range(self.count)]
        for k in slots:
            if self.r_flags[k] & _F_STORED:
                continue
            cat = self.r_cat[k]
            if not self.consent.allowed[cat]:
                # revoked meanwhile: its readings were purged; never send them again
                self.r_flags[k] |= _F_PUBACK | _F_STORED
                continue
            w.start(self.categories[cat], self.store.boot, 0)
            self.cap.left = self.r_n[k]
            self.cap.w = self.stamp or w
            n, _seg, _off = self.store.fill(cat, self.cap)
            if n != self.r_n[k] or w.last_seq & 0xFFFFFFFF != self.r_last[k]:
                self._restart()
                return
            if self.r_flags[k] & _F_PUBACK:
                continue  # acknowledged already: only its place in the store is skipped
            self.stats["resent_batches"] += 1
            await self.client.publish(self.topics[cat], w.finish(), 1, False, self.r_pid[k], True)
        while self.count and self.r_flags[self.head] & _F_STORED:
            self.head = (self.head + 1) % _RING
            self.count -= 1

    def _stale(self):
        """End-to-end mode: the oldest acknowledged-by-broker batch waited too long."""
        if not self.e2e or not self.count:
            return False
        k = self.head
        return (self.r_flags[k] & (_F_PUBACK | _F_E2E)) == _F_PUBACK and time.ticks_diff(
            time.ticks_ms(), self.r_t[k]
        ) >= self.ack_timeout_ms

    async def run(self):
        """Task: forward committed readings while connected."""
        w = self.writer
        c = self.client
        while True:
            if self.hb is not None:
                self.hb.beat()
            if not c.connected.is_set():
                await c.connected.wait()
            if self.gen != c.stats["connects"]:
                self.gen = c.stats["connects"]
                if c.session_present and not self.e2e and self.count:
                    # Case 1: the broker kept our session: MQTT-4.4.0-1, re-send what it has
                    # not acknowledged under the original packet ids, DUP set.
                    try:
                        await self._resend_ring()
                    except (OSError, MQTTError):
                        continue
                else:
                    # Case 2: a new session (the broker restarted, or end-to-end mode, where
                    # the broker may have died holding what it acknowledged): re-read from
                    # each category's cursor under new packet ids.
                    self._restart()
            elif self._stale():
                self._restart()
            sent = False
            waiting = False
            hal = self.store.hal
            for cat in range(len(self.categories)):
                # enforcement again at forward time: a revoked category is never sent
                if not self.consent.allowed[cat]:
                    continue
                if self.count >= _RING:
                    break  # the ring is full: wait for acknowledgements
                pending = self.store.unsent_bytes(cat)
                if pending <= 0:
                    self.wait_since[cat] = -1
                    continue
                if pending < self.full_bytes and not self.flush:
                    now = hal.ticks_ms()
                    if self.wait_since[cat] < 0:
                        self.wait_since[cat] = now
                    if hal.ticks_diff(now, self.wait_since[cat]) < self.linger_ms:
                        waiting = True
                        continue
                self.wait_since[cat] = -1
                w.start(self.categories[cat], self.store.boot, 0)
                self.cap.left = self.max_readings
                self.cap.w = self.stamp or w  # clock fix-up of unsynced stamps (FORMAT.md 4)
                n, seg, off = self.store.fill(cat, self.cap)
                if not n:
                    continue
                k = (self.head + self.count) % _RING
                self.r_cat[k] = cat
                self.r_flags[k] = 0
                self.r_n[k] = n
                self.r_last[k] = w.last_seq & 0xFFFFFFFF  # low bits (FORMAT.md 1): store.whole()
                self.r_seg[k] = seg
                self.r_off[k] = off
                self.r_pid[k] = 0
                # a small int at run time (fits array 'i'); the stubs make ticks a class
                self.r_t[k] = time.ticks_ms()  # type: ignore[call-overload]
                self.count += 1
                self.stats["batches"] += 1
                self.stats["forwarded"] += n
                try:
                    await self._publish(k)
                except (OSError, MQTTError):
                    break  # the link task reconnects; the ring is re-sent then
                sent = True
            if self.count >= _RING:
                await asyncio.sleep_ms(_FULL_MS)
            elif sent:
                await asyncio.sleep_ms(0)
            else:
                await asyncio.sleep_ms(min(_IDLE_MS, self.linger_ms) if waiting else _IDLE_MS)
