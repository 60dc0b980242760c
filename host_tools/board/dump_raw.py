"""Decode an image of the raw record log partition (docs/FORMAT.md 8) for `edgectl dump`.

An implementation of the format independent of the agent's (edge/store/rawread.py), written
from docs/FORMAT.md: the golden vectors and the fuzz tests check that both agree. It never
raises on any byte pattern; what it cannot read is reported as a problem."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

BLOCK = 4096
HEAD_LEN = 32
MAGIC = b"ELOG"
VERSION = 1
KIND_DATA, KIND_META = 1, 2
CHUNK_TYPE, META_TYPE = 0xD5, 0xA9
CHUNK_HEAD, ENTRY_LEN, MAX_N = 21, 11, 44
META_HEAD, META_CAT, MAX_CATS = 12, 12, 32
# docs/CONSENT.md's category names: their tags (CRC-32 of the name) are named in reports
DEFAULT_CATEGORIES = ("essential", "diagnostics", "usage", "location", "marketing")


def crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def tag_of(name: str) -> int:
    return crc(name.encode())


@dataclass
class Block:
    """One block's header and what its records hold."""

    index: int
    state: str  # erased, live, freed, zeroed, bad
    kind: int = 0
    bseq: int = 0
    tag: int = 0
    readings: list[tuple] = field(default_factory=list)  # (seq, ts, boot, flags, ch, value)
    metas: list[tuple] = field(default_factory=list)  # (boot, seq_hi, {tag: acked})
    used: int = HEAD_LEN
    damage: list[str] = field(default_factory=list)


def parse_header(data: bytes, index: int) -> Block:
    head = data[:HEAD_LEN]
    if head == b"\xff" * HEAD_LEN:
        return Block(index, "erased")
    if head == bytes(HEAD_LEN):
        return Block(index, "zeroed")
    magic, version, kind, _res, bseq, tag = struct.unpack_from("<4sBBHQI", head)
    (want,) = struct.unpack_from("<I", head, 20)
    if (
        magic != MAGIC
        or version != VERSION
        or kind not in (KIND_DATA, KIND_META)
        or bseq == 0
        or crc(head[:20]) != want
    ):
        return Block(index, "bad")
    freed = head[24:28] != b"\xff\xff\xff\xff"
    return Block(index, "freed" if freed else "live", kind, bseq, tag)


def _record(data: bytes, p: int, rtype: int) -> int:
    """Length of a valid record at p, 0 at erased space that runs to the block's end, -1 if
    not a valid record."""
    if data[p] == 0xFF:
        return 0 if data[p:] == b"\xff" * (len(data) - p) else -1
    if data[p] != rtype or p + 3 > len(data):
        return -1
    n = data[p + 1]
    if rtype == CHUNK_TYPE:
        if not 1 <= n <= MAX_N or data[p + 2] & 0xFE:
            return -1
        ln = CHUNK_HEAD + n * ENTRY_LEN + 4
    else:
        if n > MAX_CATS:
            return -1
        ln = META_HEAD + n * META_CAT + 4
    if (
        p + ln > len(data)
        or crc(data[p : p + ln - 4]) != struct.unpack_from("<I", data, p + ln - 4)[0]
    ):
        return -1
    return ln


def parse_records(data: bytes, blk: Block) -> None:
    """Fill blk.readings or blk.metas from the block's bytes (FORMAT.md 8.4, 7.5)."""
    rtype = CHUNK_TYPE if blk.kind == KIND_DATA else META_TYPE
    p = HEAD_LEN
    bad_at = None
    while p < BLOCK:
        ln = _record(data, p, rtype)
        if ln == 0:
            break
        if ln < 0:
            bad_at = p if bad_at is None else bad_at
            p += 1
            continue
        if bad_at is not None:
            blk.damage.append(f"corrupt bytes {bad_at}..{p - 1}")
            bad_at = None
        if rtype == CHUNK_TYPE:
            n, flags, boot, seq, ts = struct.unpack_from("<BBHQq", data, p + 1)
            for i in range(n):
                ch, ds, dt, val = struct.unpack_from("<BHIi", data, p + CHUNK_HEAD + i * ENTRY_LEN)
                seq, ts = seq + ds, ts + dt
                blk.readings.append((seq, ts, boot, flags, ch, val))
        else:
            k, boot, seq_hi = struct.unpack_from("<BHQ", data, p + 1)
            acked = {}
            for i in range(k):
                t, a = struct.unpack_from("<IQ", data, p + META_HEAD + i * META_CAT)
                acked[t] = a
            blk.metas.append((boot, seq_hi, acked))
        p += ln
    if bad_at is not None:
        blk.damage.append(f"torn tail: corrupt bytes {bad_at}..{p - 1} before the erased space")
    blk.used = p


