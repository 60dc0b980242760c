# Board definitions (boards/README.md): the one loader for the agent and the host tools.
# Shared contract module (common MicroPython / CPython subset): finds a board file where deploy
# puts it (/board.json) or in a boards/ directory, merges the device config's board_overrides
# (dicts merge key by key, lists and values are replaced) and resolves bus names for inputs.

import json
import os

from edge import wire

DEPLOYED = "/board.json"  # written by `edgectl deploy` (docs/DEPLOY.md 5)


class BoardError(ValueError):
    pass


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


def search_dirs():
    """Where board files may be, in order: beside the `edge` package (source tree, or the
    installed `edge_boards`), then `boards/` in the current directory and at the root."""
    dirs = []
    try:
        import edge

        here = edge.__file__.replace("\\", "/").rsplit("/", 1)[0]
        dirs = [here + "/../boards", here + "/../edge_boards"]
    except (AttributeError, ImportError):
        pass
    return dirs + ["boards", "/boards"]


def _valid_name(name):
    return wire.name_ok(name)


def _read_json(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise BoardError("board file %s is not valid JSON: %s" % (path, e)) from None
    if not isinstance(doc, dict):
        raise BoardError("board file %s must hold a JSON object" % path)
    return doc


def known():
    """Names of the board files in the search directories (for error messages)."""
    names = []
    for d in search_dirs():
        try:
            files = os.listdir(d)
        except OSError:
            continue
        for fn in files:
            if fn.endswith(".json") and fn[:-5] not in names:
                names.append(fn[:-5])
    names.sort()
    return names


def read(name):
    """The board file for a board name (or a path ending in .json): its dict, with "name" set.
    Raises BoardError naming what was looked for."""
    if isinstance(name, str) and name.endswith(".json"):
        doc = _read_json(name)
        if doc is None:
            raise BoardError("board file %s cannot be read" % name)
        if "name" not in doc:
            doc["name"] = name.replace("\\", "/").rsplit("/", 1)[-1][:-5]
        return doc
    if not _valid_name(name):
        raise BoardError("config key 'board' must be a board file name, got %r" % (name,))
    doc = _read_json(DEPLOYED)
    if doc is not None and doc.get("name") == name:
        return doc
    for d in search_dirs():
        doc = _read_json("%s/%s.json" % (d, name))
        if doc is not None:
            if "name" not in doc:
                doc["name"] = name
            return doc
    raise BoardError(
        "config key 'board': unknown board %r: no board file in %s or boards/ (known: %s)"
        % (name, DEPLOYED, ", ".join(known()) or "none")
    )


def load(cfg):
    """The effective board for cfg["board"]: the board file with cfg["board_overrides"] merged
    over it. Raises BoardError (a ValueError) naming the config key."""
    b = read(cfg.get("board", ""))
    over = cfg.get("board_overrides")
    if over is not None and not isinstance(over, dict):
        raise BoardError("config key 'board_overrides' must be an object")
    return merge(b, over or {})


def resolve(board, kind, ref, path):
    """A bus spec from an input: a name in board[kind] ("appliance"), or an object that may
    name a board entry with "name" and override its keys."""
    table = board.get(kind) or {}
    name = ref.get("name") if isinstance(ref, dict) else ref
    if isinstance(name, str) and name not in table:
        raise BoardError(
            "config key '%s': board %r has no %s named %r (it has: %s)"
            % (path, board.get("name"), kind, name, ", ".join(sorted(table)) or "none")
        )
    if isinstance(ref, str):
        return merge(table[ref], {"name": ref})  # the name travels with the spec (errors, vboard)
    if isinstance(ref, dict):
        base = table.get(ref["name"], {}) if "name" in ref else {}
        return merge(base, ref)
    if ref is None and kind == "i2c" and board.get("i2c"):
        return board["i2c"]
    raise BoardError("config key '%s' must name a board %s entry or be an object" % (path, kind))
