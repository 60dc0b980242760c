"""The appliance profiles of `edgectl bench day` (host_tools/bench/day.py, docs/MQTT.md 9):
each one a device config as a product owner would deploy it, reading a simulated appliance
(host_tools/bench/mp/day_hal.py) through the agent's own bus drivers."""

from __future__ import annotations

KEEPALIVE_S = 120
LATENCY_MS = 30000  # every category's budget; urgent channels (alarms) go at once

CONSENT_ALL: dict = {
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
GRANTED = [c for c, g in CONSENT_ALL["grants"].items() if g]  # the categories with readings

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


# `--before`: the same appliance with the agent's behaviour before latency budgets, format 2
# and the compact status: format 1 batches, the 200 ms linger (now a 200 ms budget), the full
# status document every 5 s, keepalive 30 s
BEFORE: dict = {
    "mqtt": {"keepalive": 30},
    "batch": {"format": 1, "latency_ms": 200},
    "status_ms": 5000,
    "status_detail": "full",
}


def profile(name: str, seconds: int, before: bool = False) -> dict:
    """The device config of a profile for a run of `seconds` (virtual)."""
    cfg = _merge(_merge(COMMON, PROFILES[name]), {"sim": {"seconds": seconds}})
    return _merge(cfg, BEFORE) if before else cfg
