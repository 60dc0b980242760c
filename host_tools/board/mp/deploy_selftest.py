# Board-side self-test after `edgectl deploy` (docs/DEPLOY.md 5), run after a soft reset.
# Preceded by lines setting CONFIG (device config path), ENTRY (agent module with run()),
# NETWORK (bring up the network and log in to the broker) and LISTEN_MS (how long to sample).
# It boots the deployed config as far as the agent's start does: the agent imports, the config
# passes the schema with the deployed /board.json, the store is writable, every input opens
# (UART, bus, pin) and is sampled for LISTEN_MS, the network comes up and the broker accepts
# the device's login. Prints one JSON line {"ok": bool, "checks": [[name, ok, detail], ...]};
# ok is true, false or "warn" (opened, but no reading yet: nothing fails at boot).
# ruff: noqa: F821 - CONFIG, ENTRY, NETWORK and LISTEN_MS are set by the lines the host sends first
import json
import os
import sys
import time

# the path /main.py boots with: /lib first, so a copied agent wins over one in the ROM partition
# (/rom/lib) and the self-test imports the agent that will run
if sys.path[:1] != ["/lib"]:
    sys.path.insert(0, "/lib")

_checks = []
_state = {}


def _check(name, fn):
    try:
        r = fn()
        ok, detail = r if isinstance(r, tuple) else (True, r)
        _checks.append([name, ok, detail])
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
    _state["cfg"] = cfg
    return "device %s, board %s" % (cfg["device_id"], cfg["board"])


def _hal():
    if "hal" not in _state:
        from edge.hal import load

        _state["hal"] = load()
    return _state["hal"]


def _store():
    import vfs

    root = [m for m in vfs.mount() if m[1] == "/"]
    if not root:
        raise OSError("no filesystem mounted at /")
    path = "/" + _state["cfg"]["store"]["path"].strip("/")
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


def _inputs():
    # The agent's own builder: a UART that cannot be opened, an unknown bus or pin fails
    # here exactly as it would stop the agent at boot (ConfigError naming the key).
    from edge import inputs
    from edge.agent import check_sources

    cfg = _state["cfg"]
    specs = cfg["inputs"]
    if not specs:
        check_sources(cfg)  # no inputs and no simulator asked for: the agent's boot error
        return "none configured (the simulated fridge runs: sim.enabled)"
    hal = _hal()
    sources = inputs.build(cfg, hal)
    counts = [0] * len(sources)

    def counter(i):
        def emit(channel, value):
            counts[i] += 1

        return emit

    emits = [counter(i) for i in range(len(sources))]
    t0 = hal.ticks_ms()
    while hal.ticks_diff(hal.ticks_ms(), t0) < LISTEN_MS and 0 in counts:
        now = hal.ticks_ms()
        for i in range(len(sources)):
            sources[i].poll(now, emits[i])
        time.sleep_ms(5)
    stats = inputs.stats(sources)
    parts = []
    silent = False
    for i in range(len(sources)):
        what = "inputs[%d] %s" % (i, specs[i]["type"])
        if counts[i]:
            parts.append("%s: %d readings" % (what, counts[i]))
        else:
            silent = True
            st = stats.get("inputs[%d]" % i) or {}
            parts.append("%s: opened, no reading in %d ms %s" % (what, LISTEN_MS, json.dumps(st)))
    return ("warn" if silent else True), "; ".join(parts)


def _network():
    hal = _hal()
    if hal.platform != "esp32":
        return "the host's network (%s port)" % hal.platform
    import asyncio

    from edge import net

    creds = net.credentials(_state["cfg"])
    if creds is None:
        import network

        if network.WLAN(network.WLAN.IF_STA).isconnected():
            return "no Wi-Fi configured; the station is already up (boot.py)"
        raise OSError("no Wi-Fi configured: set config key 'wifi' or provision %s" % net.SECRETS)
    st = net.Station(hal, creds, print)
    try:
        up = asyncio.run(st.join())
    finally:
        asyncio.new_event_loop()
    if not up:
        raise OSError("no association with %r within %d ms" % (creds[0], creds[3]))
    return "associated with %r, rssi %s" % (creds[0], st.rssi)


def _broker():
    import asyncio

    from edge.mqtt.link import make_client

    cfg = _state["cfg"]
    m = cfg["mqtt"]
    client = make_client(cfg, 256)  # reads the TLS files the config names

    async def login():
        present = await client.connect(m["host"], m["port"], clean=False)
        # The agent's persistent session may hold commands for it: stop the reader before it
        # can acknowledge one, so the broker delivers them to the agent (MQTT 3.1.1 4.4).
        if client.task is not None:
            client.task.cancel()
        await client.disconnect()
        return present

    try:
        present = asyncio.run(login())
    except OSError as e:
        raise OSError("cannot reach the broker at %s:%d: %s" % (m["host"], m["port"], e)) from None
    finally:
        asyncio.new_event_loop()
    return "%s:%d accepted %s%s%s" % (
        m["host"],
        m["port"],
        cfg["device_id"],
        " over TLS" if m.get("tls") else "",
        " (session present)" if present else "",
    )


_check("deploy", _deployed)
_check("imports", _imports)
_check("config", _config)
if "cfg" in _state:
    _check("store", _store)
    _check("inputs", _inputs)
    if NETWORK:
        _check("network", _network)
        if _checks[-1][1] is True:
            _check("broker", _broker)
print(json.dumps({"ok": all(c[1] is not False for c in _checks), "checks": _checks}))
