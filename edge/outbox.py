# Replies and consent receipts on their way to the broker (docs/MQTT.md 2, docs/CONSENT.md 6).
# Bounded: the command task stops taking commands while replies wait, so a flood of commands
# backs up into the broker (docs/SECURITY.md 2) instead of growing this queue or losing replies.
# Replies are QoS 0: they never wait for a PUBACK, because those come through the read loop,
# which a full command queue holds (a QoS 1 reply could then wait for ever). The receipt is
# QoS 1 and retained: the broker keeps it, and its PUBACK releases new grants.

import asyncio
import gc
import json

from micropython import const

from edge.mqtt.client import MQTTError

OUTBOX_MAX = const(6)  # replies waiting; commands are not executed while it is full
_ROOM = const(4)  # extra room a consent reply may take beyond OUTBOX_MAX
_SLOT_WAIT_MS = const(20)  # a full window is waited for this long, then replies go first


class Outbox:
    """Publishes replies (FIFO, QoS 0) and the latest consent receipt (QoS 1, retained, before
    any reply when the window has room). `on_receipt_acked(version)` runs when the broker
    holds a receipt."""

    def __init__(self, client, log):
        self.client = client
        self.log = log
        self.replies = []  # [topic, payload bytes]
        self.receipt = None  # [topic, payload bytes, version]: only the latest matters
        self.unacked = None  # [pid, receipt item] until the broker's PUBACK
        self.on_receipt_acked = None
        self.sign_receipt = None  # body -> signed body (edge/auth.py), when a key is set
        self.stats = {"too_large": 0, "no_memory": 0}

    def waiting(self):
        """What waits to be published, receipt first ([topic, payload or document, ...])."""
        return ([self.receipt] if self.receipt is not None else []) + self.replies

    def busy(self):
        """Something waits, or a receipt was published and has no PUBACK yet."""
        return self.receipt is not None or bool(self.replies) or self.unacked is not None

    def full(self):
        return len(self.replies) >= OUTBOX_MAX

    def reply(self, topic, doc, priority=False):
        """Queue a reply. Only a consent reply (priority) may go past OUTBOX_MAX, into a small
        reserve; every other caller checks full() first. Raises MemoryError, ValueError."""
        if len(self.replies) >= OUTBOX_MAX + (_ROOM if priority else 0):
            self.replies.pop(0)  # cannot happen for a caller that checked full(); counted
            self.stats["no_memory"] += 1
        self.replies.append([topic, json.dumps(doc).encode()])

    def put_receipt(self, topic, doc, version):
        """The latest receipt replaces one not yet sent: receipts carry cumulative totals.
        Kept as the document and encoded when it goes, so running out of memory delays a
        receipt (retried) but never loses it."""
        self.receipt = [topic, doc, version]

    def on_puback(self, pid):
        u = self.unacked
        if u is None or u[0] != pid:
            return False
        self.unacked = None
        if self.on_receipt_acked:
            # the broker holds the receipt: the newly granted categories may be sent
            self.on_receipt_acked(u[1][2])
        return True

    def on_connect(self):
        """A new session: a receipt without its PUBACK goes again (unless a newer waits)."""
        if self.unacked is not None:
            if self.receipt is None:
                self.receipt = self.unacked[1]
            self.unacked = None
        self.client.reserved = 0  # a new window: send() reserves again for a waiting receipt

    async def send(self):
        """Publish what waits; returns when done or offline (the caller runs commands and
        calls again). The receipt waits for a window slot at most _SLOT_WAIT_MS per call."""
        c = self.client
        if not c.connected.is_set():
            return
        # a receipt waiting for its slot holds one back from the forwarder's batches until it
        # is published: the next PUBACK frees a slot for it (docs/SECURITY.md 2.2)
        c.reserved = 1 if self.receipt is not None and self.unacked is None else 0
        if c.reserved:
            try:
                await asyncio.wait_for_ms(c.wait_slot(), _SLOT_WAIT_MS)
                r = self.receipt
                if r is None:  # a newer session took it meanwhile (on_connect)
                    return
                try:
                    body = json.dumps(r[1]).encode()
                    if self.sign_receipt is not None:
                        body = self.sign_receipt(body)
                    item = [r[0], body, r[2]]
                except MemoryError:
                    self.stats["no_memory"] += 1
                    gc.collect()
                    return  # retried on the next call
                pid = self._publish(item, 1)
                if pid is not None:
                    self.unacked = [pid, r]  # the document: sent again after a reconnect
                if pid is not False:
                    self.receipt = None
                    c.reserved = 0
            except asyncio.TimeoutError:
                pass  # the window is full: the replies go first this time
            except (OSError, MQTTError):
                return
        while self.replies and c.connected.is_set():
            if self._publish(self.replies[0], 0) is False:
                if c.connected.is_set():
                    # no memory for it now: a reply is best effort (QoS 0), so it is dropped
                    # and counted rather than holding every command behind it
                    self.replies.pop(0)
                    self.stats["no_memory"] += 1
                    gc.collect()
                return
            self.replies.pop(0)
            try:
                await c.drain()
            except (OSError, MQTTError):
                return  # a reply lost with its connection is not sent again (QoS 0)

    def _publish(self, item, qos):
        """The packet id (0 for QoS 0), None when the item was dropped (too large for the
        packet buffer: it never could go), False when it must wait (no memory, offline)."""
        try:
            # recorded by the caller before yielding: on loopback its PUBACK may come next
            return self.client.send_publish(item[0], item[1], qos, qos == 1)
        except ValueError:
            self.stats["too_large"] += 1
            self.log("outbox: %d-byte message dropped: too large" % len(item[1]))
            return None
        except MemoryError:
            self.stats["no_memory"] += 1
            gc.collect()  # the next call retries (a receipt is never dropped)
            return False
        except (OSError, MQTTError):
            return False
