"""`edgectl simulate --serve modbus|tuya|line` (docs/REPLAY.md 6): the appliance models live on a
pty a user names, set up from a register map / datapoints / lines file, with fault injection;
driven here over the pty with pyserial as an agent or a USB adapter would."""

import json
import signal
import struct
import subprocess
import sys
import time

import pytest
import serial

from host_tools import cli
from host_tools.captures.appliances import modbus_crc, modbus_request, tuya_frame
from host_tools.captures.appliances.tuya import split_frames
from tests.conftest import ROOT


class Served:
    """`edgectl simulate --serve ...` as a subprocess; `port` is the pty it made, opened."""

    def __init__(self, tmp_path, *args):
        self.link = tmp_path / "ttySIM"
        argv = [sys.executable, "-m", "host_tools", "simulate", "--serve", *args]
        self.proc = subprocess.Popen(
            argv + ["--pty", str(self.link)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self.first = self.proc.stdout.readline()
        assert self.first.startswith("simulate: "), self.first + self.proc.stdout.read()
        self.port = serial.serial_for_url(str(self.link), timeout=1)

    def stop(self):
        self.port.close()
        self.proc.send_signal(signal.SIGTERM)
        out = self.proc.communicate(timeout=10)[0]
        assert self.proc.returncode == 0, out
        return out


def read_frames(port, want, timeout=5.0):
    buf, frames = b"", []
    end = time.monotonic() + timeout
    while len(frames) < want and time.monotonic() < end:
        buf += port.read(max(1, port.in_waiting))
        got, buf = split_frames(buf)
        frames += got
    return frames


def test_modbus_slave_from_a_register_map_with_faults_and_live_edits(tmp_path):
    regs = tmp_path / "regs.json"
    regs.write_text(json.dumps({"slave": 7, "holding": {"0": 215, "1": 480, "2": 1}}))
    sim = Served(tmp_path, "modbus", "--map", str(regs), "--faults", "bad_crc@1,timeout@2")
    try:
        assert "Modbus RTU slave 7 (3 holding registers)" in sim.first
        req = modbus_request(7, 3, 0, 3)
        answers = []
        for _ in range(4):
            sim.port.write(req)
            answers.append(sim.port.read(11))
        sim.port.write(modbus_request(8, 3, 0, 3))  # another slave's request: no answer
        assert sim.port.read(11) == b""
        regs.write_text(json.dumps({"slave": 7, "holding": {"0": 230, "1": 480, "2": 0}}))
        time.sleep(0.6)  # the map is watched and reloaded
        sim.port.write(req)
        edited = sim.port.read(11)
    finally:
        out = sim.stop()
    body = b"\x07\x03\x06" + struct.pack(">HHH", 215, 480, 1)
    good = body + modbus_crc(body)
    assert answers[0] == good and answers[3] == good
    assert answers[1] == good[:-1] + bytes((good[-1] ^ 0xFF,))  # bad_crc@1: last byte flipped
    assert answers[2] == b""  # timeout@2: no reply at all
    assert struct.unpack(">HHH", edited[3:9]) == (230, 480, 0)
    assert f"reloaded {regs}" in out
    assert "5 requests, 4 answered; faults injected: bad_crc@1, timeout@2" in out


def test_tuya_mcu_answers_the_module_and_reports_its_datapoints(tmp_path):
    dps = tmp_path / "dps.json"
    doc = {
        "product": {"p": "heatpump00000001", "v": "2.1.0", "m": 0},
        "report_s": 0.5,
        "dps": {
            "1": {"type": "bool", "value": True},
            "2": {"type": "value", "value": -35},
            "4": {"type": "enum", "value": 2},
            "5": {"type": "string", "value": "eco"},
        },
    }
    dps.write_text(json.dumps(doc))
    sim = Served(tmp_path, "tuya", "--map", str(dps))
    try:
        p = sim.port
        p.write(tuya_frame(0x00, ver=0))  # the module's heartbeat
        p.write(tuya_frame(0x00, ver=0))
        p.write(tuya_frame(0x01, ver=0))  # product info
        p.write(tuya_frame(0x08, ver=0))  # DP query
        frames = read_frames(p, 6, timeout=5)  # the answers, and reports every report_s
    finally:
        sim.stop()
    answers = [f for f in frames if f[3] != 0x07]
    reports = [f[6:-1] for f in frames if f[3] == 0x07]
    assert [f[3] for f in answers] == [0x00, 0x00, 0x01]
    assert answers[0][6:-1] == b"\x00" and answers[1][6:-1] == b"\x01"  # booted, then running
    assert json.loads(answers[2][6:-1]) == doc["product"]
    assert len(reports) >= 3  # one for the DP query, then unasked every 0.5 s
    assert set(reports) == {
        b"\x01\x01\x00\x01\x01"
        + b"\x02\x02\x00\x04"
        + struct.pack(">i", -35)
        + b"\x04\x04\x00\x01\x02"
        + b"\x05\x03\x00\x03eco"
    }


def test_line_appliance_sends_a_file_in_turn_with_garbage(tmp_path):
    lines = tmp_path / "hp.txt"
    lines.write_text("FLOW=21.5;RET=18.0\nFLOW=21.6;RET=18.1\n")
    sim = Served(
        tmp_path, "line", "--lines", str(lines), "--interval", "0.05", "--faults", "garbage@1"
    )
    try:
        got = b""
        end = time.monotonic() + 5
        while got.count(b"\n") < 4 and time.monotonic() < end:
            got += sim.port.read(max(1, sim.port.in_waiting))
    finally:
        out = sim.stop()
    assert got.startswith(b"FLOW=21.5;RET=18.0\n\x00\xff\x13\x55FLOW=21.6;RET=18.1\nFLOW=21.5")
    assert "faults injected: garbage@1" in out


@pytest.mark.parametrize(
    "args, files, message",
    [
        (["--serve", "modbus", "--pty", "{t}/p"], {}, "--serve modbus needs --map REGS.json"),
        (
            ["--serve", "modbus", "--map", "{t}/m.json", "--pty", "{t}/p"],
            {"m.json": {"slave": 1, "holdnig": {}}},
            "m.json: unknown key 'holdnig' (known: slave, holding, input, illegal)",
        ),
        (
            ["--serve", "modbus", "--map", "{t}/m.json", "--pty", "{t}/p"],
            {"m.json": {"holding": {"0": 70000}}},
            "m.json: holding.0: 70000 is not a 16-bit value",
        ),
        (
            ["--serve", "modbus", "--map", "{t}/m.json", "--pty", "{t}/p"],
            {"m.json": {"slave": 300}},
            "m.json: slave: 300 is not a Modbus address 1..247",
        ),
        (
            ["--serve", "tuya", "--map", "{t}/d.json", "--pty", "{t}/p"],
            {"d.json": {"dps": {"2": {"type": "value", "value": "hot"}}}},
            "d.json: dps.2: 'hot' is not a value value",
        ),
        (
            ["--serve", "modbus", "--map", "{t}/m.json"],
            {"m.json": {}},
            "--serve needs exactly one of --pty LINK or --port URL",
        ),
        (
            ["--serve", "line", "--port", "/dev/edge-no-such-port"],
            {},
            "cannot open /dev/edge-no-such-port",
        ),
        (
            ["--serve", "line", "--pty", "{t}/p", "--faults", "melt@1"],
            {},
            "--faults: unknown fault 'melt'",
        ),
        (["fridge", "--serve", "line", "--pty", "{t}/p"], {}, "--serve plays live"),
        ([], {}, "simulate needs APPLIANCE and --out FILE, or --serve KIND"),
    ],
)
def test_bad_serve_arguments_are_one_line(tmp_path, capsys, args, files, message):
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
    argv = ["simulate"] + [a.format(t=tmp_path) for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgectl: ") and err.count("\n") == 1 and message in err, err
