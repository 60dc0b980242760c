# Commands (docs/MQTT.md 2: cmd/{name} in, reply/{name} out) and consent receipts
# (docs/CONSENT.md). Every command is checked before it is parsed (size, name, JSON depth),
# every failure is caught per command, counted and answered, and no message can stop the task
# or delay a consent update: those have their own queue and go first (docs/SECURITY.md 2).
# A new command is one handler registered with register(): it gets a checked dict and returns
# the reply dict; raising ValueError (or OSError, MemoryError) makes an error reply.

import asyncio
import gc
import json
import os

from micropython import const

from edge import auth, codec, wire
from edge.consent import StaleVersion
from edge.inbound import ECHO_MAX, echo, json_depth, json_shape
from edge.outbox import Outbox

_QUEUE_MAX = const(8)  # other commands waiting; when full, the broker holds the next one
_CONSENT_MAX = const(4)  # consent updates waiting, applied in order before any other command
# bytes each queue may hold (one command of _PAYLOAD_MAX always fits): at most 2 KiB of the
# heap for commands waiting, however they are sized (a full queue holds the broker back, like
# a full count); at code + 48 KiB under a flood, 4 KiB left too little for the rest
_QUEUE_BYTES = const(1024)
_PAYLOAD_MAX = const(1024)  # bytes of a command; larger is refused without being parsed
_NAME_MAX = const(24)  # bytes of a command name (the topic level after cmd/)
_DEPTH_MAX = const(6)  # JSON nesting of a command (consent needs 2)
# a consent update's strings: category names, `id` and the 64-hex `sig` (docs/CONSENT.md 3);
# one with more or longer strings is refused before it is copied or parsed, so a hostile one
# never needs the large blocks a fragmented heap lacks (it would be retried, not refused)
_CONSENT_STRINGS = const(48)
_CONSENT_STRING_MAX = const(96)
_POLL_MS = const(200)  # local file hook and outbox retry period
_RETRY_MS = const(20)  # a consent update that met MemoryError is tried again this soon
_RETRIES = const(100)  # ... this many times (2 s) before it is refused "out of memory"
_LOCAL_CMD = "/local.cmd"  # unix hook for the appliance UI (docs/CONSENT.md 3)
_LOCAL_REPLY = "/local.reply"
_OTA_COMMANDS = ("update", "config", "config/get", "reboot")  # docs/OTA.md sections 7-8
# refusals counted by reason (status `inbound.refused`)
_REFUSALS = ("too_large", "bad_name", "too_deep", "not_json", "unknown", "no_memory", "error")
_R_CONSENT_SHAPE = const(7)  # on_message(): a consent update's strings; counted as too_large


def _name_ok(name):
    """1-24 letters, digits, '_', '-', and '/' between two of those ("config/get")."""
    if not 0 < len(name) <= _NAME_MAX or name[0] == 0x2F or name[-1] == 0x2F:
        return False
    prev = 0
    for c in name:
        if c == 0x2F:
            if prev == 0x2F:
                return False
        elif not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in b"_-"):
            return False
        prev = c
    return True


def _held(q):
    """Payload bytes a queue holds."""
    n = 0
    for item in q:
        if item[1] is not None:
            n += len(item[1])
    return n


