"""Tuya protocol variants (edge/bus/tuya.py, edge/bus/tuya_cmd.py) against the appliance models
of host_tools/captures/appliances: a low-power sensor session (configured and auto-detected),
record-type reports (0x34 0x0B and low-power 0x08), time and DP-cache answers, RAW DPs of any
length in slices, MCU-initiated heartbeats and the working modes."""

import struct

import pytest

from edge.bus import tuya_cmd
from edge.bus.tuya import TuyaMCU
from host_tools.captures.appliances import (
    LowPowerSensor,
    TuyaMCU as NormalMCU,
    tuya_dp,
    tuya_frame,
)

WALL = 1_700_000_000_000  # 2023-11-14T22:13:20Z, a Tuesday
DPS = {
    "1": {"ch": 1, "scale": 0.1},  # value DP in 0.1 degC -> channel with 2 decimals
    "2": 2,  # battery % (value)
    "3": [  # a 6-byte RAW DP: u16 at 0, i24 at 2, the top bit of byte 5
        {"ch": 3, "slice": {"offset": 0, "type": "u16"}},
        {"ch": 4, "slice": {"offset": 2, "type": "i24"}},
        {"ch": 5, "slice": {"offset": 5, "type": "u8", "bit": 7}},
    ],
    "4": 6,  # a 3-byte RAW DP, no slice: the whole value
}
DECIMALS = {1: 2}
RAW6 = bytes.fromhex("0102fffffe80")
REPORT_DPS = (
    tuya_dp(1, 2, struct.pack(">i", 215))
    + tuya_dp(2, 2, struct.pack(">i", 87))
    + tuya_dp(3, 0, RAW6)
    + tuya_dp(4, 0, b"\x01\x00\x01")
)
EXPECT = [(1, 2150), (2, 87), (3, 258), (4, -2), (5, 1), (6, 65537)]
TIME7 = bytes((1, 23, 11, 14, 22, 13, 20))


class Bench:
    """The edge module wired to an appliance model in-process; time moves in 100 ms steps."""

    def __init__(self, model, wall=WALL, **kw):
        self.model = model
        self.out = []
        self.sent = []
        self._pending = b""
        self.wall = wall
        self.mcu = TuyaMCU(DPS, self._write, wall_ms=lambda: self.wall, decimals=DECIMALS, **kw)

    def _write(self, b):
        self.sent.append(bytes(b))
        self._pending += b"".join(self.model.feed(bytes(b)))

    def run(self, ms):
        emit = lambda c, v: self.out.append((c, v))  # noqa: E731
        for now in range(0, ms, 100):
            self.mcu.tick(now, emit)
            while self._pending:
                data, self._pending = self._pending, b""
                self.mcu.feed(data, len(data), emit, now)
        return self.out


def sensor():
    return LowPowerSensor([(0x05, REPORT_DPS), (0x08, TIME7 + REPORT_DPS)])


@pytest.mark.parametrize("protocol", ["low_power", "auto"])
def test_low_power_sensor_session_decodes_to_readings(protocol):
    model = sensor()
    b = Bench(model, protocol=protocol)
    assert b.run(2000) == EXPECT + EXPECT  # real-time and record-type report
    a = model.answers
    assert a[0x05] == [b"\x00"] and a[0x08] == [b"\x00"]  # both acknowledged as received
    assert a[0x06] == [bytes((1, 23, 11, 14, 22, 13, 20, 2))]  # local time, Tuesday = 2
    assert a[0x10] == [b"\x01\x00"]  # DP cache: success, nothing cached
    assert a[0x02] == [b"\x04"]  # Wi-Fi status "cloud" in the low-power command set
    st = b.mcu.stats()
    assert st["variant"] == "low_power"
    assert st["variant_by"] == ("config" if protocol == "low_power" else "product info ver 0")
    assert st.get("unhandled_cmd", 0) == 0 and b.mcu.product.startswith(b'{"p"')
    if protocol == "low_power":
        assert 0x00 not in model.cmds  # no heartbeats in this protocol
    led = b.mcu.ledger
    assert led.pending() == 0 and led.rejected == 0 and led.garbage == 0 and led.unhandled == 0


def test_auto_detects_low_power_from_the_command_set():
    """An MCU that talks first (no product answer in ver 0): its 0x08 report settles it."""
    m = TuyaMCU(DPS, lambda b: None, decimals=DECIMALS)
    out = []
    f = tuya_frame(0x08, TIME7 + REPORT_DPS, ver=3)
    m.feed(f, len(f), lambda c, v: out.append((c, v)))
    assert out == EXPECT and m.variant == "low_power" and m.detected_by == "cmd 0x08 ver 3"


