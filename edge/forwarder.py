# Batcher/forwarder: store -> batch -> PUBLISH QoS 1 -> PUBACK (-> end-to-end ack) -> ack cursor
# (docs/DESIGN.md "The data path", docs/MQTT.md 4). Delivery is at-least-once: the store's cursor
# moves only over delivered batches; after a reconnect everything after the cursor is sent again.

import asyncio
import time
from array import array

from micropython import const

from edge import auth, codec, wire
from edge.budget import DUE, WAIT, Budgets
from edge.clock import Stamper
from edge.mqtt.client import MQTTError

_FULL_MS = const(2)
_RING = const(64)  # batches sent but not yet behind the store's cursor
# slot flags
_F_PUBACK = const(1)  # the broker acknowledged this PUBLISH on the current connection
_F_E2E = const(2)  # the collector acknowledged the batch (end-to-end mode)
_F_STORED = const(4)  # store.ack() has been called for it
_NOT_DUE = const(-2)  # _batch(): the category waits inside its latency budget


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


def _header_room(topics):
    """Bytes before a batch in the packet buffer: the longest PUBLISH header of these topics
    (fixed header, Remaining Length of up to 3 bytes, topic, packet id: MQTT 3.1.1 3.3)."""
    return 1 + 3 + 2 + max(len(t) for t in topics) + 2


def _writer(cfg, dev, out):
    """The batch writer of config `batch.format` over the buffer `out`."""
    n = cfg["batch"]["max_readings"]
    if cfg["batch"]["format"] == 2:  # columns per channel (docs/FORMAT.md 3.8)
        from edge.batchv2 import BatchWriter2

        return BatchWriter2(dev, n, cfg["batch"]["names"], out)
    return codec.BatchWriter(
        dev, out[: codec.batch_header_len(dev, "x" * 64, 1) + n * codec.ENTRY_LEN]
    )


def packet_bytes(cfg, categories):
    """The client's packet buffer the forwarder needs: a batch of `batch.max_readings` in
    either format after its PUBLISH header (format 2's output buffer is the larger:
    edge/batchv2.py output_size, 18 bytes beyond format 1's header and entries)."""
    dev = cfg["device_id"]
    topics = [codec.topic(cfg["mqtt"]["prefix"], dev, "t", name) for name in categories]
    n = cfg["batch"]["max_readings"]
    return _header_room(topics) + codec.batch_header_len(dev, "x" * 64) + 18 + n * codec.ENTRY_LEN


