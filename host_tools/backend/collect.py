"""Collector: subscribes to telemetry batches, decodes them with the shared codec,
removes duplicates on (device, seq) and stores readings in TinyDB (DESIGN.md 5b).

The paho callback thread only decodes and enqueues; one writer thread owns TinyDB and
inserts in batches (STYLE 7.2.6).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import defaultdict

import paho.mqtt.client as mqtt
from tinydb import TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import JSONStorage, MemoryStorage

from edge import codec
from host_tools.errors import ToolError

_FLUSH_S = 2.0
_GROUP_S = 1.0  # readings queued within this long go into TinyDB with one insert
_GROUP_MAX = 100000


class _DeviceSeqs:
    """Seqs seen for one device: a floor below which all were seen, plus a sparse set above."""

    __slots__ = ("floor", "above", "max")

    def __init__(self) -> None:
        self.floor = 0
        self.above: set[int] = set()
        self.max = 0

    def add(self, seq: int) -> bool:
        """True when seq is new."""
        if seq <= self.floor or seq in self.above:
            return False
        self.above.add(seq)
        self.max = max(self.max, seq)
        while self.floor + 1 in self.above:
            self.floor += 1
            self.above.discard(self.floor)
        return True

    def count(self) -> int:
        return self.floor + len(self.above)


class Collector:
    """Subscribe to `{prefix}/+/t/#` and friends; `stats()` reports what arrived."""

    def __init__(
        self,
        host: str,
        port: int,
        prefix: str = "edge",
        db_path: str | None = None,
        keep_readings: bool = True,
        share_group: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.share_group = share_group
        self.keep_readings = keep_readings
        self.lock = threading.Lock()
        self.seqs: dict[str, _DeviceSeqs] = defaultdict(_DeviceSeqs)
        self.counts = {
            "batches": 0,
            "readings": 0,
            "unique": 0,
            "duplicates": 0,
            "rejected": 0,
            "refused": 0,
        }
        self.by_category: dict[str, int] = defaultdict(int)
        self.refused_by_category: dict[str, int] = defaultdict(int)
        self.readings: list[tuple] = []
        self.receipts: dict[str, dict] = {}
        # (len(readings) when it arrived, device, receipt): arrival order against the readings
        self.receipt_log: list[tuple[int, str, dict]] = []
        self.replies: list[tuple[str, str, dict]] = []
        self.status: dict[str, dict] = {}
        # channel metadata from each device's retained `meta` (edge/meta.py): device ->
        # {channel: {"unit": u, "decimals": d, ...}}
        self.channels: dict[str, dict[int, dict]] = {}
        # readings stamped before the device's clock was synced (FORMAT.md 4): device ->
        # {seq: boot}; their ts is ms since that boot, not Unix time
        self.boot_relative: dict[str, dict[int, int]] = defaultdict(dict)
        self.errors: list[str] = []
        self.connected = threading.Event()
        self.q: queue.Queue = queue.Queue()
        if db_path:
            self.db = TinyDB(db_path, storage=CachingMiddleware(JSONStorage))
        else:
            self.db = TinyDB(storage=MemoryStorage)
        self.writer = threading.Thread(target=self._writer, name="collector-db", daemon=True)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            protocol=mqtt.MQTTv311,
            client_id="",
            clean_session=True,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Collector:
        self.writer.start()
        self.client.reconnect_delay_set(0.05, 0.5)
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise ToolError(f"collector cannot connect to {self.host}:{self.port}: {e}") from e
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise ToolError(f"collector: no CONNACK from {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except OSError:
            pass
        self.q.put(None)
        if self.writer.is_alive():
            self.writer.join(10)
        self.db.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- paho callbacks (network thread: decode and enqueue only) -------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.errors.append(f"connect refused: {reason_code}")
            return
        root = f"{self.prefix}/+/"
        subs = ["t/#", "consent/receipt", "status", "meta", "reply/#"]
        for s in subs:
            topic = root + s
            if self.share_group and s == "t/#":
                topic = f"$share/{self.share_group}/{topic}"
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 3:
            return
        device, kind = parts[1], parts[2]
        if kind == "t":
            self._on_batch(device, msg.payload)
            return
        try:
            doc = json.loads(msg.payload) if msg.payload else {}
        except ValueError:
            doc = {"raw": msg.payload.decode(errors="replace")}
        with self.lock:
            if kind == "consent":
                self.receipts[device] = doc
                self.receipt_log.append((len(self.readings), device, doc))
            elif kind == "status":
                self.status[device] = doc
            elif kind == "meta":
                self.channels[device] = channel_meta(doc)
            elif kind == "reply":
                self.replies.append((device, parts[-1], doc))

    def _on_batch(self, device: str, payload: bytes) -> None:
        try:
            batch = codec.decode_batch(payload)
        except (codec.FormatError, ValueError) as e:
            with self.lock:
                self.counts["rejected"] += 1
                self.errors.append(f"{device}: {e}")
            return
        fresh = []
        with self.lock:
            seqs = self.seqs[batch["device"]]
            self.counts["batches"] += 1
            cat = batch["category"]
            boot = batch["boot"] if batch["flags"] & codec.FLAG_CLOCK_UNSYNCED else None
            rel = self.boot_relative[batch["device"]]
            floor = _denied_from(self.receipts.get(batch["device"]), cat)
            for seq, ts, ch, val in batch["readings"]:
                self.counts["readings"] += 1
                if seq >= floor:
                    # defence in depth (issue 5): the device's latest receipt denies this
                    self.counts["refused"] += 1
                    self.refused_by_category[cat] += 1
                elif seqs.add(seq):
                    self.counts["unique"] += 1
                    self.by_category[cat] += 1
                    if boot is not None:
                        rel[seq] = boot
                    fresh.append((batch["device"], seq, ts, cat, ch, val))
                else:
                    self.counts["duplicates"] += 1
            if self.keep_readings:
                self.readings.extend(fresh)
        if fresh:
            self.q.put(fresh)

    # --- the one TinyDB writer -------------------------------------------------------------
    def _writer(self) -> None:
        # TinyDB rewrites a table's whole dict on every insert (O(n)), so inserts are grouped:
        # everything queued within _GROUP_S goes in with one insert_multiple.
        table = self.db.table("readings")
        last_flush = time.monotonic()
        done = False
        while not done:
            try:
                first = self.q.get(timeout=_FLUSH_S)
            except queue.Empty:
                first = []
            group = []
            deadline = time.monotonic() + _GROUP_S
            item = first
            while True:
                if item is None:
                    done = True
                    break
                group.extend(item)
                if len(group) >= _GROUP_MAX or time.monotonic() >= deadline:
                    break
                try:
                    item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if group:
                table.insert_multiple(
                    {
                        "device": d,
                        "seq": s,
                        "ts": t,
                        "category": c,
                        "channel": ch,
                        "value": v,
                        "boot": self.boot_relative.get(d, {}).get(s),
                    }
                    for d, s, t, c, ch, v in group
                )
            if time.monotonic() - last_flush >= _FLUSH_S:
                self._flush()
                last_flush = time.monotonic()
        self._flush()

    def _flush(self) -> None:
        storage = getattr(self.db, "storage", None)
        if isinstance(storage, CachingMiddleware):
            storage.flush()

    # --- reporting ---------------------------------------------------------------------------
    def stats(self) -> dict:
        with self.lock:
            gaps = {d: s.max - s.count() for d, s in self.seqs.items()}
            return {
                **self.counts,
                "by_category": dict(self.by_category),
                "refused_by_category": dict(self.refused_by_category),
                "devices": len(self.seqs),
                "gaps": gaps,
            }

    def wall_ms(self, device: str, boot: int, ts: int) -> int | None:
        """Unix ms of a boot-relative stamp, from the clock mapping in the device's retained
        status (FORMAT.md 4) when it is about that boot and synced; None otherwise."""
        with self.lock:
            clk = (self.status.get(device) or {}).get("clock") or {}
        if not clk.get("synced") or clk.get("boot") != boot:
            return None
        d = (ts - clk["sync_ticks"]) % (1 << 30)  # device ticks wrap at 2**30 ms
        return clk["sync_wall_ms"] + (d - (1 << 30) if d >= 1 << 29 else d)

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)


def channel_meta(doc: dict) -> dict[int, dict]:
    """{channel: {"unit", "decimals"[, "name", "category"]}} from a device's meta document
    (docs/MQTT.md 2; rows [id, name, category, unit, decimals] or, short form, [id, unit,
    decimals]). Malformed rows are skipped."""
    out: dict[int, dict] = {}
    short = doc.get("form") == "short"
    for row in doc.get("channels") or ():
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


def _denied_from(receipt: dict | None, category: str) -> float:
    """The first seq the device's latest receipt denies for a category (inf: allowed).
    Readings below it were sent before the device acknowledged the revocation."""
    if not isinstance(receipt, dict) or not isinstance(receipt.get("grants"), dict):
        return float("inf")
    if receipt["grants"].get(category, True) is not False:
        return float("inf")
    seq = receipt.get("seq")
    return seq if isinstance(seq, int) else 0


def cmd_collect(args) -> int:
    col = Collector(
        args.host, args.port, args.prefix, args.db, keep_readings=False, share_group=args.share
    )
    col.start()
    print(f"collect: subscribed to {args.prefix}/+/t/# on {args.host}:{args.port}", flush=True)
    t0 = time.monotonic()
    try:
        while not args.seconds or time.monotonic() - t0 < args.seconds:
            time.sleep(1.0)
            s = col.stats()
            if not args.json:
                print(
                    f"collect: {s['unique']} unique readings, {s['duplicates']} duplicates, "
                    f"{s['rejected']} rejected batches",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        col.stop()
    s = col.stats()
    print(json.dumps(s) if args.json else f"collect: done, {s['unique']} unique readings")
    return 0


def register(sub) -> None:
    p = sub.add_parser("collect", help="subscribe, decode, de-duplicate and store telemetry")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="edge")
    p.add_argument("--db", default="collector.json", help="TinyDB file ('' keeps it in memory)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    p.add_argument("--share", default=None, help="shared-subscription group ($share/GROUP/...)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_collect)
