# Dual-runtime fuzz driver for the bus parsers. CPython imports it (100,000 cases per parser,
# in-process); unix MicroPython runs it as a script (smaller run).
# Every case: feed a mutated/garbage input, then a known-good message; the good message must
# come out exactly (resynchronisation), nothing may raise, and the byte ledger must add up
# (fed == decoded + unhandled + rejected + garbage + pending; nothing pending after a flush).

import random

from edge.bus.line import LineParser
from edge.bus.modbus import ModbusMaster
from edge.bus.tuya import TuyaMCU

LINE_KEYS = {
    "T1": 1,
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


def check_ledger(p, what):
    led = p.ledger
    if led.fed != led.decoded + led.unhandled + led.rejected + led.garbage + led.pending():
        raise RuntimeError("%s: byte ledger does not add up: %r" % (what, led.stats()))
    if led.pending() < 0 or min(led.decoded, led.unhandled, led.rejected, led.garbage) < 0:
        raise RuntimeError("%s: negative ledger bucket: %r" % (what, led.stats()))


def finish(p, what, res):
    """Flush at the end of the run: every byte classified, none pending."""
    p.flush(lambda c, v: None)
    check_ledger(p, what)
    if p.ledger.pending():
        raise RuntimeError("%s: %d bytes still pending after a flush" % (what, p.ledger.pending()))
    res["bytes"] = p.ledger.stats()
    return res


def fuzz_line(n, seed=1):
    random.seed(seed)
    p = LineParser({"keys": LINE_KEYS}, {1: 2})
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
        # the leading newline may complete the case's pending line; then the good pairs
        if out[-2:] != [(1, 1234), (3, -7)] or len(out) > 2 + case.count(b"=") + 1:
            raise RuntimeError("line parser did not resync after %r: %r" % (case, out))
        check_ledger(p, "line")
        del out[:]
    return finish(p, "line", {"cases": n, "errors": sum(p.errors.values())})


_FORMATS = (
    (
        {"format": "csv", "columns": {"t": 1, "p": 3}},
        b"t,p\n",
        b"21.5,-7\n",
        b'1,"x",3,,"\n',
    ),
    (
        {"format": "json", "keys": {"t": 1, "a.p": 3}},
        b"",
        b'{"t": 21.5, "a": {"p": -7}}\n',
        b'{"t": [1e400, {"a": "p"}], "a": {"p": "x"}}',
    ),
    (
        {
            "format": "regex",
            "pattern": r"T=(?P<t>-?[0-9.]+) P=(?P<p>-?[0-9]+)",
            "groups": {"t": 1, "p": 3},
        },
        b"",
        b"x T=21.5 P=-7 y\n",
        b"T=. P=- T=1e3 P=99999999999999",
    ),
    (
        {"assign": " ", "prefix": "bat:", "keys": {"t": 1, "p": 3}},
        b"",
        b"bat: t 21.5 p -7\n",
        b"bat: t t p p bat: q",
    ),
    (
        {"format": "fields", "sep": ",", "fields": {"0": 1, "2": 3}},
        b"",
        b"21.5,x,-7\n",
        b",,,,-,.,",
    ),
)


def fuzz_line_formats(n, seed=4):
    """csv, json, regex, key-value words and positional fields, in turn."""
    random.seed(seed)
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
    errors = 0
    total = {}
    per = n // len(_FORMATS) + 1
    done = 0
    for spec, head, good, tokens in _FORMATS:
        p = LineParser(spec, {1: 1})
        p.feed(head, len(head), emit)
        for _ in range(min(per, n - done)):
            if random.getrandbits(1):
                case = _mutate(good)
            else:
                case = bytes(random.choice(tokens) for _ in range(random.getrandbits(5)))
            p.feed(case, len(case), emit)
            if spec.get("format") == "csv" and random.getrandbits(4) == 0:
                again = b"\n" + head  # the header again, on its own line (a restart)
                p.feed(again, len(again), emit)
            del out[:]
            line = b"\n" + good
            p.feed(line, len(line), emit)
            if sorted(out[-2:]) != [(1, 215), (3, -7)] or len(out) > 4:
                raise RuntimeError("%s did not resync after %r: %r" % (spec, case, out))
            check_ledger(p, "line formats")
            del out[:]
            done += 1
        b = finish(p, "line formats", {})["bytes"]
        for k in b:
            total[k] = total.get(k, 0) + b[k]
        errors += sum(p.errors.values())
    return {"cases": done, "errors": errors, "bytes": total}


def _tuya_good_dp():
    return bytes((1, 1, 0, 1, 1)) + bytes((2, 2, 0, 4, 0, 0, 1, 44)) + bytes((3, 3, 0, 3)) + b"eco"


def fuzz_tuya(n, seed=2, protocol="auto"):
    random.seed(seed)
    sent = []
    mcu = TuyaMCU(TUYA_DPS, lambda b: sent.append(len(b)), protocol=protocol)
    out = []
    emit = lambda c, v: out.append((c, v))  # noqa: E731
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
            cmds = (0, 1, 2, 5, 6, 7, 8, 0x10, 0x22, 0x2B, 0x1C, 0x34, 0x55)
            if random.getrandbits(1):
                dps = bytes((0x0B,)) + _rbytes(random.getrandbits(3)) + dps  # record-type
            case = tuya_frame(random.choice(cmds), dps, random.choice((0, 3)))
        else:
            case = _mutate(tuya_frame(7, _tuya_good_dp()))
        now += 10
        mcu.feed(case, len(case), emit, now)
        now += 1000  # quiet line: a stalled partial frame is dropped
        mcu.tick(now, emit)
        del out[:]
        # the report command of the variant in force (auto may have switched on the case)
        good = tuya_frame(7 if mcu.variant == "normal" else 5, _tuya_good_dp())
        mcu.feed(good, len(good), emit, now)
        if out != expect:
            raise RuntimeError("tuya parser did not resync after %r: %r" % (case, out))
        check_ledger(mcu, "tuya")
        del out[:]
        del sent[:]
    res = {"cases": n, "errors": sum(mcu.errors.values()), "variant": mcu.variant}
    return finish(mcu, "tuya", res)


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
        check_ledger(m, "modbus")
        del out[:]
    return finish(m, "modbus", {"cases": n, "errors": sum(m.errors.values())})


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print("line", fuzz_line(n))
    print("formats", fuzz_line_formats(n))
    print("tuya", fuzz_tuya(n))
    print("lowpower", fuzz_tuya(n, 5, "low_power"))
    print("modbus", fuzz_modbus(n))
