# Replies and consent receipts on their way to the broker (docs/MQTT.md 2, docs/CONSENT.md 6).
# Bounded: the command task stops taking commands while replies wait, so a flood of commands
# backs up into the broker (docs/SECURITY.md 2) instead of growing this queue or losing replies.

import asyncio
import json

from micropython import const

from edge.mqtt.client import MQTTError

OUTBOX_MAX = const(8)  # replies waiting; commands are not executed while it is full
_ROOM = const(4)  # extra room a consent reply may take beyond OUTBOX_MAX
_SLOT_WAIT_MS = const(50)  # a full window is waited for this long, then commands run again


class Outbox:
    """Publishes QoS 1 replies (FIFO) and the latest consent receipt (retained, before any
    reply). `on_receipt_acked(version)` runs when the broker holds a receipt."""

    def __init__(self, client, log):
        self.client = client
        self.log = log
        self.replies = []  # [topic, payload bytes]
        self.receipt = None  # [topic, payload bytes, version]: only the latest matters
        self.unacked = []  # [pid, item] in publish order, until the broker's PUBACK
        self.on_receipt_acked = None
        self.new_session = False
        self.stats = {"too_large": 0, "no_memory": 0}

    def waiting(self):
        """What waits to be published, receipt first ([topic, payload, ...] items)."""
        return ([self.receipt] if self.receipt is not None else []) + self.replies

    def busy(self):
        """Something waits, or was published and has no PUBACK yet."""
        return self.receipt is not None or bool(self.replies) or bool(self.unacked)

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
        """The latest receipt replaces one not yet sent: receipts carry cumulative totals."""
        self.receipt = [topic, json.dumps(doc).encode(), version]

    def on_puback(self, pid):
        for i in range(len(self.unacked)):
            if self.unacked[i][0] == pid:
                item = self.unacked.pop(i)[1]
                if len(item) == 3 and self.on_receipt_acked:
                    # the broker holds the receipt: the newly granted categories may be sent
                    self.on_receipt_acked(item[2])
                return True
        return False

    def on_connect(self):
        self.new_session = True

    async def send(self):
        """Publish what waits, receipt first; returns when done, offline, or the window stayed
        full for _SLOT_WAIT_MS (the caller then runs commands and calls again)."""
        c = self.client
        if self.new_session:
            # a new session: PUBACKs of the old one never come, so those go again
            self.new_session = False
            for _pid, item in self.unacked:
                if len(item) == 3:
                    if self.receipt is None:
                        self.receipt = item
                else:
                    self.replies.insert(0, item)
            self.unacked = []
        while (self.receipt is not None or self.replies) and c.connected.is_set():
            item = self.receipt if self.receipt is not None else self.replies[0]
            try:
                await asyncio.wait_for_ms(c.wait_slot(), _SLOT_WAIT_MS)
            except asyncio.TimeoutError:
                return
            except MQTTError:
                return
            try:
                # recorded before yielding: on loopback its PUBACK may be parsed next
                pid = c.send_publish(item[0], item[1], 1, len(item) == 3)
                self.unacked.append([pid, item])
            except ValueError:
                # larger than the packet buffer: it can never go; dropped and counted
                self.stats["too_large"] += 1
                self.log("outbox: %d-byte message dropped: too large" % len(item[1]))
            except MemoryError:
                self.stats["no_memory"] += 1
                return
            except (OSError, MQTTError):
                return  # the connection went: sent again on the next session
            if item is self.receipt:
                self.receipt = None
            else:
                self.replies.pop(0)
            try:
                await c.drain()
            except (OSError, MQTTError):
                return  # the link supervisor reconnects; unacked items are sent again
