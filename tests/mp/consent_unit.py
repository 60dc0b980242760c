# MicroPython side of tests/test_consent.py. Usage: consent_unit.py CASE DIR [ARGS]
# Prints one JSON line with what the host test checks.
import binascii
import json
import os
import sys

from edge import config
from edge import consent as consent_mod
from edge.consent import Consent, ConsentError
from edge.wire import consent_signed_bytes as signed_bytes
from edge.wire import hmac_sha256

CATS = ["essential", "diagnostics", "location", "marketing", "usage"]
DEV = "unit-1"
KEY = bytes(range(32))


def sign(doc, key=KEY):
    doc["sig"] = binascii.hexlify(hmac_sha256(key, signed_bytes(DEV, doc))).decode()
    return doc


def state_bytes(root):
    try:
        with open(root + "/consent.json", "rb") as f:
            return f.read()
    except OSError:
        return b""


def case_hmac(root):
    # vectors for the host to compare with CPython's hmac module
    out = []
    for klen in (0, 16, 32, 64, 65, 100):
        key = bytes((i * 7 + 1) & 0xFF for i in range(klen))
        out.append([klen, binascii.hexlify(hmac_sha256(key, b"edge consent " * 3)).decode()])
    doc = {"version": 7, "grant": ["usage", "diagnostics"], "deny": ["marketing"], "ts": 1234}
    return {"hmac": out, "signed": signed_bytes(DEV, doc).decode()}


def case_rejects(root):
    """Stale, malformed, unsigned and badly signed updates: rejected, nothing changes."""
    c = Consent(root, CATS, DEV, KEY)
    first = {"boot_grants": c.grants(), "boot_version": c.version}
    c.apply(sign({"version": 5, "grant": ["usage"], "ts": 1}), "mqtt", 1000)
    before = state_bytes(root)
    bad = [
        sign({"version": 5, "grant": ["marketing"]}),  # equal version
        sign({"version": 3, "deny": ["usage"]}),  # older
        {"version": 6, "grant": ["marketing"]},  # unsigned
        sign({"version": 6, "grant": ["marketing"]}, bytes(32)),  # wrong key
        {"version": 6, "grant": ["marketing"], "sig": "zz"},  # not hex
        "not an object",
        {"version": "6"},
        {"version": True},
        {"version": 0},
        {"version": 6, "grant": "usage"},
        {"version": 6, "grant": ["heartbeat"]},
        {"version": 6, "deny": ["essential"]},
        {"version": 6, "grant": ["usage"], "deny": ["usage"]},
        {"version": 6, "grant": ["usage"], "colour": "red"},
        {"version": 6, "ts": -1},
    ]
    tampered = sign({"version": 6, "grant": ["marketing"]})
    tampered["grant"] = ["marketing", "location"]
    bad.append(tampered)
    errors = []
    for doc in bad:
        try:
            c.apply(doc, "mqtt", 2000)
            errors.append(None)
        except ConsentError as e:
            errors.append(str(e))
    again = Consent(root, CATS, DEV, KEY)
    first.update(
        {
            "errors": errors,
            "unchanged": state_bytes(root) == before,
            "version": c.version,
            "grants": c.grants(),
            "reloaded_version": again.version,
            "reloaded_grants": again.grants(),
            "source": again.source,
            "ts": again.ts,
        }
    )
    return first


class CutHere(Exception):
    pass


class CutOs:
    """os with a power cut at rename (`rename`) or in the middle of the temp write (`write`)."""

    def __init__(self, where):
        self.where = where

    def rename(self, a, b):
        if self.where == "rename":
            raise CutHere()
        os.rename(a, b)


class TornFile:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])  # half of it reached flash
        raise CutHere()


def case_cut(root, where):
    """A power cut during the save of v2: the state after reboot is v1 or v2, never broken."""
    c = Consent(root, CATS, DEV, None)
    c.apply({"version": 1, "grant": ["usage", "location"]}, "local", 10)
    if where == "write":
        real_open = open

        def torn_open(path, mode="r"):
            if path.endswith(".tmp"):
                return TornFile(real_open(path, mode))
            return real_open(path, mode)

        consent_mod.open = torn_open
    else:
        consent_mod.os = CutOs(where)
    cut = False
    try:
        c.apply({"version": 2, "deny": ["usage"]}, "mqtt", 20)
    except (CutHere, ConsentError):
        cut = True
    consent_mod.os = os
    if where == "write":
        consent_mod.open = real_open
    after = Consent(root, CATS, DEV, None)  # the reboot
    return {
        "cut": cut,
        "version": after.version,
        "grants": after.grants(),
        "tmp_left": "consent.tmp" in os.listdir(root),
    }


