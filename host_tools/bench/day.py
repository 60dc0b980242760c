"""`edgectl bench day [--json] [--profile NAME] [--hours H]`: the cost of a device-day.

For each appliance profile the real agent runs under unix MicroPython with its real bus drivers
reading a simulated appliance (host_tools/bench/mp/day_hal.py), on a virtual clock
(host_tools/bench/mp/vclock/time.py: a day in about a minute), against mosquitto through the
fault proxy, which counts every byte both ways and splits the streams into MQTT packets. The
baseline in the same run sends the same readings the way simple firmware does: one JSON
PUBLISH per reading when it is sampled (host_tools/bench/mp/day_baseline.py). Figures are per
device-day (the run's virtual length scaled to 24 h); docs/MQTT.md section 9 explains them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.backend.proxy import FaultProxy
from host_tools.bench.store import NOR_CYCLES
from host_tools.bench.day_profiles import (
    BEFORE,
    CONSENT_ALL,
    GRANTED,
    KEEPALIVE_S,
    PROFILES,
    profile,
)
from host_tools.errors import ToolError
from host_tools.paths import edge_root, micropython_path, mp_env

MP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp")
DAY_MS = 86_400_000
WALL0_MS = 1_780_272_000_000  # 2026-06-01T00:00:00Z: the profiles' schedules start at midnight
BURST_GAP_MS = 2000  # transmissions closer than this are one radio wake-up
# TLS is estimated, not run: each MQTT packet is one write, so one TLS record, in both
# directions (the agent writes a packet with one write(); mosquitto too). TLS 1.2 with
# AES-128-GCM adds 29 bytes a record (5 header + 8 explicit nonce + 16 tag; TLS 1.3: 22). A
# connection adds its handshake, about 3,000 bytes with an ECDSA P-256 chain and no resumption.
TLS_RECORD_BYTES = 29
TLS_HANDSHAKE_BYTES = 3000
FLEET_DEVICES = 10_000_000  # fleet_*: messages per second at the brokers for this many devices


def _classify(topic: str) -> str:
    """The kind of a PUBLISH by its topic `{prefix}/{device}/...` (docs/MQTT.md 1)."""
    parts = topic.split("/")
    rest = parts[2:]
    if rest[:1] == ["t"]:
        return "telemetry"
    if rest[:1] in (["status"], ["meta"], ["ack"]):
        return rest[0]
    if rest[:2] == ["consent", "receipt"]:
        return "receipt"
    if rest[:1] in (["reply"], ["cmd"]):
        return rest[0]
    return "other"


_TYPES = {
    1: "connect",
    2: "connack",
    4: "puback",
    8: "subscribe",
    9: "suback",
    12: "pingreq",
    13: "pingresp",
    14: "disconnect",
}


class MqttCounter:
    """Splits each proxied connection's two byte streams into MQTT 3.1.1 packets (fixed header:
    type nibble, Remaining Length, 2.2) and counts packets and bytes by kind; a PUBLISH is
    named by its topic. Called from the proxy's thread."""

    def __init__(self) -> None:
        self.bufs: dict[tuple[int, str], bytearray] = {}
        self.packets: Counter = Counter()
        self.bytes: Counter = Counter()
        self.up = 0
        self.down = 0

    def feed(self, conn: int, key: str, data: bytes) -> None:
        if key == "bytes_up":
            self.up += len(data)
        else:
            self.down += len(data)
        buf = self.bufs.setdefault((conn, key), bytearray())
        buf += data
        while len(buf) >= 2:
            n = 0
            shift = 0
            p = 1
            while True:
                if p >= len(buf):
                    return
                b = buf[p]
                n |= (b & 0x7F) << shift
                shift += 7
                p += 1
                if not b & 0x80:
                    break
            if len(buf) < p + n:
                return
            typ = buf[0] >> 4
            if typ == 3:
                tl = buf[p] << 8 | buf[p + 1]
                kind = _classify(buf[p + 2 : p + 2 + tl].decode(errors="replace"))
            else:
                kind = _TYPES.get(typ, "other")
            self.packets[kind] += 1
            self.bytes[kind] += p + n
            del buf[: p + n]

    def total_packets(self) -> int:
        return sum(self.packets.values())


