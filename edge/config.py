# Device configuration: embedded defaults, board + device merge, validation.
# Every error names the offending key path (issue 2: "malformed config gives a clear error").

import json


class ConfigError(ValueError):
    pass


# The embedded defaults: a simulated fridge on the unix port talking to a loopback broker.
DEFAULTS = {
    "device_id": "sim-0001",
    "board": "unix-sim",
    "mqtt": {
        "host": "127.0.0.1",
        "port": 1883,
        "prefix": "edge",
        "keepalive": 30,
        "window": 8,
        "user": None,
        "password": None,
        "tls": None,
    },
    # category -> policy; `essential` is the only one allowed without consent (DESIGN.md 3)
    "categories": {
        # essential: 1 MiB = 37,449 readings of 28 bytes, about 1 hour at 10 readings/s
        "essential": {"quota": 1048576, "evict": "drop_oldest"},
        "diagnostics": {"quota": 262144, "evict": "drop_oldest"},
        "usage": {"quota": 262144, "evict": "drop_oldest"},
        "location": {"quota": 65536, "evict": "drop_oldest"},
        "marketing": {"quota": 65536, "evict": "drop_oldest"},
    },
    # channel id -> name and category; values are fixed-point integers (STYLE 7.1.4)
    "channels": [
        {"id": 1, "name": "cabinet_temp_cC", "category": "essential"},
        {"id": 2, "name": "freezer_temp_cC", "category": "essential"},
        {"id": 3, "name": "compressor_power_W", "category": "diagnostics"},
        {"id": 4, "name": "defrost_cycles", "category": "diagnostics"},
        {"id": 5, "name": "door_opens", "category": "usage"},
        {"id": 6, "name": "ice_maker_uses", "category": "usage"},
    ],
    "store": {
        # auto: the raw record log when the board has a log partition, else littlefs
        # segments (docs/FORMAT.md 6.7); rawlog / segments: exactly that backend
        "backend": "auto",
        "path": "store",
        "flush_ms": 1000,
        "flush_n": 50,
        "segment_bytes": 16384,
        # of the 2 MiB filesystem; littlefs keeps the rest for metadata and copy-on-write
        "total_bytes": 1572864,
    },
    "batch": {"max_readings": 100, "linger_ms": 200},
    "sim": {"rate_hz": 50, "count": 0, "seconds": 0, "seed": 1},
    "status_ms": 5000,
}

_REQUIRED_TYPES = {  # type: dict
    "device_id": str,
    "board": str,
    "mqtt.host": str,
    "mqtt.port": int,
    "mqtt.prefix": str,
    "mqtt.keepalive": int,
    "mqtt.window": int,
    "store.flush_ms": int,
    "store.flush_n": int,
    "store.segment_bytes": int,
    "store.total_bytes": int,
    "batch.max_readings": int,
    "batch.linger_ms": int,
    "sim.rate_hz": int,
    "sim.count": int,
    "sim.seconds": int,
    "status_ms": int,
}


def merge(base, over):
    """Deep merge: dicts merge key by key, everything else (lists too) is replaced."""
    out = {}
    for k in base:
        out[k] = base[k]
    for k in over:
        if isinstance(out.get(k), dict) and isinstance(over[k], dict):
            out[k] = merge(out[k], over[k])
        else:
            out[k] = over[k]
    return out


def _get(cfg, path):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError("config key '%s' is missing" % path)
        node = node[part]
    return node


def _name_ok(s):
    if not s or len(s) > 64:
        return False
    for c in s:
        if not (c.isalpha() or c.isdigit() or c in "_-"):
            return False
    return True


