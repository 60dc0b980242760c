# Health (DESIGN.md 3 "Health", issue 6 item 7): the retained status message on
# {prefix}/{device}/status with uptime, reset cause, free heap, store depth and oldest unsent
# age, drops by reason and category, reconnects, flash writes, inputs, clock and watchdog.

import asyncio
import gc
import io
import json

from micropython import const

from edge import codec
from edge.mqtt.client import MQTTError

TOPIC_ROOM = const(160)  # fixed header + topic, kept free in the client's packet buffer
_STEP_MS = const(500)  # heartbeat interval, well inside any watchdog timeout (>= 2000 ms)


class _Sink(io.IOBase):
    """json.dump() target that writes into a region of a preallocated buffer, so a status
    never exists as a str and a bytes copy (large, contiguous allocations: issue 4 memory).
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
    (`input_stats`, `clock_status`, `watchdog_status`)."""

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
    ):
        self.device = cfg["device_id"]
        self.period = cfg["status_ms"] or 5000
        self.topic = codec.topic(cfg["mqtt"]["prefix"], self.device, "status")
        self.hal = hal
        self.client = client
        self.store = store
        self.consent = consent
        self.t0 = t0
        self.counters = counters
        self.input_stats = input_stats
        self.clock_status = clock_status
        self.watchdog_status = watchdog_status
        self.log = log
        self.published = 0
        self.too_large = 0

    # --- the status document ------------------------------------------------------------
    def status(self, state):
        hal = self.hal
        store = self.store
        st = store.stats
        h = self.counters()
        h["state"] = state
        h["device"] = self.device
        h["boot"] = store.boot
        h["uptime_ms"] = hal.ticks_diff(hal.ticks_ms(), self.t0)
        h["reset_cause"] = hal.reset_cause
        h["reset_detail"] = getattr(hal, "reset_detail", None)
        h["heap_free"] = gc.mem_free()
        h["heap_alloc"] = gc.mem_alloc()
        h["store_bytes"] = store.used_bytes()
        depth, age, age_boot = self.backlog()
        h["store_depth"] = depth
        h["oldest_unsent_age_ms"] = age
        if age_boot is not None:
            h["oldest_unsent_boot"] = age_boot  # a past boot, never synced: age unknown
        h["drops"] = self.drops(h["unknown_channel"])
        h["flash_writes"] = st["commits"]
        flash = getattr(hal, "flash", None)  # the emulated NOR flash on unix
        if flash is not None:
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

    # --- publishing -------------------------------------------------------------------------
    def place(self, state):
        """Write the status as JSON into the client's packet buffer after TOPIC_ROOM bytes
        (left for the PUBLISH header, Client.publish_placed) and return its length. The
        per-input counters go first when it is too large (counted in `status_too_large`)."""
        h = self.status(state)
        h["status_too_large"] = self.too_large
        out = _Sink(self.client.txmv[TOPIC_ROOM:])
        json.dump(h, out)
        if out.pos > len(out.mv):
            self.too_large += 1
            h["inputs"] = {"omitted": len(h["inputs"])}
            h["status_too_large"] = self.too_large
            out.pos = 0
            json.dump(h, out)
            if out.pos > len(out.mv):
                raise ValueError("status too large for the packet buffer")
        return out.pos

    async def publish(self, state):
        """The retained status (QoS 0, DESIGN.md 5). It is written straight into the client's
        packet buffer: nothing may use that buffer between the two calls, so no await between
        them."""
        n = self.place(state)
        await self.client.publish_placed(self.topic, TOPIC_ROOM, n, True)

    async def run(self, hb):
        """Task: publish the retained status every `status_ms` while connected."""
        step = min(self.period, _STEP_MS)
        waited = 0
        while True:
            hb.beat()
            await asyncio.sleep_ms(step)
            waited += step
            if waited < self.period or not self.client.connected.is_set():
                continue
            waited = 0
            try:
                await self.publish("online")
                self.published += 1
            except (OSError, MQTTError, ValueError) as e:
                self.log("status not sent: %s" % e)
