# Parser throughput under unix MicroPython (edgectl bench inputs, docs/INPUTS.md 5): the same
# bytes fed through the line (kv and csv), Tuya and Modbus parsers in 64-byte UART reads, and a
# copy-only loop over the same reads as the baseline (what reading the UART costs). Prints one
# `@bench {json}` line. Usage: micropython inputs_bench.py SECONDS_PER_PARSER
import gc
import json
import struct
import sys
import time

from edge.bus.line import LineParser
from edge.bus.modbus import ModbusMaster
from edge.bus.tuya import TuyaMCU


def _sum8(b):
    return sum(b) & 0xFF


def tuya_stream(n):
    out = bytearray()
    for i in range(n):
        dps = (
            bytes((1, 1, 0, 1, i & 1))
            + bytes((2, 2, 0, 4))
            + struct.pack(">i", 200 + i % 50)
            + bytes((3, 4, 0, 1, i % 3))
        )
        h = bytes((0x55, 0xAA, 3, 7, 0, len(dps))) + dps
        out += h + bytes((_sum8(h),))
    return bytes(out)


def line_stream(n):
    out = bytearray()
    for i in range(n):
        out += b"T_FRIDGE=4.%d;T_FREEZER=-18.%d;DOOR=CLOSED;COMP=%d;POWER=%d\n" % (
            i % 10,
            i % 7,
            i & 1,
            80 + i % 9,
        )
    return bytes(out)


def csv_stream(n):
    out = bytearray(b"t,fridge,freezer,power\n")
    for i in range(n):
        out += b"%d,4.%d,-18.%d,%d\n" % (i, i % 10, i % 7, 80 + i % 9)
    return bytes(out)


class Wire:
    """The master's UART: each request is answered at once with the next reply."""

    def __init__(self, reply):
        self.reply = reply
        self.rx = b""

    def write(self, b):
        self.rx = self.reply
        return len(b)

    def readinto(self, buf):
        n = len(self.rx)
        if n:
            buf[0:n] = self.rx
            self.rx = b""
        return n


def _crc(b):
    c = 0xFFFF
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return bytes((c & 0xFF, c >> 8))


def run_stream(parser, data, secs):
    """Readings and bytes per second feeding `data` in 64-byte reads, repeatedly."""
    out = [0]

    def emit(c, v):
        out[0] += 1

    buf = bytearray(64)
    mv = memoryview(data)
    n = len(data)
    fed = 0
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < secs * 1000:
        for p in range(0, n, 64):
            k = min(64, n - p)
            buf[0:k] = mv[p : p + k]
            if parser is not None:
                parser.feed(buf, k, emit, 0)
            fed += k
    dt = time.ticks_diff(time.ticks_ms(), t0) / 1000
    return out[0] / dt, fed / dt


def run_modbus(secs):
    body = bytes((1, 4, 12)) + struct.pack(">ffI", 230.5, 1.25, 100000)
    wire = Wire(body + _crc(body))
    reads = [
        {
            "fn": 4,
            "addr": 0,
            "count": 6,
            "map": {
                "0": {"ch": 1, "type": "f32"},
                "2": {"ch": 2, "type": "f32"},
                "4": {"ch": 3, "type": "u32"},
            },
        }
    ]
    m = ModbusMaster(wire, 1, reads, interval_ms=0 + 10, timeout_ms=300, decimals={1: 1, 2: 3})
    out = [0]

    def emit(c, v):
        out[0] += 1

    now = 0
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < secs * 1000:
        for _ in range(100):
            now += 10
            m.poll(now, emit)
            m.poll(now, emit)
    dt = time.ticks_diff(time.ticks_ms(), t0) / 1000
    return out[0] / dt


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    res = {}
    keys = {
        "T_FRIDGE": 1,
        "T_FREEZER": 2,
        "DOOR": {"ch": 3, "enum": {"OPEN": 1, "CLOSED": 0}},
        "COMP": 4,
        "POWER": 5,
    }
    dec = {1: 1, 2: 1}
    line = line_stream(200)
    res["line_kv_readings_per_s"], res["line_kv_bytes_per_s"] = run_stream(
        LineParser({"keys": keys}, dec), line, secs
    )
    csv = csv_stream(200)
    res["line_csv_readings_per_s"], _ = run_stream(
        LineParser({"format": "csv", "columns": {"fridge": 1, "freezer": 2, "power": 5}}, dec),
        csv,
        secs,
    )
    tuya = tuya_stream(200)
    t = TuyaMCU({"1": 1, "2": 2, "3": 3}, lambda b: None, protocol="normal")
    res["tuya_readings_per_s"], res["tuya_bytes_per_s"] = run_stream(t, tuya, secs)
    res["modbus_readings_per_s"] = run_modbus(secs)
    _, res["copy_only_bytes_per_s"] = run_stream(None, line, secs)
    for k in res:
        res[k] = int(res[k])
    gc.collect()
    print("@bench " + json.dumps(res))


main()
