# A deterministic raw log workload for the golden vector and the fuzz corpus (tests/
# test_rawlog.py): three boots on a small partition, readings in three categories with values
# derived from their seq, acknowledgements of `essential`, a purge of `usage`. Every byte it
# writes depends only on the workload, never on the clock.

from edge import codec, config
from edge.store.rawlog import RawStore

CFG = config.load(None, {"store": {"flush_n": 7, "flush_ms": 1000000}})
CATS = config.category_ids(CFG)
USED = ("essential", "diagnostics", "usage")


class Hal:
    def ticks_ms(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b


def ts_of(seq):
    return 1795000000000 + seq * 250


def value_of(seq):
    return (seq * 7919) % 20011 - 10000


def channel_of(cat):
    return 1 + CATS.index(cat)


def expected(reading, cat):
    """True when a delivered reading is one the workload wrote (nothing corrupt)."""
    seq, ts, _boot, _flags, ch, val = reading
    return ts == ts_of(seq) and val == value_of(seq) and ch == channel_of(cat)


def run(dev, boots, per_boot):
    """The workload on dev. Returns {category: [[seq, ts, boot, flags, channel, value], ...]}:
    what it committed and neither acknowledged nor purged, by its own bookkeeping."""
    kept = {c: [] for c in USED}
    for boot in range(boots):
        st = RawStore(dev, CFG, CATS, Hal())
        for i in range(per_boot):
            cat = USED[i % 3] if i % 5 else "essential"
            seq = st.next_seq
            flags = 1 if i % 11 == 0 else 0
            st.append(CATS.index(cat), channel_of(cat), ts_of(seq), flags, value_of(seq))
            kept[cat].append([seq, ts_of(seq), st.boot, flags, channel_of(cat), value_of(seq)])
        st.commit()
        w = codec.BatchWriter("v", 64 + 60 * codec.ENTRY_LEN)
        w.start("essential", st.boot, 0)
        n, pos, off = st.fill(0, w)
        if n:
            st.ack(0, w.last_seq, pos, off)
            kept["essential"] = [r for r in kept["essential"] if r[0] > w.last_seq]
        if boot == 1:
            st.purge(CATS.index("usage"))
            kept["usage"] = []
        st.close()
    return kept


def read_back(st, cat):
    """Every reading the store delivers for cat, as lists (seq, ts, boot, flags, ch, value),
    with the count of those the workload did not write (corrupt)."""
    out = []
    bad = 0
    w = codec.BatchWriter("v", 64 + 500 * codec.ENTRY_LEN)
    while True:
        w.start(cat, st.boot, 0)
        n, _pos, _off = st.fill(CATS.index(cat), w)
        if not n:
            return out, bad
        b = codec.decode_batch(bytes(w.finish()))
        for seq, ts, ch, val in b["readings"]:
            r = [seq, ts, b["boot"], b["flags"], ch, val]
            if not expected(r, cat):
                bad += 1
            out.append(r)
