# Composition root: builds the data path, routes every inbound MQTT event to the component
# that owns it, and creates every task.
# sources -> consent gate -> store -> forwarder -> MQTT; commands and health beside it.

import asyncio
import gc
import json
import sys

from micropython import const

from edge import clock, codec, config, meta, watchdog
from edge.commands import Commands
from edge.consent import Consent, consent_key
from edge.forwarder import Forwarder
from edge.health import Health
from edge.mqtt.link import Link, make_client
from edge.minimise import Minimiser
from edge.mqtt.client import MQTTError
from edge.store.store import Store

_DRAIN_TIMEOUT_MS = const(60000)
_HOUSEKEEPING_MS = const(1000)
_TIGHT_HEAP = const(65536)  # free bytes after start-up below which gc.threshold is set


def _all_done(sources):
    for s in sources:
        if not s.done():
            return False
    return True


def _no_input_stats():
    return {}


def _check_sources(cfg):
    """A board must never send made-up readings because its inputs are missing: no inputs
    and no simulator asked for is a config error, raised before anything touches flash."""
    if not cfg.get("inputs") and not cfg["sim"].get("enabled"):
        raise config.ConfigError(
            "no data source: config key 'inputs' is empty and 'sim.enabled' is not true "
            "(the simulated appliance runs only when asked for)"
        )


def _sources(cfg, hal):
    """The data sources and their counters for the status: the configured inputs, else the
    simulated appliance (`sim.enabled`)."""
    if cfg.get("inputs"):
        from edge import inputs

        sources = inputs.build(cfg, hal)
        return sources, lambda: inputs.stats(sources)
    from edge.sensors.simfridge import SimFridge

    return [SimFridge(cfg, hal)], _no_input_stats


