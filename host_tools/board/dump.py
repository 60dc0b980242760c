"""`edgectl dump PATH`: decode the store's files (docs/FORMAT.md section 2) from a store
directory, single files, a whole littlefs image read from a board (littlefs-python), or an
image of the raw record log partition (docs/FORMAT.md section 8, host_tools/board/dump_raw.py).
Prints a readable report; exit 1 when anything is corrupt, 0 when everything checks."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field

from edge import codec, wire
from host_tools.board.dump_raw import DEFAULT_CATEGORIES, dump_raw_image, is_raw_image
from host_tools.errors import ToolError
from host_tools import argtypes

SEG_HEAD_LEN = wire.SEG_HEAD_LEN  # FORMAT.md 2.2
BLOCK_SIZE = 4096
LFS_MAGIC = b"littlefs"  # littlefs superblock name tag, at offset 8 of block 0 or 1


@dataclass
class Report:
    """What a dump found: report lines and the problems (corruption) among them."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    readings: int = 0

    def problem(self, msg: str) -> None:
        self.problems.append(msg)
        self.lines.append("  ! " + msg)


def dump_segment(name: str, data: bytes, rep: Report) -> None:
    """Decode one segment file's bytes into the report (never raises on any byte pattern)."""
    mv = memoryview(data)
    if len(data) == 0:
        rep.lines.append(f"{name}: empty (a segment cut before its first commit)")
        return
    head = wire.seg_head_read(mv)
    if head is None:
        rep.lines.append(f"{name}: {len(data)} bytes")
        rep.problem(f"{name}: bad segment magic {data[:4]!r}")
        return
    version, cat, epoch = head
    if version != wire.SEG_VERSION:
        rep.lines.append(f"{name}: {len(data)} bytes, format version {version}")
        rep.problem(
            f"{name}: unknown segment version {version} (this tool reads {wire.SEG_VERSION})"
        )
        return
    hi = epoch << 32  # the segment's seq epoch (FORMAT.md 1, 2.2)
    p, n, first, last, corrupt, prev = SEG_HEAD_LEN, 0, None, None, 0, None
    bad_at = None
    order = other = 0
    while p < len(data):
        r = codec.check_record(mv, p)
        if r == 1:
            if bad_at is not None:
                rep.problem(f"{name}: corrupt bytes {bad_at}..{p - 1}")
                bad_at = None
            seq, _ts, _boot, _ch, rcat, _fl, _v = codec.unpack_record(mv, p)
            seq |= hi
            if rcat != cat:
                other += 1
            if prev is not None and seq <= prev:
                order += 1
            first = seq if first is None else first
            last = prev = seq
            n += 1
            p += codec.REC_LEN
        elif r == 0:
            if bad_at is None:
                bad_at = p
                corrupt += 1
            p += 1
        else:
            break
    if bad_at is not None:
        rep.problem(f"{name}: corrupt bytes {bad_at}..{p - 1}")
    rep.readings += n
    rep.lines.append(
        f"{name}: v{version} category {cat}, {len(data)} bytes, {n} readings"
        + (f", seq {first}..{last}" if n else "")
    )
    if p < len(data):
        rep.problem(f"{name}: torn tail of {len(data) - p} bytes at offset {p}")
    if order:
        rep.problem(f"{name}: {order} readings out of seq order")
    if other:
        rep.problem(f"{name}: {other} readings of another category than the header's {cat}")


def dump_state(name: str, data: bytes, rep: Report) -> None:
    """Decode state.json (FORMAT.md 2.4)."""
    try:
        doc = json.loads(data.decode())
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        seq_hi = doc["seq_hi"]
        acked = doc["acked"]
        if not isinstance(seq_hi, int) or not isinstance(acked, dict):
            raise ValueError("bad field types")
    except (ValueError, KeyError, UnicodeDecodeError, RecursionError) as e:
        # RecursionError: JSON nested deeper than the parser's stack (a hostile file)
        rep.lines.append(f"{name}: {len(data)} bytes")
        rep.problem(f"{name}: unreadable state file ({e})")
        return
    rep.lines.append(
        f"{name}: boot {doc.get('boot')}, seq reserved below {seq_hi}, acked "
        + ", ".join(f"{k}={v}" for k, v in sorted(acked.items(), key=str))
    )


