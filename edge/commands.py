# Commands (DESIGN.md 5: cmd/{name} in, reply/{name} out) and consent receipts (issue 5).
# Every command is validated; a bad one gets a clear error reply and changes nothing.

import asyncio
import json
import os

from micropython import const

from edge import codec
from edge.consent import StaleVersion
from edge.mqtt.client import MQTTError

_QUEUE_MAX = const(8)  # commands waiting; more are dropped and counted
_OUTBOX_MAX = const(16)  # replies and receipts waiting for the connection
_POLL_MS = const(200)  # local file hook and outbox retry period
_LOCAL_CMD = "/local.cmd"  # unix hook for the appliance UI (docs/CONSENT.md 3)
_LOCAL_REPLY = "/local.reply"


class Commands:
    """Owns the command topics' messages (on_message), the PUBACKs of its own replies and
    receipts (on_puback) and, after a new session, re-sending those (on_connect)."""

    def __init__(self, cfg, root, consent, store, client, hal, t0, log):
        self.consent = consent
        self.store = store
        self.client = client
        self.hal = hal
        self.t0 = t0
        self.log = log
        # the local hook's directory: `consent.local_dir` in config (on unix a host directory
        # the appliance UI can write), else the store's root
        self.root = (cfg.get("consent") or {}).get("local_dir") or root
        dev = cfg["device_id"]
        self.device = dev
        prefix = cfg["mqtt"]["prefix"]
        self.topic_reply = codec.topic(prefix, dev, "reply", "")
        self.topic_cmd = codec.topic(prefix, dev, "cmd", "")
        self.topic_receipt = codec.topic(prefix, dev, "consent", "receipt")
        self.queue = []
        self.outbox = []  # [topic, payload, retain, version released by its PUBACK or -1]
        self.unacked = []  # [pid, outbox item] in publish order, until the broker's PUBACK
        self.event = asyncio.Event()
        self.stats = {"commands": 0, "rejected": 0, "queue_full": 0, "outbox_full": 0}
        self.new_session = False
        self.handlers = {}
        self._boot()

    def register(self, name, handler):
        """Add a command: handler(doc, source) -> reply dict; raise ValueError to refuse."""
        self.handlers[name] = handler

    # --- boot: finish a revocation a power cut interrupted, republish the receipt ----------
    def _boot(self):
        c = self.consent
        purged = {}
        for i, name in enumerate(c.categories):
            if not c.ingest[i]:
                n = self.store.purge(i)  # normally 0: leftovers of a cut before the purge
                if n:
                    purged[name] = n
        if c.receipt is None or purged or c.receipt.get("version") != c.version:
            self._receipt(purged, "boot")
        else:
            self._queue(self.topic_receipt, c.receipt, True, c.version)

    # --- input -----------------------------------------------------------------------------
    def on_message(self, topic, payload):
        """MQTT callback (read loop): queue only; the command task executes. topic and payload
        are views into the receive buffer: copied here. False: no room (backpressure)."""
        if len(self.queue) >= _QUEUE_MAX:
            self.stats["queue_full"] += 1
            return False
        name = bytes(topic[len(self.topic_cmd) :]) if len(topic) > len(self.topic_cmd) else b"?"
        self.queue.append((name.decode(), bytes(payload)))
        self.event.set()
        return True

    def local(self, name, doc):
        """The appliance UI's local call: same checks as cmd/{name}; returns the reply."""
        reply = self.execute(name, json.dumps(doc) if isinstance(doc, dict) else doc, "local")
        self.event.set()
        return reply

    def _poll_local(self):
        try:
            with open(self.root + _LOCAL_CMD, "rb") as f:
                raw = f.read()
            os.remove(self.root + _LOCAL_CMD)
        except OSError:
            return
        try:
            req = json.loads(raw)
            name = req["cmd"]
            doc = req.get("doc", {})
        except (ValueError, KeyError, TypeError):
            name, doc = "?", None
        if doc is None:
            reply = {"ok": False, "error": 'local.cmd must be {"cmd": NAME, "doc": {...}}'}
        else:
            reply = self.local(name, doc)
        tmp = self.root + _LOCAL_REPLY + ".tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(reply))
        os.rename(tmp, self.root + _LOCAL_REPLY)

    # --- execution -------------------------------------------------------------------------
    def execute(self, name, payload, source):
        """Validate and run one command; returns the reply dict (never raises ValueError)."""
        self.stats["commands"] += 1
        doc = None
        try:
            if name == "consent" and not payload:
                raise ValueError("empty consent document ignored (a retained update was cleared)")
            try:
                doc = json.loads(payload) if payload else {}
            except ValueError:
                raise ValueError("payload is not valid JSON") from None
            if not isinstance(doc, dict):
                raise ValueError("payload must be a JSON object")
            if name == "ping":
                reply = {
                    "ok": True,
                    "uptime_ms": self.hal.ticks_diff(self.hal.ticks_ms(), self.t0),
                    "consent_version": self.consent.version,
                    "next_seq": self.store.next_seq,
                }
            elif name == "consent":
                reply = self._consent(doc, source)
            elif name in self.handlers:
                reply = self.handlers[name](doc, source)
            else:
                raise ValueError("unknown command %r" % name)
        except StaleVersion as e:
            reply = {
                "ok": False,
                "stale": True,
                "error": str(e),
                "version": e.version,
                "enforced": e.enforced,
            }
        except (ValueError, OSError) as e:  # ConsentError too; OSError: flash trouble
            self.stats["rejected"] += 1
            self.consent.stats["rejected"] += 1
            reply = {"ok": False, "error": str(e)}
        if isinstance(doc, dict) and isinstance(doc.get("id"), (int, str)):
            reply["id"] = doc["id"]
        if source != "local":
            self._queue(self.topic_reply + name, reply, False, -1)
        self.log("cmd %s from %s: %s" % (name, source, reply.get("error", "ok")))
        return reply

    def _consent(self, doc, source):
        c = self.consent
        revoked = c.apply(doc, source, self.hal.wall_ms())  # persisted before the purge
        first_seq = self.store.next_seq  # every reading from here on was gated by this version
        purged = {}
        for cat in revoked:
            purged[c.categories[cat]] = self.store.purge(cat)  # durable when it returns
        self.store.save_cursor()
        r = self._receipt(purged, source, first_seq)
        return {"ok": True, "version": c.version, "grants": r["grants"], "purged": purged}

    def _receipt(self, purged, source, first_seq=None):
        """Record the receipt with the state (second atomic write) and queue it, retained."""
        c = self.consent
        for name in purged:
            c.purged_total[name] = c.purged_total.get(name, 0) + purged[name]
        r = {
            "device": self.device,
            "version": c.version,
            "grants": c.grants(),
            "purged": purged,
            "purged_total": dict(c.purged_total),
            "seq": first_seq or self.store.next_seq,
            "ts": c.ts,
            "issued": c.issued,
            "source": c.source,
            "via": source,
        }
        c.receipt = r
        try:
            c.save()
        except OSError as e:
            self.log("consent: cannot persist the receipt: %s" % e)
        self._queue(self.topic_receipt, r, True, c.version)
        return r

    # --- output ----------------------------------------------------------------------------
    def _queue(self, topic, doc, retain, release):
        if len(self.outbox) >= _OUTBOX_MAX:
            self.outbox.pop(0)  # the oldest; receipts carry cumulative purged totals
            self.stats["outbox_full"] += 1
        self.outbox.append([topic, json.dumps(doc).encode(), retain, release])

    def on_puback(self, pid):
        """A PUBACK (read loop). Returns True when it was for a reply or receipt of ours."""
        for i in range(len(self.unacked)):
            if self.unacked[i][0] == pid:
                self._acked(self.unacked.pop(i)[1])
                return True
        return False

    def on_connect(self):
        """A new session (at its CONNACK): PUBACKs of the old one never come, so the task sends
        those items again (the task, not this call: it may be between sending an item and
        removing it from the outbox)."""
        self.new_session = True

    def _acked(self, item):
        if item[3] >= 0:
            # the broker holds the receipt: now the newly granted categories may be sent
            self.consent.release(item[3])

    async def run(self, hb=None):
        """Task: execute queued commands, serve the local hook, publish replies/receipts.
        hb: its watchdog heartbeat (edge/watchdog.py)."""
        while True:
            if hb is not None:
                hb.beat()
            try:
                await asyncio.wait_for_ms(self.event.wait(), _POLL_MS)
            except asyncio.TimeoutError:
                pass
            self.event.clear()
            self._poll_local()
            while self.queue:
                name, payload = self.queue.pop(0)
                self.execute(name, payload, "mqtt")
            if not self.client.connected.is_set():
                continue
            if self.new_session:
                self.new_session = False
                self.outbox[0:0] = [u[1] for u in self.unacked]
                self.unacked = []
            while self.outbox:
                item = self.outbox[0]
                try:
                    await self.client.wait_slot()
                    # recorded before yielding: on loopback its PUBACK may be parsed next
                    self.unacked.append(
                        [self.client.send_publish(item[0], item[1], 1, item[2]), item]
                    )
                    self.outbox.pop(0)
                    await self.client.drain()
                except (OSError, MQTTError):
                    break  # the supervisor reconnects; unacked items are sent again
