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
    def __init__(self, agent):
        self.a = agent
        self.published = 0
        self.too_large = 0

    # --- the status document ------------------------------------------------------------
    def status(self, state):
        a = self.a
        st = a.store.stats
        h = a.counters()
        h["state"] = state
        h["device"] = a.cfg["device_id"]
        h["boot"] = a.store.boot
        h["uptime_ms"] = a.hal.ticks_diff(a.hal.ticks_ms(), a.t0)
        h["reset_cause"] = a.hal.reset_cause
        h["reset_detail"] = getattr(a.hal, "reset_detail", None)
        h["heap_free"] = gc.mem_free()
        h["heap_alloc"] = gc.mem_alloc()
        h["store_bytes"] = a.store.used_bytes()
        depth, age, age_boot = self.backlog()
        h["store_depth"] = depth
        h["oldest_unsent_age_ms"] = age
        if age_boot is not None:
            h["oldest_unsent_boot"] = age_boot  # a past boot, never synced: age unknown
        h["drops"] = self.drops()
        h["flash_writes"] = st["commits"]
        h["store_backend"] = a.store.backend  # rawlog or segments (docs/FORMAT.md 7.8)
        if "erases" in st:  # the raw log counts its own programs and erases
            h["store_flash"] = {"programs": st["programs"], "erases": st["erases"]}
        flash = getattr(a.hal, "flash", None)  # the emulated NOR flash on unix
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
        h["inputs"] = {}
        if a.cfg.get("inputs"):  # the only sources with counters (edge/agent.py)
            from edge import inputs  # with its buses: not loaded for the simulated appliance

            h["inputs"] = inputs.stats(a.sources)
        h["clock"] = a.clock.status(a.store.boot)
        h["clock"]["converted"] = a.fwd.stamp.converted  # unsynced stamps sent as wall ms
        h["watchdog"] = a.wd.status()
        return h

    def drops(self):
        """{reason: {category: n}}: consent (at the gate), store quota / nospace / purged."""
        a = self.a
        d = {}
        cons = {}
        for i, n in enumerate(a.consent.stats["dropped"]):
            if n:
                cons[a.categories[i]] = n
        if cons:
            d["consent"] = cons
        for key, n in a.store.stats["dropped"].items():
            reason, _, cat = key.partition(":")
            d.setdefault(reason, {})[cat] = n
        if a.unknown_channel:
            d["unknown_channel"] = {"-": a.unknown_channel}
        return d

    def backlog(self):
        """(readings not yet acknowledged, age in ms of the oldest one or None, its boot when
        the age cannot be known). Depth counts committed bytes (an upper bound) + buffered."""
        a = self.a
        store = a.store
        depth = 0
        oldest = None
        other_boot = None
        for i in range(len(store.streams)):
            depth += max(store.backlog(i), 0) // codec.REC_LEN + store.streams[i].n
            r = store.first_unacked(i)
            if r is None:
                continue
            ts, boot, flags = r
            age = None
            if flags & codec.FLAG_CLOCK_UNSYNCED:
                if boot == store.boot:
                    age = a.hal.ticks_diff(a.hal.ticks_ms(), ts)
                else:
                    other_boot = boot
            else:
                wall = a.hal.wall_ms()
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
        out = _Sink(self.a.client.txmv[TOPIC_ROOM:])
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

    async def run(self, hb):
        """Task: publish the retained status every `status_ms` while connected."""
        a = self.a
        period = a.cfg["status_ms"] or 5000
        step = min(period, _STEP_MS)
        waited = 0
        while True:
            hb.beat()
            await asyncio.sleep_ms(step)
            waited += step
            if waited < period or not a.client.connected.is_set():
                continue
            waited = 0
            try:
                await a.publish_status("online")
                self.published += 1
            except (OSError, MQTTError, ValueError) as e:
                a.log("status not sent: %s" % e)