def _run_mp(script: str, spec_path: str, timeout: float) -> dict:
    env = mp_env()
    env["MICROPYPATH"] = ":".join([os.path.join(MP_DIR, "vclock"), ".frozen", edge_root(), MP_DIR])
    try:
        p = subprocess.run(
            [micropython_path(), "-X", "heapsize=512K", os.path.join(MP_DIR, script), spec_path],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=os.path.dirname(spec_path),
        )
    except subprocess.TimeoutExpired as e:
        raise ToolError(f"bench day: {script} did not finish within {timeout:.0f} s") from e
    for line in p.stdout.splitlines():
        if line.startswith("@day "):
            return json.loads(line[5:])
    tail = "\n".join((p.stdout + p.stderr).splitlines()[-12:])
    raise ToolError(f"bench day: {script} failed (exit {p.returncode}): {tail}")


def _scale(x: float, virtual_ms: int) -> float:
    return x * DAY_MS / max(virtual_ms, 1)


def _wire(counter: MqttCounter, virtual_ms: int, readings: int) -> dict:
    """Per device-day: measured MQTT bytes and packets, the TLS estimate, the breakdown."""
    packets = counter.total_packets()
    mqtt_bytes = counter.up + counter.down
    connects = counter.packets["connect"]
    tls = packets * TLS_RECORD_BYTES + connects * TLS_HANDSHAKE_BYTES
    day_readings = _scale(readings, virtual_ms)
    return {
        "readings_per_day": round(day_readings),
        "mqtt_bytes_per_day": round(_scale(mqtt_bytes, virtual_ms)),
        "tls_overhead_bytes_per_day": round(_scale(tls, virtual_ms)),
        "wire_bytes_per_day": round(_scale(mqtt_bytes + tls, virtual_ms)),
        "bytes_per_reading_all_in": round((mqtt_bytes + tls) / max(readings, 1), 2),
        "bytes_per_reading_mqtt": round(mqtt_bytes / max(readings, 1), 2),
        "messages_per_day": round(_scale(packets, virtual_ms)),
        # what an operator's status costs, and what a fleet sends to the brokers
        "status_share_of_bytes": round(counter.bytes["status"] / max(mqtt_bytes, 1), 3),
        "fleet_messages_per_s": round(_scale(packets, virtual_ms) * FLEET_DEVICES / 86400),
        "fleet_status_messages_per_s": round(
            _scale(counter.packets["status"], virtual_ms) * FLEET_DEVICES / 86400
        ),
        "bytes_per_day_by_kind": {
            k: round(_scale(v, virtual_ms)) for k, v in sorted(counter.bytes.items())
        },
        "messages_per_day_by_kind": {
            k: round(_scale(v, virtual_ms)) for k, v in sorted(counter.packets.items())
        },
    }


