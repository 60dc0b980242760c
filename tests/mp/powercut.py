# Power-cut harness for both store backends (littlefs "reentrant" testing): runs a reference
# workload on an emulated NOR flash, cuts power at flash operation K (program or erase; the cut
# operation may be torn), reboots a new device over the surviving bytes and checks invariants.
# All cuts run inside this one MicroPython process. Usage (BACKEND: segments | rawlog):
#   micropython powercut.py BACKEND count [WSEED]           -> {"ops": N, "steps": S, ...}
#   micropython powercut.py BACKEND every START STOP [WSEED] -> cut at every K in [START, STOP)
#   micropython powercut.py BACKEND random SEED N            -> N random cuts over 4 workloads,
#                                                              every other one cut again while
#                                                              it recovers
#   (append `broken` to run against a store whose commit is not durable: must fail)
# The last stdout line is a JSON summary; "violations" must be 0.
#
# segments: littlefs on 96 blocks, segments of 600 bytes. rawlog: a raw partition of 6 blocks
# with the NOR rules enforced (a refused program is a violation), so the ring wraps many times;
# odd workload seeds bound the store by total_bytes ("full" eviction), even ones by the
# partition ("nospace"), and the rawlog workload also purges `diagnostics` (consent revoked).
# Invariants after every cut: the store boots; seqs never go back; the cursor is never past
# data; every reading read back is one that was appended (nothing corrupt), in seq order; every
# committed, unacknowledged reading that the policy did not evict is there; nothing a finished
# purge removed comes back; the store takes appends again and reads them back.

import json
import sys
import time

import vfs
from cutlib import Hal, abandon

from edge import codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.store.rawlog import RawStore
from edge.store.store import Store

BACKEND = sys.argv[1]
RAW = BACKEND == "rawlog"
BLOCKS = 6 if RAW else 96


def make_cfg(wseed):
    if RAW:
        odd = wseed % 2
        store = {"flush_n": 12, "flush_ms": 1000000, "total_bytes": 12288 if odd else 1048576}
        quotas = (0, 8192)
    else:
        store = {"flush_n": 6, "flush_ms": 1000000, "segment_bytes": 600, "total_bytes": 12288}
        quotas = (20480, 8192)
    return config.load(
        None,
        {
            "categories": {
                "essential": {"quota": quotas[0], "evict": "drop_oldest"},
                "diagnostics": {"quota": quotas[1], "evict": "drop_oldest"},
            },
            "store": store,
        },
    )


# the workload uses 0 (essential) and 1 (diagnostics); the raw log stores only those two, so
# its 6-block partition (5 for data) fills
CATS = ["essential", "diagnostics"] if RAW else config.category_ids(make_cfg(1))


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
    rounds = 220 if RAW else 60
    for rnd in range(rounds):
        for _ in range(1 + r.next(24 if RAW else 9)):
            steps.append(("append", r.next(2)))
        if r.next(3):
            steps.append(("commit", 0))
        if rnd % (9 if RAW and wseed % 2 == 0 else 3) == 1:
            steps.append(("ack", 0))  # `diagnostics` is never acked: it evicts
        if rnd % 4 == 3:
            steps.append(("save", 0))
        if RAW and rnd == 150:
            steps.append(("purge", 1))
    steps.append(("commit", 0))
    return steps


def new_device(mem):
    return FlashDev(BLOCKS, mem=mem, nor=RAW)


class Run:
    """One life of the workload on a device, tracking what the store promised."""

    def __init__(self, dev, cfg, mount):
        self.dev = dev
        self.cfg = cfg
        self.mount = mount
        self.appended = [[] for _ in range(2)]  # seqs per category, in order
        self.npurged = 0  # the first n `diagnostics` readings were removed by a finished purge
        self.handed = 0  # highest seq handed out
        self.store = None
        self.writer = codec.BatchWriter("pc", 64 + 8 * codec.ENTRY_LEN)

    def boot(self):
        if RAW:
            self.store = RawStore(self.dev, self.cfg, CATS, HAL)
        else:
            self.store = Store(self.mount + "/store", self.cfg, CATS, HAL)

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
        elif kind == "purge":
            st.purge(arg)
            self.npurged = len(self.appended[1])  # everything appended so far, sent or not

    def promise(self):
        """What the store holds now, compactly: per category (readings committed, acked seq,
        oldest seq held), and how many `diagnostics` readings finished purges removed."""
        out = []
        for c in range(2):
            s = self.store.streams[c]
            out.append((len(self.appended[c]) - s.n, s.acked, self.store.oldest_seq(c)))
        return out, self.npurged


