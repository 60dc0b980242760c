"""Field traffic the parsers used to accept without a reading, replayed into the real agent
(`edgectl replay --agent`): a battery sensor on the Tuya low-power protocol (auto-detected), and
appliance console logs (`key value` words after a prefix, CSV with a header) converted from text
with `capture-convert` and mapped from config alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from host_tools.captures import capfile
from host_tools.captures.appliances import tuya_dp, tuya_frame
from tests.test_capture import edgectl

WALL0 = 946684800000  # 2000-01-01T00:00:00Z


def replay(tmp_path: Path, cap: Path, cfg: dict) -> tuple[dict, list]:
    dev = tmp_path / "device.json"
    dev.write_text(json.dumps(cfg))
    out = tmp_path / "out.json"
    proc = edgectl(
        "replay", str(cap), "--agent", "unix-sim", "--config", str(dev), "--json",
        "--collector-out", str(out), timeout=300,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1]), json.loads(out.read_text())[
        "readings"
    ]


def channels(*specs):
    return [
        {"id": i, "name": n, "category": "essential", **({"unit": u, "decimals": d} if u else {})}
        for i, n, u, d in specs
    ]


def test_low_power_tuya_session_decodes_to_readings(tmp_path: Path):
    dps = tuya_dp(1, 2, struct.pack(">i", 215)) + tuya_dp(2, 2, struct.pack(">i", 87))
    dps2 = tuya_dp(1, 2, struct.pack(">i", 198)) + tuya_dp(2, 2, struct.pack(">i", 86))
    time7 = bytes((1, 0, 1, 1, 0, 0, 5))
    # what a module's port saw of a battery sensor waking up twice (MCU frames ver 0x00)
    session = [
        ("tx", 0, tuya_frame(0x01, ver=0)),
        ("rx", 20_000, tuya_frame(0x01, b'{"p":"lowpowersensor01","v":"1.0.0"}', ver=0)),
        ("tx", 40_000, tuya_frame(0x02, b"\x04", ver=0)),
        ("rx", 60_000, tuya_frame(0x02, ver=0)),
        ("rx", 80_000, tuya_frame(0x06, ver=0)),
        ("rx", 120_000, tuya_frame(0x10, b"\x00", ver=0)),
        ("rx", 160_000, tuya_frame(0x05, dps, ver=0)),
        ("rx", 60_000_000, tuya_frame(0x08, time7 + dps2, ver=0)),
    ]
    cap = tmp_path / "sensor.ecap"
    with capfile.CaptureWriter(str(cap), {"started": "2000-01-01T00:00:00.000Z"}) as w:
        for kind, ts, data in session:
            w.write(kind, ts, data)
    cfg = {
        "device_id": "th-sensor",
        "channels": channels((1, "temp", "°C", 1), (2, "battery", "%", 0)),
        "inputs": [
            {"type": "tuya", "uart": "appliance", "dps": {"1": 1, "2": 2}}  # protocol: auto
        ],
    }
    summary, readings = replay(tmp_path, cap, cfg)
    assert [(r[3], r[4]) for r in sorted(readings)] == [(1, 215), (2, 87), (1, 198), (2, 86)]
    st = summary["inputs"]["inputs[0]"]
    assert st["variant"] == "low_power" and st["variant_by"] == "product info ver 0"
    assert "unhandled_cmd" not in st and st["bytes"]["pending"] == 0
    assert st["cmds"] == {"01": 1, "02": 1, "06": 1, "10": 1, "05": 1, "08": 1}


def convert(tmp_path: Path, text: str) -> Path:
    log = tmp_path / "console.log"
    log.write_text(text)
    cap = tmp_path / "console.ecap"
    edgectl("capture-convert", "text", str(log), "--out", str(cap))
    return cap


def test_key_value_console_log_maps_from_config(tmp_path: Path):
    """A robot vacuum's battery log: 28 values in 4 lines, mixed with other lines."""
    lines = []
    for i in range(4):
        lines.append(f"12:00:0{i}.000 wheel: l {i} r {i + 1}")
        lines.append(
            f"12:00:0{i}.500 bat: volt 16.{20 + i} cur -0.5{i} temp 3{i} soc {90 - i} "
            f"state chg cyc 212 health 97"
        )
    cap = convert(tmp_path, "\n".join(lines) + "\n")
    cfg = {
        "device_id": "vacuum-1",
        "channels": channels(
            (1, "volt", "V", 2),
            (2, "cur", "A", 2),
            (3, "temp", "°C", 0),
            (4, "soc", "%", 0),
            (5, "charging", None, 0),
            (6, "cycles", None, 0),
            (7, "health", "%", 0),
        ),  # fmt: skip
        "inputs": [
            {
                "type": "line",
                "uart": "appliance",
                "prefix": "bat:",
                "assign": " ",
                "keys": {
                    "volt": 1,
                    "cur": 2,
                    "temp": 3,
                    "soc": 4,
                    "state": {"ch": 5, "enum": {"chg": 1, "dis": 0}},
                    "cyc": 6,
                    "health": 7,
                },  # fmt: skip
            }
        ],
    }
    summary, readings = replay(tmp_path, cap, cfg)
    got = [(r[3], r[4]) for r in sorted(readings)]
    assert len(got) == 28
    assert got[:7] == [(1, 1620), (2, -50), (3, 30), (4, 90), (5, 1), (6, 212), (7, 97)]
    assert got[-7:] == [(1, 1623), (2, -53), (3, 33), (4, 87), (5, 1), (6, 212), (7, 97)]
    # stamped with the log's own times (12:00:00.500 on the capture's day)
    assert sorted(readings)[0][1] == WALL0 + 12 * 3600_000 + 500
    b = summary["inputs"]["inputs[0]"]["bytes"]
    assert b["unhandled"] > 0 and b["rejected"] == 0  # the wheel lines are another kind


