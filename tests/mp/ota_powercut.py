# Power-cut harness for over-the-air updates and remote config (docs/OTA.md section 6), the
# store harness's method (powercut.py): a reference workload on an emulated NOR flash with
# littlefs, power cut at flash operation K (the cut operation may be torn), a reboot over the
# surviving bytes, then the invariants. The workload: an update downloaded chunk by chunk into
# slot b while the store keeps appending and committing, staged as the trial, booted, confirmed;
# then a config change staged, booted, confirmed. Usage (DIR holds v1.bundle, v2.bundle, pub):
#   micropython ota_powercut.py count DIR          -> {"ops": N, ...}
#   micropython ota_powercut.py every START STOP DIR
# (append `broken` to stage the trial before the download is finished: must fail)
# The last stdout line is a JSON summary; "violations" must be 0.

import hashlib
import json
import sys
import time

import vfs
from cutlib import Hal, abandon

from edge import bundle, codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.ota import boot, slots
from edge.ota.install import Installer, InstallError
from edge.store.store import Store

import os

# 640 KiB for the small bundles of the default run; OTA_CUT_BLOCKS=512 (2 MiB, a board's
# filesystem) for two slots of the real agent (the --slow run)
BLOCKS = int(os.getenv("OTA_CUT_BLOCKS") or 160)
ROOT = "/c"
CHUNK = 1024
STORE_CFG = config.load(
    None,
    {
        "categories": {"essential": {"quota": 40960, "evict": "drop_oldest"}},
        "store": {
            "flush_n": 1000,
            "flush_ms": 1000000,
            "segment_bytes": 2048,
            "total_bytes": 61440,
        },
    },
)
CATS = config.category_ids(STORE_CFG)


HAL = Hal()
DIR = sys.argv[-1] if not sys.argv[-1] == "broken" else sys.argv[-2]
BROKEN = sys.argv[-1] == "broken"


def load(name):
    with open(DIR + "/" + name, "rb") as f:
        return f.read()


V1 = load("v1.bundle")
V2 = load("v2.bundle")
PUB = load("release.pub")


def policy():
    return {"pub": PUB, "mpy": sys.implementation._mpy, "platform": "unix"}


def install(root, slot, data, cut_ok=False):
    ins = Installer(root, slot, len(data), hashlib.sha256(data).digest(), policy())
    ins.start()
    for i in range(0, len(data), CHUNK):
        ins.feed(data[i : i + CHUNK])
    return ins.finish()


def fresh_image():
    """A deployed board: agent v1 in slot a, /config.json, a store with committed readings."""
    dev = FlashDev(BLOCKS)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), ROOT)
    install(ROOT, "a", V1)
    with open(ROOT + "/config.json", "w") as f:
        json.dump({"device_id": "cut-0001", "status_ms": 5000}, f)
    st = Store(ROOT + "/store", STORE_CFG, CATS, HAL)
    for i in range(20):
        st.append(0, 1, 1700000000000 + i, 0, i)
    st.commit()
    st.close()
    vfs.umount(ROOT)
    return dev.mem


def workload():
    """Steps: ("chunk", i), ("readings", 0), ("stage", 0), ("boot", 0), ("confirm", 0),
    ("config", 0), ("boot", 0), ("confirm", 0)."""
    steps = []
    n = (len(V2) + CHUNK - 1) // CHUNK
    for i in range(n):
        steps.append(("chunk", i))
        if i % 3 == 2:
            steps.append(("readings", 0))
        if BROKEN and i == n // 2:
            steps.append(("stage", 0))  # a trial named before its slot is complete
    steps += [("finish", 0), ("stage", 0), ("readings", 0), ("boot", 0), ("confirm", 0)]
    steps += [("config", 0), ("readings", 0), ("boot", 0), ("confirm", 0), ("readings", 0)]
    return steps


