"""Tuya MCU serial protocol (edge/bus/tuya.py), module side: DP types, the init handshake,
splits at every byte, garbage, bit flips, stalled frames, the byte ledger. The protocol
variants (low power, record-type reports, working modes) are in test_bus_tuya_variants.py."""

import re
import struct

import pytest

from edge.bus.tuya import TuyaMCU
from host_tools.captures.appliances import tuya_dp, tuya_frame

DPS = {
    "1": 10,
    "2": {"ch": 11, "mul": 10},
    "3": {"ch": 12, "map": {"idle": 0, "wash": 1}},
    "4": 13,
    "5": 14,
    "6": {"ch": 15, "raw": {"offset": 1, "size": 2, "signed": True}},
    "7": 16,
}
REPORT = tuya_frame(
    0x07,
    tuya_dp(1, 1, b"\x01")
    + tuya_dp(2, 2, struct.pack(">i", -215))
    + tuya_dp(3, 3, b"wash")
    + tuya_dp(4, 4, b"\x02")
    + tuya_dp(5, 5, b"\x01\x02")
    + tuya_dp(6, 0, b"\x09\xff\x38\x00")
    + tuya_dp(7, 3, b"-42"),
)
EXPECT = [(10, 1), (11, -2150), (12, 1), (13, 2), (14, 258), (15, -200), (16, -42)]


class Module:
    def __init__(self, **kw):
        kw.setdefault("protocol", "normal")
        self.sent = []
        self.mcu = TuyaMCU(DPS, lambda b: self.sent.append(bytes(b)), **kw)
        self.out = []

    def feed(self, data, now=0):
        n = self.mcu.feed(data, len(data), lambda c, v: self.out.append((c, v)), now)
        return n

    def tick(self, now):
        return self.mcu.tick(now, lambda c, v: self.out.append((c, v)))


def test_frame_checksum_matches_the_protocol_example():
    # Tuya doc heartbeat example: 55 aa 00 00 00 00 ff
    assert tuya_frame(0, b"", ver=0).hex() == "55aa00000000ff"


def test_dp_report_of_every_type_maps_to_channels():
    m = Module()
    assert m.feed(REPORT) == len(EXPECT)
    assert m.out == EXPECT
    assert m.mcu.frames == 1 and not any(m.mcu.errors.values())


def test_handshake_heartbeat_product_mode_status_and_dp_query():
    m = Module()
    m.tick(0)
    assert m.sent == [tuya_frame(0x00, b"", ver=0)]
    m.feed(tuya_frame(0x00, b"\x00"))  # first answer after MCU boot
    assert m.sent[-1] == tuya_frame(0x01, b"", ver=0) and m.mcu.mcu_restarts == 1
    m.feed(tuya_frame(0x01, b'{"p":"x","v":"1.0.0"}'))
    assert m.sent[-1] == tuya_frame(0x02, b"", ver=0) and m.mcu.product.startswith(b'{"p"')
    m.feed(tuya_frame(0x02))
    assert m.sent[-2:] == [tuya_frame(0x03, b"\x04", ver=0), tuya_frame(0x08, b"", ver=0)]
    m.feed(tuya_frame(0x2B))  # MCU asks for the network status
    assert m.sent[-1] == tuya_frame(0x2B, b"\x04", ver=0)
    m.feed(tuya_frame(0x22, tuya_dp(1, 1, b"\x00")))  # synchronous report wants an ack
    assert m.sent[-1] == tuya_frame(0x23, b"\x01", ver=0) and m.out[-1] == (10, 0)
    assert m.mcu.online


def test_heartbeat_period_and_missed_answers():
    m = Module(heartbeat_ms=15000)
    m.tick(0)
    m.tick(2999)
    assert len(m.sent) == 1
    m.tick(3000)  # unanswered: counted, offline, fast retry
    assert m.mcu.heartbeat_misses == 1 and not m.mcu.online and len(m.sent) == 2
    m.feed(tuya_frame(0x00, b"\x01"), 3100)
    assert m.mcu.online
    m.tick(6000)  # the fast retry; after it, every 15 s once online
    n = len(m.sent)
    m.tick(20999)
    assert len(m.sent) == n
    m.tick(21000)
    assert len(m.sent) == n + 1


