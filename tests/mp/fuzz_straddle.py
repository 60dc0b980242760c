# Streams of valid packets cut at every offset across the receive buffer's end, fed to
# edge.mqtt.parser exactly as the client's read loop does (read into the free tail, feed,
# compact). Every packet must come out whole and in order; a PUBLISH larger than the buffer
# is skipped as it streams in, with its packet id. Prints one JSON line.
#   micropython fuzz_straddle.py SEED [fit]    (fit: no packet larger than the buffer)
import json
import random
import sys

from edge.mqtt.parser import REASONS, Parser

BUF = 2048
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 1)


def varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return out


def publish(total, pid, tag):
    """A PUBLISH of exactly `total` bytes (QoS 1 when pid), topic edge/d/cmd/TAG."""
    topic = b"edge/d/cmd/" + tag
    head = len(topic) + 2 + (2 if pid else 0)
    for vl in (1, 2, 3):
        body = total - 1 - vl
        if len(varlen(body)) == vl and body >= head:
            pkt = bytearray([0x32 if pid else 0x30]) + varlen(body)
            pkt += len(topic).to_bytes(2, "big") + topic
            if pid:
                pkt += pid.to_bytes(2, "big")
            payload = bytes((tag[0] + k) & 0xFF for k in range(body - head))
            return pkt + payload, payload
    return None, None


def filler(n):
    """Packets of exactly n bytes in total (PINGRESPs, PUBACKs, a small PUBLISH)."""
    out = bytearray()
    want = []
    while n - len(out) >= 2:
        left = n - len(out)
        p, payload = publish(left, 0, b"f") if left >= 17 else (None, None)
        if p is not None:
            out += p
            want.append(("pub", payload, 0))
        elif left >= 4 and left != 5:
            out += b"\x40\x02\x00\x09"
            want.append(("puback", 9))
        else:
            out += b"\xd0\x00"
            want.append(("ping",))
    return out, want


got = []
rejects = [0] * len(REASONS)
rx = bytearray(BUF)


def parser():
    """A fresh parser per case, as the client has after each CONNACK."""
    p = Parser(rx)
    p.on_puback = lambda pid: got.append(("puback", pid))
    p.on_pingresp = lambda: got.append(("ping",))
    p.on_publish = lambda h, t, pl, pid: got.append(("pub", bytes(pl), pid))
    p.on_skipped = lambda t, pid, size: got.append(("skip", bytes(t), pid, size))
    return p


res = {"cases": 0, "mismatch": 0, "rejected": 0, "skipped": 0, "first_bad": None}
for off in range(0, BUF):
    stream, want = filler(off) if off != 1 else (bytearray(), [])
    if off == 1:
        continue  # no packet is 1 byte long
    sizes = [(900, 7), (900, 0), (3000 + random.getrandbits(12), 8), (BUF, 9), (40, 10)]
    if sys.argv[2:] == ["fit"]:
        del sizes[2]
    for size, pid in sizes:
        pkt, payload = publish(size, pid, b"x")
        stream += pkt
        if size > BUF:
            body = len(payload) + 2 + len(b"edge/d/cmd/x") + (2 if pid else 0)
            want.append(("skip", b"edge/d/cmd/x", pid, body))  # a tail of at most 24
        else:
            want.append(("pub", payload, pid))
    # the client's read loop: read what fits into the free tail, feed, compact
    got[:] = []
    p = parser()
    buf = p.buf
    have = 0
    sent = 0
    ok = True
    while sent < len(stream):
        n = min(BUF - have, len(stream) - sent, 1 + random.getrandbits(11))
        buf[have : have + n] = stream[sent : sent + n]
        sent += n
        have += n
        used = p.feed(have)
        if used < 0:
            res["rejected"] += 1
            rejects[p.reason] += 1
            ok = False
            break
        buf[: have - used] = buf[used:have]
        have -= used
    res["cases"] += 1
    if not ok or have or got != want:
        res["mismatch"] += 1
        if res["first_bad"] is None:
            res["first_bad"] = [off, str(got[-3:])[:300], str(want[-3:])[:300]]
    res["skipped"] += sum(1 for g in got if g[0] == "skip")
res["reasons"] = dict(zip(REASONS, rejects))  # noqa: B905 - MicroPython zip has no strict
print(json.dumps(res))
