# Composition root: builds the data path, routes every inbound MQTT event to the component
# that owns it, and creates every task.
# sources -> consent gate -> store -> forwarder -> MQTT; commands and health beside it.

import asyncio
import gc
import json
import sys

from micropython import const

from edge import clock, codec, config, meta, net, watchdog, wire
from edge.commands import Commands
from edge.consent import Consent, consent_key
from edge.forwarder import Forwarder, packet_bytes
from edge.health import Health, full_status_bytes
from edge.mqtt.link import Link, make_client
from edge.minimise import Minimiser
from edge.mqtt.client import MQTTError
from edge.store.backend import BackendError, open_store

_DRAIN_TIMEOUT_MS = const(60000)
_HOUSEKEEPING_MS = const(1000)
_REBOOT_DRAIN_MS = const(2000)  # before a reset: what is not acked yet is on flash anyway
_TIGHT_HEAP = const(65536)  # free bytes after start-up below which gc.threshold is set
# free heap an update needs before its code is imported: the code (82 KB on unix 64-bit,
# `edgectl bench update`; about half on a 32-bit port) and its buffers. Importing it on less
# would fail half-way, and the names it interned stay for good (docs/OTA.md 10)
_UPDATE_HEAP = const(98304) if sys.maxsize > 0xFFFFFFFF else const(49152)


def _all_done(sources):
    for s in sources:
        if not s.done():
            return False
    return True


def _unload_ota():
    from edge import ota

    # every module an update or a config command may have loaded, also half-way (a command
    # refused for want of memory must not leave its imports on the heap)
    ota.unload(
        "edge.ota.trial",
        "edge.ota.remote",
        "edge.ota.updater",
        "edge.ota.install",
        "edge.ota.slots",
        "edge.ota.boot",
        "edge.bundle",
        "edge.lms",
    )


def _no_input_stats():
    return {}


def check_sources(cfg):
    """A board must never send made-up readings because its inputs are missing: no inputs
    and no simulator asked for is a config error, raised before anything touches flash."""
    if not cfg.get("inputs") and not cfg["sim"].get("enabled"):
        raise config.ConfigError(
            "no data source: config key 'inputs' is empty and 'sim.enabled' is not true "
            "(the simulated appliance runs only when asked for)"
        )


def _station(cfg, hal, log):
    """The Wi-Fi station (edge/net.py) of a board with a radio (its HAL can associate) and
    credentials (config `wifi` or the provisioned secrets file); None otherwise: the network
    is the host's, or left as boot.py set it up."""
    if not hasattr(hal, "wifi_connect"):
        return None
    try:
        creds = net.credentials(cfg)
    except ValueError as e:
        raise config.ConfigError(str(e)) from None
    return None if creds is None else net.Station(hal, creds, log)


def _sources(cfg, hal):
    """The data sources and their counters for the status: the configured inputs, else the
    simulated appliance (`sim.enabled`)."""
    if cfg.get("inputs"):
        from edge import inputs

        sources = inputs.build(cfg, hal)
        return sources, lambda: inputs.health_stats(sources)
    from edge.sensors.simfridge import SimFridge

    return [SimFridge(cfg, hal)], _no_input_stats


