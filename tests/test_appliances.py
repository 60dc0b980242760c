"""The appliance models of host_tools/captures/appliances (the simulators the bus tests, the
capture simulator and `simulate --serve` share): requests found after noise, every fault kind,
the Tuya handshake answers."""

import pytest

from edge.bus.crc import crc16_modbus
from host_tools.captures.appliances import (
    Faults,
    LineAppliance,
    ModbusSlave,
    Pty,
    TuyaMCU,
    modbus_exception,
    modbus_request,
    modbus_response,
    serve,
    tuya_frame,
)


def crc_ok(frame):
    c = crc16_modbus(frame, 0, len(frame) - 2)
    return frame[-2] == c & 0xFF and frame[-1] == c >> 8


def test_slave_answers_a_request_after_noise_and_split_writes():
    s = ModbusSlave(7, {0: 0x1234, 1: 0xABCD})
    req = modbus_request(7, 3, 0, 2)
    assert s.feed(b"\x07\x03\xff" + req[:5]) == []
    assert s.feed(req[5:]) == [modbus_response(7, 3, [0x1234, 0xABCD])]
    assert s.feed(modbus_request(8, 3, 0, 2)) == []  # another slave's request
    assert s.requests == 1


def test_slave_faults_by_index_and_exceptions():
    s = ModbusSlave(1, {5: 42}, illegal=(9,), faults=Faults.parse("bad_crc@0,timeout@1,busy@2"))
    req = modbus_request(1, 4, 5, 1)
    bad = s.feed(req)[0]
    assert len(bad) == 7 and not crc_ok(bad)
    assert s.feed(req) == []
    assert s.feed(req) == [modbus_exception(1, 4, 6)]
    assert s.feed(req) == [modbus_response(1, 4, [42])]
    assert s.feed(modbus_request(1, 3, 8, 2)) == [modbus_exception(1, 3, 2)]
    assert s.faults.injected == [(0, "bad_crc"), (1, "timeout"), (2, "busy")]
    assert [w for _, w in s.log][:2] == [bad, None]


def test_fault_rates_are_seeded_and_text_errors_are_clear():
    a, b = Faults.parse("garbage:0.3", seed=4), Faults.parse("garbage:0.3", seed=4)
    assert [a.next() for _ in range(50)] == [b.next() for _ in range(50)]
    assert 5 < len(a.injected) < 30
    assert Faults().apply("garbage", b"\x01\x02").endswith(b"\x01\x02")
    assert Faults().apply("truncate", b"\x01\x02\x03\x04") == b"\x01\x02"
    for text in ("bad_crc", "smoke@1", "garbage:2"):
        with pytest.raises(ValueError):
            Faults.parse(text)


def test_tuya_mcu_handshake_answers():
    report = tuya_frame(0x07, b"\x01\x01\x00\x01\x01")
    m = TuyaMCU([report], noise=b"\xff")
    assert m.feed(tuya_frame(0x00, ver=0)) == [tuya_frame(0x00, b"\x00")]
    assert m.feed(tuya_frame(0x00, ver=0)) == [tuya_frame(0x00, b"\x01")]
    assert m.feed(tuya_frame(0x08, ver=0)[:3]) == []
    assert m.feed(tuya_frame(0x08, ver=0)[3:]) == [b"\xff" + report]
    assert m.cmds == [0x00, 0x00, 0x08]


def test_models_serve_live_on_a_pty():
    pty = Pty()
    slave = ModbusSlave(2, {0: 99})
    line = LineAppliance([(0, b"A=1\n")])
    servers = [serve(slave, pty)]
    try:
        os_fd = open(pty.path, "r+b", buffering=0)
        os_fd.write(modbus_request(2, 3, 0, 1))
        got = b""
        while len(got) < 7:
            got += os_fd.read(7 - len(got))
        assert got == modbus_response(2, 3, [99])
        assert line.due(0.0) == [b"A=1\n"] and line.due(1.0) == []
    finally:
        for s in servers:
            s.stop()
        os_fd.close()
        pty.close()