def _run_agent(name: str, cfg: dict, broker, work: str, timeout: float) -> dict:
    """The real agent with config cfg for its sim.seconds, through a counting proxy, with a
    collector beside it: the device's figures, the wire counter and the readings received."""
    device = cfg["device_id"]
    counter = MqttCounter()
    store = os.path.join(work, "store")
    shutil.rmtree(store, ignore_errors=True)
    for ext in (".log", ".img"):
        if os.path.exists(store + ext):
            os.remove(store + ext)
    col = Collector(broker.host, broker.port, keep_readings=True).start()
    try:
        with FaultProxy(broker.port, tap=counter.feed).start() as px:
            cfg = {**cfg, "mqtt": {**cfg["mqtt"], "host": "127.0.0.1", "port": px.port}}
            cfg["store"] = {"path": store}
            cfg["bench"] = {
                "wall0_ms": WALL0_MS,
                "seed": 1,
                "burst_gap_ms": BURST_GAP_MS,
                "consent": CONSENT_ALL,
            }
            spec = os.path.join(work, "agent.json")
            with open(spec, "w") as f:
                json.dump(cfg, f)
            t0 = time.monotonic()
            dev = _run_mp("day_agent.py", spec, timeout)
            real_s = time.monotonic() - t0
            if dev["task_restarts"]:
                # a task that died measured a broken agent, not a device-day
                raise ToolError(
                    f"bench day: {name}: the agent's tasks died {dev['task_restarts']} times, "
                    f"first: {'; '.join(dev['task_deaths'])}"
                )
            if dev["latency_unknown"]:
                raise ToolError(
                    f"bench day: {name}: {dev['latency_unknown']} readings of no known category"
                )
            acked = dev["forwarder"]["acked_readings"]
            if not col.wait_for(lambda c: c.stats()["unique"] >= acked, 30):
                raise ToolError(f"collector got {col.stats()['unique']} of {acked} readings")
            time.sleep(0.3)  # the proxy's last PUBACKs and DISCONNECT
    finally:
        col.stop()
    readings = sorted(
        (ts, seq, cat, ch, val) for d, seq, ts, cat, ch, val in col.readings if d == device
    )
    return {"dev": dev, "counter": counter, "readings": readings, "real_s": real_s}


def _radio(dev: dict, virtual_ms: int) -> dict:
    r = dev["radio"]
    return {
        "radio_wakeups_per_day": round(_scale(r["send_bursts"] + r["connects"], virtual_ms)),
        "connections_per_day": round(_scale(r["connects"], virtual_ms)),
        "radio_on_s_per_day": round(_scale(r["radio_on_ms"], virtual_ms) / 1000),
    }


def _latency(cfg: dict, dev: dict) -> tuple[dict, bool]:
    """Per category latency with its budget; whether every p95 is within its budget. A p95
    is the upper end of its 100 ms histogram bucket (day_probe.py)."""
    lat = dev["latency"]
    default = cfg["batch"]["latency_ms"]
    for cat, figs in lat.items():
        figs["budget_ms"] = (cfg.get("categories", {}).get(cat) or {}).get("latency_ms", default)
    return lat, all(f["p95_ms"] <= f["budget_ms"] for f in lat.values())


def _flash(dev: dict, virtual_ms: int) -> dict:
    """The raw log's erases and programs per device-day on its emulated partition, measured,
    and the flash life they give: blocks x NOR_CYCLES erases (wear levelled, docs/FORMAT.md
    8.2) at that rate."""
    f = dev["flash"]
    erases = _scale(f["erases"], virtual_ms)
    return {
        "flash_commits_per_day": round(_scale(f["commits"], virtual_ms)),
        "flash_programs_per_day": round(_scale(f["progs"], virtual_ms)),
        "flash_erases_per_day": round(erases),
        "flash_life_years": round(f["blocks"] * NOR_CYCLES / erases / 365, 1) if erases else None,
    }


def _ratios(ref: dict, ours: dict, suffix: str) -> dict:
    return {
        f"ratio_bytes{suffix}": round(
            ref["wire_bytes_per_day"] / max(ours["wire_bytes_per_day"], 1), 1
        ),
        f"ratio_messages{suffix}": round(
            ref["messages_per_day"] / max(ours["messages_per_day"], 1), 1
        ),
    }