def validate(cfg):
    if not isinstance(cfg, dict):
        raise ConfigError("config must be a JSON object")
    for path, typ in _REQUIRED_TYPES.items():
        v = _get(cfg, path)
        # bool is an int subclass in Python; a flag is never a valid number here
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise ConfigError("config key '%s' must be %s, got %r" % (path, typ.__name__, v))
        if typ is int and v < 0:
            raise ConfigError("config key '%s' must not be negative, got %d" % (path, v))
    if not _name_ok(cfg["device_id"]):
        raise ConfigError("config key 'device_id' must be 1-64 letters, digits, '_' or '-'")
    if (
        "/" in cfg["mqtt"]["prefix"]
        or "+" in cfg["mqtt"]["prefix"]
        or "#" in cfg["mqtt"]["prefix"]
    ):
        raise ConfigError("config key 'mqtt.prefix' must not contain '/', '+' or '#'")
    if not 1 <= cfg["mqtt"]["port"] <= 65535:
        raise ConfigError("config key 'mqtt.port' must be 1..65535")
    if not 1 <= cfg["mqtt"]["window"] <= 64:
        raise ConfigError("config key 'mqtt.window' must be 1..64")
    if not 1 <= cfg["batch"]["max_readings"] <= 1000:
        raise ConfigError("config key 'batch.max_readings' must be 1..1000")
    if cfg["store"].get("backend", "auto") not in ("auto", "rawlog", "segments"):
        raise ConfigError("config key 'store.backend' must be 'auto', 'rawlog' or 'segments'")
    if cfg["store"]["flush_n"] < 1:
        raise ConfigError("config key 'store.flush_n' must be at least 1")
    cats = cfg.get("categories")
    if not isinstance(cats, dict) or not cats:
        raise ConfigError("config key 'categories' must be a non-empty object")
    if "essential" not in cats:
        raise ConfigError("config key 'categories' must declare 'essential'")
    if len(cats) > 32:
        raise ConfigError("config key 'categories' declares more than 32 categories")
    for name, pol in cats.items():
        key = "categories." + name
        if not _name_ok(name):
            raise ConfigError("config key '%s': bad category name" % key)
        if not isinstance(pol, dict):
            raise ConfigError("config key '%s' must be an object" % key)
        q = pol.get("quota", 0)
        if not isinstance(q, int) or isinstance(q, bool) or q < 0:
            raise ConfigError("config key '%s.quota' must be a non-negative integer" % key)
        if pol.get("evict", "drop_oldest") not in ("drop_oldest", "reject_new"):
            raise ConfigError("config key '%s.evict' must be 'drop_oldest' or 'reject_new'" % key)
    chans = cfg.get("channels")
    if not isinstance(chans, list) or not chans:
        raise ConfigError("config key 'channels' must be a non-empty list")
    seen = {}
    for i, ch in enumerate(chans):
        key = "channels[%d]" % i
        if not isinstance(ch, dict):
            raise ConfigError("config key '%s' must be an object" % key)
        cid = ch.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid <= 255:
            raise ConfigError("config key '%s.id' must be an integer 0..255" % key)
        if cid in seen:
            raise ConfigError("config key '%s.id' repeats channel id %d" % (key, cid))
        seen[cid] = True
        if not isinstance(ch.get("name"), str) or not ch["name"]:
            raise ConfigError("config key '%s.name' must be a non-empty string" % key)
        if ch.get("category") not in cats:
            raise ConfigError(
                "config key '%s.category' names undeclared category %r" % (key, ch.get("category"))
            )
    return cfg


def load(text=None, overrides=None):
    """Parse device config JSON text (None: embedded defaults), merge over the defaults,
    apply overrides and validate. Raises ConfigError naming the bad key."""
    cfg = DEFAULTS
    if text:
        try:
            user = json.loads(text)
        except ValueError as e:
            raise ConfigError("config is not valid JSON: %s" % e)
        if not isinstance(user, dict):
            raise ConfigError("config must be a JSON object")
        cfg = merge(cfg, user)
    if overrides:
        cfg = merge(cfg, overrides)
    return validate(cfg)


def category_ids(cfg):
    """Stable category index (u8 on flash and in batches): sorted names, `essential` first."""
    names = sorted(cfg["categories"])
    names.remove("essential")
    return ["essential"] + names
