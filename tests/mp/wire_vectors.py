# Evaluates the golden vectors of edge/wire.py (tests/vectors/wire.json) and prints the results
# as one JSON line. Dual-runtime: tests/test_wire.py imports run() under CPython and runs this
# file under unix MicroPython; both results must equal the committed expectations.
#   micropython wire_vectors.py tests/vectors/wire.json
import binascii
import json
import sys

from edge import wire


def _hex(b):
    return binascii.hexlify(b).decode()


def _bytes(case, key):
    return binascii.unhexlify(case[key]) if key in case else b""


def _one(case):
    op = case["op"]
    a = case.get("args", [])
    if op == "name_ok":
        return wire.name_ok(a[0])
    if op == "ticks_diff":
        return wire.ticks_diff(a[0], a[1])
    if op == "ticks_to_wall":
        return wire.ticks_to_wall(a[0], a[1], a[2])
    if op == "consent_signed_bytes":
        return wire.consent_signed_bytes(a[0], a[1]).decode()
    if op == "hmac_sha256":
        return _hex(wire.hmac_sha256(_bytes(case, "key"), _bytes(case, "msg")))
    if op == "consent_sig":
        return wire.consent_sig(_bytes(case, "key"), a[0], a[1])
    if op == "consent_state":
        return wire.consent_state(*a)
    if op == "seg_head":
        buf = bytearray(wire.SEG_HEAD_LEN)
        wire.seg_head(buf, a[0], a[1])
        return _hex(buf)
    if op == "seg_head_read":
        r = wire.seg_head_read(memoryview(_bytes(case, "data")))
        return None if r is None else list(r)
    if op == "feed_records":
        return _hex(wire.feed_records(a[0], _bytes(case, "data")))
    if op == "feed_head":
        try:
            return list(wire.feed_head(_bytes(case, "data")))
        except ValueError:
            return "ValueError"
    if op == "serve_record":
        try:
            return _hex(wire.serve_record(*(a + [_bytes(case, "data")])))
        except ValueError:
            return "ValueError"
    if op == "serve_head":
        try:
            return list(wire.serve_head(_bytes(case, "data")))
        except ValueError:
            return "ValueError"
    return "unknown op " + op


def run(cases):
    """{case id: result} for every case."""
    out = {}
    for case in cases:
        out[case["id"]] = _one(case)
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    res = run(doc["cases"])
    if sys.implementation.name == "micropython":
        # the device's own tick arithmetic agrees with the shared one where no wrap is involved
        # (the unix port's ticks wrap at 2^62, an ESP32's at 2^30)
        import time

        for c in doc["cases"]:
            if c.get("native"):
                res["native " + c["id"]] = time.ticks_diff(c["args"][0], c["args"][1])
    print(json.dumps(res))