class Run:
    def __init__(self):
        self.store = None
        self.ins = None
        self.committed = []  # seqs whose commit returned
        self.pending = []
        self.handed = 0
        self.confirmed_v2 = False  # the update's confirm write returned
        self.confirmed_cfg = False

    def boot(self):
        self.store = Store(ROOT + "/store", STORE_CFG, CATS, HAL)
        self.ins = Installer(
            ROOT, "b", len(V2), hashlib.sha256(V2).digest(), dict(policy(), current="1.0.0")
        )
        self.ins.start()

    def step(self, kind, arg):
        st = self.store
        if kind == "chunk":
            self.ins.feed(V2[arg * CHUNK : (arg + 1) * CHUNK])
        elif kind == "readings":
            for _ in range(3):
                seq = st.append(0, 1, 1700000000000 + st.next_seq, 0, st.next_seq)
                self.handed = seq
                self.pending.append(seq)
            st.commit()
            self.committed += self.pending
            self.pending = []
        elif kind == "finish":
            self.manifest = self.ins.finish()
        elif kind == "stage":
            s = boot.read_state(ROOT)
            slots.stage(ROOT, s, "update", "b", s["cfg"], 7, "1.1.0", "1.1.0")
        elif kind == "boot":
            boot.select(ROOT, boot.read_state(ROOT))
        elif kind == "confirm":
            s = boot.read_state(ROOT)
            slots.confirm(ROOT, s)
            if s["slot"] == "b" and s["last"]["kind"] == "update":
                self.confirmed_v2 = True
            if s["last"]["kind"] == "config":
                self.confirmed_cfg = True
        elif kind == "config":
            s = boot.read_state(ROOT)
            with open(ROOT + s["cfg"]) as f:
                cfg = json.load(f)
            cfg["status_ms"] = 7000
            path = slots.inactive_config(s)
            slots.write_config(ROOT, path, cfg)
            slots.stage(ROOT, s, "config", s["slot"], path, 8, chash="x")


def slot_ok(slot, errs, k):
    """The slot's files are exactly those its signed manifest names."""
    try:
        with open(ROOT + "/ota/" + slot + ".head", "rb") as f:
            head = f.read()
        with open(ROOT + "/ota/" + slot + ".manifest", "rb") as f:
            raw = f.read()
        mlen, slen = bundle.parse_header(head)
        if len(raw) != mlen or len(head) != bundle.HEADER_LEN + slen:
            raise ValueError("head or manifest truncated")
        if not bundle.verify(PUB, raw, head[bundle.HEADER_LEN :]):
            raise ValueError("bad signature on the manifest")
        m = bundle.parse_manifest(raw)
        for path, size, digest in m["files"]:
            with open(ROOT + boot.SLOTS[slot] + "/" + path, "rb") as f:
                data = f.read()
            if len(data) != size or hashlib.sha256(data).digest() != digest:
                raise ValueError("file %s differs" % path)
        return m["version"]
    except (OSError, ValueError) as e:
        errs.append("k=%d: slot %s not bootable: %r" % (k, slot, e))
        return None


def cfg_ok(path, errs, k):
    try:
        with open(ROOT + path) as f:
            return config.load(f.read())
    except (OSError, ValueError) as e:
        errs.append("k=%d: config %s unusable: %r" % (k, path, e))
        return None


def read_all(store):
    w = codec.BatchWriter("pc", 64 + 1000 * codec.ENTRY_LEN)
    out = []
    while True:
        w.start(CATS[0], store.boot, 0)
        n, _seg, _off = store.fill(0, w)
        if not n:
            return out
        out.extend(r[0] for r in codec.decode_batch(bytes(w.finish()))["readings"])