class Forwarder:
    """Owns the telemetry PUBACKs (on_puback), the end-to-end acks (on_ack) and what a new
    session means for the batches in flight (on_connect); `run()` is the sending task."""

    def __init__(self, store, client, consent, cfg, categories, clock, hal):
        self.store = store
        self.client = client
        self.consent = consent
        self.categories = categories
        self.hal = hal
        prefix = cfg["mqtt"]["prefix"]
        dev = cfg["device_id"]
        self.topics = [codec.topic(prefix, dev, wire.T_TELEMETRY, name) for name in categories]
        self.ack_topic = codec.topic(prefix, dev, wire.T_ACK)
        # end-to-end mode: a batch counts as delivered only when the collector acknowledges it
        # on ack_topic (a PUBACK only proves the broker had it, docs/MQTT.md 4)
        self.e2e = bool(cfg["mqtt"].get("e2e_ack"))
        self.ack_timeout_ms = cfg["mqtt"].get("e2e_timeout_ms", 5000)
        # with a backend key only acks signed with it count (docs/MQTT.md 8): another login
        # cannot make the device free readings no collector stored
        key = auth.backend_key(cfg)
        self.ack_check = auth.AckCheck(key, dev) if key else None
        self.max_readings = cfg["batch"]["max_readings"]
        self.budgets = Budgets(cfg, categories, hal)  # latency budgets (docs/MQTT.md 9)
        self.task = None
        self.napping = False
        self.poked = False
        # The batch is built inside the client's packet buffer, after room for the PUBLISH
        # header (Client.send_placed): a batch is never copied and has no buffer of its own.
        self.off = _header_room(self.topics)
        self.writer = _writer(cfg, dev, client.txmv[self.off :])
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
        self.new_session = False  # set at a CONNACK (on_connect), handled by the task
        self.session_present = False
        self.stats = {
            "batches": 0,
            "forwarded": 0,
            "acked_readings": 0,
            "resends": 0,
            "resent_batches": 0,
            "unknown_acks": 0,
            "e2e_acks": 0,
            "bad_acks": 0,
        }
        self.acked_counts = [0] * len(categories)
        # what the store fills batches through: unsynced stamps -> wall ms (FORMAT.md 4)
        self.stamp = Stamper(clock, self.writer, store.boot)
        self.full_bytes = self.max_readings * codec.REC_LEN
        self.flush = False  # set once sampling has ended: partial batches go at once

    # --- ring ------------------------------------------------------------------------------
    def _delivered(self, k):
        return self.r_flags[k] & (_F_E2E if self.e2e else _F_PUBACK)

    def on_connect(self, session_present):
        """A new session (at its CONNACK): the task resumes from it before sending more."""
        self.session_present = session_present
        self.new_session = True

    def on_puback(self, pid):
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
        """End-to-end acknowledgements (docs/MQTT.md 4 and 8). With a backend key: one signed
        ack, its tag checked, else ignored and counted in bad_acks. Without: (first seq u32,
        last seq u32) big-endian, repeated. Either way a pair is matched by the low 32 bits of
        its last seq (docs/FORMAT.md 1: the batches in flight never lie 2^32 seqs apart)."""
        if self.ack_check is not None:
            n = self.ack_check.pairs(payload)
            if n < 0:
                self.stats["bad_acks"] += 1
                return
            for i in range(n):
                self._acked_last(auth.ack_last_low(payload, i))
            return
        for p in range(0, len(payload) - 7, 8):
            self._acked_last(
                (payload[p + 4] << 24)
                | (payload[p + 5] << 16)
                | (payload[p + 6] << 8)
                | payload[p + 7]
            )

    def _acked_last(self, last):
        for j in range(self.count):
            k = (self.head + j) % _RING
            if self.r_last[k] == last:
                if not self.r_flags[k] & _F_E2E:
                    self.r_flags[k] |= _F_E2E
                    self.stats["e2e_acks"] += 1
                    self._advance(self.r_cat[k])
                return

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
        self._free_head()

    def _free_head(self):
        """Drop the slots behind the store's cursor from the ring's head."""
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
    async def _publish(self, cat, radio_on):
        """Fill and send the next batch of a category if one is due (_batch); its result.
        The window slot is taken before the fill: the batch is built in the packet buffer."""
        c = self.client
        if c.full(True):
            await c.wait_slot(True)  # before the fill (_send)
        k = self._batch(cat, radio_on)
        if k >= 0:
            self._send(k)
            await c.drain()
        return k

    def _send(self, k, dup=False):
        """PUBLISH the batch of ring slot k from the packet buffer it was built in. The caller
        waited for a window slot before the fill: nothing else may use that buffer between
        the fill and this call, so there is no await in between."""
        n = len(self.writer.finish())
        # the packet id is in the ring before the PUBLISH leaves: its PUBACK may be parsed
        # during the drain that follows
        self.r_pid[k] = self.client.send_placed(
            self.topics[self.r_cat[k]], self.off, n, 1, False, self.r_pid[k] if dup else 0, dup
        )

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
            if not self.r_flags[k] & _F_PUBACK and self.client.full(True):
                await self.client.wait_slot(True)  # before the fill (_send)
            n, _seg, _off = self._fill(cat, self.r_n[k])
            if n != self.r_n[k] or w.last_seq & 0xFFFFFFFF != self.r_last[k]:
                self._restart()
                return
            if self.r_flags[k] & _F_PUBACK:
                continue  # acknowledged already: only its place in the store is skipped
            self.stats["resent_batches"] += 1
            self._send(k, True)
            await self.client.drain()
        self._free_head()

    def _stale(self):
        """End-to-end mode: the oldest acknowledged-by-broker batch waited too long."""
        if not self.e2e or not self.count:
            return False
        k = self.head
        return (self.r_flags[k] & (_F_PUBACK | _F_E2E)) == _F_PUBACK and time.ticks_diff(
            time.ticks_ms(), self.r_t[k]
        ) >= self.ack_timeout_ms

    async def _resume(self):
        """What a new session means for the batches in flight."""
        if self.session_present and not self.e2e and self.count:
            # Case 1: the broker kept our session: MQTT-4.4.0-1, re-send what it has not
            # acknowledged under the original packet ids, DUP set.
            await self._resend_ring()
        else:
            # Case 2: a new session (the broker restarted, or end-to-end mode, where the broker
            # may have died holding what it acknowledged): re-read from each category's cursor
            # under new packet ids.
            self._restart()

    def _due(self, cat, radio_on):
        """edge/budget.py Budgets.due() for what the store holds of the category; the end of
        the run (`flush`) makes everything due."""
        pending = self.store.unsent_bytes(cat)
        waiting = pending > 0 or self.store.buffered(cat)
        full = self.flush or pending >= self.full_bytes
        return self.budgets.due(cat, waiting, full, radio_on)

    def urgent(self, cat):
        """An urgent reading of the category was stored (config channels[].urgent): it goes
        at once, with everything its category holds."""
        self.budgets.urgent[cat] = 1
        self.poke()

    def poke(self):
        """End the task's nap now (an urgent reading, the end of the run)."""
        if self.napping and not self.poked and self.task is not None:
            self.poked = True
            self.task.cancel()  # caught in _nap(): the loop goes on

    async def _nap(self, ms):
        self.napping = True
        try:
            await asyncio.sleep_ms(ms)
        except asyncio.CancelledError:
            if not self.poked:
                raise  # the agent stops its tasks
        finally:
            self.napping = False
            self.poked = False

    def _fill(self, cat, limit):
        """Start a batch of the category and fill it from the store with at most `limit`
        readings, through the clock fix-up (FORMAT.md 4). Returns store.fill()'s result."""
        self.writer.start(self.categories[cat], self.store.boot, 0)
        self.cap.left = limit
        self.cap.w = self.stamp
        return self.store.fill(cat, self.cap)

    def _take(self, cat):
        """A new batch of the category in the next ring slot; returns the slot, or -1 when
        the store had no readable reading."""
        n, seg, off = self._fill(cat, self.max_readings)
        if not n:
            return -1
        k = (self.head + self.count) % _RING
        self.r_cat[k] = cat
        self.r_flags[k] = 0
        self.r_n[k] = n
        self.r_last[k] = self.writer.last_seq & 0xFFFFFFFF  # low bits (FORMAT.md 1): store.whole()
        self.r_seg[k] = seg
        self.r_off[k] = off
        self.r_pid[k] = 0
        # a small int at run time (fits array 'i'); the stubs make ticks a class
        self.r_t[k] = time.ticks_ms()  # type: ignore[call-overload]
        self.count += 1
        self.stats["batches"] += 1
        self.stats["forwarded"] += n
        return k

    def _batch(self, cat, radio_on):
        """The next batch of a category, in a new ring slot: the slot; _NOT_DUE while it waits
        inside its budget; -1 when it has nothing to send."""
        # enforcement again at forward time: a revoked category is never sent
        if not self.consent.allowed[cat]:
            return -1
        due = self._due(cat, radio_on)
        if due != DUE:
            return _NOT_DUE if due == WAIT else -1
        if self.store.buffered(cat):
            self.store.commit()  # what the budget sends must be durable first
        k = self._take(cat)
        if not self.store.buffered(cat) and not self.store.unsent(cat):
            self.budgets.sent_all(cat)
        return k

    def _pause_ms(self, sent):
        """How long the task naps after a pass over the categories."""
        if self.count >= _RING:
            return _FULL_MS  # the ring is full: acknowledgements come soon
        if sent:
            return 0
        return max(self.budgets.next_ms, 1)

    async def run(self, hb=None):
        """Task: forward committed readings while connected. Helpers are plain functions
        (no coroutine allocated per pass) except _resume.
        hb: its watchdog heartbeat (edge/watchdog.py)."""
        c = self.client
        self.task = asyncio.current_task()
        while True:
            if hb is not None:
                hb.beat()
            if not c.connected.is_set():
                await c.connected.wait()
            if self.new_session:
                self.new_session = False
                try:
                    await self._resume()
                except (OSError, MQTTError):
                    continue
            elif self._stale():
                self._restart()
            sent = False
            self.budgets.next_ms = self.budgets.nap_ms
            waiting = 0  # categories inside their budget in this pass (bit per category)
            for cat in range(len(self.categories)):
                if self.count >= _RING:
                    break  # the ring is full: wait for acknowledgements
                try:
                    k = await self._publish(cat, sent)
                except (OSError, MQTTError):
                    break  # the link task reconnects; the ring is re-sent then
                if k == _NOT_DUE:
                    waiting |= 1 << cat
                if k >= 0:
                    sent = True
            if sent and waiting:
                # the radio is on: what has waited half its budget goes along (Budgets.due 3)
                for cat in range(len(self.categories)):
                    if not waiting >> cat & 1 or self.count >= _RING:
                        continue
                    try:
                        await self._publish(cat, True)
                    except (OSError, MQTTError):
                        break
            await self._nap(self._pause_ms(sent))
