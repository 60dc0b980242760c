# Feed the client's inbound parser (edge.mqtt.parser) N malformed, truncated and oversized packets
# in-process. Prints one JSON line with the counts.
import json
import random
import sys

from edge.mqtt.parser import REASONS, Parser

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 4)
BUF = 2048
buf = bytearray(BUF)
p = Parser(buf)
events = [0, 0, 0, 0]


def _pa(pid):
    events[0] += 1


def _pub(h, t, pl, pid):
    events[1] += 1


def _sa(pid, rc):
    events[2] += 1


def _pr():
    events[3] += 1


p.on_puback, p.on_publish, p.on_suback, p.on_pingresp = _pa, _pub, _sa, _pr


def varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return out


def valid():
    k = random.getrandbits(2)
    if k == 0:
        return bytearray(b"\x40\x02") + bytes([random.getrandbits(8), random.getrandbits(8) | 1])
    if k == 1:
        topic = b"edge/d/cmd/ping"
        body = bytearray(len(topic).to_bytes(2, "big")) + topic + b"\x00\x07" + b"{}"
        return bytearray(b"\x32") + varlen(len(body)) + body
    if k == 2:
        return bytearray(b"\x90\x03\x00\x01\x01")
    return bytearray(b"\xd0\x00")


def mutate(pkt):
    m = random.getrandbits(3)
    if m == 0:  # truncated
        return pkt[: random.getrandbits(8) % max(len(pkt), 1)]
    if m == 1:  # bit flips
        for _ in range(1 + random.getrandbits(2)):
            i = random.getrandbits(16) % len(pkt)
            pkt[i] ^= 1 << random.getrandbits(3)
        return pkt
    if m == 2:  # random type and flags
        pkt[0] = random.getrandbits(8)
        return pkt
    if m == 3:  # oversized: claims more than the receive buffer
        return bytearray([0x30]) + varlen(BUF + random.getrandbits(20)) + pkt[2:]
    if m == 4:  # 5-byte remaining length
        return bytearray([pkt[0], 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]) + pkt[2:]
    if m == 5:  # random garbage
        return bytearray(random.getrandbits(8) for _ in range(1 + random.getrandbits(6)))
    if m == 6:  # wrong remaining length
        pkt[1] = random.getrandbits(7)
        return pkt
    return valid() + mutate(valid())  # a good packet followed by a bad one


res = {"cases": 0, "rejected": 0, "incomplete": 0, "accepted": 0, "crashes": 0, "bad_return": 0}
for _ in range(N):
    pkt = mutate(valid())
    n = min(len(pkt), BUF)
    buf[:n] = pkt[:n]
    res["cases"] += 1
    p.reset()  # each case is a fresh connection's buffer
    try:
        r = p.feed(n)
    except Exception as e:  # noqa: BLE001 - any exception is a crash the test reports
        res["crashes"] += 1
        res["last_crash"] = repr(e)
        continue
    if r < 0:
        res["rejected"] += 1
    elif r < n:
        res["incomplete"] += 1
    elif r == n:
        res["accepted"] += 1
    else:
        res["bad_return"] += 1
res["skipping"] = p.skipped()
res["reasons"] = dict(zip(REASONS, p.rejects))  # noqa: B905 - MicroPython zip has no strict
res["events"] = events
print(json.dumps(res))