def test_csv_console_log_maps_from_config(tmp_path: Path):
    cap = convert(tmp_path, "ts,temp_c,rh,fan\n1,21.5,40,1\n2,21.75,41,0\n")
    cfg = {
        "device_id": "hvac-1",
        "channels": channels((1, "temp", "°C", 2), (2, "rh", "%", 0), (3, "fan", None, 0)),
        "inputs": [
            {
                "type": "line",
                "uart": "appliance",
                "format": "csv",
                "columns": {"temp_c": 1, "rh": 2, "fan": 3},
            }
        ],
    }
    _, readings = replay(tmp_path, cap, cfg)
    assert [(r[3], r[4]) for r in sorted(readings)] == [
        (1, 2150), (2, 40), (3, 1), (1, 2175), (2, 41), (3, 0),
    ]  # fmt: skip


def test_why_a_replay_produced_no_readings():
    """The sentences of the summary's `why`, one per cause (host_tools/agent/replay.py)."""
    from host_tools.agent.replay import explain

    garbled = {
        "inputs": {
            "inputs[0]": {
                "accepted": 0,
                "bytes": {"fed": 500, "decoded": 0, "rejected": 120, "garbage": 380},
                "checksum": 9,
            }
        }
    }
    why = explain(0, garbled, None, {}, 500)
    assert len(why) == 1 and "500 bytes read, none decoded" in why[0] and "checksum 9" in why[0]
    unmapped = {
        "inputs": {
            "inputs[0]": {
                "accepted": 40,
                "bytes": {"fed": 900, "decoded": 0, "unhandled": 900},
                "unmapped_dp": 120,
            }
        }
    }
    assert "none decoded" in explain(0, unmapped, None, {}, 900)[0]
    mapped_nothing = {"inputs": {"inputs[0]": {"bytes": {"fed": 9, "decoded": 4, "unhandled": 5}}}}
    assert "nothing maps" in explain(0, mapped_nothing, None, {}, 9)[0]
    denied = {"counters": {"sampled": 50, "dropped_by_consent": 50}}
    assert "consent" in explain(0, denied, None, {}, 10)[0]
    strays = {"counters": {"unknown_channel": 7}}
    assert "7 readings went to channels" in explain(0, strays, None, {}, 10)[0]
    assert "no rx bytes" in explain(0, {}, None, {}, 0)[0]
    assert explain(0, {}, None, {}, 10) == [
        "the agent produced no readings and no counter explains it (see --json)"
    ]
    assert (
        explain(5, {"inputs": {"inputs[0]": {"bytes": {"fed": 9, "decoded": 9}}}}, None, {}, 9)
        == []
    )
