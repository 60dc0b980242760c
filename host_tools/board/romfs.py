"""ROMFS images of the agent: its compiled modules in a read-only filesystem that MicroPython
1.25+ mounts at /rom from the board's ROM partition and imports from in place, so the
bytecode stays in flash instead of being copied to the heap (docs/DEPLOY.md section 9).

The image is built by mpremote (`mpremote romfs build`) from a directory laid out as the board
sees /rom: `lib/edge/**.mpy` and the agent's data files. The modules are compiled first by
deploy's compiler for the board's .mpy format and native arch, so mpremote only packs them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools.errors import ToolError

HEADER = b"\xd2\xcd\x31"  # a ROMFS image starts with this (mpremote romfs query checks it)
ROM_LIB = "/rom/lib"  # where the agent's package is on the board (sys.path has it)


def build_image(files: dict[str, bytes], out: Path) -> bytes:
    """Pack `files` (path under /rom -> content, e.g. `lib/edge/codec.mpy`) into a ROMFS image
    at `out` with mpremote; returns the image. ToolError with mpremote's message on failure."""
    with tempfile.TemporaryDirectory(prefix="edge-romfs-") as tmp:
        root = Path(tmp) / "rom"
        for rel, data in files.items():
            p = root / rel.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        argv = [sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o", str(out)]
        r = subprocess.run(argv + ["build", str(root)], capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise ToolError(f"mpremote romfs build failed: {msg[-1] if msg else r.returncode}")
    image = out.read_bytes()
    if not image.startswith(HEADER):
        raise ToolError(f"mpremote romfs build wrote no ROMFS image to {out}")
    return image
