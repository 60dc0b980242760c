"""The ESP32 partition table of a board: MicroPython's own, with the littlefs partition (`vfs`)
cut to the board file's `fs_offset`/`fs_size` and the raw log partition (`log_partition`,
docs/FORMAT.md 8) added. `edgectl flash` writes the firmware with this table in place.

The binary table (ESP-IDF "partition table" format, at flash offset 0x8000 in the combined
images micropython.org publishes): 32-byte entries, little-endian, `AA 50` magic, type,
subtype, offset u32, size u32, label (16 bytes, NUL-padded), flags u32; then an entry `EB EB`
+ 14 x FF + the MD5 of the entries before it; the rest of the 0xC00 bytes is FF."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from host_tools.errors import ToolError

TABLE_OFFSET = 0x8000
TABLE_MAX = 0xC00
_ENTRY = struct.Struct("<2sBBII16sI")
_MAGIC = b"\xaa\x50"
_MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
TYPE_DATA = 0x01
SUBTYPE_FAT = 0x81  # MicroPython's `vfs` (it mounts littlefs there)
SUBTYPE_LOG = 0x40  # a data subtype ESP-IDF leaves to applications: the raw record log


@dataclass
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    def overlaps(self, offset: int, size: int) -> bool:
        return self.offset < offset + size and offset < self.offset + self.size


def parse_table(data: bytes) -> list[Partition]:
    """The entries of a binary table; ToolError when it is not one or its MD5 is wrong."""
    parts = []
    for p in range(0, min(len(data), TABLE_MAX) - 31, 32):
        raw = data[p : p + 32]
        if raw[:2] == _MAGIC:
            _m, typ, sub, off, size, label, flags = _ENTRY.unpack(raw)
            parts.append(
                Partition(label.rstrip(b"\0").decode(errors="replace"), typ, sub, off, size, flags)
            )
            continue
        if raw[:16] == _MD5_MAGIC:
            if hashlib.md5(data[:p]).digest() != raw[16:]:
                raise ToolError("partition table MD5 does not match its entries")
            return parts
        break
    if not parts:
        raise ToolError("no partition table (no AA 50 entry)")
    return parts


def build_table(parts: list[Partition]) -> bytes:
    body = b"".join(
        _ENTRY.pack(_MAGIC, p.type, p.subtype, p.offset, p.size, p.label.encode(), p.flags)
        for p in parts
    )
    out = body + _MD5_MAGIC + hashlib.md5(body).digest()
    if len(out) > TABLE_MAX:
        raise ToolError("partition table too long")
    return out + b"\xff" * (TABLE_MAX - len(out))


def board_table(board: dict, stock: list[Partition]) -> list[Partition]:
    """The firmware's own table with `vfs` set to the board's filesystem and `log` added; every
    other entry that would overlap either is refused (the firmware's app must fit)."""
    log = board.get("log_partition") or {}
    fs = Partition("vfs", TYPE_DATA, SUBTYPE_FAT, board["fs_offset"], board["fs_size"])
    want = [fs]
    if log:
        want.append(Partition(log["label"], TYPE_DATA, SUBTYPE_LOG, log["offset"], log["size"]))
    out = []
    for p in stock:
        if p.label in ("vfs", log.get("label")):
            if p.label == "vfs":
                fs.subtype = p.subtype  # keep what the firmware mounts
            continue
        for w in want:
            if p.overlaps(w.offset, w.size):
                raise ToolError(
                    f"the firmware's partition {p.label!r} ({p.offset:#x}, {p.size:#x} bytes) "
                    f"overlaps the board's {w.label!r} ({w.offset:#x}, {w.size:#x} bytes)"
                )
        out.append(p)
    return sorted(out + want, key=lambda p: p.offset)


def patch_image(image: bytes, flash_offset: int, board: dict) -> tuple[bytes, list[Partition]]:
    """A copy of a combined firmware image (written at flash_offset) whose partition table is
    the board's (board_table). ToolError when the image holds no table at 0x8000."""
    at = TABLE_OFFSET - flash_offset
    if at < 0 or len(image) < at + TABLE_MAX:
        raise ToolError(
            f"firmware image has no partition table at {TABLE_OFFSET:#x}: flash the combined "
            "image from micropython.org, or pass --keep-partitions"
        )
    try:
        stock = parse_table(image[at : at + TABLE_MAX])
    except ToolError as e:
        raise ToolError(
            f"firmware image at {TABLE_OFFSET:#x}: {e}: pass --keep-partitions to flash it as it is"
        ) from None
    parts = board_table(board, stock)
    return image[:at] + build_table(parts) + image[at + TABLE_MAX :], parts
