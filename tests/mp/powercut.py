# Power-cut harness for the store (issue 3, TOOLCHAIN 3, littlefs "reentrant" testing).
# Runs a reference workload on an emulated NOR flash, cuts power at flash operation K (the cut
# operation may be torn), reboots a new device over the surviving bytes and checks invariants.
# All cuts run inside this one MicroPython process. Usage:
#   micropython powercut.py count [WSEED]          -> {"ops": N, "steps": S}
#   micropython powercut.py every START STOP [WSEED] -> cut at every K in [START, STOP)
#   micropython powercut.py random SEED N           -> N random cuts over 4 workload seeds
#   (append `broken` to run against a store whose commit does not flush: must fail)
# The last stdout line is a JSON summary; "violations" must be 0.

import json
import sys
import time

import vfs
from cutlib import Hal, abandon

from edge import codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.store.store import SEG_FIRST, Store

BLOCKS = 96  # 384 KiB: small, so quotas, eviction and block reuse happen within the workload
CFG = config.load(
    None,
    {
        "categories": {
            "essential": {"quota": 20480, "evict": "drop_oldest"},
            "diagnostics": {"quota": 8192, "evict": "drop_oldest"},
        },
        "store": {"flush_n": 6, "flush_ms": 1000000, "segment_bytes": 600, "total_bytes": 12288},
    },
)
CATS = config.category_ids(CFG)  # the workload uses 0 (essential) and 1 (diagnostics)


HAL = Hal()


def value_of(seq):
    return (seq * 7919) % 200003 - 100000


def ts_of(seq):
    return 1700000000000 + seq * 10


