# The field life-cycle commands (docs/OTA.md sections 7-8): cmd/update, cmd/config,
# cmd/config/get and cmd/reboot. edge/commands.py imports this module only when one of them
# arrives, so none of it sits on the heap of an agent that never gets one. Every handler
# validates first and raises ValueError with the reason; nothing changes then.

import asyncio
import binascii
import gc
import hashlib
import json
import os
import sys

from micropython import const

from edge import bundle, config
from edge.ota import boot, slots

COMMANDS = ("update", "config", "config/get", "reboot")
_MAX_BUNDLE = const(4194304)
_RESERVE = const(16384)  # flash left free beyond a bundle and the store's unused quota
_MAX_TOPIC = const(128)
_MAX_REPLY = const(1200)
# heap an update needs beyond its code: the chunks in flight (window x chunk), the manifest
# (about 200 B a file on a 64-bit port), hashing and file buffers, with room for the data path
_UPDATE_FREE = const(24576)  # a config/get reply larger than this is refused: ask for keys
# Identity, broker, trust and inputs: only a deploy over the serial port changes these. A
# command could otherwise move the telemetry to another broker, swap the release key, or make
# a channel measure something else than what the owner consented to (docs/OTA.md section 8).
LOCKED = (
    "device_id",
    "board",
    "ota",
    "consent",
    "backend",  # the collector's key: its holder could forge acks and receipts
    "inputs",
    "store.path",
    "store.backend",  # the other backend would not find the buffered readings
)
# `mqtt` is the broker, the login, TLS and the ack rule: of it only these tune a session. Any
# other key, present or added later (the failover list `brokers`), changes only by deploy.
MQTT_REMOTE = ("keepalive", "window", "backoff_cap_ms", "e2e_timeout_ms")
_SECRET_WORDS = ("password", "key", "secret", "token")


def execute(agent, name, doc):
    """Run one of COMMANDS; returns the reply dict, raises ValueError with the reason."""
    if agent.ota_root is None:
        raise ValueError(
            "%s needs an agent started by the boot selector (deploy's main.py, or "
            "edgectl run --slots)" % name
        )
    if name == "reboot":
        return reboot(agent, doc)
    if name == "config/get":
        return config_get(agent, doc)
    if agent.ota and agent.ota.get("running_trial"):
        raise ValueError(
            "busy: this run is the trial of %s; wait until it is confirmed or rolled back"
            % agent.ota.get("trial")
        )
    if name == "update":
        return update(agent, doc)
    return config_set(agent, doc)


# --- cmd/reboot ------------------------------------------------------------------------------
def reboot(agent, doc):
    delay = doc.get("delay_ms", 1000)
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= 60000:
        raise ValueError("'delay_ms' must be an integer 0..60000")
    asyncio.create_task(_reboot_later(agent, delay, "cmd/reboot"))
    return {"ok": True, "state": "rebooting", "in_ms": delay}


async def _reboot_later(agent, ms, why):
    await asyncio.sleep_ms(ms)  # the reply goes out first
    agent.request_reboot(why)