def test_split_at_every_byte():
    for i in range(len(REPORT) + 1):
        m = Module()
        m.feed(REPORT[:i])
        m.feed(REPORT[i:])
        assert m.out == EXPECT, i


def ledger_adds_up(mcu):
    b = mcu.ledger.stats()
    assert b["fed"] == b["decoded"] + b["unhandled"] + b["rejected"] + b["garbage"] + b["pending"]
    return b


def test_garbage_between_frames_is_skipped_and_counted():
    m = Module()
    noise = b"\x00\x55\x55\xaa\xffjunk"
    m.feed(noise + REPORT + b"\x55" + REPORT)
    assert m.out == EXPECT + EXPECT
    b = ledger_adds_up(m.mcu)
    assert b["decoded"] == 2 * len(REPORT) and b["pending"] == 0
    # "55 aa ff 6a" reads as a header with a 0x6a75-byte length: rejected, not garbage
    assert b["garbage"] + b["rejected"] == len(noise) + 1 and m.mcu.errors["too_long"] == 1


def test_every_bit_flip_is_rejected_and_the_next_frame_still_parses():
    for i in range(len(REPORT) * 8):
        bad = bytearray(REPORT)
        bad[i // 8] ^= 1 << (i % 8)
        m = Module()
        m.feed(bytes(bad) + REPORT, 0)
        m.tick(1000)  # a corrupted length may hold a partial frame until the line goes quiet
        assert m.out == EXPECT, (i, m.out)
        e = m.mcu.errors
        b = ledger_adds_up(m.mcu)
        assert b["decoded"] == len(REPORT) and b["pending"] == 0, (i, b)
        # one broken frame: at most one rejection, its bytes rejected or (a flipped header)
        # passed over as garbage
        assert e["checksum"] + e["too_long"] + e["timeout"] <= 1, (i, e)
        assert b["rejected"] + b["garbage"] == len(REPORT), (i, b)


def test_dp_errors_are_counted():
    m = Module()
    bad = (
        tuya_dp(1, 1, b"\x01\x02")
        + tuya_dp(2, 2, b"\x01")
        + tuya_dp(3, 3, b"spin")
        + tuya_dp(5, 5, b"\x01\x02\x03")
        + tuya_dp(4, 9, b"\x01")
        + tuya_dp(99, 1, b"\x01")
        + bytes([4, 4, 0, 9, 1])
    )
    m.feed(tuya_frame(0x07, bad))
    e = m.mcu.table.errors
    assert m.out == []
    assert e["dp_len"] == 2 + 1 and e["dp_value"] == 1 and e["dp_type"] == 1
    assert e["dp_truncated"] == 1 and m.mcu.unmapped_dp == 1


def test_oversized_length_is_rejected():
    m = Module(max_len=16)
    m.feed(tuya_frame(0x07, b"\x00" * 40) + REPORT[:0] + tuya_frame(0x07, tuya_dp(1, 1, b"\x01")))
    assert m.mcu.errors["too_long"] == 1 and m.out == [(10, 1)]


@pytest.mark.parametrize(
    "dps, key",
    [
        ({"x": 1}, "dps.x"),
        ({"0": 1}, "dps.0"),
        ({"1": {"ch": 1, "raw": {"size": 3}}}, "dps.1.raw.size"),
        ({"1": {"ch": 1, "slice": {"type": "u12"}}}, "dps.1.slice.type"),
        ({"1": [{"ch": 1}, {"ch": 2, "slice": {"bits": [30, 4]}}]}, "dps.1[1].slice.bits"),
        ({"1": []}, "dps.1"),
    ],
)
def test_bad_config_names_the_key(dps, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        TuyaMCU(dps, lambda b: None)
