"""The status that costs little (docs/HEALTH.md 1): a compact retained snapshot at birth, at a
stop and every status_ms; a change message (not retained) only when drops or errors moved, at
most one per status_change_ms; the full document on cmd/status. Decoded for every consumer by
codec.decode_status."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from edge import codec
from host_tools.agent.run import agent_config
from host_tools.backend.collect import Collector


def test_decode_status_expands_merges_and_passes_full_documents():
    snap = {
        "s": "online",
        "b": 3,
        "up": 42,
        "rc": "power_on",
        "hf": 41000,
        "sd": 12,
        "oa": 7,
        "rx": 1,
        "cv": 2,
        "ck": [3, 1000, 1780272000000],
        "n": [500, 480],
        "fw": 9,
    }
    d = codec.decode_status(snap)
    assert d["state"] == "online" and d["boot"] == 3 and d["uptime_ms"] == 42000
    assert d["oldest_unsent_age_ms"] == 7000 and d["store_depth"] == 12
    assert d["clock"] == {
        "synced": True,
        "boot": 3,
        "sync_ticks": 1000,
        "sync_wall_ms": 1780272000000,
    }
    assert d["sampled"] == 500 and d["acked"] == 480 and d["drops"] == {} and d["errors"] == {}
    change = codec.decode_status({"d": 1, "up": 60, "dr": {"quota": {"usage": 5}}}, d)
    assert change["drops"] == {"quota": {"usage": 5}} and change["uptime_ms"] == 60000
    assert change["clock"]["synced"] and change["store_depth"] == 12  # kept from the snapshot
    assert change["compact"] == "change" and d["compact"] == "snapshot"
    unsynced = codec.decode_status({"s": "online", "b": 1, "up": 1})
    assert unsynced["clock"] == {"synced": False} and unsynced["oldest_unsent_age_ms"] is None
    full = {"state": "online", "uptime_ms": 5, "inputs": {}}
    assert codec.decode_status(full, d) is full
    will = {"state": "offline"}
    assert codec.decode_status(will) is will


class _Tap:
    """Every message on the device's status and reply topics, with its size."""

    def __init__(self, broker, device):
        self.msgs: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tap-{device}")
        self.c.on_message = self._on
        self.c.connect(broker.host, broker.port)
        self.c.subscribe(f"edge/{device}/status", 0)
        self.c.subscribe(f"edge/{device}/reply/#", 0)
        self.c.loop_start()

    def _on(self, c, u, m):
        with self.lock:
            self.msgs.append((m.topic, bytes(m.payload)))

    def status(self) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.msgs if t.endswith("/status")]

    def replies(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p in self.msgs if "/reply/" in t]

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def _retained(broker, device) -> dict:
    """What a new subscriber gets on the status topic: the retained message."""
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"late-{device}-{time.time()}")
    c.on_message = lambda c, u, m: got.append(bytes(m.payload))
    c.connect(broker.host, broker.port)
    c.subscribe(f"edge/{device}/status", 0)
    c.loop_start()
    t = time.monotonic() + 5
    while not got and time.monotonic() < t:
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    assert got, "no retained status"
    return json.loads(got[0])


def test_compact_snapshots_and_change_messages(agents, broker):
    """Defaults (compact, a snapshot every 15 min): the birth snapshot, change messages while
    consent drops readings (usage and diagnostics are not granted), the stop snapshot; nothing
    periodic in between. The retained message is always a snapshot."""
    dev = "status-1"
    tap = _Tap(broker, dev)
    try:
        with Collector(broker.host, broker.port) as col:
            cfg = agent_config(
                "unix-sim",
                device_id=dev,
                mqtt={"port": broker.port},
                sim={"count": 600, "rate_hz": 120},  # a count, not seconds: exact under load
                status_change_ms=1000,
            )
            agent = agents(cfg)
            # a new subscriber mid-run gets the retained snapshot, never a change message
            assert col.wait_for(lambda c: any(b'"d": 1' in p for p in tap.status()), 15), (
                tap.status()
            )
            mid = _retained(broker, dev)
            agent.wait(60)
            assert col.wait_for(lambda c: c.status.get(dev, {}).get("state") == "stopped", 10)
            decoded = col.status[dev]
        raw = tap.status()
    finally:
        tap.stop()
    assert "d" not in mid and mid["s"] == "online"
    docs = [json.loads(p) for p in raw]
    assert docs[0]["s"] == "online" and "d" not in docs[0]  # birth
    assert docs[-1]["s"] == "stopped" and "d" not in docs[-1]  # stop
    changes = docs[1:-1]
    assert changes and all(d.get("d") == 1 for d in changes), docs  # no periodic snapshot
    assert 1 <= len(changes) <= 6, len(changes)  # at most one per second of a 5 s run
    assert all("consent" in d["dr"] for d in changes)  # what moved: the consent drops
    assert all(len(p) < 300 for p in raw), [len(p) for p in raw]
    # the collector keeps the expanded, merged document
    assert decoded["compact"] == "snapshot" and decoded["clock"]["synced"] is True
    assert decoded["drops"]["consent"]["usage"] > 0 and decoded["store_depth"] == 0
    assert decoded["sampled"] == 600 and decoded["acked"] == 200
    after = _retained(broker, dev)
    assert after["s"] == "stopped" and "d" not in after


def test_cmd_status_replies_with_the_full_document(agents, broker):
    dev = "status-2"
    tap = _Tap(broker, dev)
    try:
        cfg = agent_config(
            "unix-sim",
            device_id=dev,
            mqtt={"port": broker.port},
            sim={"seconds": 4, "rate_hz": 50},
            watchdog_ms=2000,
        )
        agent = agents(cfg)
        t = time.monotonic() + 15
        while not tap.status() and time.monotonic() < t:
            time.sleep(0.05)  # the birth: the device listens
        n_before = len(tap.status())
        tap.c.publish(f"edge/{dev}/cmd/status", b'{"id": 7}', qos=1)
        t = time.monotonic() + 10
        while not tap.replies() and time.monotonic() < t:
            time.sleep(0.05)
        time.sleep(1.5)  # the fresh snapshot follows within a second
        n_after = len(tap.status())
        agent.wait(60)
        reply = tap.replies()[0]
    finally:
        tap.stop()
    assert reply["ok"] is True and reply["id"] == 7
    full = reply["status"]
    for key in ("state", "uptime_ms", "inputs", "clock", "watchdog", "drops", "mqtt", "flash"):
        assert key in full, key
    assert full["watchdog"]["timeout_ms"] == 2000 and full["clock"]["synced"] is True
    assert n_after > n_before  # a snapshot on request
