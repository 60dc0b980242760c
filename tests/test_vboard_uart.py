"""The virtual board's UARTs (docs/DEPLOY.md 0): `edgectl vboard --uart NAME=PATH|URL` bridges
a board UART, by the name the config uses, to a pty, a tty or a pyserial URL; errors name the
UART and the path instead of a bare `OSError: [Errno 2] ENOENT`."""

import json
import os
import subprocess
import sys
import time

import pytest

from host_tools import cli
from host_tools.captures import capfile
from host_tools.captures.appliances import (
    ModbusSlave,
    Pty,
    modbus_request,
    modbus_response,
    serve,
)
from tests.conftest import ROOT, run_mp
from tests.test_vboard import VBoard

# the unix HAL as the agent uses it, run inside the board from the repository (mpremote mount)
PROBE = """
import time
from edge.hal.unix.hal import Hal
h = Hal()
for name, send in %r:
    try:
        u = h.uart({"name": name, "path": "/not/on/the/board"})
    except ValueError as e:
        print("ERR", e)
        continue
    u.write(bytes(send))
    buf = bytearray(256)
    got = b""
    t = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t) < 3000 and len(got) < %d:
        n = u.readinto(buf)
        got += bytes(buf[:n])
        time.sleep_ms(10)
    print("GOT", name, got.hex())
"""


def probe(vb, uarts, want):
    out = vb.mpremote("mount", "-l", ROOT, "exec", PROBE % (uarts, want), timeout=60)
    return [line for line in out.splitlines() if line.startswith(("ERR", "GOT"))]


@pytest.fixture
def appliance(tmp_path):
    """A Modbus slave (the appliance model) on a pty, as `edgectl simulate --serve` runs it."""
    pty = Pty(str(tmp_path / "ttyAPPL"))
    slave = ModbusSlave(1, {0: 215, 1: 480, 2: 1})
    srv = serve(slave, pty)
    yield pty, slave
    srv.stop()
    srv.join(2)
    pty.close()


def test_bridged_uart_reaches_the_appliance_and_others_are_named(tmp_path, appliance):
    pty, slave = appliance
    vb = VBoard(tmp_path, uarts=(f"appliance={pty.path}",)).start()
    try:
        req = list(modbus_request(1, 3, 0, 3))
        lines = probe(vb, [("appliance", req), ("meter", req)], 11)
    finally:
        vb.stop()
    # the request went over the bridge; the slave's answer came back byte for byte
    assert lines[0] == "GOT appliance 01030600d701e0000194ad", lines
    assert slave.requests == 1
    # an unbridged board UART: named, with what is bridged and how to bridge it
    assert lines[1].startswith("ERR uart 'meter' is not bridged on this virtual board"), lines
    assert "(bridged: appliance)" in lines[1] and "--uart meter=" in lines[1]


def test_bridge_reopens_a_restarted_simulator(tmp_path):
    """The simulator is stopped and started again (a new pty behind the same link): the
    vboard says it lost the UART, reopens it, and the board talks to the new one."""
    link = str(tmp_path / "ttyAPPL")
    pty = Pty(link)
    srv = serve(ModbusSlave(1, {0: 215}), pty)
    vb = VBoard(tmp_path, uarts=(f"appliance={link}",)).start()
    req = list(modbus_request(1, 3, 0, 1))
    try:
        assert probe(vb, [("appliance", req)], 7) == [
            "GOT appliance " + modbus_response(1, 3, [215]).hex()
        ]
        srv.stop()
        srv.join(2)
        pty.close()  # the simulator is gone: the bridge's reads fail
        time.sleep(0.5)
        pty = Pty(link)  # ... and is back, on another pty, with other values
        srv = serve(ModbusSlave(1, {0: 300}), pty)
        time.sleep(2.5)  # the bridge retries every second
        assert probe(vb, [("appliance", req)], 7) == [
            "GOT appliance " + modbus_response(1, 3, [300]).hex()
        ]
    finally:
        vb.stop()
        srv.stop()
        srv.join(2)
        pty.close()
    out = vb.output()
    assert f"vboard: uart 'appliance' ({link}): lost (" in out
    assert f"vboard: uart 'appliance' ({link}): reopened" in out


def test_replay_url_feeds_the_board(tmp_path):
    # a line appliance captured for a minute, replayed in real time through the bridge
    cap = tmp_path / "line.ecap"
    with capfile.CaptureWriter(str(cap), {"baudrate": 9600}) as w:
        for i in range(600):
            w.write("rx", i * 100000, b"N=%d\n" % i)
    vb = VBoard(tmp_path, uarts=(f"appliance=replay://{cap}",)).start()
    try:
        lines = probe(vb, [("appliance", [])], 40)
    finally:
        vb.stop()
    got = bytes.fromhex(lines[0].split()[2]).decode()
    # whole lines of the capture, consecutive, arriving as the board reads
    nums = [int(x[2:]) for x in got.split("\n")[1:-1]]
    assert len(nums) >= 3 and nums == list(range(nums[0], nums[0] + len(nums))), got


@pytest.mark.parametrize(
    "arg, message",
    [
        (
            "appliance=/tmp/edge-no-such-tty",
            "uart 'appliance': /tmp/edge-no-such-tty does not exist",
        ),
        ("appliance=rfc2217://", "uart 'appliance': cannot open rfc2217://"),
        ("appliance", "--uart 'appliance': expected NAME[:BAUD]=PATH_OR_URL"),
        ("appliance:12=/dev/null", "expected NAME[:BAUD]=PATH_OR_URL"),
        ("appliance:9999999=/dev/null", "baud 9999999 is outside 300..5000000"),
    ],
)
def test_vboard_refuses_a_bad_bridge_in_one_line(tmp_path, capsys, arg, message):
    argv = ["vboard", "--link", str(tmp_path / "tty"), "--image", str(tmp_path / "img")]
    assert cli.main(argv + ["--uart", arg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgectl: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "tty").exists()


def test_agent_names_the_uart_and_path_it_cannot_open(micropython, tmp_path):
    """Under unix MicroPython without a vboard: a missing pty was a bare ENOENT traceback."""
    cfg = {
        "device_id": "hp-0001",
        "board": "unix-sim",
        "board_overrides": {"uarts": {"appliance": {"path": str(tmp_path / "gone")}}},
        "channels": [{"id": 1, "name": "flow_cC", "category": "essential"}],
        "inputs": [
            {
                "type": "modbus",
                "uart": "appliance",
                "slave": 1,
                "reads": [{"addr": 0, "count": 1, "map": {"0": 1}}],
            }
        ],
        "store": {"path": str(tmp_path / "store")},
    }
    path = tmp_path / "hp.json"
    path.write_text(json.dumps(cfg))
    r = run_mp(os.path.join(ROOT, "edge", "main.py"), str(path), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == (
        "edge: config error: config key 'inputs[0].uart': uart 'appliance': cannot open "
        f"{tmp_path / 'gone'}: [Errno 2] ENOENT"
    ), r.stderr
    assert "Traceback" not in r.stderr


def test_vboard_help_names_the_option():
    r = subprocess.run(
        [sys.executable, "-m", "host_tools", "vboard", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert "--uart NAME[:BAUD]=PATH|URL" in r.stdout
