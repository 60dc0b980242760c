# Recovery over mutated raw log images (tests/test_rawlog.py): every image boots, every reading
# delivered is one the workload wrote, the store takes new readings and gives them back after
# another boot, and the NOR rules hold.
#   micropython rawlog_fuzz.py base IMAGE          -> the workload's image (16 blocks)
#   micropython rawlog_fuzz.py run IMAGE PATCHES   -> one JSON line, see below
# PATCHES: per case a u16 patch count, then per patch u32 offset, u32 length, the bytes; each
# case patches a fresh copy of IMAGE. Last line: {"cases", "crashes", "errors", "corrupt",
# "violations", "counts"}: counts[i] is the readings delivered per category of work.USED, or
# null when case i crashed.
import json
import struct
import sys

import rawlog_work as work

from edge.hal.unix.flashdev import FlashDev
from edge.store.rawlog import RawStore

BLOCKS = 16


def case(mem):
    dev = FlashDev(BLOCKS, mem=mem, nor=True)
    st = RawStore(dev, work.CFG, work.CATS, work.Hal())
    counts = []
    corrupt = 0
    for cat in work.USED:
        got, bad = work.read_back(st, cat)
        counts.append(len(got))
        corrupt += bad
    # the store takes new readings, and they are there after another boot
    first = st.next_seq
    for i in range(3):
        st.append(
            0, work.channel_of("essential"), work.ts_of(first + i), 0, work.value_of(first + i)
        )
    st.close()
    dev2 = FlashDev(BLOCKS, mem=mem, nor=True)
    st = RawStore(dev2, work.CFG, work.CATS, work.Hal())
    tail = [r[0] for r in work.read_back(st, "essential")[0]]
    if tail[-3:] != [first, first + 1, first + 2]:
        raise ValueError("new readings not back after a boot: %r" % tail[-5:])
    return counts, corrupt, dev.violations + dev2.violations


def main():
    if sys.argv[1] == "base":
        dev = FlashDev(BLOCKS, nor=True)
        work.run(dev, 3, 400)
        with open(sys.argv[2], "wb") as f:
            f.write(dev.mem)
        return
    with open(sys.argv[2], "rb") as f:
        base = f.read()
    mem = bytearray(len(base))
    out = {"cases": 0, "crashes": 0, "errors": [], "corrupt": 0, "violations": 0, "counts": []}
    src = open(sys.argv[3], "rb")
    while True:
        head = src.read(2)
        if len(head) < 2:
            break
        mem[:] = base
        for _ in range(struct.unpack("<H", head)[0]):
            off, n = struct.unpack("<II", src.read(8))
            src.readinto(memoryview(mem)[off : off + n])
        out["cases"] += 1
        try:
            counts, corrupt, viol = case(mem)
            out["counts"].append(counts)
            out["corrupt"] += corrupt
            out["violations"] += viol
        except Exception as e:  # any exception is the failure this test looks for
            out["crashes"] += 1
            out["counts"].append(None)
            if len(out["errors"]) < 10:
                out["errors"].append("case %d: %r" % (out["cases"] - 1, e))
    print(json.dumps(out))


main()
