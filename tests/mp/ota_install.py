# Feed a bundle to the installer (edge/ota/install.py) in 1 KiB chunks and print the outcome as
# JSON: {"ok": true, "version": ...} or {"ok": false, "error": ...}. Usage:
#   micropython ota_install.py ROOT BUNDLE PUB SIZE SHA256HEX POLICYJSON [CUT_AT]
# CUT_AT: stop after that many bytes, then resume in a new installer (a reboot).
import binascii
import json
import sys

from edge.ota.install import Installer

root, path, pubf, size, sha, pol = sys.argv[1:7]
cut = int(sys.argv[7]) if len(sys.argv) > 7 else -1
src = open(path, "rb")  # read chunk by chunk, as a device receives it
src.seek(0, 2)
total = src.tell()


def chunk(off, n):
    src.seek(off)
    return src.read(n)


with open(pubf, "rb") as f:
    pub = f.read()
policy = json.loads(pol)
policy["pub"] = pub
policy.setdefault("mpy", sys.implementation._mpy)
policy.setdefault("platform", "unix")
size = int(size)
digest = binascii.unhexlify(sha)
out = {"ok": False}
try:
    ins = Installer(root, "b", size, digest, policy)
    off = ins.start()
    if cut >= 0:
        while off < cut:
            ins.feed(chunk(off, min(1024, cut - off)))
            off = min(off + 1024, cut)
        ins.close()
        ins = Installer(root, "b", size, digest, policy)
        off = ins.resume()
        out["resumed_at"] = off
    while off < total:
        ins.feed(chunk(off, 1024))
        off += 1024
    m = ins.finish()
    out = dict(out, ok=True, version=m["version"], files=len(m["files"]))
except ValueError as e:  # InstallError and BundleError
    out["error"] = str(e)
print(json.dumps(out))
