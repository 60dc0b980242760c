# Recovery over random and mutated store files (docs/FORMAT.md 2): never crash on any byte pattern.
#   micropython store_fuzz.py CORPUS WORKDIR
# CORPUS: cases of three length-prefixed (u32 LE) blobs: older segment, newest segment,
# state.json (length 0xFFFFFFFF = file absent). Each case is placed in WORKDIR/store (as
# essential/00000001.seg and 00000002.seg), the store boots and reads everything back.
# Last line: {"cases", "crashes", "errors", "counts"} with the readings delivered per case.

import json
import os
import struct
import sys
import time

from edge import codec, config
from edge.store.store import Store


class Hal:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)


CFG = config.load()
CATS = config.category_ids(CFG)
NAMES = ("essential/00000001.seg", "essential/00000002.seg", "state.json")


def put(root, name, blob):
    try:
        os.remove(root + "/" + name)
    except OSError:
        pass
    if blob is not None:
        with open(root + "/" + name, "wb") as f:
            f.write(blob)


def main():
    root = sys.argv[2] + "/store"
    for d in (sys.argv[2], root, root + "/essential"):
        try:
            os.mkdir(d)
        except OSError:
            pass
    w = codec.BatchWriter("fz", 64 + 500 * codec.ENTRY_LEN)
    counts = []
    errors = []
    crashes = 0
    src = open(sys.argv[1], "rb")
    while True:
        head = src.read(4)
        if len(head) < 4:
            break
        for i, name in enumerate(NAMES):
            n = struct.unpack_from("<I", head if i == 0 else src.read(4))[0]
            put(root, name, None if n == 0xFFFFFFFF else src.read(n))
        try:
            st = Store(root, CFG, CATS, Hal())
            got = 0
            while True:
                w.start("essential", st.boot, 0)
                k, _s, _o = st.fill(0, w)
                if not k:
                    break
                got += k
            counts.append(got)
            st.close()
        except Exception as e:  # any exception here is the failure this test looks for
            crashes += 1
            counts.append(-1)
            if len(errors) < 10:
                errors.append("case %d: %r" % (len(counts) - 1, e))
        # a fresh store per case: the files the store itself wrote go too
        for fn in os.listdir(root + "/essential"):
            os.remove(root + "/essential/" + fn)
        put(root, "state.json", None)
    src.close()
    print(
        json.dumps({"cases": len(counts), "crashes": crashes, "errors": errors, "counts": counts})
    )


main()
