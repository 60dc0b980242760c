# The device side of tests/vectors/auth.json under MicroPython: which acks edge/auth.py
# accepts (and the low 32 bits of each last seq), and the bytes it signs; one JSON line.
import binascii
import json
import sys

from edge import auth

with open(sys.argv[1]) as f:
    v = json.load(f)
key = binascii.unhexlify(v["key"])
check = auth.AckCheck(key, v["device"])
out = {"acks": [], "bad_acks": [], "receipts": []}
for a in v["acks"] + v["bad_acks"]:
    p = binascii.unhexlify(a["hex"])
    n = check.pairs(p)
    lasts = [auth.ack_last_low(p, i) for i in range(n)] if n > 0 else n
    out["acks" if "pairs" in a else "bad_acks"].append(lasts)
for r in v["receipts"]:
    out["receipts"].append(auth.sign_receipt(key, v["device"], r["body"].encode()).decode())
print(json.dumps(out))
