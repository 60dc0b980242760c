"""Regenerate the golden vectors of authenticated acks and signed receipts (run only when
docs/MQTT.md 8 or docs/CONSENT.md 6 change the format):
    python tests/vectors/make_auth_vectors.py
The host side (host_tools/backend/e2e.py) writes them; tests/test_auth.py checks that the
device side (edge/auth.py, under unix MicroPython) accepts, refuses and signs the same bytes."""

import json
import os

from host_tools.backend import e2e

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = bytes(range(100, 132))
DEVICE = "fridge-0001"


def main() -> None:
    good = [
        [[1, 100]],
        [[4294967290, 4294967389]],  # crosses 2^32: the whole 48-bit seqs are carried
        [[101, 200], [201, 300], [301, 400]],
        [[(7 << 32) + 1, (7 << 32) + 50]],
    ]
    acks = [
        {"pairs": p, "hex": e2e.signed_ack(DEVICE, [tuple(x) for x in p], KEY).hex()} for p in good
    ]
    one = e2e.signed_ack(DEVICE, [(1, 100)], KEY)
    tampered = bytearray(one)
    tampered[-20] ^= 1  # the last seq, tag unchanged
    bad = [
        {
            "why": "tag of another device",
            "hex": e2e.signed_ack("fridge-0002", [(1, 100)], KEY).hex(),
        },
        {"why": "another key", "hex": e2e.signed_ack(DEVICE, [(1, 100)], bytes(32)).hex()},
        {"why": "seq changed", "hex": bytes(tampered).hex()},
        {"why": "tag cut short", "hex": one[:-1].hex()},
        {"why": "count says 2", "hex": (one[:3] + b"\x02" + one[4:]).hex()},
        {"why": "version 2", "hex": (one[:2] + b"\x02" + one[3:]).hex()},
        {"why": "unauthenticated pair", "hex": e2e.ack_payload(1, 100).hex()},
        {"why": "empty", "hex": ""},
    ]
    bodies = [
        {"device": DEVICE, "version": 2, "grants": {"essential": True, "usage": False},
         "purged": {"usage": 28}, "seq": 931, "ts": 1795360284782, "via": "mqtt"},
        {"device": DEVICE, "version": 0, "grants": {"essential": True}, "seq": 1, "ts": None},
    ]  # fmt: skip
    receipts = []
    for b in bodies:
        body = json.dumps(b, separators=(",", ":")).encode()
        receipts.append(
            {"body": body.decode(), "signed": e2e.sign_receipt(DEVICE, body, KEY).decode()}
        )
    doc = {"key": KEY.hex(), "device": DEVICE, "acks": acks, "bad_acks": bad, "receipts": receipts}
    with open(os.path.join(HERE, "auth.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