class Agent:
    def __init__(self, cfg, hal, out=print):
        self.cfg = cfg
        self.hal = hal
        self.out = out
        self.stats_skipped = 0
        _check_sources(cfg)
        self.categories = config.category_ids(cfg)
        self.chan_cat = {}
        self.urgent_ch = bytearray(256)  # channel id -> 1: its readings go at once
        for ch in cfg["channels"]:
            self.chan_cat[ch["id"]] = self.categories.index(ch["category"])
            if ch.get("urgent"):
                self.urgent_ch[ch["id"]] = 1
        dev = cfg["device_id"]
        root = hal.mount_store(cfg["store"]["path"])
        self.store = Store(root, cfg, self.categories, hal)
        self.consent = Consent(root, self.categories, dev, consent_key(cfg))
        self.minimise = Minimiser(cfg, self.consent)
        # the client's packet buffers early, while the heap is one piece: large blocks first
        # (allocated after the small objects below, a code + 48 KiB heap ran out: measured)
        c = make_client(cfg, 512 + cfg["batch"]["max_readings"] * codec.ENTRY_LEN)
        self.client = c
        try:
            # clock: forward-time conversion of unsynced stamps (docs/FORMAT.md 4)
            self.clock = clock.from_config(cfg, hal)
            self.wd = watchdog.Watchdog(hal, watchdog.timeout_ms(cfg), self.log)
        except ValueError as e:
            raise config.ConfigError(str(e))
        self.fwd = Forwarder(self.store, c, self.consent, cfg, self.categories, self.clock, hal)
        self.t0 = hal.ticks_ms()
        self.cmds = Commands(cfg, root, self.consent, self.store, c, hal, self.t0, self.log)
        self.sources, input_stats = _sources(cfg, hal)
        self.sampled = 0
        self.unknown_channel = 0
        self.sampling = True
        self.health = Health(
            cfg,
            hal,
            c,
            self.store,
            self.consent,
            self.t0,
            self.counters,
            input_stats,
            self._clock_status,
            self.wd.status,
            self.log,
        )
        c.will = (self.health.topic, b'{"state":"offline"}', True)
        self.cmds.register("status", self.health.on_command)  # the full document on request
        subs = [(codec.topic(cfg["mqtt"]["prefix"], dev, "cmd", "#"), 1)]
        if self.fwd.e2e:
            subs.append((self.fwd.ack_topic, 0))
        self.meta_topic = codec.topic(cfg["mqtt"]["prefix"], dev, "meta")
        # channel units and decimals for the backend (edge/meta.py); built once
        self.meta = meta.payload(cfg, len(c.tx) - 80 - len(self.meta_topic))
        self.link = Link(c, cfg, subs, self._birth, self.log)
        # Every inbound event goes to its owner from here, and only from here.
        c.on_connect = self._on_connect
        c.on_puback = self._on_puback
        c.on_message = self._on_message

    # --- inbound events (the client's read loop and CONNACK) ---------------------------------
    def _on_connect(self, session_present):
        self.fwd.on_connect(session_present)  # the batches in flight: re-send or re-read
        self.cmds.on_connect()  # replies and receipts without a PUBACK: send again

    def _on_puback(self, pid):
        # a few replies and receipts at most wait for theirs; every other PUBACK is a batch's
        if not self.cmds.on_puback(pid):
            self.fwd.on_puback(pid)

    def _on_message(self, topic, payload):
        # topic and payload are views into the receive buffer, valid during the call; the
        # owner's answer (False: no room) is the client's backpressure (docs/MQTT.md 2)
        if topic == self.fwd.ack_topic:
            self.fwd.on_ack(payload)  # end-to-end acks (docs/MQTT.md 4)
            return True
        return self.cmds.on_message(topic, payload)  # cmd/# is the only other subscription

    async def _birth(self):
        """The birth messages of every new session: the retained status, then the retained
        channel metadata (QoS 0 like the status; docs/MQTT.md 2)."""
        await self.health.publish("online")
        if self.meta is not None:
            await self.client.publish(self.meta_topic, self.meta, 0, True)

    def _clock_status(self):
        d = self.clock.status(self.store.boot)
        d["converted"] = self.fwd.stamp.converted  # unsynced stamps sent as wall ms
        return d

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
        if rules:  # data minimisation before storage (docs/CONSENT.md 7)
            ts, value = self.minimise.apply(rules, channel, ts, value)
        self.store.append(cat, channel, ts, flags, value)
        if self.urgent_ch[channel]:
            self.fwd.urgent(cat)  # an alarm: sent now, not at the budget (docs/MQTT.md 9)

    async def sampler(self):
        """Task: poll every source, commit by policy, stop when the run's limits are met."""
        sim = self.cfg["sim"]
        limit_ms = sim["seconds"] * 1000
        nap_ms = self.cfg["sample_ms"]
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
            await asyncio.sleep_ms(0 if n else nap_ms)
        hb.stop()
        self.store.commit()

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
            "reconnects": self.link.stats["sessions"],
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

    def report(self, tag, doc):
        """One `TAG {json}` line for the host. With the default output the JSON is streamed to
        stdout, so no line-sized string is allocated on a tight heap."""
        if self.out is print:
            sys.stdout.write(tag)
            json.dump(doc, sys.stdout)
            sys.stdout.write("\n")
        else:
            self.out(tag + json.dumps(doc))

    def log(self, msg):
        self.out("@log " + msg)

    async def housekeeping(self):
        """Task: stats line, cursor persistence, gc (the one place that collects)."""
        hb = self.wd.add("housekeeping")
        while True:
            hb.beat()
            await asyncio.sleep_ms(_HOUSEKEEPING_MS)
            self.store.save_cursor()
            gc.collect()
            try:
                self.report("@stats ", self.counters())
            except MemoryError:
                # the stats line is for the host only: skip it rather than stop the agent
                self.stats_skipped += 1

    def _offline(self):
        return not self.client.connected.is_set()

    def _forwarder_parked(self):
        # waiting for the network, or for a window slot while batches are in flight
        return self._offline() or bool(self.fwd.count)

    async def main(self):
        # On a tight heap: collect once a quarter of the free heap was allocated, not only
        # when it is exhausted, so short-lived objects reuse the same holes and long-lived
        # ones are not scattered over all free memory (fragmentation made a status or stats
        # line fail with a third of the heap free). On a roomy heap that
        # never matters and the extra collections halved the top ingest rate (measured).
        gc.collect()
        free = gc.mem_free()
        if free < _TIGHT_HEAP:
            gc.threshold(free // 4)
        wd = self.wd
        offline = self._offline
        tasks = [
            # the link waits (connect timeout, backoff) only while offline: parked then
            asyncio.create_task(self.link.run(wd.add("link", offline))),
            # store -> batches -> PUBLISH
            asyncio.create_task(self.fwd.run(wd.add("forwarder", self._forwarder_parked))),
            # commands, replies and consent receipts
            asyncio.create_task(self.cmds.run(wd.add("commands", offline))),
            asyncio.create_task(self.housekeeping()),
            asyncio.create_task(self.health.run(wd.add("health"))),  # retained status
            asyncio.create_task(self.clock.run(self.log, wd.add("clock"))),  # NTP
        ]
        if self.wd.timeout_ms:
            tasks.append(asyncio.create_task(self.wd.run()))  # feeds hal.wdt while all beat
        await self.sampler()
        self.fwd.flush = True  # no more readings come: partial batches go now
        self.fwd.poke()
        # drain: everything committed is acknowledged, or give up after a timeout
        t = self.hal.ticks_ms()
        while (
            not self.fwd.idle() and self.hal.ticks_diff(self.hal.ticks_ms(), t) < _DRAIN_TIMEOUT_MS
        ):
            await asyncio.sleep_ms(20)
        self.store.close()
        try:
            await self.health.publish("stopped")
        except (OSError, MQTTError):
            pass
        await self.client.disconnect()
        for task in tasks:
            task.cancel()
        self.report("@final ", self.counters())
