# Dual-runtime fuzz driver for the bus parsers (issue 6 item 9). CPython imports it (100,000
# cases per parser, in-process); unix MicroPython runs it as a script (smaller run).
# Every case: feed a mutated/garbage input, then a known-good message; the good message must
# come out exactly (resynchronisation), and nothing may raise.

import random

from edge.bus.line import LineParser
from edge.bus.modbus import ModbusMaster
from edge.bus.tuya import TuyaMCU

LINE_KEYS = {
    "T1": {"ch": 1, "scale": 2},
    "P": 3,
    "DOOR": {"ch": 5, "enum": {"OPEN": 1, "SHUT": 0}},
}
TUYA_DPS = {
    "1": 10,
    "2": 11,
    "3": {"ch": 12, "map": {"eco": 1}},
    "4": 13,
    "5": 14,
    "6": {"ch": 15, "raw": {"offset": 0, "size": 2}},
}
_LINE_TOKENS = (
    b"T1",
    b"P",
    b"DOOR",
    b"=",
    b";",
    b"\n",
    b"\r",
    b"-",
    b".",
    b"OPEN",
    b"12",
    b"99999999999",
    b"X",
    b" ",
    b"\x00",
    b"\xff",
    b"=;",
)


def _rbytes(n):
    return bytes(random.getrandbits(8) for _ in range(n))


def _sum8(b):
    s = 0
    for x in b:
        s += x
    return s & 0xFF


def tuya_frame(cmd, data, ver=3):
    h = bytes((0x55, 0xAA, ver, cmd, len(data) >> 8, len(data) & 0xFF)) + data
    return h + bytes((_sum8(h),))


def _mutate(b):
    b = bytearray(b)
    k = random.getrandbits(3)
    if k == 0 and b:  # bit flip
        i = random.getrandbits(16) % len(b)
        b[i] ^= 1 << random.getrandbits(3)
    elif k == 1 and b:  # truncate
        b = b[: random.getrandbits(16) % len(b)]
    elif k == 2:  # insert random bytes
        i = random.getrandbits(16) % (len(b) + 1)
        b = b[:i] + _rbytes(1 + random.getrandbits(3)) + b[i:]
    elif k == 3:
        b = bytearray(_rbytes(random.getrandbits(6)))
    elif k == 4 and b:  # random byte value
        b[random.getrandbits(16) % len(b)] = random.getrandbits(8)
    return bytes(b)


def fuzz_line(n, seed=1):
    random.seed(seed)
    p = LineParser(LINE_KEYS)
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    good = b"\nT1=12.34;P=-7\n"
    for _ in range(n):
        if random.getrandbits(1):
            case = b"".join(random.choice(_LINE_TOKENS) for _ in range(random.getrandbits(4)))
        else:
            case = _mutate(b"T1=21.50;P=1200;DOOR=OPEN\n")
        p.feed(case, len(case), emit)
        del out[:]
        p.feed(good, len(good), emit)
        # the leading newline may complete one pending pair of the case; then the good pairs
        if out[-2:] != [(1, 1234), (3, -7)] or len(out) > 3:
            raise RuntimeError("line parser did not resync after %r: %r" % (case, out))
        del out[:]
    return {"cases": n, "errors": sum(p.errors.values())}


def _tuya_good_dp():
    return bytes((1, 1, 0, 1, 1)) + bytes((2, 2, 0, 4, 0, 0, 1, 44)) + bytes((3, 3, 0, 3)) + b"eco"


def fuzz_tuya(n, seed=2):
    random.seed(seed)
    sent = []
    mcu = TuyaMCU(TUYA_DPS, lambda b: sent.append(len(b)))
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    good = tuya_frame(7, _tuya_good_dp())
    expect = [(10, 1), (11, 300), (12, 1)]
    now = 0
    for _ in range(n):
        k = random.getrandbits(2)
        if k == 0:
            case = _rbytes(random.getrandbits(6))
        elif k == 1:  # random DP units inside a valid frame
            dps = b"".join(
                bytes((1 + random.getrandbits(3), random.getrandbits(3), 0, random.getrandbits(3)))
                + _rbytes(random.getrandbits(3))
                for _ in range(random.getrandbits(2))
            )
            case = tuya_frame(random.choice((0, 1, 2, 7, 0x22, 0x2B, 0x1C, 0x55)), dps)
        else:
            case = _mutate(tuya_frame(7, _tuya_good_dp()))
        now += 10
        mcu.feed(case, len(case), emit, now)
        now += 1000  # quiet line: a stalled partial frame is dropped
        mcu.tick(now, emit)
        del out[:]
        mcu.feed(good, len(good), emit, now)
        if out != expect:
            raise RuntimeError("tuya parser did not resync after %r: %r" % (case, out))
        del out[:]
        del sent[:]
    return {"cases": n, "errors": sum(mcu.errors.values()), "garbage": mcu.garbage_bytes}


class _Wire:
    """Hardware-edge fake for the in-process fuzz: what the master writes is dropped, what the
    test queues is read back."""

    def __init__(self):
        self.rx = b""

    def write(self, b):
        return len(b)

    def readinto(self, buf):
        n = min(len(buf), len(self.rx))
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n


def _mb_crc(b):
    crc = 0xFFFF
    for x in b:
        crc ^= x
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes((crc & 0xFF, crc >> 8))


def _mb_resp(regs, slave=1, fn=3):
    body = bytes((slave, fn, 2 * len(regs)))
    for r in regs:
        body += bytes((r >> 8, r & 0xFF))
    return body + _mb_crc(body)


def fuzz_modbus(n, seed=3):
    random.seed(seed)
    wire = _Wire()
    reads = [{"fn": 3, "addr": 0, "count": 2, "map": {"0": 20, "1": {"ch": 21, "type": "i16"}}}]
    m = ModbusMaster(wire, 1, reads, interval_ms=100, timeout_ms=50, retries=0)
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    now = 0
    for _ in range(n):
        # start a request
        now += 200
        m.poll(now, emit)
        now += 5
        m.poll(now, emit)
        k = random.getrandbits(2)
        if k == 0:
            case = _rbytes(random.getrandbits(5))
        elif k == 1:  # CRC-valid frame with random content
            body = bytes((1, random.choice((3, 0x83, 4, 16)), random.getrandbits(3))) + _rbytes(
                random.getrandbits(3)
            )
            case = body + _mb_crc(body)
        else:
            case = _mutate(_mb_resp([random.getrandbits(16), random.getrandbits(16)]))
        wire.rx = case
        m.poll(now, emit)
        now += 100  # time out whatever is pending
        m.poll(now, emit)
        wire.rx = b""
        del out[:]
        # a clean exchange must decode
        now += 200
        m.poll(now, emit)
        now += 5
        m.poll(now, emit)
        wire.rx = _mb_resp([1000, 0xFFFE])
        m.poll(now, emit)
        if out != [(20, 1000), (21, -2)]:
            raise RuntimeError("modbus master did not recover after %r: %r" % (case, out))
        del out[:]
    return {"cases": n, "errors": sum(m.errors.values()), "garbage": m.garbage_bytes}


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print("line", fuzz_line(n))
    print("tuya", fuzz_tuya(n))
    print("modbus", fuzz_modbus(n))