def case_first_boot(root):
    c = Consent(root, CATS, DEV, None)
    with open(root + "/consent.json", "wb") as f:
        f.write(b'{"format": 1, "version": 3, "grants": {"usage": tr')  # impossible, but safe
    d = Consent(root, CATS, DEV, None)
    return {
        "grants": c.grants(),
        "version": c.version,
        "corrupt_grants": d.grants(),
        "corrupt_version": d.version,
    }


def case_minimise(root):
    from edge.minimise import Minimiser

    cfg = config.load(
        json.dumps(
            {
                "categories": {
                    "usage": {
                        "minimise": [
                            {"op": "coarsen", "field": "ts", "step": 60000},
                            {"op": "pseudonymise", "field": "value", "channels": [6]},
                            {"op": "coarsen", "field": "value", "step": 10, "channels": [5]},
                        ]
                    },
                    "diagnostics": {
                        "minimise": [{"op": "drop", "field": "value", "channels": [4]}]
                    },
                }
            }
        )
    )
    c = Consent(root, config.category_ids(cfg), DEV, None)
    m = Minimiser(cfg, c)
    out = {"rules": sorted(m.rules)}
    out["door"] = m.apply(m.rules[5], 5, 1700000123456, 37)
    out["defrost"] = m.apply(m.rules[4], 4, 1700000123456, 9)
    p1 = m.apply(m.rules[6], 6, 5, 424242)[1]
    out["pseudo_stable"] = p1 == m.apply(m.rules[6], 6, 5, 424242)[1]
    out["pseudo_differs"] = p1 != m.apply(m.rules[6], 6, 5, 424243)[1]
    out["pseudo_is_id"] = p1 == 424242
    c.apply({"version": 1, "grant": ["usage"]}, "local", 1)
    out["pseudo_rotated"] = p1 != m.apply(m.rules[6], 6, 5, 424242)[1]
    errs = []
    for bad in (
        {"op": "blur", "field": "value"},
        {"op": "coarsen", "field": "value"},
        {"op": "pseudonymise", "field": "ts"},
        {"op": "drop", "field": "value", "channels": [1]},
        "x",
    ):
        try:
            Minimiser(config.merge(cfg, {"categories": {"usage": {"minimise": [bad]}}}), c)
            errs.append(None)
        except config.ConfigError as e:
            errs.append(str(e))
    out["errors"] = errs
    return out


def case_boot_purge(root, port):
    """A power cut after the revocation was persisted but before the purge: the next boot
    purges the leftovers and its receipt says so."""
    from edge.agent import Agent
    from edge.hal import load as load_hal

    cfg = config.load(
        json.dumps(
            {
                "device_id": DEV,
                "store": {"path": root},
                "mqtt": {"port": int(port)},
                "sim": {"enabled": True},
            }
        )
    )
    a = Agent(cfg, load_hal())
    a.cmds.local("consent", {"version": 1, "grant": ["usage"]})
    for i in range(30):
        a.emit(5, i)  # door_opens: usage
    a.store.commit()

    def cut(cat):
        raise CutHere()

    a.store.purge = cut
    try:
        a.cmds.local("consent", {"version": 2, "deny": ["usage"]})
    except CutHere:
        pass
    for s in a.store.streams:  # the cut: nothing more reaches the flash image
        if getattr(s, "active", None) is not None:
            s.active.close()
    import vfs

    vfs.umount("/flash")
    a.hal.flash.close()
    if getattr(a.hal, "log_flash", None) is not None:
        a.hal.log_flash.close()
    b = Agent(cfg, load_hal())  # the reboot
    usage = b.categories.index("usage")
    return {
        "version": b.consent.version,
        "receipt": b.consent.receipt,
        "unsent": b.store.unsent(usage),
        "outbox": [o[0].decode() for o in b.cmds.out.waiting()],
    }


CASES = {
    "hmac": case_hmac,
    "rejects": case_rejects,
    "cut": case_cut,
    "first_boot": case_first_boot,
    "minimise": case_minimise,
    "boot_purge": case_boot_purge,
}
print(json.dumps(CASES[sys.argv[1]](*sys.argv[2:])))
