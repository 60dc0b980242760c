"""The collector's one worker code path: source -> check -> sink -> device ack -> source ack
(docs/BACKEND.md 2).

A source hands the worker `Delivery`s (topic, payload, token). The worker takes them in
groups; for each message it checks the channel identity, the size, the format and the consent
the device's latest receipt grants, and writes what passes inside one sink transaction. Then,
in this order: commit, the end-to-end acks to the devices, the source acks. A crash anywhere
before the source ack makes the source deliver the message again, and the key (device, seq)
makes the second write a no-op, so nothing is lost and nothing is stored twice.

Identity is the channel (docs/SECURITY.md): a batch on `{prefix}/{D}/t/{C}` is accepted only
if its payload says device D and category C; a receipt or status on D's topic must say D.
"""

from __future__ import annotations

import json
import queue
import re
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from edge import codec
from host_tools.backend import e2e

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
SEQ_MAX = codec.SEQ_LIMIT - 1  # FORMAT.md 1: 48-bit, never wraps
GROUP_MESSAGES = 2000  # messages per transaction at most
GROUP_READINGS = 50_000  # readings per transaction at most
MAX_DOC = 16384  # bytes of a status, receipt or reply
MAX_DEPTH = 16  # JSON nesting accepted in a status, receipt or reply
ERRORS_KEPT = 100  # the error log keeps the newest messages only
ERROR_CHARS = 200
CAP_NAMES = 256  # distinct keys a per-name counter keeps (then "(other)")
STATUS_HISTORY_MS = 1000  # at most one status_history row per device per second
DOCS_FLUSH_S = 5.0  # the document file is rewritten whole: not more often (receipts: at once)
STATS_SAVE_S = 1.0  # the counters' row in the sink's `meta` table: at most this often


@dataclass
class Delivery:
    """One message from a source. topic: MQTT-style (`edge/D/t/C`); token: the source's
    handle for its acknowledgement."""

    topic: str
    payload: bytes
    token: Any = None


class Source(Protocol):
    """Where messages come from (docs/BACKEND.md 2): MqttSource today; a NATS JetStream durable
    consumer implements the same methods."""

    def start(self, deliver: Callable[[Delivery], None]) -> None: ...
    def ack(self, token: Any) -> None: ...
    def send(self, device: str, suffix: str, payload: bytes) -> None: ...
    def pause(self) -> None: ...
    def stop(self) -> None: ...
    def alive(self) -> bool: ...