class Commands:
    """Owns the command topics' messages (on_message, on_skipped), the PUBACKs of its replies
    and receipts (on_puback) and, after a new session, re-sending those (on_connect)."""

    def __init__(self, cfg, root, consent, store, client, hal, t0, log):
        self.consent = consent
        self.store = store
        self.hal = hal
        self.t0 = t0
        self.log = log
        # the local hook's directory: `consent.local_dir` in config (on unix a host directory
        # the appliance UI can write), else the store's root
        self.root = (cfg.get("consent") or {}).get("local_dir") or root
        self.local_cmd = self.root + _LOCAL_CMD  # polled every _POLL_MS: made once
        dev = cfg["device_id"]
        self.device = dev
        prefix = cfg["mqtt"]["prefix"]
        self.topic_cmd = codec.topic(prefix, dev, wire.T_CMD, "")
        self.topic_reply = codec.topic(prefix, dev, wire.T_REPLY, "")
        self.topic_receipt = codec.topic(prefix, dev, wire.T_RECEIPT)
        self.queue = []  # (name bytes, payload bytes or None, refusal reason or None)
        self.consents = []  # the same for cmd/consent, oldest first
        self.out = Outbox(client, log)
        self.out.on_receipt_acked = consent.release
        # receipts are signed with the backend key, so the collector can trust them
        # (docs/CONSENT.md 6, docs/MQTT.md 8)
        key = auth.backend_key(cfg)
        if key is not None:
            self.out.sign_receipt = lambda body: auth.sign_receipt(key, dev, body)
        self.event = asyncio.Event()
        self.handlers = {"ping": self._ping, "consent": self._consent}
        self.doc = None  # the command being executed, parsed (execute())
        # cmd/update, config, config/get, reboot: a callable (name, doc) -> reply dict that
        # raises ValueError, set by the composition root (edge/agent.py, edge/ota/remote.py)
        self.lifecycle = None
        self.refused = [0] * len(_REFUSALS)
        self.stats = {"commands": 0, "rejected": 0, "waits": 0, "unanswered": 0, "foreign": 0}
        self.polled = t0
        self.receipt_due = None  # (purged, source, first_seq) of an applied update
        self.retry = False  # execute(): the consent update met MemoryError, changed nothing
        self.retries = 0
        self._boot()

    def register(self, name, handler):
        """Add a command: handler(doc, source) -> reply dict; raise ValueError to refuse."""
        self.handlers[name] = handler

    # --- boot: finish a revocation a power cut interrupted, republish the receipt ----------
    def _boot(self):
        c = self.consent
        if c.recovered:
            self.log("consent: state file not usable (%s): only essential granted" % c.recovered)
        purged = {}
        for i, name in enumerate(c.categories):
            if not c.ingest[i]:
                n = self.store.purge(i)  # normally 0: leftovers of a cut before the purge
                if n:
                    purged[name] = n
                    c.purged_total[name] = c.purged_total.get(name, 0) + n
        if c.receipt is None or purged or c.receipt.get("version") != c.version:
            self._receipt(purged, "boot")
        else:
            self.out.put_receipt(self.topic_receipt, c.receipt, c.version)

    # --- input (the client's read loop: no parsing here, only checks and copies) ------------
    def on_message(self, topic, payload):
        """topic and payload are views into the receive buffer: what is kept is copied.
        Returns False when there is no room: the client then leaves the PUBLISH unacknowledged
        in its buffer and reads nothing more until there is (backpressure)."""
        n = len(self.topic_cmd)
        if len(topic) <= n or topic[:n] != self.topic_cmd:
            self.stats["foreign"] += 1  # e.g. a chunk of a finished update, still subscribed
            return True
        name = bytes(topic[n : n + _NAME_MAX + 1])
        consent = name == b"consent"
        # the checks that need no copy come first: a refused command is queued without its
        # payload, so refusing a hostile one never needs memory (docs/SECURITY.md 2.2)
        refuse = None
        if not _name_ok(name) or len(topic) > n + _NAME_MAX:
            refuse = 1  # bad_name
        elif len(payload) > _PAYLOAD_MAX:
            refuse = 0  # too_large
        else:
            depth, strings = json_shape(
                payload, _DEPTH_MAX, _CONSENT_STRING_MAX if consent else _PAYLOAD_MAX
            )
            if depth > _DEPTH_MAX:
                refuse = 2  # too_deep
            elif consent and not 0 <= strings <= _CONSENT_STRINGS:
                refuse = _R_CONSENT_SHAPE
        q = self.consents if consent else self.queue
        if len(q) >= (_CONSENT_MAX if consent else _QUEUE_MAX) or (
            refuse is None and q and _held(q) + len(payload) > _QUEUE_BYTES
        ):
            self.stats["waits"] += 1
            return False
        copy = None
        if refuse is None:
            try:
                copy = bytes(payload)
            except MemoryError:
                gc.collect()
                try:
                    copy = bytes(payload)
                except MemoryError:
                    if consent or len(self.queue) >= _QUEUE_MAX:
                        # a consent update is never refused for memory: the broker holds it
                        # and the read loop offers it again in a moment
                        self.stats["waits"] += 1
                        return False
                    refuse = 5  # taken and answered "out of memory": never a dead reader
        q.append((name, copy, refuse))
        self.event.set()
        return True

    def on_skipped(self, tail, size):
        """A PUBLISH too large for the receive buffer was read past (and acknowledged): answer
        it on reply/{name} when its topic's tail names a command of ours."""
        i = bytes(tail).rfind(b"/cmd/")
        name = bytes(tail[i + 5 :]) if i >= 0 else b""
        if len(self.queue) >= _QUEUE_MAX or not _name_ok(name):
            self.stats["unanswered"] += 1
            self.refused[0] += 1
            return
        self.queue.append((name, None, 0))
        self.event.set()

    def local(self, name, doc):
        """The appliance UI's local call: same checks as cmd/{name}; returns the reply."""
        payload = json.dumps(doc) if isinstance(doc, dict) else doc
        reply = self.execute(name.encode(), payload, "local")
        self.event.set()
        return reply

    def _poll_local(self):
        try:
            with open(self.local_cmd, "rb") as f:
                raw = f.read(_PAYLOAD_MAX + 256)
            os.remove(self.local_cmd)
        except (OSError, MemoryError):
            return  # none, or no memory to read it now: the next poll tries again
        try:
            if json_depth(raw, _DEPTH_MAX + 1) > _DEPTH_MAX + 1:
                raise ValueError
            req = json.loads(raw)
            name = req["cmd"]
            doc = req.get("doc", {})
            if not isinstance(name, str):
                raise TypeError
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
    def execute(self, name, payload, source, refuse=None):
        """Check and run one command (name bytes); returns the reply dict, or None when a
        consent update met MemoryError and is to be tried again (self.retry). Never raises:
        a command that fails, in any way, is refused, counted and answered."""
        self.stats["commands"] += 1
        doc = None
        self.doc = None  # the parsed command, for its id also when it is refused
        try:
            try:
                reply = self._run(name, payload, source, refuse)
            except StaleVersion as e:
                reply = {"ok": False, "stale": True, "error": str(e), "version": e.version}
                reply["enforced"] = e.enforced
            except (ValueError, OSError) as e:  # ConsentError too; OSError: flash trouble
                self._refuse(6 if refuse is None and isinstance(e, OSError) else -1)
                reply = {"ok": False, "error": str(e)}
            doc = self.doc
            if isinstance(doc, dict):
                i = doc.get("id")
                if isinstance(i, int) and not isinstance(i, bool) and -(1 << 53) < i < 1 << 53:
                    reply["id"] = i
                elif isinstance(i, str):
                    reply["id"] = i[:ECHO_MAX]  # echoed, so bounded
            self.log(
                "cmd %s from %s: %s" % (echo(name.decode()), source, reply.get("error", "ok"))
            )
        except MemoryError:
            doc = None
            gc.collect()
            if name == b"consent" and source == "mqtt" and self.retries < _RETRIES:
                # a consent update is never refused for memory while it can wait: the task
                # tries it again (it changed nothing; an applied one owes only its receipt)
                self.retries += 1
                self.retry = True
                return None
            self._refuse(5)
            reply = {"ok": False, "error": "out of memory"}
        if source != "local":
            self._reply(name if _name_ok(name) else b"error", reply, name == b"consent")
        return reply

    def _run(self, name, payload, source, refuse):
        if refuse is not None:
            self._refuse(refuse)
            if refuse == 0:
                raise ValueError("command larger than %d bytes refused unread" % _PAYLOAD_MAX)
            if refuse == 5:
                raise ValueError("out of memory: command refused unread")
            if refuse == 2:
                raise ValueError("JSON nested deeper than %d levels refused" % _DEPTH_MAX)
            if refuse == _R_CONSENT_SHAPE:
                raise ValueError(
                    "consent update with over %d strings or one over %d bytes refused unread"
                    % (_CONSENT_STRINGS, _CONSENT_STRING_MAX)
                )
            raise ValueError("command name must be 1-%d letters, digits, '_' or '-'" % _NAME_MAX)
        if name == b"consent" and not payload:
            raise ValueError("empty consent document ignored (a retained update was cleared)")
        # a command from MQTT was measured by on_message already
        if source == "local" and payload and json_depth(payload, _DEPTH_MAX) > _DEPTH_MAX:
            self._refuse(2)
            raise ValueError("JSON nested deeper than %d levels refused" % _DEPTH_MAX)
        try:
            doc = json.loads(payload) if payload else {}
        except ValueError:
            self._refuse(3)
            raise ValueError("payload is not valid JSON") from None
        if not isinstance(doc, dict):
            self._refuse(3)
            raise ValueError("payload must be a JSON object")
        self.doc = doc
        cmd = name.decode()
        handler = self.handlers.get(cmd)
        if handler is not None:
            return handler(doc, source)
        if cmd in _OTA_COMMANDS and self.lifecycle is not None:
            return self.lifecycle(cmd, doc)
        self._refuse(4)
        raise ValueError("unknown command %s" % echo(cmd))

    def _refuse(self, why):
        self.stats["rejected"] += 1
        if why >= 0:
            self.refused[0 if why == _R_CONSENT_SHAPE else why] += 1

    def _ping(self, doc, source):
        return {
            "ok": True,
            "uptime_ms": self.hal.ticks_diff(self.hal.ticks_ms(), self.t0),
            "consent_version": self.consent.version,
            "next_seq": self.store.next_seq,
        }

    def _consent(self, doc, source):
        c = self.consent
        try:
            revoked = c.apply(doc, source, self.hal.wall_ms())  # persisted before the purge
        except ValueError:
            c.stats["rejected"] += 1
            raise
        first_seq = self.store.next_seq  # every reading from here on was gated by this version
        purged = {}  # type: dict
        self.receipt_due = (purged, source, first_seq)  # owed from here on, whatever happens
        for cat in revoked:
            name = c.categories[cat]
            purged[name] = n = self.store.purge(cat)  # durable when it returns
            c.purged_total[name] = c.purged_total.get(name, 0) + n
        self.store.save_cursor()
        self._owed_receipt()
        return {"ok": True, "version": c.version, "grants": c.grants(), "purged": purged}

    def _owed_receipt(self):
        """Queue the receipt of the update applied last; on MemoryError the task tries again
        (the update is enforced already: only its receipt waits)."""
        due = self.receipt_due
        if due is None:
            return
        try:
            self._receipt(due[0], due[1], due[2])
            self.receipt_due = None
        except MemoryError:
            gc.collect()

    def _receipt(self, purged, source, first_seq=None):
        """Record the receipt with the state (second atomic write) and queue it, retained."""
        c = self.consent
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
        except MemoryError:
            # the update itself is persisted (Consent.apply); a receipt not on flash is made
            # again at the next boot (_boot: its version differs), so it is not worth a wait
            pass
        self.out.put_receipt(self.topic_receipt, r, c.version)
        return r

    def reply(self, name, doc):
        """Queue a reply on reply/{name} outside a command (an update's progress or outcome)."""
        self._reply(name.encode() if isinstance(name, str) else name, doc, False)

    def _reply(self, name, reply, priority):
        try:
            self.out.reply(self.topic_reply + name, reply, priority)
        except (MemoryError, ValueError):
            self.stats["unanswered"] += 1

    # --- routing from the composition root ---------------------------------------------------
    def on_puback(self, pid):
        """A PUBACK (read loop). Returns True when it was for a reply or receipt of ours."""
        return self.out.on_puback(pid)

    def on_connect(self):
        """A new session (at its CONNACK): what had no PUBACK is sent again by the task."""
        self.out.on_connect()

    def status(self):
        """The non-zero counters of the command path (status `inbound`)."""
        d = {}  # type: dict
        if sum(self.refused):
            d["refused"] = self.refused  # counts in the order of _REFUSALS (docs/HEALTH.md)
        for k in ("waits", "unanswered"):
            if self.stats[k]:
                d[k] = self.stats[k]
        if self.out.stats["too_large"]:
            d["replies_too_large"] = self.out.stats["too_large"]
        if self.consent.recovered:
            d["consent_state_recovered"] = self.consent.recovered
        return d

    # --- the task ----------------------------------------------------------------------------
    def _next(self):
        """The next command: consent updates first, then the others while replies have room."""
        if self.consents:
            return self.consents.pop(0)
        if self.queue and not self.out.full():
            return self.queue.pop(0)
        return None

    async def run(self, hb=None):
        """Task: execute queued commands, serve the local hook, publish replies/receipts.
        hb: its watchdog heartbeat (edge/watchdog.py)."""
        while True:
            if hb is not None:
                hb.beat()
            if not self.consents and not self.queue:
                try:
                    await asyncio.wait_for_ms(self.event.wait(), _POLL_MS)
                except asyncio.TimeoutError:
                    pass
                self.event.clear()
            now = self.hal.ticks_ms()
            if self.hal.ticks_diff(now, self.polled) >= _POLL_MS:
                self.polled = now  # the local hook, also while commands keep coming
                self._poll_local()
            while True:
                self._owed_receipt()
                item = self._next()
                if item is None:
                    break
                self.retry = False
                self.execute(item[0], item[1], "mqtt", item[2])
                if self.retry:
                    self.consents.insert(0, item)  # first again, after a pause
                    await asyncio.sleep_ms(_RETRY_MS)
                    continue
                if item[0] == b"consent":
                    self.retries = 0
                if hb is not None:
                    hb.beat()
            await self.out.send()
            if self.queue and self.out.full():
                await asyncio.sleep_ms(20)  # offline with replies waiting: no busy loop
