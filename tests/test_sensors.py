"""Sensor drivers (edge/sensors/) against their simulated unix counterparts
(edge/hal/unix/sim.py), on a virtual clock; plus the same under unix MicroPython."""

import os
import subprocess

import pytest

from edge.bus.crc import crc8_maxim, crc8_sensirion
from edge.hal.unix import sim as unix_sim
from edge.sensors.adc import ADCChannel
from edge.sensors.ds18b20 import DS18B20
from edge.sensors.pulse import PulseCounter
from edge.sensors.sht3x import SHT3x

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class Clock:
    def __init__(self):
        self.t = 0

    def __call__(self):
        return self.t


def drive(src, clock, ms, step=5):
    out = []
    for _ in range(ms // step):
        src.poll(clock.t, lambda c, v: out.append((clock.t, c, v)))
        clock.t += step
    return out


def test_crc8_vectors():
    assert crc8_sensirion(b"\xbe\xef", 0, 2) == 0x92  # SHT3x datasheet table 20
    assert crc8_maxim(b"123456789", 0, 9) == 0xA1  # CRC-8/MAXIM check value


def test_sht3x_reads_temperature_and_humidity_in_centi_units():
    c = Clock()
    i2c = unix_sim.SimI2C(
        [
            {
                "type": "sht3x",
                "addr": 0x44,
                "sim": {"temp_cC": [[0, 2150], [1500, -1234]], "rh_cP": 4550},
            }
        ],
        c,
    )
    s = SHT3x(i2c, 0x44, 1, 2, interval_ms=1000)
    out = drive(s, c, 2100)
    vals = [(ch, v) for _, ch, v in out]
    # 16-bit raw rounding: within 1 centi-unit of the script
    assert [ch for ch, _ in vals] == [1, 2, 1, 2, 1, 2]
    assert abs(vals[0][1] - 2150) <= 1 and abs(vals[1][1] - 4550) <= 1
    assert abs(vals[4][1] + 1234) <= 1
    assert out[0][0] >= 16  # read after the measurement time, not at the command


def test_sht3x_crc_error_and_missing_device_are_counted():
    c = Clock()
    i2c = unix_sim.SimI2C([{"type": "sht3x", "addr": 0x44, "sim": {"bad_crc_every": 2}}], c)
    s = SHT3x(i2c, 0x44, 1, None, interval_ms=100)
    out = drive(s, c, 1000)
    assert len(out) == 5 and s.errors["crc"] == 5
    s2 = SHT3x(i2c, 0x45, 1, None, interval_ms=100)
    assert drive(s2, c, 500) == [] and s2.errors["bus"] == 5


def test_ds18b20_conversion_sign_and_power_on_value():
    c = Clock()
    ow = unix_sim.SimOneWire({"sim": {"temp_cC": [[0, -1050], [2000, 2500]]}}, c)
    s = DS18B20(ow, 7, interval_ms=1000)
    out = drive(s, c, 3000)
    assert [v for _, _, v in out] == [-1050, -1050, 2500]
    assert all(t >= 750 for t, _, _ in out)
    ow2 = unix_sim.SimOneWire({"sim": {"present": False}}, c)
    s2 = DS18B20(ow2, 7, interval_ms=1000)
    assert drive(s2, c, 2000) == [] and s2.errors["absent"] >= 2
    # a read before any conversion finished returns the 85.00 C power-on value: rejected
    ow3 = unix_sim.SimOneWire({}, c)
    s3 = DS18B20(ow3, 7, interval_ms=1000)
    s3.poll(c.t, lambda *a: None)
    ow3._conv_at = None  # the sensor lost power during the conversion
    c.t += 800
    assert s3.poll(c.t, lambda *a: None) == 0 and s3.errors["range"] == 1


def test_ds18b20_with_match_rom():
    c = Clock()
    ow = unix_sim.SimOneWire({"sim": {"temp_cC": 1875}}, c)
    s = DS18B20(ow, 7, rom=ow.scan()[0], interval_ms=1000)
    assert [v for _, _, v in drive(s, c, 1000)] == [1875]


def test_adc_two_point_calibration_and_oversampling():
    c = Clock()
    adc = unix_sim.SimADC(31000, c)
    s = ADCChannel(adc, 8, cal=[[1000, 0], [61000, 3300]], samples=8, interval_ms=500)
    assert [v for _, _, v in drive(s, c, 1000)] == [1650, 1650]
    assert s.convert(1000) == 0 and s.convert(61000) == 3300
    with pytest.raises(ValueError, match="cal"):
        ADCChannel(adc, 8, cal=[[5, 0], [5, 10]])


def test_pulse_counter_total_and_delta():
    c = Clock()
    cnt = unix_sim.SimCounter(600, c)  # 600 pulses per minute = 10 per second
    s = PulseCounter(cnt, 9, 10, mul=1, div=1, interval_ms=1000)
    out = drive(s, c, 3005)
    assert [(ch, v) for _, ch, v in out] == [
        (9, 0),
        (10, 0),
        (9, 10),
        (10, 10),
        (9, 20),
        (10, 10),
        (9, 30),
        (10, 10),
    ]


def test_sensors_and_deadband_under_micropython(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "from edge.hal.unix.hal import Hal\nfrom edge import inputs\n"
        "h = Hal()\nh.use_virtual_clock(0)\n"
        "cfg = {'board': 'unix-sim', 'channels': [{'id': 1, 'name': 't', 'category': 'essential',"
        " 'deadband': 50}], 'inputs': [\n"
        " {'type': 'sht3x', 'addr': 68, 'channels': {'temp': 1, 'rh': 2}, 'interval_ms': 1000,"
        "  'sim': {'temp_cC': [[0, 2000], [2000, 2030], [3000, 2100]], 'rh_cP': 4550}},\n"
        " {'type': 'ds18b20', 'pin': 'onewire', 'channels': {'temp': 7}, 'interval_ms': 1000,"
        "  'sim': {'temp_cC': 1875}},\n"
        " {'type': 'adc', 'pin': 34, 'channels': {'value': 8}, 'cal': [[1000, 0], [61000, 3300]],"
        "  'interval_ms': 5000, 'sim': 31000},\n"
        " {'type': 'pulse', 'pin': 'pulse', 'channels': {'count': 9}, 'interval_ms': 2000, 'sim': 600}]}\n"
        "srcs = inputs.build(cfg, h)\nout = []\n"
        "for i in range(450):\n"
        "    for s in srcs:\n"
        "        s.poll(h.ticks_ms(), lambda c, v: out.append((c, v)))\n"
        "    h.advance(10)\n"
        "print(sorted(set(out)))\n"
    )
    env = dict(os.environ, MICROPYPATH=ROOT)
    r = subprocess.run(
        [os.path.join(ROOT, ".venv", "bin", "micropython"), str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = eval(r.stdout.strip())
    temps = sorted(v for c, v in got if c == 1)
    # deadband 50: 20.00 reported, 20.30 suppressed, 21.00 reported
    assert [round(t / 10) for t in temps] == [200, 210], temps
    assert (7, 1875) in got and (8, 1650) in got and (9, 0) in got and (9, 20) in got
