# Board definitions (issue 6 item 5): boards/<name>.json, then the device config's
# "board_overrides" merged over it (dicts merge key by key, lists and values are replaced;
# documented in boards/README.md).

import json

from edge.config import merge

# Where a board file may be: beside the package on the host / unix, or on the board's flash.
_DIRS = ["boards", "/boards", "../boards"]


def _find(name):
    try:
        import edge

        here = edge.__file__.rsplit("/", 1)[0]
        dirs = [here + "/../boards", here + "/../edge_boards"] + _DIRS
    except (AttributeError, ImportError):
        dirs = _DIRS
    for d in dirs:
        try:
            with open("%s/%s.json" % (d, name)) as f:
                return json.load(f)
        except OSError:
            pass
    return None


def load(cfg):
    """The effective board dict for cfg["board"] (empty dict when no file exists)."""
    name = cfg.get("board", "")
    for c in name:
        if not (c.isalpha() or c.isdigit() or c in "-_"):
            raise ValueError("config key 'board' must be a board file name, got %r" % name)
    b = _find(name) if name else None
    over = cfg.get("board_overrides")
    if over is not None and not isinstance(over, dict):
        raise ValueError("config key 'board_overrides' must be an object")
    return merge(b or {}, over or {})


def resolve(board, kind, ref, path):
    """A bus spec from an input: a name in board[kind] ("appliance"), or an object that may
    name a board entry with "name" and override its keys."""
    table = board.get(kind) or {}
    if isinstance(ref, str):
        if ref not in table:
            raise ValueError("config key '%s': board has no %s named %r" % (path, kind, ref))
        return table[ref]
    if isinstance(ref, dict):
        base = table.get(ref.get("name"), {}) if "name" in ref else {}
        return merge(base, ref)
    if ref is None and kind == "i2c" and board.get("i2c"):
        return board["i2c"]
    raise ValueError("config key '%s' must name a board %s entry or be an object" % (path, kind))
