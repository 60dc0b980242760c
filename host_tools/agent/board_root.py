"""A directory laid out like a board's filesystem (docs/OTA.md section 4), so the agent under
unix MicroPython boots through the same `main.py`, boot selector and slots as a deployed board:
`lib/edge/*.mpy` compiled as `edgectl deploy` compiles them (slot a), `main.py` from deploy,
`config.json`, `secrets/`, and the boot state in `ota/` once an update or config change ran."""

from __future__ import annotations

import json
from pathlib import Path

from host_tools.board.deploy import (
    CACHE_DIR,
    MANIFEST,
    agent_files,
    boot_module,
    compiler_for,
    main_py,
)
from host_tools.paths import board_file, local_mpy

UNIX_BOARD = {"name": "unix-sim", "chip": "unix"}


def make_root(root: Path, config: dict, secrets: dict[str, bytes] | None = None) -> None:
    """Lay out `root` as a freshly deployed board; an existing slot a is kept (the board's
    flash survives a restart), the config and secrets are rewritten."""
    root.mkdir(parents=True, exist_ok=True)
    comp = compiler_for(local_mpy())
    if not (root / "lib" / "edge").is_dir():
        for rel, data in agent_files(comp, UNIX_BOARD, CACHE_DIR).items():
            p = root / "lib" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
    (root / "lib").mkdir(exist_ok=True)
    (root / "lib" / "edgeboot.mpy").write_bytes(boot_module(comp, CACHE_DIR))
    (root / "main.py").write_bytes(main_py())
    # the board file where deploy puts it, and where the agent's loader finds it on unix
    # (boards/ in the working directory, edge/board.py)
    board = json.dumps(board_file("unix-sim"), sort_keys=True)
    (root / "board.json").write_text(board)
    (root / "boards").mkdir(exist_ok=True)
    (root / "boards" / "unix-sim.json").write_text(board)
    (root / "config.json").write_text(json.dumps(config))
    (root / MANIFEST.lstrip("/")).write_text(json.dumps({"board": "unix-sim", "files": {}}))
    for name, data in (secrets or {}).items():
        (root / "secrets").mkdir(exist_ok=True)
        p = root / "secrets" / name
        p.write_bytes(data)
        p.chmod(0o600)