def must(appended, promise):
    """Per category: the seqs that must survive a cut (committed, not acked, not evicted by
    policy, not purged) under a promise()."""
    cats, npurged = promise
    out = []
    for c in range(2):
        ncom, acked, oldest = cats[c]
        skip = npurged if c == 1 else 0
        out.append(set(q for q in appended[c][skip:ncom] if q > acked and 0 <= oldest <= q))
    return out


def fresh_image():
    dev = FlashDev(BLOCKS, nor=RAW)
    if not RAW:
        vfs.VfsLfs2.mkfs(dev)
    return dev.mem


def mount(dev, path):
    if not RAW:
        vfs.mount(vfs.VfsLfs2(dev), path)


def reference(base, wseed):
    """Run the workload without cuts; returns (ops after boot and each step, promise() after
    each step, the steps, workload figures, the seqs appended per category)."""
    mem = bytearray(base)
    dev = new_device(mem)
    mount(dev, "/ref")
    run = Run(dev, make_cfg(wseed), "/ref")
    steps = workload(wseed)
    run.boot()
    ops = [dev.ops]
    promises = [run.promise()]
    for kind, arg in steps:
        run.step(kind, arg)
        ops.append(dev.ops)
        promises.append(run.promise())
    run.store.close()
    if not RAW:
        vfs.umount("/ref")
    st = run.store.stats
    figures = {
        "overwrites": dev.overwrites,
        "violations": dev.violations,
        "erases": dev.erases,
        "deleted_segments": st["deleted_segments"],
        "dropped": st["dropped"],
        "commits": st["commits"],
        "acks": st["acked"],
    }
    return ops, promises, steps, figures, run.appended


def read_all(store, c):
    w = codec.BatchWriter("pc", 64 + 1000 * codec.ENTRY_LEN)
    out = []
    while True:
        w.start(CATS[c], store.boot, 0)
        n, _seg, _off = store.fill(c, w)
        if not n:
            return out
        out.extend(codec.decode_batch(bytes(w.finish()))["readings"])