def check(mem, run, k, stage_x, errs):
    """Reboot over the surviving bytes: the board boots a verified slot; a trial that does not
    confirm falls back to the confirmed pair; committed readings are there; a download cut
    off resumes and finishes."""
    bad = 0
    dev = FlashDev(BLOCKS, mem=mem)
    try:
        vfs.mount(vfs.VfsLfs2(dev), ROOT)
    except OSError as e:
        errs.append("k=%d: mount failed: %r" % (k, e))
        return 1
    try:
        st = boot.read_state(ROOT)
        slot, cfg = boot.select(ROOT, st)
        if slot_ok(slot, errs, k) is None or cfg_ok(cfg, errs, k) is None:
            bad = 1
        if st.get("trial"):  # booted a trial: suppose it never confirms (cut, crash)
            slot, cfg = boot.select(ROOT, boot.read_state(ROOT))
        # the confirmed pair: every board must have one that boots
        ver = slot_ok(slot, errs, k)
        c = cfg_ok(cfg, errs, k)
        if ver is None or c is None:
            bad = 1
        elif run.confirmed_v2 and ver != "1.1.0":
            errs.append("k=%d: confirmed update lost: boots %s" % (k, ver))
            bad = 1
        elif run.confirmed_cfg and c["status_ms"] != 7000:
            errs.append("k=%d: confirmed config lost" % k)
            bad = 1
        store = Store(ROOT + "/store", STORE_CFG, CATS, HAL)
        have = set(read_all(store))
        lost = [q for q in run.committed if q not in have]
        if lost:
            errs.append("k=%d: lost committed readings %r" % (k, lost[:5]))
            bad = 1
        if store.next_seq <= run.handed:
            errs.append("k=%d: seq went backwards" % k)
            bad = 1
        store.close()
        if stage_x == "download":  # resume the cut download and finish it
            ins = Installer(
                ROOT, "b", len(V2), hashlib.sha256(V2).digest(), dict(policy(), current="1.0.0")
            )
            i = ins.resume()
            while i < len(V2):  # from the chunk the offset falls in, as the device asks
                j = min((i // CHUNK + 1) * CHUNK, len(V2))
                ins.feed(V2[i:j])
                i = j
            ins.finish()
            ins.close()
            run.resumed += 1
    except Exception as e:
        errs.append("k=%d: recovery raised %r" % (k, e))
        bad = 1
    try:
        vfs.umount(ROOT)
    except OSError:
        pass
    return bad


def trial(mem, base, steps, k, torn, errs, resumed):
    mem[:] = base
    dev = FlashDev(BLOCKS, mem=mem)
    try:
        vfs.umount(ROOT)  # a check that failed half-way may have left it mounted
    except OSError:
        pass
    vfs.mount(vfs.VfsLfs2(dev), ROOT)
    dev.cut_after(k - dev.ops, torn)
    run = Run()
    run.resumed = 0
    staged = False
    try:
        run.boot()
        for kind, arg in steps:
            staged = staged or kind == "stage"
            run.step(kind, arg)
        errs.append("k=%d: workload finished without a cut" % k)
        return 1
    except (OSError, InstallError):
        pass
    if run.ins is not None:
        run.ins.close()
    abandon(run.store, ROOT)
    bad = check(mem, run, k, "after" if staged else "download", errs)
    resumed[0] += run.resumed
    return bad


def count(base, steps):
    mem = bytearray(base)
    dev = FlashDev(BLOCKS, mem=mem)
    vfs.mount(vfs.VfsLfs2(dev), ROOT)
    run = Run()
    run.boot()
    for kind, arg in steps:
        run.step(kind, arg)
    ops = dev.ops
    run.store.close()
    vfs.umount(ROOT)
    return ops, dev.erases


def main():
    args = [a for a in sys.argv[1:] if a != "broken"]
    base = fresh_image()
    steps = workload()
    ops, erases = count(base, steps)
    if args[0] == "count":
        print(json.dumps({"ops": ops, "erases": erases, "steps": len(steps), "bytes": len(V2)}))
        return
    start, stop = int(args[1]), min(int(args[2]), ops)
    mem = bytearray(len(base))
    errs = []
    viol = 0
    resumed = [0]
    t0 = time.ticks_ms()
    for k in range(start, stop):
        viol += trial(mem, base, steps, k, (k * 2654435761) % 4096 if k % 2 else 0, errs, resumed)
    print(
        json.dumps(
            {
                "cuts": stop - start,
                "violations": viol,
                "resumed_downloads": resumed[0],
                "errors": errs[:10],
                "ms": time.ticks_diff(time.ticks_ms(), t0),
            }
        )
    )


main()