def dump_file(name: str, data: bytes, rep: Report) -> None:
    """Dispatch by file name: *.seg, state.json; other files are listed."""
    base = name.rsplit("/", 1)[-1]
    if base.endswith(".seg"):
        dump_segment(name, data, rep)
    elif base == "state.json":
        dump_state(name, data, rep)
    elif base == "state.tmp":
        rep.lines.append(
            f"{name}: {len(data)} bytes, a state write cut before its rename (ignored)"
        )
    else:
        rep.lines.append(f"{name}: {len(data)} bytes")


def is_littlefs_image(data: bytes) -> bool:
    return (
        len(data) >= 2 * BLOCK_SIZE
        and len(data) % BLOCK_SIZE == 0
        and (data[8:16] == LFS_MAGIC or data[BLOCK_SIZE + 8 : BLOCK_SIZE + 16] == LFS_MAGIC)
    )


def dump_image(data: bytes, rep: Report) -> None:
    """Mount a littlefs image (4096-byte blocks) read-only in memory and dump every file."""
    from littlefs import LittleFS, UserContext

    ctx = UserContext(buffer=bytearray(data))
    try:
        fs = LittleFS(
            context=ctx, block_size=BLOCK_SIZE, block_count=len(data) // BLOCK_SIZE, mount=False
        )
        fs.mount()
    except Exception as e:  # littlefs-python raises LittleFSError or OSError kinds
        rep.problem(f"image does not mount as littlefs: {e}")
        return
    used = fs.used_block_count
    rep.lines.append(
        f"littlefs image: {len(data) // BLOCK_SIZE} blocks of {BLOCK_SIZE}, {used} in use"
    )
    for root, _dirs, files in fs.walk("/"):
        for fn in sorted(files):
            path = root.rstrip("/") + "/" + fn
            with fs.open(path, "rb") as f:
                dump_file(path, f.read(), rep)


def dump_path(path: str, categories: tuple[str, ...] = DEFAULT_CATEGORIES) -> Report:
    """Report on a store directory, a single store file, a littlefs image or a raw log image
    (`categories`: names whose tags the raw log report names)."""
    rep = Report()
    if os.path.isdir(path):
        for root, _dirs, files in sorted(os.walk(path)):
            for fn in sorted(files):
                full = os.path.join(root, fn)
                with open(full, "rb") as f:
                    dump_file(os.path.relpath(full, path), f.read(), rep)
        if not any(_is_store_file(line) for line in rep.lines):
            raise ToolError(f"{path} holds no store files (*.seg, state.json): not a store")
        return rep
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from e
    if not path.endswith((".seg", ".json", ".tmp")) and is_littlefs_image(data):
        dump_image(data, rep)
    elif not path.endswith((".seg", ".json", ".tmp")) and is_raw_image(data):
        dump_raw_image(data, rep, categories)
    elif _is_store_file(os.path.basename(path)):
        dump_file(os.path.basename(path), data, rep)
    else:
        raise ToolError(
            f"{path} is not a store file (*.seg, state.json), a littlefs image or a raw log "
            "image (docs/FORMAT.md sections 2 and 8)"
        )
    return rep


def _is_store_file(name: str) -> bool:
    base = name.split(":", 1)[0].rsplit("/", 1)[-1]
    return base.endswith(".seg") or base in ("state.json", "state.tmp")


def _category_list(text: str) -> str:
    """`--categories a,b`: one or more category names."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one category name")
    for c in names:
        argtypes.name(c)
    return text


def cmd_dump(args) -> int:
    names = tuple(c for c in args.categories.split(",") if c)
    rep = dump_path(args.path, names)
    for line in rep.lines:
        print(line)
    print(
        f"{rep.readings} readings; "
        + (f"{len(rep.problems)} problem(s): corrupt" if rep.problems else "no corruption")
    )
    return 1 if rep.problems else 0


def register(sub) -> None:
    p = sub.add_parser(
        "dump", help="decode store files, a littlefs or a raw log image (exit 1 on corruption)"
    )
    p.add_argument(
        "path",
        type=argtypes.input_path,
        help="store directory, a .seg/state.json file, a littlefs image or a raw log image",
    )
    p.add_argument(
        "--categories",
        type=_category_list,
        default=",".join(DEFAULT_CATEGORIES),
        help="category names (comma-separated) whose tags a raw log report names",
    )
    p.set_defaults(func=cmd_dump)