# --- cmd/update ------------------------------------------------------------------------------
def _check_update(agent, doc):
    for k in doc:
        if k not in (
            "id",
            "version",
            "size",
            "sha256",
            "topic",
            "url",
            "chunk",
            "downgrade",
            "cancel",
        ):
            raise ValueError("unknown key %r in update command" % k)
    if doc.get("url") is not None:
        raise ValueError("url delivery is not supported: publish the bundle with edgectl update")
    size = doc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= _MAX_BUNDLE:
        raise ValueError("'size' must be the bundle's byte count, 1..%d" % _MAX_BUNDLE)
    sha = doc.get("sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise ValueError("'sha256' must be the bundle's SHA-256 as 64 hex digits")
    try:
        binascii.unhexlify(sha)
    except ValueError:
        raise ValueError("'sha256' must be the bundle's SHA-256 as 64 hex digits")
    topic = doc.get("topic")
    root = agent.cfg["mqtt"]["prefix"] + "/"
    if (
        not isinstance(topic, str)
        or not topic.startswith(root)
        or len(topic) > _MAX_TOPIC
        or "+" in topic
        or "#" in topic
    ):
        raise ValueError("'topic' must be a topic under %s without wildcards" % root)
    chunk = doc.get("chunk", 1024)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not 256 <= chunk <= 1536:
        raise ValueError("'chunk' must be 256..1536 bytes (the receive buffer is 2 KiB)")
    bundle.parse_version(doc.get("version"))
    down = doc.get("downgrade", False)
    if not isinstance(down, bool):
        raise ValueError("'downgrade' must be true or false")
    return {
        "id": doc.get("id"),
        "version": doc["version"],
        "size": size,
        "sha256": sha.lower(),
        "topic": topic,
        "chunk": chunk,
        "downgrade": down,
    }


def release_key(agent):
    """The 60-byte release public key (config `ota.key`, default /secrets/release.pub)."""
    path = (agent.cfg.get("ota") or {}).get("key") or "/secrets/release.pub"
    try:
        with open(agent.ota_root + path, "rb") as f:
            data = f.read()
    except OSError:
        raise ValueError("no release key on this device (%s): deploy one" % path)
    if len(data) != 60:
        try:
            data = binascii.unhexlify(data.strip())
        except ValueError:
            data = b""
    if len(data) != 60:
        raise ValueError("release key %s is not 60 bytes (or their hex)" % path)
    return data


def _free_bytes(path):
    try:
        s = os.statvfs(path or "/")
        return s[0] * s[4]
    except (OSError, AttributeError):
        return None


def update(agent, doc):
    from edge import lms  # noqa: F401  (loaded now: the heap check below counts it)
    from edge.ota.updater import Updater, pending

    cur = agent.updater
    if doc.get("cancel"):
        if cur is None or cur.done:
            raise ValueError("no download to cancel")
        cur.cancel()
        return {"ok": True, "state": "cancelled"}
    req = _check_update(agent, doc)
    if cur is not None and not cur.done:
        if cur.req["sha256"] == req["sha256"]:
            return {"ok": True, "state": cur.state, "offset": cur.off, "size": cur.size}
        raise ValueError(
            "busy: downloading %s (%d of %d bytes); send cancel: true first"
            % (cur.req["version"], cur.off, cur.size)
        )
    root = agent.ota_root
    st = boot.read_state(root)
    v = bundle.parse_version(req["version"])
    floor = st.get("floor")
    if floor and v < bundle.parse_version(floor):
        raise ValueError("downgrade: %s is below the minimum %s" % (req["version"], floor))
    running = st["versions"].get(st["slot"])
    if running and v <= bundle.parse_version(running) and not req["downgrade"]:
        raise ValueError(
            "downgrade: %s is not newer than the running %s (send downgrade: true to allow it "
            "above the minimum)" % (req["version"], running)
        )
    deployed = release_key(agent)
    key = slots.trusted_key(st, deployed)
    free = _free_bytes(root)
    if free is not None:
        # the store must keep room for its whole quota: a slot that eats into it would make
        # the store drop readings for want of flash (docs/OTA.md section 7)
        total = agent.cfg["store"]["total_bytes"]
        store_room = max(total - agent.store.used_bytes(), 0)
        short = req["size"] + store_room + _RESERVE - free
        if short > 0:
            raise ValueError(
                "not enough flash: the bundle (%d B), the store's unused quota (%d B) and %d B "
                "reserve need %d B more than the %d B free; lower store.total_bytes to %d or less "
                "(edgectl config DEVICE --set store.total_bytes=N)"
                % (req["size"], store_room, _RESERVE, short, free, (total - short) // 4096 * 4096)
            )
    gc.collect()
    if gc.mem_free() < _UPDATE_FREE:
        raise ValueError(
            "not enough free heap for an update: %d B free with its code loaded, %d B needed "
            "(a ROMFS or frozen agent keeps the code off the heap)" % (gc.mem_free(), _UPDATE_FREE)
        )
    was = pending(root)
    resume = bool(was) and was.get("sha256") == req["sha256"]
    policy = {
        "pub": key,
        "mpy": getattr(sys.implementation, "_mpy", 0),
        "platform": agent.hal.platform,
        "current": running,
        "floor": floor,
        "downgrade": req["downgrade"],
        "key_from": slots.key_id(deployed),  # what a rotation this update carries starts from
    }
    u = Updater(agent, req, policy)
    agent.updater = u
    asyncio.create_task(u.run(resume))
    return {"ok": True, "state": "accepted", "version": req["version"], "slot": u.slot}


def resume(agent):
    """At start: the coroutine that resumes a download a reboot interrupted, or None."""
    from edge.ota.updater import pending

    req = pending(agent.ota_root)
    if req is None:
        return None
    try:
        update(agent, dict(req))
    except ValueError as e:
        agent.log("ota: interrupted download not resumed: %s" % e)
        try:
            os.remove(agent.ota_root + boot.DOWNLOAD)
        except OSError:
            pass
    return None


# --- cmd/config, cmd/config/get ------------------------------------------------------------------
def _touches(partial, path):
    node = partial
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def redact(cfg):
    """A copy without secret values (passwords, keys, tokens): never echoed, never hashed."""
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            secret = False
            for w in _SECRET_WORDS:
                if w in k:
                    secret = True
            out[k] = "***" if secret and v is not None else redact(v)
        return out
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


def _canonical(x, out):
    # json.dumps has no sort_keys on MicroPython: keys sorted by hand, same bytes every time
    if isinstance(x, dict):
        out.append("{")
        first = True
        for k in sorted(x):
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(k) + ":")
            _canonical(x[k], out)
        out.append("}")
    elif isinstance(x, list):
        out.append("[")
        for i, v in enumerate(x):
            if i:
                out.append(",")
            _canonical(v, out)
        out.append("]")
    else:
        out.append(json.dumps(x))


def config_hash(cfg):
    """First 16 hex digits of the SHA-256 of the canonical JSON of the redacted config."""
    parts = []  # type: list
    _canonical(redact(cfg), parts)
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return binascii.hexlify(h.digest()).decode()[:16]


def widening(old, new, consent):
    """Refuse a change that would collect more under a category than the owner consented to:
    a channel added to or moved into a granted category, or a granted category's
    minimisation rule removed or changed; any channel added to `essential` (it needs no
    consent). A category without consent may change: the gate keeps it off flash."""
    was = {}
    for ch in old["channels"]:
        was[ch["id"]] = ch["category"]
    wider = {}  # type: dict
    for ch in new["channels"]:
        if was.get(ch["id"]) != ch["category"]:
            wider.setdefault(ch["category"], []).append(ch["id"])
    for name, pol in new["categories"].items():
        before = (old["categories"].get(name) or {}).get("minimise") or []
        after = pol.get("minimise") or []
        for rule in before:
            if rule not in after:
                wider.setdefault(name, [])
    for name, chans in wider.items():
        if name == "essential":
            if chans:
                raise ValueError(
                    "widening: channels %r would be collected as 'essential', which needs no "
                    "consent; essential channels change only by deploy" % chans
                )
            continue
        i = consent.categories.index(name) if name in consent.categories else -1
        if i >= 0 and consent.ingest[i]:
            raise ValueError(
                "widening: the change collects more under '%s', which the owner granted for "
                "what it collected before; revoke '%s', make the change, then ask for consent "
                "again" % (name, name)
            )


def config_set(agent, doc):
    doc = dict(doc)
    cid = doc.pop("id", None)
    if not doc:
        raise ValueError("empty config change")
    locked = list(LOCKED)
    mq = doc.get("mqtt")
    if isinstance(mq, dict):
        locked += ["mqtt." + k for k in mq if k not in MQTT_REMOTE]
    elif "mqtt" in doc:
        locked.append("mqtt")
    for path in locked:
        if _touches(doc, path):
            raise ValueError(
                "config key '%s' cannot be changed remotely (identity, broker, trust and inputs "
                "change only by deploy)" % path
            )
    root = agent.ota_root
    st = boot.read_state(root)
    try:
        with open(root + st["cfg"]) as f:
            current = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError("cannot read the running config %s: %s" % (st["cfg"], e))
    merged = config.merge(current, doc)
    new = config.load(json.dumps(merged))  # the boot's own validation (ConfigError)
    widening(agent.cfg, new, agent.consent)
    h = config_hash(new)
    if h == config_hash(agent.cfg):
        return {"ok": True, "state": "unchanged", "config_hash": h}
    path = slots.inactive_config(st)
    slots.write_config(root, path, merged)
    slots.stage(root, st, "config", st["slot"], path, cid, chash=h)
    asyncio.create_task(_reboot_later(agent, 1000, "config change staged"))
    return {"ok": True, "state": "staged", "config_hash": h, "reboot": True}


def config_get(agent, doc):
    keys = doc.get("keys")
    eff = redact(agent.cfg)
    if keys is not None:
        if not isinstance(keys, list) or len(keys) > 16:
            raise ValueError("'keys' must be a list of up to 16 top-level config keys")
        eff = {k: eff[k] for k in keys if isinstance(k, str) and k in eff}
    st = boot.read_state(agent.ota_root)
    reply = {
        "ok": True,
        "config": eff,
        "config_hash": config_hash(agent.cfg),
        "file": st["cfg"],
        "keys": sorted(agent.cfg),
    }
    n = len(json.dumps(reply))
    if n > _MAX_REPLY:
        raise ValueError(
            "config is %d bytes, too large for one reply: ask for some keys, e.g. "
            '{"keys": ["store", "batch"]}' % n
        )
    return reply