@dataclass
class RawLog:
    """A decoded image: blocks, the meta record in force, each category's deliverable readings
    (in block order, seq above the acknowledged one and above every earlier one)."""

    blocks: list[Block]
    meta: tuple | None
    streams: dict[int, list[tuple]]
    acked: dict[int, int]


def decode(data: bytes) -> RawLog:
    n = len(data) // BLOCK
    blocks = []
    for i in range(n):
        raw = data[i * BLOCK : (i + 1) * BLOCK]
        blk = parse_header(raw, i)
        if blk.state == "live":
            parse_records(raw, blk)
        blocks.append(blk)
    meta = None
    for blk in sorted((b for b in blocks if b.state == "live" and b.kind == KIND_META),
                      key=lambda b: -b.bseq):  # fmt: skip
        if blk.metas:
            meta = blk.metas[-1]
            break
    acked = dict(meta[2]) if meta else {}
    streams: dict[int, list[tuple]] = {}
    for blk in sorted((b for b in blocks if b.state == "live" and b.kind == KIND_DATA),
                      key=lambda b: b.bseq):  # fmt: skip
        out = streams.setdefault(blk.tag, [])
        top = out[-1][0] if out else acked.get(blk.tag, 0)
        for r in blk.readings:
            if r[0] > top:
                out.append(r)
                top = r[0]
    return RawLog(blocks, meta, streams, acked)


def is_raw_image(data: bytes) -> bool:
    """A whole number of 4096-byte blocks of which at least one has a raw log header."""
    if not data or len(data) % BLOCK:
        return False
    return any(data[i : i + 4] == MAGIC for i in range(0, len(data), BLOCK))


def dump_raw_image(data: bytes, rep, categories: tuple[str, ...] = DEFAULT_CATEGORIES) -> None:
    """Report on a raw log image into a dump.Report (never raises)."""
    names = {tag_of(c): c for c in categories}
    log = decode(data)
    count: dict[str, int] = {}
    for b in log.blocks:
        count[b.state] = count.get(b.state, 0) + 1
    rep.lines.append(
        f"raw log image: {len(log.blocks)} blocks of {BLOCK}, "
        + ", ".join(f"{v} {k}" for k, v in sorted(count.items()))
    )
    for b in log.blocks:
        if b.state == "bad":
            rep.problem(f"block {b.index}: bad header (torn erase or write, or another version)")
    if log.meta:
        boot, seq_hi, acked = log.meta
        acks = ", ".join(f"{names.get(t, f'{t:08x}')}={a}" for t, a in sorted(acked.items()))
        rep.lines.append(f"meta: boot {boot}, seq reserved below {seq_hi}, acked {acks}")
    else:
        rep.lines.append("meta: no valid meta record (cursors read as 0)")
    for b in sorted(log.blocks, key=lambda b: b.bseq):
        if b.state != "live":
            continue
        what = "meta" if b.kind == KIND_META else names.get(b.tag, f"category {b.tag:08x}")
        extra = f"{len(b.readings)} readings" if b.kind == KIND_DATA else f"{len(b.metas)} records"
        if b.readings:
            extra += f", seq {b.readings[0][0]}..{b.readings[-1][0]}"
        rep.lines.append(f"block {b.index} (seq {b.bseq}) {what}: {extra}, {b.used} bytes used")
        prev = None
        for r in b.readings:
            if prev is not None and r[0] <= prev:
                rep.problem(f"block {b.index}: seq {r[0]} after {prev}")
                break
            prev = r[0]
        for d in b.damage:
            rep.problem(f"block {b.index}: {d}")
    for tag, rs in sorted(log.streams.items()):
        rep.readings += len(rs)
        name = names.get(tag, f"category {tag:08x}")
        span = f", seq {rs[0][0]}..{rs[-1][0]}" if rs else ""
        rep.lines.append(f"{name}: {len(rs)} unacknowledged readings{span}")