def run_profile(
    name: str, hours: float, broker, timeout: float = 1800, before: bool = True
) -> dict:
    """One profile, three runs on the same virtual clock and appliance: the agent as
    configured, the agent with its earlier settings (`before`, day_profiles.BEFORE; skipped
    when before is False) and the one-JSON-publish-per-reading baseline, each through its own
    counting proxy."""
    if name not in PROFILES:
        raise ToolError(f"unknown profile {name!r}; choose from: {', '.join(PROFILES)}")
    seconds = max(int(hours * 3600), 60)
    virtual_ms = seconds * 1000
    work = tempfile.mkdtemp(prefix=f"edge-day-{name}-")
    try:
        cfg = profile(name, seconds)
        run = _run_agent(name, cfg, broker, work, timeout)
        dev, readings = run["dev"], run["readings"]
        base = _baseline(cfg["device_id"], readings, work, timeout, broker)
        ours = _wire(run["counter"], virtual_ms, len(readings))
        theirs = _wire(base["counter"], virtual_ms, len(readings))
        lat, budget_ok = _latency(cfg, dev)
        out = {
            "profile": name,
            "virtual_hours": round(seconds / 3600, 2),
            "real_seconds": round(run["real_s"], 1),
            "readings": len(readings),
            "readings_stored": dev["appended"],
            "readings_per_s": round(len(readings) / seconds, 3),
            **ours,
            **_radio(dev, virtual_ms),
            **_flash(dev, virtual_ms),
            "latency_ms": lat,
            "within_budget": budget_ok,
            "format1_fallbacks": dev["fallbacks"],
            "baseline": {
                **theirs,
                **_radio(base["dev"], virtual_ms),
                "latency_ms": base["dev"]["latency"],
            },
            **_ratios(theirs, ours, ""),
        }
        if before:
            old_cfg = profile(name, seconds, before=True)
            old = _run_agent(name, old_cfg, broker, work, timeout)
            old_wire = _wire(old["counter"], virtual_ms, len(old["readings"]))
            old_lat, _ = _latency(old_cfg, old["dev"])
            out["before"] = {
                "settings": BEFORE,
                "readings": len(old["readings"]),
                **old_wire,
                **_radio(old["dev"], virtual_ms),
                **_flash(old["dev"], virtual_ms),
                "latency_ms": old_lat,
            }
            out.update(_ratios(old_wire, ours, "_vs_before"))
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _baseline(device: str, readings: list, work: str, timeout: float, broker) -> dict:
    path = os.path.join(work, "readings.txt")
    with open(path, "w") as f:
        for ts, seq, cat, ch, val in readings:
            f.write(f"{ts} {seq} {cat} {ch} {val}\n")
    counter = MqttCounter()
    with FaultProxy(broker.port, tap=counter.feed).start() as px:
        spec = os.path.join(work, "baseline.json")
        with open(spec, "w") as f:
            json.dump(
                {
                    "host": "127.0.0.1",
                    "port": px.port,
                    "device": device,
                    "prefix": "edge",
                    "keepalive": KEEPALIVE_S,
                    "wall0_ms": WALL0_MS,
                    "burst_gap_ms": BURST_GAP_MS,
                    "categories": GRANTED,
                    "readings": path,
                },
                f,
            )
        dev = _run_mp("day_baseline.py", spec, timeout)
        if dev["latency_unknown"]:
            raise ToolError(f"bench day: {dev['latency_unknown']} readings of no known category")
        time.sleep(0.3)
    return {"dev": dev, "counter": counter}


def bench_day(args=None) -> dict:
    """Every profile (or --profile NAME) for --hours of virtual time (default 24), each with
    the agent's earlier settings (day_profiles.BEFORE) in the same run unless --no-before."""
    hours = float(getattr(args, "hours", None) or os.environ.get("EDGE_DAY_HOURS") or 24)
    names = [args.profile] if getattr(args, "profile", None) else list(PROFILES)
    before = not getattr(args, "no_before", False)
    out: dict = {"profiles": {}}
    with broker_mod.start(prefer="mosquitto") as b:
        # the profiles run side by side: each has its own proxy, collector and processes
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            runs = {name: pool.submit(run_profile, name, hours, b, 1800, before) for name in names}
            for name in names:
                out["profiles"][name] = runs[name].result()
    out["tls_estimate"] = (
        f"{TLS_RECORD_BYTES} B per MQTT packet (TLS 1.2 AES-128-GCM record), "
        f"{TLS_HANDSHAKE_BYTES} B per connection"
    )
    out["burst_gap_ms"] = BURST_GAP_MS
    out["fleet_devices"] = FLEET_DEVICES
    return out