def trial(mem, base, ref, wseed, k, torn, errs, k2=-1):
    """Cut at op k (0-based) with `torn` bytes of it happening, and when k2 >= 0 again at op
    k2 of the recovery boot; returns 1 on a violation."""
    ops, promises, steps, _fig, appended = ref
    mem[:] = base
    dev = new_device(mem)
    mount(dev, "/c")
    dev.cut_after(k - dev.ops, torn)
    run = Run(dev, make_cfg(wseed), "/c")
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
    abandon(None if RAW else run.store, "/c")
    need = must(appended, promises[x - 1]) if x else [set(), set()]
    after = must(appended, promises[min(x, len(promises) - 1)]) if x else need
    # a purge cut before it returned is finished by the next boot (edge/commands.py _boot)
    repurge = steps[x - 1][0] == "purge" if x else False
    npurged = promises[x][1] if repurge else promises[x - 1][1] if x else 0
    forbidden = set(appended[1][:npurged])
    run.store = None
    if k2 >= 0:
        boot_cut(mem, run, k2, torn // 2)
    return check(mem, run, [need[c] & after[c] for c in range(2)], forbidden, repurge, k, errs)


def boot_cut(mem, run, k2, torn):
    """A second cut, during the recovery boot itself (op k2 of it)."""
    dev = new_device(mem)
    try:
        if not RAW:
            vfs.mount(vfs.VfsLfs2(dev), "/r")
        dev.cut_after(k2, torn)
        if RAW:
            RawStore(dev, run.cfg, CATS, HAL)
        else:
            Store("/r/store", run.cfg, CATS, HAL)
    except OSError:
        pass
    abandon(None, "/r")


def check(mem, run, need, forbidden, repurge, k, errs):
    bad = 0
    dev = new_device(mem)  # reboot: a new device over the surviving bytes
    if not RAW:
        try:
            fs = vfs.VfsLfs2(dev)
        except OSError as e:
            errs.append("k=%d: mount failed: %r" % (k, e))
            return 1
        vfs.mount(fs, "/r")
    try:
        st = RawStore(dev, run.cfg, CATS, HAL) if RAW else Store("/r/store", run.cfg, CATS, HAL)
        if repurge:
            st.purge(1)
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
            back = forbidden & set(seqs)
            if back:
                errs.append("k=%d cat %d: purged readings back %r" % (k, c, sorted(back)[:5]))
                bad = 1
        # the store accepts writes, and they come back
        first = st.next_seq
        for i in range(3):
            st.append(0, 1, ts_of(first + i), 0, value_of(first + i))
        st.commit()
        tail = [r[0] for r in read_all(st, 0)]
        if tail != [first, first + 1, first + 2]:
            errs.append("k=%d: write after reboot read back %r" % (k, tail))
            bad = 1
        st.close()
        if dev.violations:
            errs.append("k=%d: %d programs broke the NOR rules" % (k, dev.violations))
            bad = 1
    except Exception as e:  # a crash in recovery is a violation, reported with its k
        errs.append("k=%d: recovery raised %r" % (k, e))
        bad = 1
    if not RAW:
        vfs.umount("/r")
    return bad


def _broken_write(self, s, nbytes):
    # a segment store whose commit is not durable (no flush): the harness must catch it
    if s.active is None:
        self._open_segment(s)
    s.active.write(memoryview(s.buf)[:nbytes])


def _broken_commit(self, s):
    # a raw store whose commit forgets its last chunk instead of programming it
    if s.cpos >= 0:
        s.wpos = s.cpos
        s.cpos = -1
    if s.wpos:
        RawStore._good_commit(self, s)
    else:
        self.stats["committed"] += s.n
        s.n = 0


def main():
    if sys.argv[-1] == "broken":
        sys.argv.pop()
        if RAW:
            RawStore._good_commit = RawStore._commit_stream
            RawStore._commit_stream = _broken_commit
        else:
            Store._write = _broken_write
    mode = sys.argv[2]
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
        r = ref(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
        print(
            json.dumps(
                {"ops": r[0][-1], "boot_ops": r[0][0], "steps": len(r[2]), "workload": r[3]}
            )
        )
        return
    if mode == "every":
        wseed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
        r = ref(wseed)
        stop = min(int(sys.argv[4]), r[0][-1])
        ks = range(int(sys.argv[3]), stop)
        rnd = Lcg(wseed * 7 + 3)
        plan = [(wseed, k, rnd.next(4096) if k % 2 else 0, -1) for k in ks]
    else:
        # every other random cut is followed by a second one inside the recovery boot
        rnd = Lcg(int(sys.argv[3]))
        plan = []
        for i in range(int(sys.argv[4])):
            wseed = 1 + rnd.next(4)
            r = ref(wseed)
            plan.append((wseed, rnd.next(r[0][-1]), rnd.next(4097), rnd.next(8) if i % 2 else -1))
    recovery_cuts = 0
    for wseed, k, torn, k2 in plan:
        cuts += 1
        recovery_cuts += 1 if k2 >= 0 else 0
        torn_ops += 1 if torn else 0
        viol += trial(mem, base, ref(wseed), wseed, k, torn, errs, k2)
    print(
        json.dumps(
            {
                "mode": mode,
                "backend": BACKEND,
                "cuts": cuts,
                "recovery_cuts": recovery_cuts,
                "torn": torn_ops,
                "violations": viol,
                "errors": errs[:10],
                "ms": time.ticks_diff(time.ticks_ms(), t0),
            }
        )
    )


main()
