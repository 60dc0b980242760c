"""Appliance buses end to end (docs/INPUTS.md): the agent (`edge.main` under unix MicroPython,
started by host_tools.agent.run) reads a line-protocol stream, a Tuya MCU and a Modbus RTU slave
from ptys via an `inputs` config, and the mapped readings reach the collector through a real
broker."""

import struct
import threading
import time

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.captures.appliances import ModbusSlave, Pty, TuyaMCU, serve, tuya_dp, tuya_frame

DEVICE = "washer-e2e"


def test_agent_publishes_readings_from_three_buses(agents, tmp_path):
    line, tuya, meter = Pty(), Pty(), Pty()
    mcu = TuyaMCU(
        [tuya_frame(0x07, tuya_dp(1, 1, b"\x01") + tuya_dp(2, 2, struct.pack(">i", -183)))],
        noise=b"\xff\x55\x00",
    )
    slave = ModbusSlave(1, {0: 2304, 1: 0, 2: 51234})
    servers = [serve(mcu, tuya), serve(slave, meter)]
    channels = [
        {"id": i, "name": "ch%d" % i, "category": "essential"} for i in (1, 5, 10, 11, 20, 22)
    ]
    channels[0]["deadband"] = 0  # report changes only: the repeated T=4.25 is suppressed
    channels[0]["decimals"] = 2
    channels[0]["unit"] = "°C"
    inputs = [
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
            "dps": {"1": 10, "2": {"ch": 11, "mul": 10}},
        },
        {
            "type": "modbus",
            "uart": {"path": meter.path},
            "slave": 1,
            "interval_ms": 5000,
            "reads": [
                {"fn": 4, "addr": 0, "count": 3, "map": {"0": 20, "1": {"ch": 22, "type": "u32"}}}
            ],
        },
    ]
    with broker_mod.start() as b:
        col = Collector(b.host, b.port).start()
        try:
            cfg = agent_config(
                "unix-sim",
                device_id=DEVICE,
                channels=channels,
                inputs=inputs,
                mqtt={"host": b.host, "port": b.port},
                sim={"seconds": 3},
                status_detail="full",  # the inputs' counters are in the full document
            )
            a = agents(cfg, workdir=str(tmp_path))

            def feed():
                time.sleep(1.0)
                line.write(b"garbage\x00\nT=4.25;DOOR=OPEN\n")
                time.sleep(0.2)
                line.write(b"T=4.25\nT=-0.5;DOOR=SH")
                time.sleep(0.05)
                line.write(b"UT\n")

            threading.Thread(target=feed, daemon=True).start()
            assert a.wait(60) == 0
            want = {
                (1, 425),
                (5, 1),
                (1, -50),
                (5, 0),
                (10, 1),
                (11, -1830),
                (20, 2304),
                (22, 51234),
            }
            col.wait_for(lambda c: want <= {(r[4], r[5]) for r in c.readings}, 10)
            got = [(r[4], r[5]) for r in col.readings if r[0] == DEVICE]
            # the retained meta message carried what channel 1's integers mean
            col.wait_for(lambda c: DEVICE in c.channels, 10)
            meta = col.channels[DEVICE]
            status = col.status.get(DEVICE) or {}
        finally:
            col.stop()
            for s in servers:
                s.stop()
            for p in (line, tuya, meter):
                p.close()
    assert want <= set(got), (got, a.output[-10:])
    assert got.count((1, 425)) == 1  # deadband suppressed the repeat
    assert mcu.cmds[:5] == [0x00, 0x01, 0x02, 0x03, 0x08]
    assert slave.requests >= 1
    assert meta[1] == {"name": "ch1", "category": "essential", "unit": "°C", "decimals": 2}
    assert meta[5]["unit"] is None and meta[5]["decimals"] == 0
    # the status carried every input's counters and byte ledger (it fit the packet buffer)
    assert status.get("status_too_large") == 0, status
    assert sorted(status["inputs"]) == ["inputs[0]", "inputs[1]", "inputs[2]"]
    for v in status["inputs"].values():  # the ledger, compact: [fed, decoded, unh, rej, garb]
        assert len(v["b"]) == 5 and v["b"][0] >= sum(v["b"][1:]) and v["b"][1] > 0, v