class Agent:
    def __init__(self, cfg, hal, out=print):
        self.cfg = cfg
        self.hal = hal
        self.out = out
        self.stats_skipped = 0
        check_sources(cfg)
        self.categories = config.category_ids(cfg)
        self.chan_cat = {}
        self.urgent_ch = bytearray(256)  # channel id -> 1: its readings go at once
        for ch in cfg["channels"]:
            self.chan_cat[ch["id"]] = self.categories.index(ch["category"])
            if ch.get("urgent"):
                self.urgent_ch[ch["id"]] = 1
        dev = cfg["device_id"]
        root = hal.mount_store(cfg["store"]["path"])
        try:
            self.store = open_store(cfg, hal, root, self.categories)
        except BackendError as e:
            raise config.ConfigError(str(e))
        self.consent = Consent(root, self.categories, dev, consent_key(cfg))
        self.minimise = Minimiser(cfg, self.consent)
        # the client's packet buffers early, while the heap is one piece: large blocks first
        # (allocated after the small objects below, a code + 48 KiB heap ran out: measured)
        # (the forwarder builds its batches inside the packet buffer: forwarder.packet_bytes)
        c = make_client(
            cfg,
            max(
                512 + cfg["batch"]["max_readings"] * codec.ENTRY_LEN,
                packet_bytes(cfg, self.categories),
                full_status_bytes(cfg),  # a full status keeps every input's counters
            ),
        )
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
        self.station = _station(cfg, hal, self.log)
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
            self.station.status if self.station is not None else None,
        )
        c.will = (self.health.topic, b'{"state":"offline"}', True)
        self.cmds.register("status", self.health.on_command)  # the full document on request
        subs = [(codec.topic(cfg["mqtt"]["prefix"], dev, wire.T_CMD, "#"), 1)]
        if self.fwd.e2e:
            subs.append((self.fwd.ack_topic, 0))
        self.meta_topic = codec.topic(cfg["mqtt"]["prefix"], dev, wire.T_META)
        # channel units and decimals for the backend (edge/meta.py); built once
        self.meta = meta.payload(cfg, len(c.tx) - 80 - len(self.meta_topic))
        self.link = Link(c, cfg, subs, self._birth, self.log)
        # Every inbound event goes to its owner from here, and only from here.
        c.on_connect = self._on_connect
        c.on_puback = self._on_puback
        c.on_message = self._on_message
        c.on_skipped = self.cmds.on_skipped  # too large to read: only commands get answers
        self.restarts = {}  # task name -> times it died and was started again
        self.cmds.lifecycle = self._lifecycle
        self.ota_root = None  # set by edge/main.py when the boot selector started us
        self.ota = None  # boot state summary for the status (edge/ota/trial.py)
        self.reboot = None  # why a reset was asked for; main() then ends early
        self.updater = None  # the download of cmd/update while one runs (edge/ota/updater.py)

    def request_reboot(self, why):
        """End this run soon (what is committed stays on flash) and reset the board."""
        self.reboot = why
        self.sampling = False

    def _lifecycle(self, name, doc):
        # cmd/update, config, config/get, reboot: they act on the whole agent (its slots, config
        # and run), so they get it; imported on the first such command only (docs/OTA.md)
        if name == "update" and self.updater is None:
            gc.collect()
            if gc.mem_free() < _UPDATE_HEAP:
                raise ValueError(
                    "not enough free heap for an update: %d B free, %d B needed for its code and "
                    "buffers (a ROMFS or frozen agent keeps the code off the heap)"
                    % (gc.mem_free(), _UPDATE_HEAP)
                )
        try:
            from edge.ota import remote

            return remote.execute(self, name, doc)
        except MemoryError:
            # a tight heap: the command is refused, the agent goes on (docs/OTA.md 10)
            raise ValueError("out of memory for cmd/%s (%d B free)" % (name, gc.mem_free()))
        finally:
            if self.updater is None:  # nothing of it runs on: let its code go
                _unload_ota()
                gc.collect()

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
        up = self.updater
        if up is not None and up.owns(topic):
            up.on_chunk(topic, payload)  # a chunk of cmd/update's bundle (edge/ota/updater.py)
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
        if not self.consent.gate(
            cat
        ):  # before anything touches flash (docs/DESIGN.md "Requirements", consent)
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
        d = {
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
            "inbound": self.inbound(),
            "unknown_channel": self.unknown_channel,
            "tx_bytes": self.client.stats["tx_bytes"],
            "mqtt": self.mqtt_counters(),
        }
        if self.ota is not None:
            d["ota"] = self.ota  # slot, release, trial, last outcome (docs/OTA.md)
        return d

    def inbound(self):
        """Every refusal and wait on the inbound path, and task restarts: only what is not
        zero, so a quiet device's status stays small (docs/SECURITY.md 2, docs/HEALTH.md)."""
        d = self.cmds.status()
        c = self.client.stats
        for k, v in (
            ("skipped", c["rx_skipped"]),
            ("stalls", c["rx_stalls"]),
            ("read_errors", c["rx_errors"]),
        ):
            if v:
                d[k] = v
        if self.restarts:
            d["task_restarts"] = self.restarts
        return d

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
            "bad_acks": f["bad_acks"],
            "connect_failures": self.link.stats["connect_failures"],
            "auth_failures": self.link.stats["auth_failures"],
            "tls_failures": self.link.stats["tls_failures"],
            "last_error": self.link.last_error,
            "broker": self.link.broker,  # host:port of the session (docs/MQTT.md 10)
            "failovers": self.link.stats["failovers"],
        }

    def report(self, tag, doc):
        """One `TAG {json}` line for the host. With the default output the JSON is streamed to
        stdout, so no line-sized string is allocated on a tight heap."""
        if self.out is print:
            sys.stdout.write(tag)
            try:
                json.dump(doc, sys.stdout)
            finally:
                sys.stdout.write("\n")  # a line cut by MemoryError still ends
        else:
            self.out(tag + json.dumps(doc))

    def log(self, msg):
        self.out("@log " + msg)

    async def housekeeping(self, hb):
        """Task: stats line, cursor persistence, gc (the one place that collects)."""
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

    async def _supervised(self, name, start):
        """Run a long-lived task; if it dies, count it (status `task_restarts`), log it and
        start it again: no single failure leaves the agent without its link, forwarder or
        command task. Its heartbeat is made once, outside, so a restarted task beats the same
        one; a task that hangs instead stops beating and the watchdog resets the board."""
        while True:
            try:
                await start()
                return
            except Exception as e:  # noqa: BLE001 - the point is to outlive any of them
                self.restarts[name] = self.restarts.get(name, 0) + 1
                try:
                    self.log("task %s died (%s: %s); restarted" % (name, type(e).__name__, e))
                except MemoryError:
                    pass
                await asyncio.sleep_ms(100)

    def _offline(self):
        return not self.client.connected.is_set()

    def _wifi_down(self):
        return not self.station.up.is_set()

    def _forwarder_parked(self):
        # waiting for the network, or for a window slot while batches are in flight
        return self._offline() or bool(self.fwd.count)

    def _ota_boot(self):
        """Report the last trial, resume an interrupted download; the watch coroutine when
        this run is a trial (docs/OTA.md 4). Runs before any task allocates: the trial code is
        loaded and, when there is nothing to watch, dropped while the heap is still empty."""
        gc.collect()
        from edge.ota import trial

        watch = trial.start(self)
        if watch is None and self.updater is None:
            _unload_ota()
        return watch

    async def main(self):
        # a steady boot got its summary from the selector and needs no trial code
        watch = self._ota_boot() if self.ota_root is not None and self.ota is None else None
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
        link_hb = wd.add("link", offline)
        fwd_hb = wd.add("forwarder", self._forwarder_parked)
        cmd_hb = wd.add("commands", offline)
        health_hb = wd.add("health")
        clock_hb = wd.add("clock")
        house_hb = wd.add("housekeeping")
        sup = self._supervised
        station = self.station
        net_up = station.up if station else None
        tasks = [
            # the link waits (no network, connect timeout, backoff) only while offline: parked
            asyncio.create_task(sup("link", lambda: self.link.run(link_hb, net_up))),
            # store -> batches -> PUBLISH
            asyncio.create_task(sup("forwarder", lambda: self.fwd.run(fwd_hb))),
            # commands, replies and consent receipts
            asyncio.create_task(sup("commands", lambda: self.cmds.run(cmd_hb))),
            asyncio.create_task(sup("housekeeping", lambda: self.housekeeping(house_hb))),
            asyncio.create_task(sup("health", lambda: self.health.run(health_hb))),  # status
            asyncio.create_task(sup("clock", lambda: self.clock.run(self.log, clock_hb))),  # NTP
        ]
        if station is not None:
            # Wi-Fi: associate, watch, re-associate with backoff; only polls the radio and
            # sleeps, so the sampler never waits on it (parked while not associated)
            tasks.append(asyncio.create_task(station.run(wd.add("wifi", self._wifi_down))))
        if self.wd.timeout_ms:
            tasks.append(asyncio.create_task(self.wd.run()))  # feeds hal.wdt while all beat
        if watch is not None:
            tasks.append(asyncio.create_task(watch))
        await self.sampler()
        self.fwd.flush = True  # no more readings come: partial batches go now
        self.fwd.poke()
        # drain: everything committed is acknowledged, or give up after a timeout
        t = self.hal.ticks_ms()
        drain = _REBOOT_DRAIN_MS if self.reboot else _DRAIN_TIMEOUT_MS
        while not self.fwd.idle() and self.hal.ticks_diff(self.hal.ticks_ms(), t) < drain:
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
