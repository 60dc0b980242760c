# Decode every golden vector under MicroPython and print the results as one JSON line.
import json
import sys

from record_scan import scan

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
    out[v["file"]] = scan(data)
print(json.dumps(out))
