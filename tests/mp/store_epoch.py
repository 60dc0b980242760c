# Seqs across 2^32 (docs/FORMAT.md 1): the store hands out whole 48-bit seqs, writes one
# epoch per segment, reads them back whole after a reboot and batches them per epoch.
#   micropython store_epoch.py WORKDIR START
# Last line: {"segments": [[name, epoch, size]], "batches": [[first, last, n]], "next_seq"}

import json
import os
import sys
import time

from edge import codec, config
from edge.store.segment import save_state
from edge.store.store import Store


class Hal:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)


def main():
    root = sys.argv[1] + "/store"
    start = int(sys.argv[2])
    try:
        os.mkdir(root)
    except OSError:
        pass
    cfg = config.load(None, {"store": {"flush_n": 4}})
    cats = config.category_ids(cfg)
    save_state(root, 1, start, {})  # as if `start - 1` readings had been stored before
    st = Store(root, cfg, cats, Hal())
    for i in range(10):
        st.append(0, 1, 1000 + i, 0, i)
    st.close()
    st = Store(root, cfg, cats, Hal())  # a reboot: everything is read back from flash
    segs = []
    for name in sorted(os.listdir(root + "/essential")):
        with open(root + "/essential/" + name, "rb") as f:
            head = f.read(8)
            size = f.seek(0, 2)
        segs.append([name, head[6] | head[7] << 8, size])
    w = codec.BatchWriter(cfg["device_id"], 2000)
    batches = []
    while True:
        w.start("essential", st.boot, 0)
        n, seg, off = st.fill(0, w)
        if not n:
            break
        b = codec.decode_batch(bytes(w.finish()))
        r = b["readings"]
        batches.append([r[0][0], r[-1][0], len(r)])
        st.ack(0, r[-1][0], seg, off)
    print(json.dumps({"segments": segs, "batches": batches, "next_seq": st.next_seq}))


main()
