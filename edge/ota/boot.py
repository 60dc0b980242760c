# Boot selection between the agent's A/B slots, with trial, confirm and rollback (docs/OTA.md
# section 4). `edgectl deploy` also installs this file, compiled, as /lib/edgeboot.mpy, outside
# both slots, for the /main.py it writes: so it imports nothing from edge/ (it decides which
# edge/ is imported), and an update never changes that copy: only a deploy does.

import json
import os
import sys

STATE = "/ota/state.json"
DOWNLOAD = "/ota/download.json"  # an update's request while it downloads (edge/ota/updater.py)
# slot -> directory holding its `edge` package; "a" is where `edgectl deploy` puts the agent
SLOTS = {"a": "/lib", "b": "/ota/b"}
RESET_EXIT = 75  # unix: exit code that asks the supervisor (vboard, edgectl run) to reboot us


def default_state():
    # v: state format. slot/cfg: the confirmed agent slot and config file. trial: what the next
    # boot tries once, or None. versions: slot -> release. floor: lowest release still accepted.
    # last: outcome of the last trial, until the agent has reported it.
    return {
        "v": 1,
        "slot": "a",
        "cfg": "/config.json",
        "trial": None,
        "versions": {},
        "floor": None,
        "last": None,
    }


def read_state(root):
    """The boot state; missing or unreadable means the deployed slot and config. Keys this
    version does not know are kept, so an older slot rewrites a newer slot's state without
    losing what the newer one needs (docs/OTA.md section 5)."""
    st = default_state()
    try:
        with open(root + STATE) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return st
    if isinstance(doc, dict) and doc.get("slot") in SLOTS and isinstance(doc.get("cfg"), str):
        st.update(doc)
    return st


def write_json(root, path, doc):
    """Atomic: a temporary file, then a rename (littlefs and POSIX renames are atomic), so a
    power cut leaves either the old file or the new one."""
    try:
        os.mkdir(root + "/ota")
    except OSError:
        pass
    tmp = root + path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, root + path)


def write_state(root, st):
    write_json(root, STATE, st)


def other(slot):
    return "b" if slot == "a" else "a"


def select(root, st, cause=""):
    """(slot, config path) to boot, updating the state on flash first.
    Case 1: no trial: the confirmed slot and config.
    Case 2: a trial not yet tried: mark it tried (durably, before its code runs), boot it.
    Case 3: a trial already tried and not confirmed (crash, watchdog, power cut, failed
    self-check): roll back to the confirmed pair and keep why, for the agent to report."""
    t = st.get("trial")
    if isinstance(t, dict) and t.get("slot") in SLOTS and isinstance(t.get("cfg"), str):
        if not t.get("tries"):
            t["tries"] = 1
            write_state(root, st)
            return t["slot"], t["cfg"]
        why = t.get("fail") or ("reset before confirmation" + (" (%s)" % cause if cause else ""))
        st["last"] = {
            "kind": t.get("kind"),
            "id": t.get("id"),
            "version": t.get("version"),
            "result": "rolled_back",
            "reason": why,
        }
    elif t is None:
        return st["slot"], st["cfg"]
    st["trial"] = None
    write_state(root, st)
    return st["slot"], st["cfg"]


def summary(st):
    """The boot state as the status reports it, kept short (docs/HEALTH.md): slot, release,
    anti-rollback floor, the trial in progress and how the last one ended."""
    t = st.get("trial")
    last = st.get("last")
    doc = {"slot": st["slot"], "version": st["versions"].get(st["slot"])}
    if st.get("floor"):
        doc["floor"] = st["floor"]
    if isinstance(st.get("key"), dict):
        doc["key"] = st["key"].get("id")  # the release key a confirmed update rotated to
    if st["cfg"] != "/config.json":
        doc["cfg"] = st["cfg"]
    if t:
        doc["trial"] = t.get("kind")
    if isinstance(last, dict):
        doc["last"] = "%s %s %s" % (
            last.get("kind"),
            last.get("version") or "",
            last.get("result"),
        )
    return doc


def brief(root=""):
    """The status summary when the agent has nothing to do about its boot state (no trial, no
    unreported outcome, no interrupted download), else None: then it loads edge/ota/trial.py.
    /main.py hands this to the agent so a steady boot never loads the trial code
    (docs/OTA.md section 10)."""
    st = read_state(root)
    last = st.get("last")
    if st.get("trial") or (isinstance(last, dict) and not last.get("reported")):
        return None
    try:
        os.stat(root + DOWNLOAD)
        return None
    except OSError:
        return summary(st)


def note_failure(root, why):
    """Record why a trial failed, so the rollback names it (best effort: a cut loses it)."""
    st = read_state(root)
    if st.get("trial"):
        st["trial"]["fail"] = why[:120]
        write_state(root, st)


def _cause():
    try:
        import machine

        return {3: "watchdog"}.get(machine.reset_cause(), "")  # machine.WDT_RESET on ESP32
    except (ImportError, AttributeError):
        return ""


def choose(root=""):
    """Choose a slot and config for this boot and put the slot first on sys.path (ahead of
    frozen and ROMFS modules); returns (config path, trial?). /main.py calls this, then drops
    this module before it starts the agent, so none of it stays on the heap."""
    st = read_state(root)
    slot, cfg = select(root, st, _cause())
    path = root + SLOTS[slot]
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    return root + cfg, bool(st.get("trial"))


def crashed(root, trial, e):
    """The agent raised e. A trial's crash is recorded and resets the board (the next boot
    rolls back); the confirmed agent's is raised as before updates existed."""
    if not trial:
        raise e
    note_failure(root, "crash: %s: %s" % (type(e).__name__, e))
    sys.print_exception(e)
    reset()


def reset():
    try:
        import machine

        machine.reset()
    except (ImportError, AttributeError):
        pass
    sys.exit(RESET_EXIT)  # unix port: the supervisor starts us again
