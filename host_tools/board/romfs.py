"""ROMFS images of the agent: its compiled modules in a read-only filesystem that MicroPython
1.25+ mounts at /rom from the board's ROM partition and imports from in place, so the
bytecode stays in flash instead of being copied to the heap (docs/DEPLOY.md section 9).

The image is built by mpremote (`mpremote romfs build`) from a directory laid out as the board
sees /rom: `lib/edge/**.mpy` and the agent's data files. The modules are compiled first by
deploy's compiler for the board's .mpy format and native arch, so mpremote only packs them."""

from __future__ import annotations

import hashlib
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


# On the board: the ROM partition's size and the SHA-256 of its first N bytes, read in place
# (hashlib takes the partition's memoryview: nothing is copied to the heap).
_DIGEST = """import vfs, hashlib, binascii
if not hasattr(vfs, 'rom_ioctl'):
    print('none')
else:
    d = vfs.rom_ioctl(2, 0)
    if isinstance(d, int):
        print('none')
    else:
        print(len(d), binascii.hexlify(hashlib.sha256(d[:{n}]).digest()).decode())
"""


def board_rom(run, image: bytes) -> bool:
    """True when the board's ROM partition already holds `image`; ToolError when the board
    has no ROM partition or the image does not fit. `run` executes code on the board."""
    out = run(_DIGEST.format(n=len(image))).split()
    if not out or out[0] == "none":
        raise ToolError(
            "board has no ROM partition (no vfs.rom_ioctl): --romfs needs MicroPython 1.25+ "
            "with a ROMFS partition in its layout (docs/DEPLOY.md section 9)"
        )
    if int(out[0]) < len(image):
        raise ToolError(
            f"ROMFS image is {len(image)} bytes, the board's ROM partition {out[0]} bytes"
        )
    return out[1] == hashlib.sha256(image).hexdigest()


def deploy_image(port: str, image: Path) -> None:
    """Write the image to the board's ROM partition with `mpremote romfs deploy`."""
    argv = [sys.executable, "-m", "mpremote", "connect", port, "romfs", "deploy", str(image)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise ToolError(f"mpremote romfs deploy to {port} did not finish in 300 s") from None
    if r.returncode != 0 or "ROMFS image deployed" not in r.stdout:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise ToolError(f"mpremote romfs deploy failed: {msg[-1] if msg else r.returncode}")
