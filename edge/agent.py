# Composition root: builds the data path and creates every task (STYLE 7.1.8).
# sources -> consent gate -> store -> forwarder -> MQTT; commands and health beside it.

import asyncio
import gc
import json
import sys

from micropython import const

from edge import clock, codec, config, watchdog
from edge.commands import Commands
from edge.consent import Consent, consent_key
from edge.forwarder import Forwarder
from edge.health import TOPIC_ROOM, Health
from edge.mqtt.link import Link, make_client
from edge.minimise import Minimiser
from edge.mqtt.client import MQTTError
from edge.store.backend import BackendError, open_store

_SAMPLE_MS = const(10)
_DRAIN_TIMEOUT_MS = const(60000)
_TIGHT_HEAP = const(65536)  # free bytes after start-up below which gc.threshold is set


def _all_done(sources):
    for s in sources:
        if not s.done():
            return False
    return True


class Agent:
    def __init__(self, cfg, hal, out=print):
        self.cfg = cfg
        self.hal = hal
        self.out = out
        self.stats_skipped = 0
        self.categories = config.category_ids(cfg)
        self.chan_cat = {}
        for ch in cfg["channels"]:
            self.chan_cat[ch["id"]] = self.categories.index(ch["category"])
        root = hal.mount_store(cfg["store"]["path"])
        try:
            self.store = open_store(cfg, hal, root, self.categories)
        except BackendError as e:
            raise config.ConfigError(str(e))
        self.consent = Consent(root, self.categories, cfg["device_id"], consent_key(cfg))
        self.minimise = Minimiser(cfg, self.consent)
        m = cfg["mqtt"]
        dev = cfg["device_id"]
        self.prefix = m["prefix"]
        self.client = make_client(cfg, 512 + cfg["batch"]["max_readings"] * codec.ENTRY_LEN)
        self.status_topic = codec.topic(self.prefix, dev, "status")
        self.client.will = (self.status_topic, b'{"state":"offline"}', True)
        self.fwd = Forwarder(self.store, self.client, self.consent, cfg, self.categories)
        self.cmds = Commands(self, root)  # issue 5: validation, consent, receipts
        self.client.on_message = self.cmds.on_message
        self.link = Link(self)  # the connection supervisor (edge/mqtt/link.py), wraps on_message
        self.sources = self._build_sources()
        self.sampled = 0
        self.unknown_channel = 0
        self.reconnects = 0
        self.sampling = True
        self.t0 = hal.ticks_ms()
        # issue 6 items 6-7: clock (forward-time conversion of unsynced stamps), watchdog, status
        try:
            self.clock = clock.from_config(cfg, hal)
            self.wd = watchdog.Watchdog(hal, watchdog.timeout_ms(cfg), self.log)
        except ValueError as e:
            raise config.ConfigError(str(e))
        self.fwd.stamp = clock.Stamper(self.clock, self.fwd.writer, self.store.boot)
        self.fwd.hb = self.wd.add(
            "forwarder", lambda: not self.client.connected.is_set() or bool(self.fwd.count)
        )  # batches in flight
        self.healthmon = Health(self)

    def _build_sources(self):
        if self.cfg.get("inputs"):
            from edge import inputs

            return inputs.build(self.cfg, self.hal)
        from edge.sensors.simfridge import SimFridge

        return [SimFridge(self.cfg, self.hal)]

    # --- ingest hot path -----------------------------------------------------------------
    def emit(self, channel, value):
        cat = self.chan_cat.get(channel)
        if cat is None:
            self.unknown_channel += 1
            return
        self.sampled += 1
        if not self.consent.gate(cat):  # before anything touches flash (DESIGN.md 3)
            return
        ts = self.hal.wall_ms()
        flags = 0
        if ts is None:
            ts = self.hal.ticks_ms()
            flags = codec.FLAG_CLOCK_UNSYNCED
        rules = self.minimise.rules.get(channel)
        if rules:  # data minimisation before storage (issue 5.4)
            ts, value = self.minimise.apply(rules, channel, ts, value)
        self.store.append(cat, channel, ts, flags, value)

    async def sampler(self):
        """Task: poll every source, commit by policy, stop when the run's limits are met."""
        sim = self.cfg["sim"]
        limit_ms = sim["seconds"] * 1000
        hb = self.wd.add("sampler")
        # the run ends when every source is finite and done (a simulator's count, a replay)
        finite = [s for s in self.sources if hasattr(s, "done")]
        if len(finite) != len(self.sources):
            finite = []
        while self.sampling:
            hb.beat()
            now = self.hal.ticks_ms()
            n = 0
            for src in self.sources:
                n += src.poll(now, self.emit)
            self.store.tick(now)
            if (finite and _all_done(finite)) or (
                limit_ms and self.hal.ticks_diff(now, self.t0) >= limit_ms
            ):
                self.sampling = False
                break
            await asyncio.sleep_ms(0 if n else _SAMPLE_MS)
        hb.stop()
        self.store.commit()

    async def publish_status(self, state):
        # the status is written straight into the client's packet buffer (edge/health.py);
        # nothing may use that buffer between the two calls: no await in between
        n = self.healthmon.place(state)
        await self.client.publish_placed(self.status_topic, TOPIC_ROOM, n, True)

    # --- commands (DESIGN.md 5: cmd/{name} in, reply/{name} out): edge/commands.py ----------
    def command_task(self):
        """Task: validate and execute commands, publish replies and consent receipts."""
        offline = lambda: not self.client.connected.is_set()  # noqa: E731
        return self.cmds.run(self.wd.add("commands", offline))

    # --- health ----------------------------------------------------------------------------
    def counters(self):
        st = self.store.stats
        return {
            "sampled": self.sampled,
            "dropped_by_consent": sum(self.consent.stats["dropped"]),
            "appended": st["appended"],
            "committed": st["committed"],
            "dropped": st["dropped"],
            "forwarded": self.fwd.stats["forwarded"],
            "acked": self.fwd.stats["acked_readings"],
            "acked_by_category": dict(zip(self.categories, self.fwd.acked_counts)),
            "batches": self.fwd.stats["batches"],
            "reconnects": self.reconnects,
            "consent_version": self.consent.version,
            "commands_rejected": self.cmds.stats["rejected"],
            "unknown_channel": self.unknown_channel,
            "tx_bytes": self.client.stats["tx_bytes"],
            "mqtt": self.mqtt_counters(),
        }

    def mqtt_counters(self):
        c = self.client.stats
        f = self.fwd.stats
        return {
            "published": c["published"],
            "pubacks": c["pubacks"],
            "pings": c["pings"],
            "dead_links": c["dead"],
            "rx_rejected": c["rx_rejected"],
            "rx_reject_reasons": self.client.parser.rejects,
            "resends": f["resends"],
            "resent_batches": f["resent_batches"],
            "e2e_acks": f["e2e_acks"],
            "unknown_acks": f["unknown_acks"],
            "connect_failures": self.link.stats["connect_failures"],
            "auth_failures": self.link.stats["auth_failures"],
            "tls_failures": self.link.stats["tls_failures"],
            "last_error": self.link.last_error,
        }

    def health(self, state):
        return self.healthmon.status(state)  # edge/health.py

    def report(self, tag, doc):
        """One `TAG {json}` line for the host. With the default output the JSON is streamed to
        stdout, so no line-sized string is allocated on a tight heap (issue 4)."""
        if self.out is print:
            sys.stdout.write(tag)
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
        else:
            self.out(tag + json.dumps(doc))

    def log(self, msg):
        self.out("@log " + msg)

    async def housekeeping(self):
        """Task: status, stats line, cursor persistence, gc (STYLE 7.1.9)."""
        period = self.cfg["status_ms"]
        hb = self.wd.add("housekeeping")
        while True:
            hb.beat()
            await asyncio.sleep_ms(min(period, 1000))
            self.store.save_cursor()
            gc.collect()
            try:
                self.report("@stats ", self.counters())
            except MemoryError:
                # the stats line is for the host only: skip it rather than stop the agent
                self.stats_skipped += 1

    async def main(self):
        # STYLE 7.1.9, on a tight heap: collect once a quarter of the free heap was allocated,
        # not only when it is exhausted, so short-lived objects reuse the same holes and
        # long-lived ones are not scattered over all free memory (issue 4: fragmentation made
        # a status or stats line fail with a third of the heap free). On a roomy heap that
        # never matters and the extra collections halved the top ingest rate (measured).
        gc.collect()
        free = gc.mem_free()
        if free < _TIGHT_HEAP:
            gc.threshold(free // 4)
        tasks = [
            # the link waits (connect timeout, backoff) only while offline: parked then
            asyncio.create_task(
                self.link.run(self.wd.add("link", lambda: not self.client.connected.is_set()))
            ),
            asyncio.create_task(self.fwd.run()),
            asyncio.create_task(self.command_task()),
            asyncio.create_task(self.housekeeping()),
            asyncio.create_task(self.healthmon.run(self.wd.add("health"))),  # retained status
            asyncio.create_task(self.clock.run(self.log, self.wd.add("clock"))),  # NTP
        ]
        if self.wd.timeout_ms:
            tasks.append(asyncio.create_task(self.wd.run()))  # feeds hal.wdt while all beat
        await self.sampler()
        self.fwd.flush = True  # no more readings come: send partial batches without linger
        # drain: everything committed is acknowledged, or give up after a timeout
        t = self.hal.ticks_ms()
        while (
            not self.fwd.idle() and self.hal.ticks_diff(self.hal.ticks_ms(), t) < _DRAIN_TIMEOUT_MS
        ):
            await asyncio.sleep_ms(20)
        self.store.close()
        try:
            await self.publish_status("stopped")
        except (OSError, MQTTError):
            pass
        await self.client.disconnect()
        for task in tasks:
            task.cancel()
        self.report("@final ", self.counters())