class Sink(Protocol):
    """Where readings go (docs/BACKEND.md 2, 3): SqliteSink today; a PostgreSQL sink keeps the
    key (device, seq) and ON CONFLICT DO NOTHING. A transaction starts with the first write."""

    def insert_readings(self, rows: list[tuple]) -> tuple[list[tuple], int, list[tuple]]: ...
    def add_status(self, device: str, received_ms: int, doc_text: str) -> None: ...
    def put_meta(self, key: str, value: str) -> None: ...
    def count_category(self, device: str, category: str) -> int: ...
    def erase_category(self, device: str, category: str) -> int: ...
    def ledger(
        self,
        device: str,
        version: int,
        event: str,
        category: str,
        seq: int | None,
        readings: int,
        action: str,
        detail: dict | None = None,
    ) -> bool: ...
    def savepoint(self) -> None: ...
    def release(self) -> None: ...
    def rollback_to(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class Refused(Exception):
    """A message the worker will not store; `reason` is its counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason


def json_depth_ok(data: bytes, limit: int) -> bool:
    """True when no array/object nests deeper than limit (strings are skipped), checked
    before json.loads so a deep document costs a scan, not a recursion."""
    depth = 0
    in_str = False
    esc = False
    for b in data:
        if in_str:
            if esc:
                esc = False
            elif b == 0x5C:
                esc = True
            elif b == 0x22:
                in_str = False
        elif b == 0x22:
            in_str = True
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif b in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_doc(payload: bytes, limit: int = MAX_DOC) -> dict:
    """A JSON object from a status, receipt or reply; Refused otherwise."""
    if len(payload) > limit:
        raise Refused("oversize", f"{len(payload)} bytes")
    if not json_depth_ok(payload, MAX_DEPTH):
        raise Refused("json_depth", f"nested deeper than {MAX_DEPTH}")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise Refused("bad_json", str(e)) from None
    if not isinstance(doc, dict):
        raise Refused("not_object", type(doc).__name__)
    return doc


def channel_meta(doc: dict) -> dict[int, dict]:
    """{channel: {"unit", "decimals"[, "name", "category"]}} from a device's meta document
    (docs/MQTT.md 2; rows [id, name, category, unit, decimals] or, short form, [id, unit,
    decimals]). Malformed rows are skipped."""
    out: dict[int, dict] = {}
    short = doc.get("form") == "short"
    rows = doc.get("channels")
    for row in rows if isinstance(rows, list) else ():
        try:
            if short:
                cid, unit, dec = row
                out[int(cid)] = {"unit": unit, "decimals": int(dec)}
            else:
                cid, name, cat, unit, dec = row
                out[int(cid)] = {"name": name, "category": cat, "unit": unit, "decimals": int(dec)}
        except (TypeError, ValueError):
            continue
    return out


def scaled(value: int, meta: dict | None) -> str:
    """A reading as the device meant it: 2150 with 2 decimals and unit degC -> "21.50 degC"."""
    if not meta:
        return str(value)
    dec = meta.get("decimals") or 0
    text = f"{value / 10**dec:.{dec}f}" if dec else str(value)
    return f"{text} {meta['unit']}" if meta.get("unit") else text


def _bump(d: dict, key: str, n: int = 1) -> None:
    if key not in d and len(d) >= CAP_NAMES:
        key = "(other)"
    d[key] = d.get(key, 0) + n


@dataclass
class WorkerConfig:
    prefix: str = "edge"
    device_keys: dict[str, bytes] | None = None  # None: open mode (no key file given)
    e2e_ack: bool = False
    on_revoke: str = "delete"  # "delete" or "keep" (report only)
    max_devices: int = 100_000
    keep_readings: bool = False  # mirror rows in memory (tests, the demo)
    # the key of this worker's counters in the sink's `meta` table (`collector:NAME`, read by
    # the dashboard, docs/BACKEND.md 3) and what the row says about it; None: not saved
    stats_name: str | None = None
    stats_info: dict = field(default_factory=dict)
    log: Callable[[str], None] = field(default=lambda msg: None)


class Worker:
    """One worker thread over one source, one sink and one document store."""

    def __init__(self, source: Source, sink: Sink, docs, cfg: WorkerConfig) -> None:
        self.source = source
        self.sink = sink
        self.docs = docs
        self.cfg = cfg
        self.q: queue.Queue = queue.Queue(maxsize=20_000)
        self.lock = threading.RLock()  # the mirrors and counters below
        self.db_lock = threading.Lock()  # the sink: held by a group and by stats()
        self.counts = {
            "batches": 0,
            "readings": 0,
            "unique": 0,
            "duplicates": 0,
            "conflicts": 0,
            "rejected": 0,
            "refused": 0,
            "acks_sent": 0,
            "messages": 0,
            "callback_errors": 0,
        }
        self.by_category: dict[str, int] = {}
        self.refused_by_category: dict[str, int] = {}
        self.by_reason: dict[str, int] = {}
        self.errors: deque[str] = deque(maxlen=ERRORS_KEPT)
        self._logged: set[str] = set()
        self.receipts: dict[str, dict] = docs.all_receipts()
        self.status: dict[str, dict] = docs.all_status()
        # channel metadata from each device's retained `meta` (edge/meta.py): device ->
        # {channel: {"unit": u, "decimals": d, ...}}
        self.channels: dict[str, dict[int, dict]] = {
            d: channel_meta(m) for d, m in docs.all_meta().items()
        }
        self.devices: set[str] = set(self.status) | set(self.receipts)
        self._status_ms: dict[str, int] = {}
        # mirrors for in-process readers (tests, the demo): only with keep_readings
        self.readings: list[tuple] = []
        self.receipt_log: list[tuple[int, str, dict]] = []
        self.boot_relative: dict[str, dict[int, int]] = {}
        self.replies: list | deque = [] if cfg.keep_readings else deque(maxlen=1000)
        self.failed: str | None = None  # why the worker stopped (a database error)
        self._docs_dirty = False
        self._docs_flushed = time.monotonic()
        # a sink names its database errors (PgSink: psycopg.Error); SQLite's by default
        self.db_errors: tuple[type[BaseException], ...] = getattr(sink, "errors", (sqlite3.Error,))
        # a sink shared by several workers keeps consent in the database (PgSink.receipt):
        # each check reads it there under a row lock instead of from this worker's memory
        self.shared_receipt: Callable[..., dict | None] | None = getattr(sink, "receipt", None)
        self._stats_saved = 0.0
        self._stats_messages = -1  # counts["messages"] when the counters were last saved
        self._started_ms = int(time.time() * 1000)
        self.thread = threading.Thread(target=self._run, name="collector-worker", daemon=True)

    # --- counting and the bounded error log -----------------------------------------------
    def note(self, reason: str, detail: str) -> None:
        """Count a refusal or error by reason; keep the newest messages; log each reason once."""
        with self.lock:
            _bump(self.by_reason, reason)
            msg = f"{reason}: {detail}"[:ERROR_CHARS]
            self.errors.append(msg)
            first = reason not in self._logged and len(self._logged) < CAP_NAMES
            if first:
                self._logged.add(reason)
        if first:
            self.cfg.log(f"collector: {msg} (logged once; counted in refused_by_reason)")

    def callback_error(self, reason: str, detail: str) -> None:
        """For sources: an error in their own thread (counted, never raised)."""
        with self.lock:
            self.counts["callback_errors"] += 1
        self.note(reason, detail)

    # --- the thread ------------------------------------------------------------------------
    def deliver(self, d: Delivery) -> None:
        """Called by the source's thread. Blocks while the queue is full (backpressure); if the
        worker has stopped, drops the message unacknowledged (the broker re-sends it)."""
        while True:
            try:
                self.q.put(d, timeout=0.5)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    return

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Process what is queued, commit, acknowledge, then end the thread."""
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join(timeout)  # the thread saves the final counters as it ends
        elif self.failed is None:
            self._save_stats_idle(force=True)  # messages were fed in-process (feed())

    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        try:
            done = False
            while not done:
                try:
                    first = self.q.get(timeout=0.2)
                except queue.Empty:
                    self._flush_docs(force=False)
                    continue
                group = []
                readings = 0
                item = first
                while True:
                    if item is None:
                        done = True
                        break
                    group.append(item)
                    readings += max(0, (len(item.payload) - 40) // codec.ENTRY_LEN)
                    if len(group) >= GROUP_MESSAGES or readings >= GROUP_READINGS:
                        break
                    try:
                        item = self.q.get_nowait()
                    except queue.Empty:
                        break
                if group:
                    self.process(group)
            self._flush_docs(force=True)
            self._save_stats_idle(force=True)
        except self.db_errors as e:
            self.failed = f"database write failed: {e}"
            self.cfg.log(f"collector: {self.failed}; nothing of the last group was acknowledged")
        except BaseException as e:
            self.failed = f"worker stopped: {type(e).__name__}: {e}"
            self.cfg.log(f"collector: {self.failed}")

    # --- one group: write, commit, device acks, source acks ----------------------------------
    def process(self, group: list[Delivery]) -> None:
        acks: dict[str, list[tuple[int, int]]] = {}
        mirror: list[tuple] = []
        with self.db_lock:
            try:
                for d in group:
                    self.sink.savepoint()
                    try:
                        self._handle(d, acks, mirror)
                    except Refused as r:
                        self.sink.rollback_to()
                        self._refuse(d, r)
                    except self.db_errors:
                        raise
                    except Exception as e:  # a bug or an input nobody foresaw: one message
                        self.sink.rollback_to()  # nothing half-written of it stays
                        self.note("internal", f"{d.topic[:80]}: {type(e).__name__}: {e}")
                    else:
                        self.sink.release()
                # with the group's own commit: when due, and when the queue is drained so the
                # counters a reader sees include the last group (no write while idle)
                self._save_stats(force=self.q.empty())
                self.sink.commit()
            except self.db_errors:
                self.sink.rollback()
                raise
        self._flush_docs(force=any(m[0] == "receipt" for m in mirror))
        self._apply_mirror(mirror)
        for device, pairs in acks.items():
            key = (self.cfg.device_keys or {}).get(device)
            for i in range(0, len(pairs), e2e.ACK_MAX_PAIRS):
                chunk = pairs[i : i + e2e.ACK_MAX_PAIRS]
                if key is not None:
                    payload = e2e.signed_ack(device, chunk, key)
                else:
                    payload = b"".join(e2e.ack_payload(a, b) for a, b in chunk)
                self.source.send(device, "ack", payload)
                with self.lock:
                    self.counts["acks_sent"] += 1
        for d in group:
            if d.token is not None:
                self.source.ack(d.token)

    def snapshot(self) -> dict:
        """The counters as `edgectl collect --json` prints them (without gaps)."""
        with self.lock:
            return {
                **self.counts,
                "by_category": dict(self.by_category),
                "refused_by_category": dict(self.refused_by_category),
                "refused_by_reason": dict(self.by_reason),
                "devices": len(self.devices),
            }

    def _save_stats(self, force: bool) -> bool:
        """Inside the open transaction: the counters into `meta` as `collector:NAME`, at most
        every STATS_SAVE_S (so a reader of the database sees them live, docs/BACKEND.md 3)."""
        if self.cfg.stats_name is None:
            return False
        now = time.monotonic()
        if not force and now - self._stats_saved < STATS_SAVE_S:
            return False
        snap = self.snapshot()
        doc = {
            **self.cfg.stats_info,
            "started_ms": self._started_ms,
            "updated_ms": int(time.time() * 1000),
            "stats": snap,
        }
        self.sink.put_meta("collector:" + self.cfg.stats_name, json.dumps(doc, sort_keys=True))
        self._stats_saved = now
        self._stats_messages = snap["messages"]
        return True

    def _save_stats_idle(self, force: bool = False) -> None:
        """Outside a group (at the end): save counters that moved since the last save."""
        if self.cfg.stats_name is None:
            return
        with self.lock:
            moved = self.counts["messages"] != self._stats_messages
        if not (moved or force):
            return
        if not force and time.monotonic() - self._stats_saved < STATS_SAVE_S:
            return
        with self.db_lock:
            try:
                self._save_stats(force=True)
                self.sink.commit()
            except self.db_errors:
                self.sink.rollback()
                raise

    def _flush_docs(self, force: bool) -> None:
        if self._docs_dirty and (force or time.monotonic() - self._docs_flushed >= DOCS_FLUSH_S):
            self.docs.flush()
            self._docs_dirty = False
            self._docs_flushed = time.monotonic()

    def _apply_mirror(self, mirror: list[tuple]) -> None:
        if not self.cfg.keep_readings:
            return
        with self.lock:
            for m in mirror:
                if m[0] == "rows":
                    for r in m[1]:
                        self.readings.append((r[0], r[1], r[2], r[4], r[5], r[6]))
                        if r[3] is not None:
                            self.boot_relative.setdefault(r[0], {})[r[1]] = r[3]
                elif m[0] == "receipt":
                    self.receipt_log.append((len(self.readings), m[1], m[2]))

    def _refuse(self, d: Delivery, r: Refused) -> None:
        with self.lock:
            if r.reason.startswith("format"):
                self.counts["rejected"] += 1
            self.counts["messages"] += 1
        self.note(r.reason, f"{d.topic[:80]}: {r}")

    # --- per message -------------------------------------------------------------------------
    def _handle(self, d: Delivery, acks: dict, mirror: list) -> None:
        parts = d.topic.split("/")
        if len(parts) < 3 or parts[0] != self.cfg.prefix or not _ID.match(parts[1]):
            raise Refused("bad_topic", "not {prefix}/{device}/...")
        device, kind = parts[1], parts[2]
        if self.cfg.device_keys is not None and device not in self.cfg.device_keys:
            raise Refused("unknown_device", f"{device} is not in the device keys")
        if device not in self.devices:
            with self.lock:
                if len(self.devices) >= self.cfg.max_devices:
                    raise Refused("device_limit", f"more than {self.cfg.max_devices} devices")
                self.devices.add(device)
        with self.lock:
            self.counts["messages"] += 1
        if kind == "t" and len(parts) == 4 and _ID.match(parts[3]):
            self._batch(device, parts[3], d.payload, acks, mirror)
        elif not d.payload:
            return  # a retained message being cleared
        elif kind == "consent" and parts[3:] == ["receipt"]:
            self._receipt(device, d.payload, mirror)
        elif kind == "status" and len(parts) == 3:
            self._status(device, d.payload)
        elif kind == "meta" and len(parts) == 3:
            doc = parse_doc(d.payload)
            with self.lock:
                self.channels[device] = channel_meta(doc)
            self.docs.set_meta(device, doc)
            self._docs_dirty = True
        elif kind == "reply" and len(parts) == 4:
            doc = parse_doc(d.payload)
            with self.lock:
                self.replies.append((device, parts[3], doc))
        else:
            raise Refused("bad_topic", "unknown topic")

    def _batch(self, device: str, category: str, payload: bytes, acks: dict, mirror) -> None:
        if payload[2:4] == bytes((codec.BATCH_VERSION, codec.ENC_JSON)):
            if not json_depth_ok(payload, 3):
                raise Refused("format_json_depth", "JSON body nested too deep")
        try:
            # the topic's identity: the decoder refuses a payload naming another device or
            # category, and a format 2 payload without names takes them from the topic
            b = codec.decode_batch(payload, device, category)
        except (ValueError, TypeError, IndexError, OverflowError, RecursionError) as e:
            why = str(e)  # FormatError, UnicodeError too
            for what in ("device", "category"):
                if why.startswith("payload names " + what):
                    raise Refused("identity_" + what, why) from None
            raise Refused("format", why) from None
        # identity is the channel: the payload must name the topic's device and category
        if b["device"] != device:
            raise Refused("identity_device", f"payload says {b['device'][:64]!r}")
        if b["category"] != category:
            raise Refused("identity_category", f"payload says {b['category'][:64]!r}")
        readings = b["readings"]
        if not readings:
            raise Refused("format", "no readings")
        if readings[-1][0] > SEQ_MAX:
            raise Refused("format_seq_range", "seq beyond 2^48 - 1")
        n = len(readings)
        with self.lock:
            self.counts["batches"] += 1
            self.counts["readings"] += n
        if not self._consented(device, category):
            # not acknowledged either: a device in end-to-end mode keeps them and sends them
            # again, so a receipt that arrives late (or a key fixed later) loses nothing
            with self.lock:
                self.counts["refused"] += n
                _bump(self.refused_by_category, category, n)
            self.note("consent", f"{device}/{category}: {n} readings the receipt does not grant")
            return
        if self.cfg.e2e_ack:
            acks.setdefault(device, []).append((readings[0][0], readings[-1][0]))
        boot = b["boot"] if b["flags"] & codec.FLAG_CLOCK_UNSYNCED else None
        now = int(time.time() * 1000)
        rows = [(device, s, ts, boot, category, ch, v, now) for s, ts, ch, v in readings]
        fresh, dups, conflicts = self.sink.insert_readings(rows)
        with self.lock:
            self.counts["unique"] += len(fresh)
            self.counts["duplicates"] += dups
            self.counts["conflicts"] += len(conflicts)
            if fresh:
                _bump(self.by_category, category, len(fresh))
        if conflicts:
            self.note(
                "seq_conflict",
                f"{device}: {len(conflicts)} readings reuse stored seqs with other content "
                f"(first {conflicts[0][1]}); kept in seq_conflicts",
            )
        if fresh:
            mirror.append(("rows", fresh))

    def _consented(self, device: str, category: str) -> bool:
        """Default deny (docs/CONSENT.md 8): before any receipt only `essential`; then what
        the latest receipt grants. A reading the receipt does not grant is refused whatever
        its seq: one sent before the revocation arrived before the receipt (same connection,
        in order), so one that arrives after it was not sent before it."""
        r = (
            self.receipts.get(device)
            if self.shared_receipt is None
            else self.shared_receipt(device)
        )
        if r is None:
            return category == "essential"
        return r["grants"].get(category) is True

    def _receipt(self, device: str, payload: bytes, mirror: list) -> None:
        key = (self.cfg.device_keys or {}).get(device)
        if key is not None:
            verdict = e2e.verify_receipt(device, payload, key)
            if verdict != "ok":
                raise Refused("receipt_" + verdict, f"{device}: receipt not signed by its key")
        doc = parse_doc(payload)
        doc.pop("sig", None)
        if doc.get("device") != device:
            raise Refused("identity_device", f"receipt says {str(doc.get('device'))[:64]!r}")
        grants, version, seq = doc.get("grants"), doc.get("version"), doc.get("seq")
        if (
            not isinstance(grants, dict)
            or not all(isinstance(k, str) and isinstance(v, bool) for k, v in grants.items())
            or not isinstance(version, int)
            or isinstance(version, bool)
            or not isinstance(seq, int)
        ):
            raise Refused("receipt_shape", "needs grants {str: bool}, int version and seq")
        if self.shared_receipt is None:
            prev = self.receipts.get(device)
        else:  # locked until the commit: a batch checked on another worker waits for it
            prev = self.shared_receipt(device, True)
        if prev is not None and version < prev["version"]:
            raise Refused("receipt_stale", f"{device}: v{version} after v{prev['version']}")
        before = (prev or {}).get("grants") or {}
        for cat, on in sorted(grants.items()):
            if before.get(cat) is on and prev is not None:
                continue
            if on:
                self.sink.ledger(device, version, "grant", cat, seq, 0, "none")
                continue
            n = self.sink.count_category(device, cat)
            if self.cfg.on_revoke == "delete" and n:
                n = self.sink.erase_category(device, cat)
            action = "erased" if self.cfg.on_revoke == "delete" else "kept"
            if self.sink.ledger(device, version, "deny", cat, seq, n, action) and n:
                self.note("erasure", f"{device}/{cat}: {n} stored readings {action} (v{version})")
        self.receipts[device] = doc
        self.docs.set_receipt(device, doc, int(time.time() * 1000))
        self._docs_dirty = True
        mirror.append(("receipt", device, doc))

    def _status(self, device: str, payload: bytes) -> None:
        doc = parse_doc(payload)
        if "device" in doc and doc["device"] != device:
            raise Refused("identity_device", f"status says {str(doc['device'])[:64]!r}")
        # compact snapshots and change messages in the full document's key names, a change
        # merged over the device's last status (docs/HEALTH.md 1)
        with self.lock:
            doc = codec.decode_status(doc, self.status.get(device))
        now = int(time.time() * 1000)
        if now - self._status_ms.get(device, 0) >= STATUS_HISTORY_MS:
            self._status_ms[device] = now
            self.sink.add_status(device, now, payload.decode("utf-8", "replace"))
        with self.lock:
            self.status[device] = doc
        self.docs.seen(device, now, status=doc)
        self._docs_dirty = True