def test_auto_stays_normal_after_a_heartbeat_answer():
    model = NormalMCU([tuya_frame(0x07, REPORT_DPS)])
    b = Bench(model)
    assert b.run(1000) == EXPECT
    assert b.mcu.variant == "normal" and b.mcu.detected_by == "heartbeat answer"


def test_normal_time_answer_and_record_type_report_0x34():
    sent = []
    m = TuyaMCU(
        DPS,
        lambda b: sent.append(bytes(b)),
        protocol="normal",
        wall_ms=lambda: WALL,
        tz_min=60,
        decimals=DECIMALS,
    )
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    for f in (
        tuya_frame(0x1C),
        tuya_frame(0x34, b"\x04"),
        tuya_frame(0x34, b"\x0b" + TIME7 + b"\x02" + REPORT_DPS),  # 8-byte time
        tuya_frame(0x34, b"\x0b" + TIME7 + REPORT_DPS),  # 7-byte time (no weekday)
    ):
        m.feed(f, len(f), emit)
    assert sent == [
        tuya_frame(0x1C, bytes((1, 23, 11, 14, 23, 13, 20, 2)), ver=0),  # UTC+1
        tuya_frame(0x34, b"\x04\x00", ver=0),
        tuya_frame(0x34, b"\x0b\x00", ver=0),
        tuya_frame(0x34, b"\x0b\x00", ver=0),
    ]
    assert out == EXPECT * 2


def test_time_unknown_is_answered_as_not_valid():
    sent = []
    m = TuyaMCU(DPS, lambda b: sent.append(bytes(b)), protocol="low_power", wall_ms=lambda: None)
    f = tuya_frame(0x06, ver=0)
    m.feed(f, len(f), lambda c, v: None)
    assert bytes(sent[-1]) == tuya_frame(0x06, bytes(8), ver=0)


def test_civil_dates():
    assert tuya_cmd.civil(0) == (1970, 1, 1)
    assert tuya_cmd.civil(11016) == (2000, 2, 29)
    assert tuya_cmd.civil(19675) == (2023, 11, 14)


def test_mcu_initiated_heartbeat_is_answered_not_taken_as_an_answer():
    sent = []
    m = TuyaMCU(DPS, lambda b: sent.append(bytes(b)), protocol="normal")
    m.tick(0, None)  # our heartbeat goes out
    f = tuya_frame(0x00)  # the MCU's own heartbeat: no data
    m.feed(f, len(f), None)
    assert bytes(sent[-1]) == tuya_frame(0x00, b"\x01", ver=0)
    assert m.mcu_heartbeats == 1 and not m.online
    m.tick(3000, None)  # ours is still unanswered
    assert m.heartbeat_misses == 1


@pytest.mark.parametrize("mode, status_sent", [(b"", True), (b"\x0e\x0d", False)])
def test_working_mode_decides_whether_the_wifi_status_is_sent(mode, status_sent):
    model = NormalMCU([], mode=mode)
    b = Bench(model, protocol="normal")
    b.run(500)
    assert (0x03 in model.cmds) == status_sent
    assert 0x08 in model.cmds and b.mcu.self_processing == (not status_sent)


def test_unhandled_commands_and_unmapped_dps_are_counted_with_their_bytes():
    m = TuyaMCU(DPS, lambda b: None, protocol="normal")
    frames = tuya_frame(0x0E, b"\x01") + tuya_frame(0x07, tuya_dp(99, 1, b"\x01"))
    m.feed(frames, len(frames), lambda c, v: None)
    st = m.stats()
    assert st["unhandled_cmd"] == 1 and st["unmapped_dp"] == 1
    assert st["cmds"] == {"0e": 1, "07": 1}  # frames per command
    assert st["bytes"]["unhandled"] == len(frames) and st["bytes"]["decoded"] == 0


def test_raw_dp_too_short_for_its_slice_is_rejected():
    m = TuyaMCU(DPS, lambda b: None, protocol="normal")
    out = []
    f = tuya_frame(0x07, tuya_dp(3, 0, b"\x01\x02\x03") + tuya_dp(4, 0, b"\x01" * 5))
    m.feed(f, len(f), lambda c, v: out.append((c, v)))
    assert out == [(3, 258)]  # the u16 slice fits, the i24 and bit slices do not
    assert m.table.errors["dp_len"] == 3  # two slices, and a 5-byte RAW without a slice
