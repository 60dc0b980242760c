# Board-side half of `edgectl deploy`, sent over the raw REPL after a line that sets
# ROOTS (directories the deploy owns) and TOP (top-level files it owns). Prints one JSON line:
# {"files": {path: sha256 hex}, "dirs": [...]} for every file under ROOTS plus TOP, so the host
# copies only what differs and removes what is stale. Works on ESP32 firmware and unix.
# ruff: noqa: F821 - ROOTS and TOP are set by the line the host sends first
import binascii
import hashlib
import json
import os

_buf = bytearray(512)
_mv = memoryview(_buf)


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            n = f.readinto(_buf)
            if not n:
                break
            h.update(_mv[:n])
    return binascii.hexlify(h.digest()).decode()


def _walk(d, files, dirs):
    try:
        entries = list(os.ilistdir(d))
    except OSError:
        return
    dirs.append(d)
    for e in entries:
        p = d + "/" + e[0]
        if e[1] & 0x4000:
            _walk(p, files, dirs)
        else:
            files[p] = _sha(p)


_files = {}
_dirs = []
for _r in ROOTS:
    _walk(_r, _files, _dirs)
for _t in TOP:
    try:
        _files[_t] = _sha(_t)
    except OSError:
        pass
for _e in os.ilistdir("/"):
    if _e[0].endswith(".deploy-tmp"):
        _files["/" + _e[0]] = ""
print(json.dumps({"files": _files, "dirs": _dirs}))
