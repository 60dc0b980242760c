# Consent power cuts (docs/CONSENT.md) on the store's emulated NOR flash
# (edge/hal/unix/flashdev.py, the power-cut harness of tests/test_store_powercut.py): a workload of
# consent updates and readings runs through the real Commands/Consent/Store; power is cut at every
# flash operation K; a new device boots over the surviving bytes. Usage: consent_powercut.py
# [broken] -> one JSON line, "violations" must be 0. Invariants after every cut:
#   1. littlefs mounts and the consent state is the version before or after the cut step,
#      with exactly that version's grants (never a mix, never more than granted);
#   2. no reading of a category the booted state denies is left to send (the boot finishes an
#      interrupted purge);
#   3. the receipt queued at boot states the enforced version and grants.
import json
import sys
import time

import vfs
from cutlib import abandon

from edge import config
from edge.commands import Commands
from edge.consent import Consent
from edge.hal.unix.flashdev import FlashDev
from edge.store.store import Store

BLOCKS = 64
CFG = config.load(None, {"device_id": "pc", "store": {"flush_n": 8, "segment_bytes": 600}})
CATS = config.category_ids(CFG)
CH = {"usage": 5, "diagnostics": 3}
STEPS = [
    ("consent", {"version": 1, "grant": ["usage", "diagnostics"]}),
    ("emit", "usage", 20),
    ("emit", "diagnostics", 5),
    ("commit",),
    ("consent", {"version": 2, "deny": ["usage"]}),
    ("emit", "diagnostics", 12),
    ("consent", {"version": 3, "grant": ["usage", "marketing"]}),
    ("emit", "usage", 9),
    ("commit",),
    ("consent", {"version": 4, "deny": ["usage", "diagnostics", "marketing"]}),
    ("consent", {"version": 5, "grant": ["location"]}),
]


class Obj:
    pass


class Hal:
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def wall_ms(self):
        return 1700000000000


def boot(mount, broken=False):
    """The agent's consent part: Consent + Store + Commands on the mounted flash."""
    a = Obj()
    a.hal = Hal()
    root = mount + "/store"
    a.store = Store(root, CFG, CATS, a.hal)
    a.consent = Consent(root, CATS, "pc")
    if broken:
        # a boot that announces its state but does not finish an interrupted purge: must fail
        Commands._boot = lambda self: self._receipt({}, "boot")
    a.cmds = Commands(CFG, root, a.consent, a.store, Obj(), a.hal, 0, lambda msg: None)
    return a


def step(a, s):
    if s[0] == "consent":
        a.cmds.local("consent", s[1])
    elif s[0] == "emit":
        cat = a.categories_index[s[1]]
        for i in range(s[2]):
            if a.consent.gate(cat):
                a.store.append(cat, CH[s[1]], 1700000000000 + i, 0, i)
    else:
        a.store.commit()


def grants_by_version():
    g = {0: dict((c, c == "essential") for c in CATS)}
    cur = dict(g[0])
    for s in STEPS:
        if s[0] == "consent":
            for c in s[1].get("grant", []):
                cur[c] = True
            for c in s[1].get("deny", []):
                cur[c] = False
            g[s[1]["version"]] = dict(cur)
    return g


def run(mem, cut_at, mount):
    """Run the workload; returns (ops used, version before and after the cut step)."""
    dev = FlashDev(BLOCKS, mem=mem)
    vfs.mount(vfs.VfsLfs2(dev), mount)
    if cut_at >= 0:
        dev.cut_after(cut_at - dev.ops, 7)
    v_before = v_after = 0
    a = None
    try:
        a = boot(mount)
        a.categories_index = dict((c, i) for i, c in enumerate(CATS))
        for s in STEPS:
            v_before = a.consent.version
            nxt = s[1]["version"] if s[0] == "consent" else v_before
            step(a, s)
            if dev.dead:
                v_after = nxt
                break
            v_after = a.consent.version
    except OSError:
        v_after = v_before
    abandon(a.store if a is not None else None, mount)
    return dev.ops, dev.dead, v_before, v_after


def check(mem, v_before, v_after, grants, broken, errs, k):
    dev = FlashDev(BLOCKS, mem=mem)
    try:
        vfs.mount(vfs.VfsLfs2(dev), "/b")
    except OSError as e:
        errs.append("k=%d: mount failed: %s" % (k, e))
        return 1
    bad = 0
    try:
        a = boot("/b", broken)
        c = a.consent
        if c.version not in (v_before, v_after):
            errs.append("k=%d: version %d, expected %d or %d" % (k, c.version, v_before, v_after))
            bad = 1
        elif c.grants() != grants[c.version]:
            errs.append("k=%d: v%d grants %r" % (k, c.version, c.grants()))
            bad = 1
        for i, name in enumerate(CATS):
            if not c.ingest[i] and a.store.unsent(i):
                errs.append("k=%d: denied %s still has unsent readings" % (k, name))
                bad = 1
        r = c.receipt or {}
        if r.get("version") != c.version or r.get("grants") != c.grants():
            errs.append("k=%d: receipt %r does not match v%d" % (k, r, c.version))
            bad = 1
        a.store.close()
    except OSError as e:
        errs.append("k=%d: boot failed: %s" % (k, e))
        bad = 1
    try:
        vfs.umount("/b")
    except OSError:
        pass
    return bad


def main():
    broken = len(sys.argv) > 1 and sys.argv[1] == "broken"
    base = bytearray(BLOCKS * 4096)
    dev = FlashDev(BLOCKS, mem=base)
    vfs.VfsLfs2.mkfs(dev)
    grants = grants_by_version()
    mem = bytearray(base)
    total, _dead, _b, final = run(mem, -1, "/r")
    errs = []
    violations = 0
    versions = {}
    for k in range(total):
        mem[:] = base
        _ops, dead, vb, va = run(mem, k, "/c")
        if not dead:
            errs.append("k=%d: no cut" % k)
            violations += 1
            continue
        violations += check(mem, vb, va, grants, broken, errs, k)
        versions[vb] = versions.get(vb, 0) + 1
    print(
        json.dumps(
            {
                "ops": total,
                "cuts": total,
                "final_version": final,
                "violations": violations,
                "cut_steps_by_version": versions,
                "errors": errs[:10],
            }
        )
    )


main()
