"""`edgectl check CONFIG [--board B]`: the device config against the schema the agent uses at
boot (edge/schema.py), with the board's UART, pin and bus names resolved; every problem at once.

`edgectl check --reference` prints docs/CONFIG.md, generated from the same schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge import board as edge_board
from edge import schema
from host_tools.errors import ToolError, read_json_object
from host_tools.paths import board_file
from host_tools import argtypes


def read_config(path: Path) -> dict:
    """The device config JSON; ToolError naming the file and the JSON error's position."""
    return read_json_object(path, "device config")


def problems(cfg: dict, board: dict | None = None) -> list[str]:
    """Every problem of cfg (filled in with defaults in place), as the agent would report
    them at boot. With a board dict (a board file), the config must be for that board (or name
    none); without, the board the config names is loaded. Its names are resolved either way."""
    if board is not None:
        if cfg.get("board", board["name"]) != board["name"]:
            return [f"config key 'board' is {cfg['board']!r}, but the board is {board['name']!r}"]
        cfg.setdefault("board", board["name"])
    found = schema.check(cfg)
    if found:
        return found
    try:
        if board is None:
            effective = edge_board.load(cfg)
        else:
            effective = edge_board.merge(board, cfg.get("board_overrides") or {})
    except ValueError as e:
        return [str(e)]
    return schema.check(cfg, effective, False)


def referenced_files(cfg: dict) -> list[tuple[str, str]]:
    """(key, board path) of every config key of schema type `file` that is set, in table
    order: the files the agent will open (TLS certificates, the consent key)."""
    out = []
    for row in schema.rows():
        if "file" not in row[1]:
            continue
        v: object = cfg
        for part in row[0].split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, str):
            out.append((row[0], v))
    return out


def check_file(path: Path, board: dict | None = None) -> dict:
    """The checked config with defaults filled in; ToolError listing every problem."""
    cfg = read_config(path)
    found = problems(cfg, board)
    if found:
        raise ToolError(f"{path}: " + f"\n{path}: ".join(found))
    return cfg


# --- docs/CONFIG.md ----------------------------------------------------------------------------
_HEAD = """# Device config reference

Generated from `edge/schema.py` by `edgectl check --reference > docs/CONFIG.md`; do not edit by
hand (`tests/test_schema.py` fails when this page is stale). The agent checks its config against
the same table at boot, `edgectl check CONFIG [--board B]` and `edgectl deploy` check it on the
host before anything is copied: an unknown key is an error naming its path and the nearest valid
name, and every problem is reported at once (exit 2).

Notation: `a.b` is key `b` inside object `a`; `a[]` is an item of list `a`; `a.*` is any key of
map `a`; a key marked *(line, tuya)* exists only in inputs of those types. **Default**: filled in
when the key is absent; *required*: must be given; *optional*: no default, absence has the
meaning given. **Range**: `lo..hi` bounds a number, or the length of a string or list. Type
**file**: a path on the board; `edgectl deploy` copies `/secrets/NAME` from the `secrets/`
directory beside the device config and stops, naming the key, when that file is missing or the
path is not under `/secrets/` (docs/DEPLOY.md 5).
"""

_TAIL = """
## Adding a key

Add one row to `TABLE` in `edge/schema.py` (path, type, default, range, meaning), read the value
where it is used (the agent gets the default filled in), then regenerate this page:

```
.venv/bin/edgectl check --reference > docs/CONFIG.md
.venv/bin/python -m pytest -q tests/test_schema.py
```

A rule between keys (a channel must be declared, a register must be inside its read) goes in
`_cross` in the same file. Code that needs the schema after boot (a remote config command)
imports it with `edge.config.check`, which drops the module again, so its table does not stay
on the device's heap.
"""


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def _default(row: tuple) -> str:
    d = row[2]
    if d == "!":
        return "*required*"
    if d == "-":
        return "*optional*"
    if d == "*":
        return "see below"
    return f"`{d}`"


def _range(row: tuple) -> str:
    r = row[3]
    if r == "-":
        return ""
    if r == "name":
        return "keys: names"
    if r.startswith("n:"):
        return f"keys: numbers {r[2:]}"
    return " or ".join(
        f"`{a}`" if not a.startswith("$") else f"keys of `{a}`" for a in r.split("|")
    )


def reference() -> str:
    """The config reference page (docs/CONFIG.md) generated from the schema table."""
    out = [_HEAD]
    sections: list[tuple[str, list[tuple]]] = []
    for row in schema.rows():
        top = row[0].split(".")[0].split("[")[0]
        if not sections or sections[-1][0] != top:
            sections.append((top, []))
        sections[-1][1].append(row)
    single = [rs[0] for _top, rs in sections if len(rs) == 1]
    groups = [("", single)] + [(top, rs) for top, rs in sections if len(rs) > 1]
    for top, rs in groups:
        if not top:
            out.append("\n## Top-level keys\n")
        elif top.startswith("$"):
            out.append(f"\n## Group `{top}`\n")
            out.append(f"The keys of every object whose range says `{top}`.\n")
        else:
            out.append(f"\n## `{top}`\n")
        out.append("| key | type | default | range | meaning |\n|---|---|---|---|---|")
        for row in rs:
            key = f"`{row[0]}`"
            if row[4]:
                key += " *(" + ", ".join(row[4]) + ")*"
            out.append(
                f"| {key} | {' or '.join(row[1])} | {_default(row)} | {_cell(_range(row))} "
                f"| {_cell(row[5])} |"
            )
    out.append("\n## Embedded defaults\n")
    out.append(
        "Without a config file the agent runs a simulated fridge; these are the defaults of "
        "`categories` and `channels`:\n"
    )
    ex = schema.defaults()
    out.append("```json")
    out.append(json.dumps({k: ex[k] for k in ("categories", "channels")}, indent=1))
    out.append("```")
    out.append(_TAIL)
    return "\n".join(out)


def cmd_check(args: argparse.Namespace) -> int:
    if args.reference:
        sys.stdout.write(reference())
        return 0
    if not args.config:
        raise ToolError("check needs a CONFIG file (or --reference)")
    path = Path(args.config)
    board = board_file(args.board) if args.board else None
    cfg = read_config(path)
    found = problems(cfg, board)
    for line in found:
        print(f"edgectl: {path}: {line}", file=sys.stderr)
    if found:
        return 2
    print(
        f"{path}: ok (board {cfg['board']}, {len(cfg['inputs'])} inputs, "
        f"{len(cfg['channels'])} channels)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl check`."""
    p = sub.add_parser("check", help="check a device config against the schema and its board")
    p.add_argument("config", nargs="?", type=argtypes.input_file, help="device config JSON")
    p.add_argument(
        "--board", help="board name (boards/NAME.json) or JSON path; default: the config's"
    )
    p.add_argument(
        "--reference", action="store_true", help="print the config reference (docs/CONFIG.md)"
    )
    p.set_defaults(func=cmd_check)
