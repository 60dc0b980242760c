"""`edgectl bench day [--json] [--profile NAME] [--hours H]`: the cost of a device-day.

For each appliance profile the real agent runs under unix MicroPython with its real bus drivers
reading a simulated appliance (host_tools/bench/mp/day_hal.py), on a virtual clock
(host_tools/bench/mp/vclock/time.py: a day in about a minute), against mosquitto through the
fault proxy, which counts every byte both ways and splits the streams into MQTT packets. The
baseline in the same run sends the same readings the way simple firmware does: one JSON
PUBLISH per reading when it is sampled (host_tools/bench/mp/day_baseline.py). Figures are per
device-day (the run's virtual length scaled to 24 h); docs/MQTT.md section 7 explains them.
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
KEEPALIVE_S = 120
LATENCY_MS = 30000  # every category's budget; urgent channels (alarms) go at once

_CONSENT_ALL = {
    "format": 1,
    "version": 1,
    "grants": {
        "essential": True,
        "diagnostics": True,
        "usage": True,
        "location": False,
        "marketing": False,
    },
    "source": "bench",
    "salt": "00" * 16,
}

# What every profile deploys: the settings a product owner paying for cellular data would
# choose (format 2 batches, a long keepalive); each profile adds its appliance.
COMMON: dict = {
    "board": "unix-sim",
    "watchdog_ms": 0,  # the unix HAL's watchdog runs on real time; the day runs on virtual time
    "mqtt": {"keepalive": KEEPALIVE_S},
    "batch": {"format": 2, "latency_ms": LATENCY_MS},
    "sample_ms": 100,  # the UART driver buffers the appliance's bytes in between
}

PROFILES: dict[str, dict] = {
    # a fridge controller printing `kv` lines: temperatures and power every second, counters
    # every 10 s; deadbands make it 6 channels at 0.1-1 Hz and a door alarm
    "fridge": {
        "device_id": "fridge-0001",
        "board_overrides": {"uarts": {"appliance": {"path": "sim:fridge"}}},
        "channels": [
            {
                "id": 1,
                "name": "cabinet_temp",
                "unit": "°C",
                "decimals": 2,
                "category": "essential",
                "deadband": 2,
                "max_silent_ms": 900000,
            },
            {
                "id": 2,
                "name": "freezer_temp",
                "unit": "°C",
                "decimals": 2,
                "category": "essential",
                "deadband": 2,
                "max_silent_ms": 900000,
            },
            {
                "id": 3,
                "name": "compressor_power",
                "unit": "W",
                "category": "diagnostics",
                "deadband": 1,
            },
            {"id": 4, "name": "defrost_cycles", "category": "diagnostics", "deadband": 0},
            {"id": 5, "name": "door_opens", "category": "usage", "deadband": 0},
            {"id": 6, "name": "ice_maker_uses", "category": "usage", "deadband": 0},
            {
                "id": 7,
                "name": "door_alarm",
                "category": "essential",
                "deadband": 0,
                "urgent": True,
            },
        ],
        "inputs": [
            {
                "type": "line",
                "uart": "appliance",
                "keys": {"CT": 1, "FT": 2, "CP": 3, "DF": 4, "DO": 5, "IM": 6, "AL": 7},
            }
        ],
    },
    # a heat pump's controller over Modbus RTU, polled every second (8 holding registers)
    "heatpump": {
        "device_id": "heatpump-0001",
        "board_overrides": {"uarts": {"meter": {"path": "sim:heatpump"}}},
        "channels": [
            {
                "id": 1,
                "name": "flow_temp",
                "unit": "°C",
                "decimals": 1,
                "category": "essential",
                "deadband": 2,
            },
            {
                "id": 2,
                "name": "return_temp",
                "unit": "°C",
                "decimals": 1,
                "category": "essential",
                "deadband": 2,
            },
            {
                "id": 3,
                "name": "outdoor_temp",
                "unit": "°C",
                "decimals": 1,
                "category": "diagnostics",
                "deadband": 2,
            },
            {
                "id": 4,
                "name": "tank_temp",
                "unit": "°C",
                "decimals": 1,
                "category": "diagnostics",
                "deadband": 2,
            },
            {
                "id": 5,
                "name": "compressor_hz",
                "unit": "Hz",
                "category": "diagnostics",
                "deadband": 0,
            },
            {"id": 6, "name": "power", "unit": "W", "category": "usage", "deadband": 0},
            {"id": 7, "name": "mode", "category": "essential", "deadband": 0},
        ],
        "inputs": [
            {
                "type": "modbus",
                "uart": "meter",
                "slave": 1,
                "interval_ms": 1000,
                "reads": [
                    {
                        "fn": 3,
                        "addr": 0,
                        "count": 7,
                        "map": {
                            "0": {"ch": 1, "type": "i16"},
                            "1": {"ch": 2, "type": "i16"},
                            "2": {"ch": 3, "type": "i16"},
                            "3": {"ch": 4, "type": "i16"},
                            "4": 5,
                            "5": 6,
                            "6": 7,
                        },
                    }
                ],
            }
        ],
    },
    # a washing machine's console: two 90-minute programmes a day, idle in between
    "washer": {
        "device_id": "washer-0001",
        "board_overrides": {"uarts": {"appliance": {"path": "sim:washer"}}},
        "channels": [
            {"id": 1, "name": "phase", "category": "essential", "deadband": 0},
            {
                "id": 2,
                "name": "drum_rpm",
                "unit": "rpm",
                "category": "diagnostics",
                "deadband": 20,
            },
            {
                "id": 3,
                "name": "water_temp",
                "unit": "°C",
                "decimals": 1,
                "category": "diagnostics",
                "deadband": 5,
            },
            {"id": 4, "name": "power", "unit": "W", "category": "usage", "deadband": 25},
            {"id": 5, "name": "minutes_left", "unit": "min", "category": "usage", "deadband": 0},
        ],
        "inputs": [
            {
                "type": "line",
                "uart": "appliance",
                "keys": {"PH": 1, "RPM": 2, "WT": {"ch": 3}, "P": 4, "LEFT": 5},
            }
        ],
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


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
        "bytes_per_day_by_kind": {
            k: round(_scale(v, virtual_ms)) for k, v in sorted(counter.bytes.items())
        },
        "messages_per_day_by_kind": {
            k: round(_scale(v, virtual_ms)) for k, v in sorted(counter.packets.items())
        },
    }


def run_profile(name: str, hours: float, broker, timeout: float = 1800) -> dict:
    """One profile: the agent's day and the baseline's, both through a counting proxy."""
    if name not in PROFILES:
        raise ToolError(f"unknown profile {name!r}; choose from: {', '.join(PROFILES)}")
    seconds = max(int(hours * 3600), 60)
    work = tempfile.mkdtemp(prefix=f"edge-day-{name}-")
    try:
        cfg = _merge(_merge(COMMON, PROFILES[name]), {"sim": {"seconds": seconds}})
        device = cfg["device_id"]
        counter = MqttCounter()
        col = Collector(broker.host, broker.port, keep_readings=True).start()
        try:
            with FaultProxy(broker.port, tap=counter.feed).start() as px:
                cfg = _merge(cfg, {"mqtt": {"host": "127.0.0.1", "port": px.port}})
                cfg["store"] = {"path": os.path.join(work, "store")}
                cfg["bench"] = {
                    "wall0_ms": WALL0_MS,
                    "seed": 1,
                    "burst_gap_ms": BURST_GAP_MS,
                    "consent": _CONSENT_ALL,
                }
                spec = os.path.join(work, "agent.json")
                with open(spec, "w") as f:
                    json.dump(cfg, f)
                t0 = time.monotonic()
                dev = _run_mp("day_agent.py", spec, timeout)
                real_s = time.monotonic() - t0
                acked = dev["forwarder"]["acked_readings"]
                if not col.wait_for(lambda c: c.stats()["unique"] >= acked, 30):
                    raise ToolError(f"collector got {col.stats()['unique']} of {acked} readings")
                time.sleep(0.3)  # the proxy's last PUBACKs and DISCONNECT
        finally:
            col.stop()
        readings = sorted(
            (ts, seq, cat, ch, val) for d, seq, ts, cat, ch, val in col.readings if d == device
        )
        base = _baseline(device, readings, work, timeout, broker)
        virtual_ms = seconds * 1000
        ours = _wire(counter, virtual_ms, len(readings))
        theirs = _wire(base["counter"], virtual_ms, len(readings))
        lat = dev["latency"]
        default = cfg["batch"]["latency_ms"]
        for cat, figs in lat.items():
            figs["budget_ms"] = (cfg.get("categories", {}).get(cat) or {}).get(
                "latency_ms", default
            )
        # p95 is reported as the upper end of its 100 ms histogram bucket (day_probe.py)
        budget_ok = all(f["p95_ms"] <= f["budget_ms"] for f in lat.values())
        out = {
            "profile": name,
            "virtual_hours": round(seconds / 3600, 2),
            "real_seconds": round(real_s, 1),
            "readings": len(readings),
            "readings_per_s": round(len(readings) / seconds, 3),
            **ours,
            "radio_wakeups_per_day": round(
                _scale(dev["radio"]["send_bursts"] + dev["radio"]["connects"], virtual_ms)
            ),
            "connections_per_day": round(_scale(dev["radio"]["connects"], virtual_ms)),
            "radio_on_s_per_day": round(_scale(dev["radio"]["radio_on_ms"], virtual_ms) / 1000),
            "latency_ms": lat,
            "within_budget": budget_ok,
            "format1_fallbacks": dev["fallbacks"],
            "baseline": {
                **theirs,
                "radio_wakeups_per_day": round(
                    _scale(
                        base["dev"]["radio"]["send_bursts"] + base["dev"]["radio"]["connects"],
                        virtual_ms,
                    )
                ),
                "radio_on_s_per_day": round(
                    _scale(base["dev"]["radio"]["radio_on_ms"], virtual_ms) / 1000
                ),
                "latency_ms": base["dev"]["latency"],
            },
        }
        out["ratio_bytes"] = round(
            theirs["wire_bytes_per_day"] / max(ours["wire_bytes_per_day"], 1), 1
        )
        out["ratio_messages"] = round(
            theirs["messages_per_day"] / max(ours["messages_per_day"], 1), 1
        )
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
                    "readings": path,
                },
                f,
            )
        dev = _run_mp("day_baseline.py", spec, timeout)
        time.sleep(0.3)
    return {"dev": dev, "counter": counter}


def bench_day(args=None) -> dict:
    """Every profile (or --profile NAME) for --hours of virtual time (default 24)."""
    hours = float(getattr(args, "hours", None) or os.environ.get("EDGE_DAY_HOURS", 24))
    names = [args.profile] if getattr(args, "profile", None) else list(PROFILES)
    out: dict = {"profiles": {}}
    with broker_mod.start(prefer="mosquitto") as b:
        # the profiles run side by side: each has its own proxy, collector and processes
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            runs = {name: pool.submit(run_profile, name, hours, b) for name in names}
            for name in names:
                out["profiles"][name] = runs[name].result()
    out["tls_estimate"] = (
        f"{TLS_RECORD_BYTES} B per MQTT packet (TLS 1.2 AES-128-GCM record), "
        f"{TLS_HANDSHAKE_BYTES} B per connection"
    )
    out["burst_gap_ms"] = BURST_GAP_MS
    return out
