"""Modbus RTU master (edge/bus/modbus.py) against an in-process wire: request bytes, decoding,
exception responses, timeouts, retries, CRC errors. The pty slave test is in test_bus_pty.py."""

import struct

import pytest

from edge.bus.crc import crc16_modbus
from edge.bus.modbus import ModbusMaster
from host_tools.captures.appliances import modbus_crc, modbus_exception, modbus_response

READS = [
    {
        "fn": 4,
        "addr": 0x0100,
        "count": 4,
        "map": {"256": 20, "257": {"ch": 21, "type": "i16"}, "258": {"ch": 22, "type": "u32"}},
    },
    {"fn": 3, "addr": 10, "count": 2, "map": {"10": {"ch": 23, "type": "i32", "swap": True}}},
]


class Wire:
    """The UART edge: records writes, returns queued bytes."""

    def __init__(self):
        self.tx = []
        self.rx = b""

    def write(self, b):
        self.tx.append(bytes(b))
        return len(b)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n


def cycle(m, wire, answers, t=0):
    """Drive the master; answers[i] is queued after the i-th request. Returns readings."""
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    sent = 0
    for step in range(400):
        now = t + step * 5
        m.poll(now, emit)
        if len(wire.tx) > sent:
            if sent < len(answers) and answers[sent] is not None:
                wire.rx += answers[sent]
            sent = len(wire.tx)
    return out


def test_crc16_check_value():
    assert crc16_modbus(b"123456789", 0, 9) == 0x4B37
    assert modbus_crc(b"\x01\x03\x00\x00\x00\x01") == bytes.fromhex("840a")


def test_requests_and_decoding_of_every_word_type():
    w = Wire()
    m = ModbusMaster(w, 7, READS, interval_ms=10000)
    out = cycle(
        m,
        w,
        [
            modbus_response(7, 4, [1234, 0xFFF6, 0x0001, 0x0002]),
            modbus_response(7, 3, [0xFFFE, 0xFFFF]),
        ],
    )
    assert w.tx[0] == bytes([7, 4, 1, 0, 0, 4]) + modbus_crc(bytes([7, 4, 1, 0, 0, 4]))
    assert w.tx[1][:6] == bytes([7, 3, 0, 10, 0, 2])
    assert out == [(20, 1234), (21, -10), (22, 65538), (23, -2)]
    assert m.responses == 2 and not any(m.errors.values())


def test_exception_response_is_counted_and_not_retried():
    w = Wire()
    m = ModbusMaster(w, 7, READS, interval_ms=10000)
    out = cycle(m, w, [modbus_exception(7, 4, 2), modbus_response(7, 3, [0, 5])])
    assert out == [(23, 5 << 16)]
    assert m.errors["exception"] == 1 and m.exceptions == {2: 1} and len(w.tx) == 2


def test_busy_exception_and_timeout_are_retried_then_given_up():
    w = Wire()
    m = ModbusMaster(w, 7, READS[:1], interval_ms=100000, timeout_ms=50, retries=2)
    out = cycle(m, w, [modbus_exception(7, 4, 6), None, modbus_response(7, 4, [1, 2, 3, 4])])
    assert out[0] == (20, 1) and len(w.tx) == 3
    assert m.exceptions == {6: 1} and m.errors["timeout"] == 1
    w2 = Wire()
    m2 = ModbusMaster(w2, 7, READS[:1], interval_ms=100000, timeout_ms=50, retries=1)
    assert cycle(m2, w2, []) == []
    assert len(w2.tx) == 2 and m2.errors["timeout"] == 2 and m2.errors["gave_up"] == 1


def test_bad_crc_and_leading_garbage():
    w = Wire()
    m = ModbusMaster(w, 7, READS[:1], interval_ms=100000, timeout_ms=50, retries=1)
    good = modbus_response(7, 4, [9, 8, 7, 6])
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    out = cycle(m, w, [bad, b"\x00\x07\x99" + good])
    assert out[0] == (20, 9)
    assert m.errors["crc"] == 1 and m.garbage_bytes >= 3


def test_response_split_at_every_byte():
    good = modbus_response(7, 4, [9, 8, 7, 6])
    for i in range(len(good) + 1):
        w = Wire()
        m = ModbusMaster(w, 7, READS[:1], interval_ms=100000)
        out = []
        emit = out.append
        m.poll(0, lambda c, v, emit=emit: emit((c, v)))
        w.rx = good[:i]
        m.poll(5, lambda c, v, emit=emit: emit((c, v)))
        w.rx += good[i:]
        m.poll(10, lambda c, v, emit=emit: emit((c, v)))
        assert out[0] == (20, 9), i


