# Decode every golden vector under MicroPython and print the results as one JSON line.
import json
import sys

from edge import codec

base = sys.argv[1]
with open(base + "/vectors.json") as f:
    vectors = json.load(f)
out = {}
for v in vectors["batches"]:
    with open(base + "/" + v["file"], "rb") as f:
        data = f.read()
    try:
        b = codec.decode_batch(data)
        b["readings"] = [list(r) for r in b["readings"]]
        out[v["file"]] = b
    except codec.FormatError:
        out[v["file"]] = {"error": "FormatError"}
for v in vectors["records"]:
    with open(base + "/" + v["file"], "rb") as f:
        data = f.read()
    res = []
    off = 0
    while off < len(data):
        r = codec.check_record(data, off)
        if r == 1:
            res.append(list(codec.unpack_record(data, off)))
            off += codec.REC_LEN
        elif r == 0:
            res.append("corrupt")
            off += 1
        else:
            res.append("torn")
            break
    out[v["file"]] = res
print(json.dumps(out))
