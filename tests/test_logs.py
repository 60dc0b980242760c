"""`edgectl logs --port P` (docs/DEPLOY.md 6): the board's console from its boot. On the
virtual board the reset goes through its control socket; the boot line with the reset cause
and a boot crash's traceback come out highlighted. A real board's reset is an RTS pulse."""

import json
import os
import subprocess
import sys

import pytest

from host_tools import cli
from host_tools.board import logs as lg
from tests.conftest import ROOT
from tests.test_vboard import VBoard

YELLOW, RED, PLAIN = "\x1b[1;33m", "\x1b[1;31m", "\x1b[0m"


@pytest.fixture
def vboard(tmp_path):
    vb = VBoard(tmp_path).start()
    yield vb
    vb.stop()


def deploy(vb, tmp_path, **cfg):
    dev = tmp_path / "dev.json"
    doc = {"device_id": "lg-0001", "board": "unix-sim", "mqtt": {"port": 9}}
    dev.write_text(json.dumps(dict(doc, **cfg)))
    argv = ["deploy", "--board", "unix-sim", "--port", str(vb.link), "--device", str(dev)]
    return cli.main(argv + ["--offline"])


def edgectl_logs(*args, timeout=60):
    r = subprocess.run(
        [sys.executable, "-m", "host_tools", "logs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.splitlines()


def test_logs_resets_the_vboard_and_shows_the_boot(vboard, tmp_path):
    assert deploy(vboard, tmp_path, sim={"enabled": True, "rate_hz": 5}) == 0
    out = edgectl_logs("--port", str(vboard.link), "--until", "@log boot", "--color", "always")
    assert out[-2:] == [
        f"{YELLOW}vboard: hard reset (EN){PLAIN}",
        f"{YELLOW}@log boot: device lg-0001 on unix-sim (unix), reset cause power_on{PLAIN}",
    ], out
    # the agent was running when the button was pressed this time
    out = edgectl_logs("--port", str(vboard.link), "--until", "@log boot", "--color", "never")
    assert out[-1] == "@log boot: device lg-0001 on unix-sim (unix), reset cause hard", out
    # --attach: no reset, the running agent's output from now on
    out = edgectl_logs("--port", str(vboard.link), "--attach", "--until", "@stats")
    assert out and out[-1].startswith("@stats {") and not any("reset" in x for x in out), out


def test_logs_highlight_a_boot_crash_traceback(vboard, tmp_path):
    """A UART that is not bridged: the deploy's self-test already says so (exit 2); the
    console then shows the agent stopping at boot, traceback and exception line in red."""
    inputs = [
        {
            "type": "line",
            "uart": "appliance",
            "keys": {"T": 1},
        }
    ]
    channels = [{"id": 1, "name": "t_cC", "category": "essential"}]
    assert deploy(vboard, tmp_path, inputs=inputs, channels=channels) == 2
    out = edgectl_logs("--port", str(vboard.link), "--until", "ConfigError", "--color", "always")
    tb = out.index(f"{RED}Traceback (most recent call last):{PLAIN}")
    assert all(line.startswith(RED) for line in out[tb:]), out
    assert out[-1] == (
        f"{RED}ConfigError: config key 'inputs[0].uart': uart 'appliance' is not bridged on this "
        "virtual board (bridged: none): start it with `edgectl vboard --uart "
        f"appliance=PTY_OR_URL`{PLAIN}"
    ), out


def test_highlighter_knows_esp32_boot_and_panic_lines():
    hl = lg.Highlighter()
    console = [
        ("ets Jun  8 2016 00:22:57", "reset"),
        ("rst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)", "reset"),
        ("configsip: 0, SPIWP:0xee", None),
        ("MicroPython v1.25.0 on 2025-04-15; Generic ESP32 module with ESP32", None),
        (
            "@log boot: device hp-0001 on esp32-generic (esp32), reset cause watchdog (sampler)",
            "reset",
        ),
        ("@log wifi: no association with home (attempt 1), retry in 180 ms", "error"),
        ("@log wifi: connected to home, rssi -61", None),
        ("Guru Meditation Error: Core  1 panic'ed (LoadProhibited)", "error"),
        ("Backtrace: 0x400d1234:0x3ffb1234", "error"),
        ("Traceback (most recent call last):", "error"),
        ('  File "main.py", line 9, in <module>', "error"),
        ("OSError: [Errno 116] ETIMEDOUT", "error"),
        (">>> ", None),
    ]
    assert [hl.kind(line) for line, _ in console] == [k for _, k in console]


class ModemLines:
    """A USB-serial adapter's DTR/RTS as the ESP32 auto-reset circuit sees them."""

    port = "/dev/ttyUSB0"

    def __init__(self):
        self.seen = []

    def __setattr__(self, name, value):
        if name in ("dtr", "rts"):
            self.seen.append((name, value))
        object.__setattr__(self, name, value)


def test_real_board_reset_is_an_rts_pulse_with_dtr_released(tmp_path):
    lines = ModemLines()
    lg.pulse_reset(lines)
    assert lines.seen == [("dtr", False), ("rts", True), ("rts", False)]
    # a port without modem lines (a plain pty) cannot be reset: say so, suggest --attach
    m, s = os.openpty()
    ser = lg.open_port(os.ttyname(s), 115200)
    try:
        with pytest.raises(lg.ToolError, match="cannot reset the board on .* use --attach"):
            lg.pulse_reset(ser)
    finally:
        ser.close()
        os.close(m)
        os.close(s)


def test_logs_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["logs", "--port", str(tmp_path / "ttyNONE")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "cable" in err
