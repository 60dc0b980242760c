# Health: the status on {prefix}/{device}/status (docs/HEALTH.md 1). What an operator acts
# on goes out compact and rarely: a retained snapshot with short keys every `status_ms` (15 min),
# at birth and at a stop; between them a change message (not retained) with only what changed
# when drops or errors moved, at most one per `status_change_ms`. The full document (inputs,
# clock, watchdog, every counter) is the reply to cmd/status, or every snapshot with
# `status_detail: "full"`.

import asyncio
import gc
import io
import json

from micropython import const

import edge
from edge import codec, wire
from edge.mqtt.client import MQTTError

# what a status too large for the packet buffer keeps (place(), case 3)
_ESSENTIAL_KEYS = (
    "state",
    "device",
    "boot",
    "uptime_ms",
    "heap_free",
    "consent_version",
    "reconnects",
    "inbound",
    "status_too_large",
)
TOPIC_ROOM = const(160)  # fixed header + topic, kept free in the client's packet buffer
_STEP_MS = const(1000)  # heartbeat and change check, well inside any watchdog timeout (>= 2000)
# compact keys a change message carries when their value moved (docs/HEALTH.md 1.2); uptime,
# counters and free heap move all the time and wait for the next snapshot
_FULL_BASE = const(1280)  # the full document without inputs (about 1 KB: docs/HEALTH.md 1.3)
_FULL_PER_INPUT = const(256)  # one input's counters and byte ledger, with room to grow


def full_status_bytes(cfg):
    """The packet buffer a full status snapshot needs (`status_detail: "full"`): 0 for the
    compact default, whose snapshot is small; the forwarder's batches set the size then."""
    if cfg["status_detail"] != "full":
        return 0
    return TOPIC_ROOM + _FULL_BASE + _FULL_PER_INPUT * len(cfg.get("inputs") or ())


_CHANGE_KEYS = ("s", "b", "rc", "rd", "sd", "oa", "ob", "dr", "er", "rx", "cv", "ck", "ot")


class _Sink(io.IOBase):
    """json.dump() target that writes into a region of a preallocated buffer, so a status
    never exists as a str and a bytes copy (large, contiguous allocations: bounded RAM).
    Past the region's end it only counts (`pos`), so the caller sees how large it was."""

    def __init__(self, mv):
        self.mv = mv
        self.pos = 0

    def write(self, b):
        n = len(b)
        end = self.pos + n
        if end <= len(self.mv):
            self.mv[self.pos : end] = b
        self.pos = end
        return n


