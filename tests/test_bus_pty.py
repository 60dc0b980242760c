"""All three appliance buses end to end from ptys under unix MicroPython: the real
edge.inputs.build + sources + unix HAL UART (tests/mp/inputs_pty.py), against a host-side
line-protocol writer, a simulated Tuya MCU and a simulated Modbus RTU slave."""

import json
import os
import struct
import subprocess
import threading
import time

from host_tools.captures.appliances import ModbusSlave, Pty, TuyaMCU, serve, tuya_dp, tuya_frame

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MP = os.path.join(ROOT, ".venv", "bin", "micropython")


def run_agent_inputs(tmp_path, cfg, ms):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, MICROPYPATH=ROOT)
    return subprocess.Popen(
        [MP, os.path.join(HERE, "mp", "inputs_pty.py"), str(path), str(ms)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse(out):
    readings = [
        tuple(int(x) for x in ln.split()[1:]) for ln in out.splitlines() if ln.startswith("R ")
    ]
    stats = [json.loads(ln[2:]) for ln in out.splitlines() if ln.startswith("S ")]
    return readings, stats[0] if stats else None


def test_line_tuya_and_modbus_from_ptys(tmp_path):
    line, tuya, meter = Pty(), Pty(), Pty()
    reports = [
        tuya_frame(0x07, tuya_dp(1, 1, b"\x01") + tuya_dp(2, 2, struct.pack(">i", 215))),
        tuya_frame(0x07, tuya_dp(3, 4, b"\x02")),
    ]
    mcu = TuyaMCU(reports, noise=b"\x00\xffgarbage\x55")
    slave = ModbusSlave(
        3, {0: 2301, 1: 0xFFFF, 2: 0x0001, 3: 0x86A0}, drop_first=1, illegal=(100,)
    )
    servers = [serve(mcu, tuya), serve(slave, meter)]
    cfg = {
        "board": "unix-sim",
        "channels": [{"id": 1, "name": "t_cC", "category": "essential", "decimals": 2}],
        "inputs": [
            {
                "type": "line",
                "uart": {"path": line.path},
                "keys": {
                    "T": 1,
                    "DOOR": {"ch": 5, "enum": {"OPEN": 1, "SHUT": 0}},
                },
            },
            {
                "type": "tuya",
                "uart": {"path": tuya.path},
                "dps": {"1": 10, "2": {"ch": 11, "mul": 10}, "3": 12},
            },
            {
                "type": "modbus",
                "uart": {"path": meter.path, "baud": 9600},
                "slave": 3,
                "interval_ms": 400,
                "timeout_ms": 100,
                "retries": 1,
                "reads": [
                    {
                        "fn": 4,
                        "addr": 0,
                        "count": 4,
                        "map": {
                            "0": 20,
                            "1": {"ch": 21, "type": "i16"},
                            "2": {"ch": 22, "type": "u32"},
                        },
                    },
                    {"fn": 3, "addr": 100, "count": 1, "map": {"100": 23}},
                ],
            },
        ],
    }
    p = run_agent_inputs(tmp_path, cfg, 1500)

    def feed_lines():
        time.sleep(0.3)
        line.write(b"\x00junk\nT=4.25;DO")
        time.sleep(0.05)
        line.write(b"OR=OPEN\nT=-1.5;BAD\n")

    threading.Thread(target=feed_lines, daemon=True).start()
    out = p.communicate(timeout=30)[0]
    for s in servers:
        s.stop()
    for x in (line, tuya, meter):
        x.close()
    assert p.returncode == 0, out
    readings, stats = parse(out)
    # line protocol, across a split write and after garbage
    assert [r for r in readings if r[0] in (1, 5)] == [(1, 425), (5, 1), (1, -150)]
    # Tuya: the handshake ran (heartbeat, product, mode, status, DP query) and DPs were mapped
    assert mcu.cmds[:5] == [0x00, 0x01, 0x02, 0x03, 0x08], mcu.cmds
    assert [r for r in readings if r[0] in (10, 11, 12)] == [(10, 1), (11, 2150), (12, 2)]
    # Modbus: first request unanswered (timeout, retry), then values; register 100 -> exception
    mb = [r for r in readings if r[0] >= 20]
    assert mb[:3] == [(20, 2301), (21, -1), (22, 100000)]
    assert not [r for r in mb if r[0] == 23]
    s = stats["inputs[2]"]
    assert s["timeout"] >= 1 and s["exception"] >= 1 and s["accepted"] >= 2, s
    line_st = stats["inputs[0]"]
    assert "unknown_key" not in line_st and line_st["no_value"] >= 1  # zero counters left out
    for i in range(3):  # every byte each input read is accounted for
        b = stats["inputs[%d]" % i]["bytes"]
        assert (
            b["fed"] == b["decoded"] + b["unhandled"] + b["rejected"] + b["garbage"] + b["pending"]
        ), b
    # the line break goes with its line; "BAD" is rejected
    assert line_st["bytes"]["decoded"] == len(b"T=4.25;DOOR=OPEN\nT=-1.5;\n")
    assert stats["inputs[1]"]["accepted"] >= 2
