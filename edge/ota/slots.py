# Trial, confirm and rollback bookkeeping on top of the boot state (edge/ota/boot.py, docs/OTA.md
# section 4): staging a verified agent slot or config file as the next boot's trial, confirming
# it once the trial run passed its self-check, and the paths of the inactive slot and config.

import binascii
import hashlib

from edge.ota.boot import other, read_state, write_json, write_state

CONFIGS = ("/ota/config1.json", "/ota/config2.json")


def inactive_slot(st):
    """The slot an update may write: never the confirmed one (a trial is never running while
    an update is accepted, so the confirmed slot is the running one)."""
    return other(st["slot"])


def inactive_config(st):
    return CONFIGS[1] if st["cfg"] == CONFIGS[0] else CONFIGS[0]


def write_config(root, path, cfg):
    """A complete config file, atomically."""
    write_json(root, path, cfg)


def collection(cfg):
    """What a running config collects, in the form the consent check compares
    (edge/ota/remote.py widening()): each channel's category, each category's minimisation."""
    cats = {}
    for name, pol in cfg["categories"].items():
        cats[name] = {"minimise": pol.get("minimise") or []}
    return {
        "channels": [{"id": c["id"], "category": c["category"]} for c in cfg["channels"]],
        "categories": cats,
    }


def key_id(pub):
    """A release public key's short name: the first 16 hex digits of its SHA-256."""
    return binascii.hexlify(hashlib.sha256(pub).digest()).decode()[:16]


def trusted_key(st, deployed):
    """The release key updates must be signed with: the one a confirmed update rotated to
    (`key` in the boot state), while the deployed key is still the one the rotation started
    from; a deploy of another key over the serial port wins (docs/OTA.md 3)."""
    k = st.get("key")
    if isinstance(k, dict) and k.get("from") == key_id(deployed):
        try:
            pub = binascii.unhexlify(k["pub"])
        except (ValueError, TypeError, KeyError):
            return deployed
        if len(pub) == len(deployed):
            return pub
    return deployed


def stage(
    root,
    st,
    kind,
    slot,
    cfg,
    cid=None,
    version=None,
    min_version=None,
    chash=None,
    was=None,
    next_key=None,
):
    """Make (slot, cfg) the next boot's single trial. Written last, after everything it names
    is complete on flash: a cut before this leaves the confirmed pair as the only choice.
    was: collection() of the running agent, which the trial must not widen. next_key: the
    release key to trust once the trial is confirmed ({"pub", "id", "from"}), or None."""
    st["trial"] = {
        "was": was,
        "next_key": next_key,
        "kind": kind,
        "slot": slot,
        "cfg": cfg,
        "id": cid,
        "version": version,
        "min_version": min_version,
        "cfg_hash": chash,
        "tries": 0,
    }
    write_state(root, st)


def confirm(root, st, reported=False):
    """The running trial passed: it becomes the confirmed pair. Returns the outcome record
    (`reported`: the caller replies at once, so the next boot need not)."""
    t = st["trial"]
    st["slot"] = t["slot"]
    st["cfg"] = t["cfg"]
    if t.get("version"):
        st["versions"][t["slot"]] = t["version"]
    if isinstance(t.get("next_key"), dict):
        st["key"] = t["next_key"]  # key rotation: only a confirmed release passes it on
    mv = t.get("min_version")
    if mv and (not st.get("floor") or _v(mv) > _v(st["floor"])):
        st["floor"] = mv  # anti-rollback: never accept below this again
    st["last"] = {
        "kind": t.get("kind"),
        "id": t.get("id"),
        "version": t.get("version"),
        "cfg_hash": t.get("cfg_hash"),
        "result": "confirmed",
        "reported": reported,
    }
    st["trial"] = None
    write_state(root, st)
    return st["last"]


def running_trial(root):
    """The trial this boot is running (tried once, not confirmed), or None."""
    st = read_state(root)
    t = st.get("trial")
    return st if isinstance(t, dict) and t.get("tries") else None


def _v(s):
    return tuple(int(p) for p in s.split("."))
