# Device configuration at boot: parse, check against the schema (edge/schema.py, the one source
# of every key's type, range and default; docs/CONFIG.md), fill in defaults.
# Every problem is reported at once, each naming its key path.

import gc
import json
import sys

from edge import example  # noqa: F401  (resident: the embedded config's channels, categories)
from edge.board import merge  # noqa: F401  (config.merge: the one deep-merge rule)
from edge.inbound import json_depth


class ConfigError(ValueError):
    pass


def _unload(name):
    # The schema is needed once per boot (and per remote config): dropping the module lets the
    # collector free its code and table instead of keeping them on the heap for the whole run.
    sys.modules.pop(name, None)
    pkg = sys.modules.get("edge")
    if pkg is not None and hasattr(pkg, "schema"):
        try:
            delattr(pkg, "schema")
        except (AttributeError, TypeError):
            pass


def check(cfg, with_board=True):
    """Check cfg against the schema, filling in defaults in place; with_board also resolves
    board names (UARTs, pins, buses). Raises ConfigError listing every problem."""
    from edge import board as boards
    from edge import schema

    try:
        problems = schema.check(cfg)
        if not problems and with_board:
            try:
                problems = schema.check(cfg, boards.load(cfg), False)
            except ValueError as e:
                problems = [str(e)]
    finally:
        del schema
        _unload("edge.schema")
        gc.collect()
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


CONFIG_MAX = 16384  # bytes of device config JSON the agent reads (docs/SECURITY.md 2)
_CONFIG_DEPTH = 12


def load(text=None, overrides=None, with_board=True):
    """Parse device config JSON text (None: the embedded defaults), merge
    overrides over it, check it and fill in defaults. Raises ConfigError naming every bad key."""
    cfg = {}
    if text:
        if len(text) > CONFIG_MAX:
            raise ConfigError("config is larger than %d bytes" % CONFIG_MAX)
        if json_depth(text, _CONFIG_DEPTH) > _CONFIG_DEPTH:
            raise ConfigError("config nests deeper than %d levels" % _CONFIG_DEPTH)
        try:
            cfg = json.loads(text)
        except ValueError as e:
            raise ConfigError("config is not valid JSON: %s" % e)
        if not isinstance(cfg, dict):
            raise ConfigError("config must be a JSON object")
    if overrides:
        cfg = merge(cfg, overrides)
    return check(cfg, with_board)


def category_ids(cfg):
    """Stable category index (u8 on flash and in batches): sorted names, `essential` first."""
    names = sorted(cfg["categories"])
    names.remove("essential")
    return ["essential"] + names
