"""Shared by the OTA tests: release keys and bundles (synthetic ones for the power-cut harness,
real agent bundles for the end-to-end tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from host_tools.ota.keys import ReleaseKey
from host_tools.ota.release import pack


def make_key(d: Path, name: str = "release.json", lms_type: int = 5) -> ReleaseKey:
    """A small (32-signature) key: generation takes milliseconds."""
    key = ReleaseKey.generate(d / name, lms_type)
    (d / "release.pub").write_bytes(key.public())
    return key


def synthetic_bundle(
    key: ReleaseKey, version: str, nfiles: int, size: int, mpy: int, **extra
) -> bytes:
    """A signed bundle of `nfiles` made-up files (content depends on the version)."""
    seed = sum(map(ord, version))
    files = {
        f"edge/m{i}.mpy": bytes((seed + i * 7 + j) & 0xFF for j in range(size))
        for i in range(nfiles)
    }
    names = sorted(files)
    m = {
        "bundle": 1,
        "version": version,
        "mpy": mpy,
        "platform": "unix",
        "files": [[n, len(files[n]), hashlib.sha256(files[n]).hexdigest()] for n in names],
        **extra,
    }
    return pack(m, [files[n] for n in names], key)


# A release whose agent stores readings for a while and then crashes at start-up: the trial
# never confirms, the board resets, the boot selector rolls back.
CRASH_MAIN = """
import asyncio
from edge import config
from edge.agent import Agent
from edge.hal import load as load_hal


def run(config_path=None, root=None):
    with open(config_path) as f:
        cfg = config.load(f.read())
    agent = Agent(cfg, load_hal())
    first = agent.store.next_seq

    async def attempt():
        asyncio.create_task(agent.sampler())
        await asyncio.sleep_ms(1500)
        agent.store.commit()

    asyncio.run(attempt())
    print("@crash-attempt %d %d" % (first, agent.store.next_seq))
    raise RuntimeError("this release crashes at start")
"""


# A release whose agent blocks its event loop shortly after start-up (a hang, e.g. a driver
# that never returns): the watchdog is no longer fed and resets the board before the trial
# can confirm, the boot selector rolls back.
HANG_MAIN = """
import asyncio
import time
from edge import config
from edge.agent import Agent
from edge.hal import load as load_hal


def run(config_path=None, root=None):
    with open(config_path) as f:
        cfg = config.load(f.read())
    agent = Agent(cfg, load_hal())
    agent.ota_root = root

    async def hang():
        await asyncio.sleep_ms(300)
        print("@hang")
        time.sleep(120)  # blocks every task: nothing feeds the watchdog

    async def both():
        asyncio.create_task(hang())
        await agent.main()

    asyncio.run(both())
    return agent
"""


def real_bundle(d: Path, version: str, key: Path, name: str, **kw) -> Path:
    """The real agent, compiled for the unix port, signed with `key`."""
    from host_tools.ota.release import build_bundle

    out = d / name
    build_bundle("unix-sim", version, key, out, **kw)
    return out


def crash_bundle(d: Path, version: str, key: Path, main: str = CRASH_MAIN, name="crash") -> Path:
    """A real agent bundle whose edge/main is `main` (default: crashes at start)."""
    from host_tools.board.deploy import compile_module, compiler_for
    from host_tools.paths import local_mpy

    src = d / f"{name}_main.py"
    src.write_text(main)
    mpy = compile_module(compiler_for(local_mpy()), src, "edge/main.py", cache=d / "cache")
    return real_bundle(d, version, key, f"{name}-{version}.bundle", extra={"edge/main.mpy": mpy})


def widening_bundle(d: Path, version: str, key: Path) -> Path:
    """A release whose embedded default channels (edge/example.py) add one under `usage`: on a
    device whose config uses the defaults, it would collect more under a category the owner
    granted for less."""
    from host_tools.board.deploy import compile_module, compiler_for
    from host_tools.paths import edge_root, local_mpy

    text = (Path(edge_root()) / "edge" / "example.py").read_text()
    anchor = '{"id": 6, "name": "ice_maker_uses", "category": "usage"},'
    assert anchor in text
    src = d / "example_wider.py"
    src.write_text(
        text.replace(anchor, anchor + '{"id": 7, "name": "kitchen_audio", "category": "usage"},')
    )
    mpy = compile_module(compiler_for(local_mpy()), src, "edge/example.py", cache=d / "cache")
    return real_bundle(d, version, key, f"wider-{version}.bundle", extra={"edge/example.mpy": mpy})


class Telemetry:
    """Every reading seq a device publishes (paho, decoded with the shared codec)."""

    def __init__(self, port: int, device: str):
        import threading

        import paho.mqtt.client as mqtt

        from edge import codec

        self.seqs: set[int] = set()
        self.lock = threading.Lock()

        def on_message(client, userdata, msg):
            try:
                b = codec.decode_batch(msg.payload)
            except ValueError:
                return
            with self.lock:
                self.seqs.update(r[0] for r in b["readings"])

        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"tele-{device}")
        self.c.on_message = on_message
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"edge/{device}/t/#", qos=1)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def status(port: int, device: str, timeout: float = 5.0) -> dict:
    """The device's retained status message."""
    import json
    import queue

    import paho.mqtt.client as mqtt

    q: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, m: q.put(m.payload)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"edge/{device}/status", qos=1)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        from edge import codec  # compact snapshots in the full names (docs/HEALTH.md 1)

        return codec.decode_status(json.loads(q.get(timeout=timeout)))
    finally:
        c.loop_stop()
        c.disconnect()