class Lcg:
    def __init__(self, seed):
        self.x = seed & 0x7FFFFFFF or 1

    def next(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


def workload(wseed):
    """The reference workload: a list of steps; each is (kind, arg)."""
    r = Lcg(wseed)
    steps = []
    for rnd in range(60):
        for _ in range(1 + r.next(9)):
            steps.append(("append", r.next(2)))
        if r.next(3):
            steps.append(("commit", 0))
        if rnd % 3 == 1:
            steps.append(("ack", 0))  # `diagnostics` is never acked: it evicts
        if rnd % 4 == 3:
            steps.append(("save", 0))
    steps.append(("commit", 0))
    return steps


class Run:
    """One life of the workload on a device, tracking what the store promised."""

    def __init__(self, dev, mount):
        self.dev = dev
        self.mount = mount
        self.appended = [[] for _ in range(2)]  # seqs per category, in order
        self.handed = 0  # highest seq handed out
        self.store = None
        self.writer = codec.BatchWriter("pc", 64 + 8 * codec.ENTRY_LEN)

    def boot(self):
        self.store = Store(self.mount + "/store", CFG, CATS, HAL)

    def step(self, kind, arg):
        st = self.store
        if kind == "append":
            seq = st.next_seq
            self.handed = seq
            got = st.append(arg, 1 + arg, ts_of(seq), 0, value_of(seq))
            if got != seq:
                raise ValueError("append returned %d, expected %d" % (got, seq))
            self.appended[arg].append(seq)
        elif kind == "commit":
            st.commit()
        elif kind == "ack":
            w = self.writer
            w.start("essential", st.boot, 0)
            n, seg, off = st.fill(0, w)
            if n:
                st.ack(0, w.last_seq, seg, off)
        elif kind == "save":
            st.save_cursor(True)

    def must(self):
        """Per category: the seqs that must survive a cut now (committed, not acked, not
        evicted by policy)."""
        out = []
        for c in range(2):
            s = self.store.streams[c]
            committed = self.appended[c][: len(self.appended[c]) - s.n]
            oldest = None
            for seg in s.segs:
                if seg[SEG_FIRST] >= 0:
                    oldest = seg[SEG_FIRST]
                    break
            out.append(
                set(q for q in committed if q > s.acked and oldest is not None and q >= oldest)
            )
        return out


def fresh_image():
    dev = FlashDev(BLOCKS)
    vfs.VfsLfs2.mkfs(dev)
    return dev.mem


def reference(base, wseed):
    """Run the workload without cuts; returns (ops after boot and each step, must-survive sets
    after each step, the steps)."""
    mem = bytearray(base)
    dev = FlashDev(BLOCKS, mem=mem)
    vfs.mount(vfs.VfsLfs2(dev), "/ref")
    run = Run(dev, "/ref")
    steps = workload(wseed)
    run.boot()
    ops = [dev.ops]
    musts = [run.must()]
    for kind, arg in steps:
        run.step(kind, arg)
        ops.append(dev.ops)
        musts.append(run.must())
    run.store.close()
    vfs.umount("/ref")
    st = run.store.stats
    return (
        ops,
        musts,
        steps,
        {
            "overwrites": dev.overwrites,
            "erases": dev.erases,
            "deleted_segments": st["deleted_segments"],
            "dropped": st["dropped"],
            "commits": st["commits"],
            "acks": st["acked"],
        },
    )


def read_all(store, c):
    w = codec.BatchWriter("pc", 64 + 1000 * codec.ENTRY_LEN)
    out = []
    while True:
        w.start(CATS[c], store.boot, 0)
        n, _seg, _off = store.fill(c, w)
        if not n:
            return out
        out.extend(codec.decode_batch(bytes(w.finish()))["readings"])


def trial(mem, base, ref, k, torn, errs):
    """Cut at op k (0-based) with `torn` bytes of it happening; returns 1 on a violation."""
    ops, musts, steps, _ow = ref
    mem[:] = base
    dev = FlashDev(BLOCKS, mem=mem)
    vfs.mount(vfs.VfsLfs2(dev), "/c")
    dev.cut_after(k - dev.ops, torn)
    run = Run(dev, "/c")
    x = 0  # index of the step the cut interrupts (0 = boot)
    cut = False
    try:
        run.boot()
        for kind, arg in steps:
            x += 1
            run.step(kind, arg)
    except OSError:
        cut = True
    if not cut:
        errs.append("k=%d: workload finished without a cut" % k)
        return 1
    # abandoned open files: close them while the device is dead, then let GC finalise
    abandon(run.store, "/c")
    run.store = None
    need = musts[x - 1] if x else [set(), set()]
    after = musts[x] if x < len(musts) else need
    return check(mem, run, [need[c] & after[c] for c in range(2)], k, errs)


def check(mem, run, need, k, errs):
    bad = 0
    dev = FlashDev(BLOCKS, mem=mem)  # reboot: a new device over the surviving bytes
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError as e:
        errs.append("k=%d: mount failed: %r" % (k, e))
        return 1
    vfs.mount(fs, "/r")
    try:
        st = Store("/r/store", CFG, CATS, HAL)
        if st.next_seq <= run.handed:
            errs.append(
                "k=%d: seq went backwards: next %d, handed %d" % (k, st.next_seq, run.handed)
            )
            bad = 1
        for c in range(2):
            got = read_all(st, c)
            seqs = [r[0] for r in got]
            known = run.appended[c]
            top = known[-1] if known else 0
            if st.streams[c].acked > top:
                errs.append(
                    "k=%d cat %d: cursor %d past data %d" % (k, c, st.streams[c].acked, top)
                )
                bad = 1
            for i, r in enumerate(got):
                if i and r[0] <= got[i - 1][0]:
                    errs.append("k=%d cat %d: seq %d after %d" % (k, c, r[0], got[i - 1][0]))
                    bad = 1
                    break
                if r[1] != ts_of(r[0]) or r[3] != value_of(r[0]) or r[2] != 1 + c:
                    errs.append("k=%d cat %d: corrupt reading %r" % (k, c, r))
                    bad = 1
                    break
            missing = need[c] - set(seqs)
            if missing:
                errs.append("k=%d cat %d: lost committed %r" % (k, c, sorted(missing)[:5]))
                bad = 1
        # the filesystem accepts writes, and they come back
        first = st.next_seq
        for i in range(3):
            st.append(0, 1, ts_of(first + i), 0, value_of(first + i))
        st.commit()
        tail = [r[0] for r in read_all(st, 0)]
        if tail != [first, first + 1, first + 2]:
            errs.append("k=%d: write after reboot read back %r" % (k, tail))
            bad = 1
        st.close()
    except Exception as e:  # a crash in recovery is a violation, reported with its k
        errs.append("k=%d: recovery raised %r" % (k, e))
        bad = 1
    vfs.umount("/r")
    return bad


def _broken_write(self, s, nbytes):
    # a store whose commit is not durable (no flush): the harness must catch it
    if s.active is None:
        self._open_segment(s)
    s.active.write(memoryview(s.buf)[:nbytes])


def main():
    if sys.argv[-1] == "broken":
        sys.argv.pop()
        Store._write = _broken_write
    mode = sys.argv[1]
    base = fresh_image()
    mem = bytearray(len(base))
    refs = {}

    def ref(wseed):
        if wseed not in refs:
            refs[wseed] = reference(base, wseed)
        return refs[wseed]

    errs = []
    viol = 0
    cuts = 0
    torn_ops = 0
    t0 = time.ticks_ms()
    if mode == "count":
        r = ref(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
        print(
            json.dumps(
                {"ops": r[0][-1], "boot_ops": r[0][0], "steps": len(r[2]), "workload": r[3]}
            )
        )
        return
    if mode == "every":
        wseed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
        r = ref(wseed)
        stop = min(int(sys.argv[3]), r[0][-1])
        ks = range(int(sys.argv[2]), stop)
        rnd = Lcg(wseed * 7 + 3)
        plan = [(wseed, k, rnd.next(4096) if k % 2 else 0) for k in ks]
    else:
        rnd = Lcg(int(sys.argv[2]))
        plan = []
        for _ in range(int(sys.argv[3])):
            wseed = 1 + rnd.next(4)
            r = ref(wseed)
            plan.append((wseed, rnd.next(r[0][-1]), rnd.next(4097)))
    for wseed, k, torn in plan:
        cuts += 1
        torn_ops += 1 if torn else 0
        viol += trial(mem, base, ref(wseed), k, torn, errs)
    print(
        json.dumps(
            {
                "mode": mode,
                "cuts": cuts,
                "torn": torn_ops,
                "violations": viol,
                "errors": errs[:10],
                "ms": time.ticks_diff(time.ticks_ms(), t0),
            }
        )
    )


main()