class Health:
    """The status document and its publisher. Receives what it reads: the store, consent and
    the client, the root's `counters()` and one callable per status section it does not own
    (`input_stats`, `clock_status`, `watchdog_status`, and `net_status` on a board that runs
    its own Wi-Fi station)."""

    def __init__(
        self,
        cfg,
        hal,
        client,
        store,
        consent,
        t0,
        counters,
        input_stats,
        clock_status,
        watchdog_status,
        log,
        net_status=None,
    ):
        self.device = cfg["device_id"]
        self.period = cfg["status_ms"] or 900000  # the snapshot's period
        self.change_ms = cfg["status_change_ms"]
        self.full = cfg["status_detail"] == "full"
        self.topic = codec.topic(cfg["mqtt"]["prefix"], self.device, wire.T_STATUS)
        self.hal = hal
        self.client = client
        self.store = store
        self.consent = consent
        self.t0 = t0
        self.counters = counters
        self.input_stats = input_stats
        self.clock_status = clock_status
        self.watchdog_status = watchdog_status
        self.net_status = net_status
        self.log = log
        self.published = 0
        self.changes = 0  # change messages sent
        self.too_large = 0
        self.last = {}  # the compact fields as last sent: what a change message compares with
        self.sig = None  # (drops, errors) as last sent
        self.snap_at = t0  # ticks of the last snapshot, and of the last status message
        self.sent_at = t0
        self.want_snapshot = False  # cmd/status asked for a fresh one

    # --- the status document ------------------------------------------------------------
    def status(self, state):
        hal = self.hal
        store = self.store
        st = store.stats
        h = self.counters()
        h["state"] = state
        h["device"] = self.device
        h["version"] = edge.__version__  # the agent's release (CHANGELOG.md)
        h["boot"] = store.boot
        h["uptime_ms"] = hal.ticks_diff(hal.ticks_ms(), self.t0)
        h["reset_cause"] = hal.reset_cause
        h["reset_detail"] = getattr(hal, "reset_detail", None)
        h["heap_free"] = hal.free_heap()
        h["heap_alloc"] = gc.mem_alloc()
        h["store_bytes"] = store.used_bytes()
        depth, age, age_boot = self.backlog()
        h["store_depth"] = depth
        h["oldest_unsent_age_ms"] = age
        if age_boot is not None:
            h["oldest_unsent_boot"] = age_boot  # a past boot, never synced: age unknown
        h["drops"] = self.drops(h["unknown_channel"])
        h["flash_writes"] = st["commits"]
        h["store_backend"] = store.backend  # rawlog or segments (docs/FORMAT.md 8.8)
        flash = getattr(hal, "flash", None)  # the emulated NOR flash under littlefs on unix
        if "erases" in st:
            # the raw log counts the programs and erases of its partition, on a board too
            h["flash"] = {"progs": st["programs"], "erases": st["erases"]}
        elif flash is not None:
            h["flash"] = {
                "progs": flash.progs,
                "prog_bytes": flash.prog_bytes,
                "erases": flash.erases,
            }
        h["store_errors"] = {
            "corrupt_records": st["corrupt_records"],
            "torn_tails": st["torn_tails"],
            "bad_segments": st["bad_segments"],
        }
        h["inputs"] = self.input_stats()
        h["clock"] = self.clock_status()
        h["watchdog"] = self.watchdog_status()
        if self.net_status is not None:
            h["wifi"] = self.net_status()  # edge/net.py Station.status()
        return h

    def drops(self, unknown_channel):
        """{reason: {category: n}}: consent (at the gate), store quota / nospace / purged."""
        d = {}
        cons = {}
        for i, n in enumerate(self.consent.stats["dropped"]):
            if n:
                cons[self.consent.categories[i]] = n
        if cons:
            d["consent"] = cons
        for key, n in self.store.stats["dropped"].items():
            reason, _, cat = key.partition(":")
            d.setdefault(reason, {})[cat] = n
        if unknown_channel:
            d["unknown_channel"] = {"-": unknown_channel}
        return d

    def backlog(self):
        """(readings not yet acknowledged, age in ms of the oldest one or None, its boot when
        the age cannot be known)."""
        hal = self.hal
        store = self.store
        depth = 0
        oldest = None
        other_boot = None
        for i in range(len(self.consent.categories)):
            depth += store.unacked(i)
            r = store.first_unacked(i)
            if r is None:
                continue
            ts, boot, flags = r
            age = None
            if flags & codec.FLAG_CLOCK_UNSYNCED:
                if boot == store.boot:
                    age = hal.ticks_diff(hal.ticks_ms(), ts)
                else:
                    other_boot = boot
            else:
                wall = hal.wall_ms()
                if wall is not None:
                    age = wall - ts
            if age is not None and (oldest is None or age > oldest):
                oldest = age
        return depth, oldest, other_boot

    # --- the compact status (docs/HEALTH.md 1.1) ------------------------------------------
    def errors(self, c):
        """{name: n} of the non-zero error counters an operator acts on."""
        st = self.store.stats
        m = c["mqtt"]
        e = {}
        for k, v in (
            ("corrupt_records", st["corrupt_records"]),
            ("torn_tails", st["torn_tails"]),
            ("bad_segments", st["bad_segments"]),
            ("rx_rejected", m["rx_rejected"]),
            ("dead_links", m["dead_links"]),
            ("connect_failures", m["connect_failures"]),
            ("auth_failures", m["auth_failures"]),
            ("tls_failures", m["tls_failures"]),
            ("bad_acks", m.get("bad_acks", 0)),
            ("commands_rejected", c["commands_rejected"]),
            ("status_too_large", self.too_large),
        ):
            if v:
                e[k] = v
        inbound = c.get("inbound") or {}
        restarts = 0
        for v in (inbound.get("task_restarts") or {}).values():
            restarts += v
        if restarts:
            e["task_restarts"] = restarts
        if inbound.get("read_errors"):
            e["read_errors"] = inbound["read_errors"]
        rej = 0
        for st in self.input_stats().values():
            b = st.get("b")  # the byte ledger [fed, decoded, unhandled, rejected, garbage]
            if isinstance(b, list) and len(b) > 3:
                rej += b[3]
        if rej:
            e["input_rejected_bytes"] = rej
        return e

    def _signature(self, c):
        n = c["dropped_by_consent"] + c["unknown_channel"]
        for v in c["dropped"].values():
            n += v
        e = 0
        for v in self.errors(c).values():
            e += v
        return (n, e)

    def compact(self, state):
        """What an operator acts on, with short keys (expanded by codec.decode_status)."""
        hal = self.hal
        store = self.store
        c = self.counters()
        d = {
            "s": state,
            "b": store.boot,
            "up": hal.ticks_diff(hal.ticks_ms(), self.t0) // 1000,
            "rc": hal.reset_cause,
            "hf": gc.mem_free(),
        }
        detail = getattr(hal, "reset_detail", None)
        if detail:
            d["rd"] = detail
        depth, age, age_boot = self.backlog()
        d["sd"] = depth
        if age is not None:
            d["oa"] = age // 1000
        if age_boot is not None:
            d["ob"] = age_boot
        drops = self.drops(c["unknown_channel"])
        if drops:
            d["dr"] = drops
        errs = self.errors(c)
        if errs:
            d["er"] = errs
        d["rx"] = c["reconnects"]
        d["cv"] = c["consent_version"]
        clk = self.clock_status()
        if clk["synced"]:  # the mapping a backend needs for flagged stamps (FORMAT.md 4.5)
            d["ck"] = [clk["boot"], clk["sync_ticks"], clk["sync_wall_ms"]]
        d["n"] = [c["sampled"], c["acked"]]
        d["fw"] = store.stats["commits"]
        if self.net_status is not None:
            d["wf"] = self.net_status()  # the Wi-Fi station (edge/net.py)
        if c.get("ota") is not None:
            d["ot"] = c["ota"]  # slot, release, trial, last outcome (docs/OTA.md)
        return d, self._signature(c)

    # --- publishing -------------------------------------------------------------------------
    def place(self, doc):
        """Write doc as JSON into the client's packet buffer after TOPIC_ROOM bytes (left for
        the PUBLISH header, Client.publish_placed) and return its length. A full document's
        per-input counters go first when it is too large (counted in `status_too_large`)."""
        out = _Sink(self.client.txmv[TOPIC_ROOM:])
        json.dump(doc, out)
        if out.pos > len(out.mv) and "inputs" in doc:
            self.too_large += 1
            doc["inputs"] = {"omitted": len(doc["inputs"])}
            doc["status_too_large"] = self.too_large
            out.pos = 0
            json.dump(doc, out)
            if out.pos > len(out.mv):
                # Case 3: still too large: what says whether the device is safe and reachable
                # (state, consent, the inbound refusals: under attack they matter most)
                small = {"omitted": "too large"}
                for k in _ESSENTIAL_KEYS:
                    if k in doc:
                        small[k] = doc[k]
                out.pos = 0
                json.dump(small, out)
        if out.pos > len(out.mv):
            raise ValueError("status too large for the packet buffer")
        return out.pos

    async def publish(self, state):
        """A snapshot (retained, QoS 0, docs/MQTT.md 1): compact, or the full document with
        `status_detail: "full"`. It is written straight into the client's packet buffer:
        nothing may use that buffer between the two calls, so no await between them."""
        doc, sig = self.compact(state)
        self.last = doc
        self.sig = sig
        if self.full:
            doc = self.status(state)
            doc["status_too_large"] = self.too_large
        n = self.place(doc)
        await self.client.publish_placed(self.topic, TOPIC_ROOM, n, True)
        self.snap_at = self.sent_at = self.hal.ticks_ms()
        self.want_snapshot = False
        self.published += 1

    async def publish_change(self):
        """A change message (not retained: the retained snapshot stays whole): the compact
        keys whose value moved since the last status message, with `d: 1` and the uptime."""
        doc, sig = self.compact("online")
        delta = {"d": 1, "up": doc["up"]}
        for k in _CHANGE_KEYS:
            if doc.get(k) != self.last.get(k):
                delta[k] = doc.get(k)
        self.last = doc
        self.sig = sig
        n = self.place(delta)
        await self.client.publish_placed(self.topic, TOPIC_ROOM, n, False)
        self.sent_at = self.hal.ticks_ms()
        self.changes += 1

    def on_command(self, doc, source):
        """cmd/status: the full status document in the reply (docs/HEALTH.md 1.3); a fresh
        retained snapshot follows within a second."""
        h = self.status("online")
        room = len(self.client.tx) - TOPIC_ROOM - 64  # the reply's envelope and topic
        if len(json.dumps(h)) > room:
            h["inputs"] = {"omitted": len(h["inputs"])}
        self.want_snapshot = True
        return {"ok": True, "status": h}

    async def run(self, hb):
        """Task: the snapshot every `status_ms` (or when asked for), a change message when
        drops or errors moved (at most one per `status_change_ms`), while connected."""
        hal = self.hal
        while True:
            hb.beat()
            await asyncio.sleep_ms(min(_STEP_MS, self.period))
            if not self.client.connected.is_set():
                continue
            now = hal.ticks_ms()
            try:
                if self.want_snapshot or hal.ticks_diff(now, self.snap_at) >= self.period:
                    await self.publish("online")
                elif (
                    not self.full
                    and hal.ticks_diff(now, self.sent_at) >= self.change_ms
                    and self._signature(self.counters()) != self.sig
                ):
                    await self.publish_change()
            except (OSError, MQTTError, ValueError, MemoryError) as e:
                self.log("status not sent: %s" % e)
