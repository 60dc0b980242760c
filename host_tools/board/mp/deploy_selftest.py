# Board-side self-test after `edgectl deploy` (issue 7), run after a soft reset. Preceded by a
# line setting CONFIG (path of the device config) and ENTRY (agent module with run()).
# Checks: the agent imports, the device config parses, the store's filesystem is mounted and
# writable. Prints one JSON line {"ok": bool, "checks": [[name, ok, detail], ...]}.
# ruff: noqa: F821 - CONFIG and ENTRY are set by the line the host sends first
import json
import os

_checks = []


def _check(name, fn):
    try:
        _checks.append([name, True, fn()])
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal here
        _checks.append([name, False, "%s: %s" % (type(e).__name__, e)])


def _deployed():
    os.stat("/.deploy.json")
    return "deploy manifest present"


def _imports():
    mod = __import__(ENTRY, None, None, ["run"])
    if not hasattr(mod, "run"):
        raise ImportError("%s has no run()" % ENTRY)
    src = getattr(mod, "__file__", "frozen")
    return "%s.run from %s" % (ENTRY, src)


def _config():
    from edge import config

    with open(CONFIG, "r") as f:
        cfg = config.load(f.read())
    globals()["_cfg"] = cfg
    return "device %s, board %s" % (cfg["device_id"], cfg["board"])


def _store():
    import vfs

    root = [m for m in vfs.mount() if m[1] == "/"]
    if not root:
        raise OSError("no filesystem mounted at /")
    path = "/" + globals()["_cfg"]["store"]["path"].strip("/")
    try:
        os.mkdir(path)
    except OSError:
        pass
    probe = path + "/.selftest"
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.remove(probe)
    st = os.statvfs("/")
    return "%s on %s, %d KiB free" % (path, type(root[0][0]).__name__, st[0] * st[3] // 1024)


_check("deploy", _deployed)
_check("imports", _imports)
_check("config", _config)
if "_cfg" in globals():
    _check("store", _store)
print(json.dumps({"ok": all(c[1] for c in _checks), "checks": _checks}))
