# Build a store on a file-backed emulated flash, as the unix agent does (edge.hal.unix.hal):
#   micropython store_image.py IMAGE N [BOOTS]  -> N readings per boot, BOOTS boots (default 1)
# Prints a JSON line per boot: {"boot", "first", "last", "recovered"} (readings read back).

import json
import sys
import time

import vfs

from edge import codec, config
from edge.hal.unix.flashdev import FlashDev, mount
from edge.store.store import Store


class Hal:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)


def one_boot(image, n):
    dev = FlashDev(image=image)
    mount(dev, "/flash")
    cfg = config.load()
    cats = config.category_ids(cfg)
    st = Store("/flash/store", cfg, cats, Hal())
    w = codec.BatchWriter("img", 64 + 1000 * codec.ENTRY_LEN)
    seen = []
    while True:
        w.start("essential", st.boot, 0)
        got, _s, _o = st.fill(0, w)
        if not got:
            break
        seen.extend(r[0] for r in codec.decode_batch(bytes(w.finish()))["readings"])
    first = st.next_seq
    for i in range(n):
        st.append(0, 1, 1700000000000 + i, 0, i)
    st.close()
    vfs.umount("/flash")
    dev.close()
    print(json.dumps({"boot": st.boot, "first": first, "last": first + n - 1, "recovered": seen}))


for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
    one_boot(sys.argv[1], int(sys.argv[2]))
