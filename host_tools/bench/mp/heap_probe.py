# MicroPython side of the heap figures of `edgectl bench memory` that are measured on two
# interpreters: the unix port (64-bit) and the WebAssembly port under node (32-bit, the sizes of
# an ESP32's objects and GC blocks). host_tools/bench/heap32.py prepends the parameters as
# assignments and appends the steps, separated by `#@step` lines:
#   LIB      the directory the agent's .mpy files are imported from (/lib, or /rom/lib: ROMFS)
#   ROMFS    None, or a ROMFS image file the unix port mounts at /rom from a bytes object
#            (it has vfs.VfsRom but no ROM partition); read before the baseline, so the image's
#            own bytes are not counted, as on a board where they are in flash
#   WORK     a writable directory (consent state)
#   STANDINS modules the port lacks that agent modules import but nothing here calls (the
#            WebAssembly port has no `socket`: the MQTT client imports it at load time and
#            uses it only to connect); each becomes an empty stand-in so the code can load
# The WebAssembly port only collects garbage between two top-level runs (its gc.collect() asks
# for a collection at the next one: it cannot see pointers held in wasm locals), so its driver
# (mp32.mjs) runs each step on its own, and every step starts with _mark(), which reads the
# heap in use after a collection on both ports. The last step prints `@heap {json}`.

import gc
import json  # noqa: F401  (the last step prints with it)
import sys

import micropython  # noqa: F401  (qstr_info() in the code steps)

sys.path[:] = [LIB, ".frozen"]  # noqa: F821  (prepended by the host)
if ROMFS:  # noqa: F821
    import vfs

    with open(ROMFS, "rb") as _f:  # noqa: F821
        _IMAGE = _f.read()
    vfs.mount(vfs.VfsRom(_IMAGE), "/rom")

for _name in STANDINS:  # noqa: F821
    try:
        __import__(_name)
    except ImportError:

        class _StandIn:
            pass

        sys.modules[_name] = _StandIn

_at = [0] * 512  # heap in use at each _mark(), preallocated: recording allocates nothing
_n = [0]
_sizes = {}
_failed = {}
_mods = {}


def _mark():
    gc.collect()
    _at[_n[0]] = gc.mem_alloc()
    _n[0] += 1


def _imp(name):
    """Import one module after its dependencies; a module the port cannot load is reported."""
    before = set(sys.modules)
    try:
        _mods[name] = __import__(name)
    except Exception as e:  # noqa: BLE001 - reported: the port lacks what the module needs
        _failed[name] = "%s: %s" % (type(e).__name__, e)
        for k in set(sys.modules) - before:  # a half-imported module is not kept
            sys.modules.pop(k)


def _code_report(names):
    """After `_mark(); _imp(name)` for each name and a last _mark(): the heap each module
    added, and in all."""
    for i, name in enumerate(names):
        if name not in _failed:
            _sizes[name] = _at[i + 1] - _at[i]
    return {"code_bytes": _at[_n[0] - 1] - _at[0], "modules": _sizes, "failed": _failed}


class _Clock:
    # the simulator's time source: a virtual clock stepping 1 ms per poll
    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b


_w = {}


def _work_setup(n):
    """Sample (the simulated appliance, six channels), consent gate, minimisation rules, and
    batches of 250 readings in the config's format (docs/FORMAT.md 3) written into the MQTT
    client's packet buffer after the room for the PUBLISH header, as the forwarder builds them
    (edge/forwarder.py): the data path without the store, the socket and the tasks."""
    if _failed:
        raise ImportError("the data path slice needs %r" % _failed)
    config = sys.modules["edge.config"]
    fwd = sys.modules["edge.forwarder"]
    codec = sys.modules["edge.codec"]
    chans = [{"id": i, "name": "c%d" % i, "category": "essential"} for i in range(1, 7)]
    cfg = config.load(
        None,
        {
            "device_id": "bench-0001",
            "channels": chans,
            "batch": {"max_readings": 250},
            "sim": {"enabled": True, "count": n, "rate_hz": 1000000},
        },
        with_board=False,
    )
    clock = _Clock()
    cats = config.category_ids(cfg)
    # the salt source: the WebAssembly port has no os.urandom (bytes(16): zeros, repeatable)
    consent = sys.modules["edge.consent"].Consent(
        WORK + "/",  # noqa: F821
        cats,
        "bench-0001",
        None,
        bytes,
    )
    mini = sys.modules["edge.minimise"].Minimiser(cfg, consent)
    client = sys.modules["edge.mqtt.link"].make_client(cfg, fwd.packet_bytes(cfg, cats))
    topics = [codec.topic(cfg["mqtt"]["prefix"], "bench-0001", "t", c) for c in cats]
    writer = fwd._writer(cfg, "bench-0001", client.txmv[fwd._header_room(topics) :])
    writer.start("essential", 1, 0)
    state = [0, 0, 0]  # seq, batches, payload bytes
    _w["client"] = client

    def emit(ch, value):
        if not consent.gate(0):
            return
        ts = clock.t
        rules = mini.rules.get(ch)
        if rules:
            ts, value = mini.apply(rules, ch, ts, value)
        state[0] += 1
        writer.add(state[0], ts, 1, 0, ch, value)
        if writer.count >= 250:
            state[2] += len(writer.finish())
            state[1] += 1
            writer.start("essential", 1, 0)

    _w["src"] = sys.modules["edge.sensors.simfridge"].SimFridge(cfg, clock)
    _w["clock"], _w["emit"], _w["state"] = clock, emit, state


def _work_run(k):
    """k readings through the stages."""
    _w["clock"].t += 1
    _w["src"].poll(_w["clock"].t, _w["emit"], k)


def _work_report():
    """After _mark(), imports, _mark(), setup, then _mark() before each run and at the end:
    code, the objects built at start, and the peak beyond the code."""
    code = _at[1] - _at[0]
    state = _w["state"]
    return {
        "code_bytes": code,
        "startup_bytes": _at[2] - _at[1],
        "working_set_bytes": max(_at[2 : _n[0]]) - _at[1],
        "readings": state[0],
        "batches": state[1],
        "payload_bytes": state[2],
    }


gc.collect()  # the WebAssembly port collects before the first step
