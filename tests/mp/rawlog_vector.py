# The raw log's golden vector (docs/FORMAT.md 8.9, tests/test_rawlog.py):
#   micropython rawlog_vector.py build IMAGE   -> writes IMAGE; prints {"expect": {...}}
#   micropython rawlog_vector.py read IMAGE    -> recovers IMAGE; prints {"got": {...}}
import json
import sys

import rawlog_work as work

from edge.hal.unix.flashdev import FlashDev
from edge.store.rawlog import RawStore

BLOCKS = 8


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "build":
        dev = FlashDev(BLOCKS, nor=True)
        kept = work.run(dev, 3, 150)
        with open(path, "wb") as f:
            f.write(dev.mem)
        print(json.dumps({"expect": kept, "violations": dev.violations}))
        return
    with open(path, "rb") as f:
        mem = bytearray(f.read())
    st = RawStore(FlashDev(BLOCKS, mem=mem, nor=True), work.CFG, work.CATS, work.Hal())
    got = {}
    for cat in work.USED:
        got[cat] = work.read_back(st, cat)[0]
    print(json.dumps({"got": got, "stats": st.stats}))


main()