@pytest.mark.parametrize(
    "reads, key",
    [
        ([{"fn": 6, "map": {"0": 1}}], "reads[0].fn"),
        ([{"addr": 0, "count": 1, "map": {"5": 1}}], "reads[0].map.5"),
        ([{"count": 200, "map": {"0": 1}}], "reads[0].count"),
        ([{"map": {"0": {"ch": 1, "type": "f32"}}}], "reads[0].map.0"),  # 2 registers
        ([{"count": 2, "map": {"0": {"ch": 1, "type": "f24"}}}], "reads[0].map.0.type"),
        ([{"map": {"0": {"ch": 1, "type": "u8"}}}], "reads[0].map.0.type"),
        ([{"map": {"0": {"ch": 1, "bits": [12, 8]}}}], "reads[0].map.0.bits"),
        ([{"map": {"0": {"ch": 1, "swap": "nibble"}}}], "reads[0].map.0.swap"),
        ([{"map": {"0": {"ch": 1, "scale": "x"}}}], "reads[0].map.0.scale"),
    ],
)
def test_bad_config_names_the_key(reads, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("[", r"\[")):
        ModbusMaster(Wire(), 1, reads)


def ledger_adds_up(m):
    b = m.ledger.stats()
    assert b["fed"] == b["decoded"] + b["unhandled"] + b["rejected"] + b["garbage"] + b["pending"]
    return b


def test_float32_offsets_bit_fields_and_word_orders():
    """A float32 register pair in either word order, a degF register with scale and offset into
    a centi-degC channel, bit fields of a status register, a u32 beyond i32 (rejected)."""
    reads = [
        {
            "fn": 3,
            "addr": 0,
            "count": 10,
            "map": {
                "0": {"ch": 1, "type": "f32"},  # 230.5 V, ABCD
                "2": {"ch": 2, "type": "f32", "swap": "word"},  # 230.5 V, CDAB
                "4": {
                    "ch": 3,
                    "type": "i16",
                    "scale": 0.05555555555555555,
                    "offset": -17.77777777777778,
                },
                "5": [{"ch": 4, "bit": 0}, {"ch": 5, "bits": [4, 3]}, {"ch": 6, "bit": 15}],
                "6": {"ch": 7, "type": "u32", "swap": "word_byte"},  # little-endian 1000
                "8": {"ch": 8, "type": "u32"},  # 0xFFFFFFFF: outside the stored i32 range
            },
        }
    ]
    f32 = struct.pack(">f", 230.5)
    regs = [
        *struct.unpack(">HH", f32),
        *struct.unpack(">HH", f32[2:] + f32[:2]),
        725,  # 72.5 degF in 0.1 degF
        0b1000_0000_0101_0001,
        *struct.unpack(">HH", struct.pack("<I", 1000)),
        0xFFFF,
        0xFFFF,
    ]
    w = Wire()
    m = ModbusMaster(w, 7, reads, interval_ms=100000, decimals={1: 1, 2: 1, 3: 2})
    out = cycle(m, w, [modbus_response(7, 3, regs)])
    assert out == [(1, 2305), (2, 2305), (3, 2250), (4, 1), (5, 5), (6, 1), (7, 1000)]
    assert m.errors["value_range"] == 1
    assert ledger_adds_up(m)["decoded"] == 5 + 20


def test_float_nan_is_rejected_not_stored():
    reads = [{"fn": 3, "addr": 0, "count": 2, "map": {"0": {"ch": 1, "type": "f32"}}}]
    w = Wire()
    m = ModbusMaster(w, 7, reads, interval_ms=100000)
    nan = struct.unpack(">HH", struct.pack(">f", float("nan")))
    assert cycle(m, w, [modbus_response(7, 3, list(nan))]) == []
    assert m.errors["value_range"] == 1


def test_byte_ledger_over_garbage_crc_errors_and_timeouts():
    w = Wire()
    m = ModbusMaster(w, 7, READS[:1], interval_ms=100000, timeout_ms=50, retries=2)
    good = modbus_response(7, 4, [9, 8, 7, 6])
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    noise = b"\x00\x07\x99"
    out = cycle(m, w, [bad, None, noise + good])
    assert out[0] == (20, 9)
    b = ledger_adds_up(m)
    assert b["decoded"] == len(good) and b["rejected"] == len(bad) and b["garbage"] == 3
    # the bad frame is ignored and the master waits out its timeout (Serial Line 2.4.1)
    assert m.errors["crc"] == 1 and m.errors["timeout"] == 2 and b["pending"] == 0


def test_wake_ms_names_the_next_timer():
    w = Wire()
    m = ModbusMaster(w, 7, READS[:1], interval_ms=1000, timeout_ms=300)
    assert m.wake_ms(0) == 0
    m.poll(0, lambda c, v: None)  # request sent at 0
    assert m.wake_ms(0) == 300
    w.rx = modbus_response(7, 4, [1, 2, 3, 4])
    m.poll(20, lambda c, v: None)
    assert m.wake_ms(20) == 1000
