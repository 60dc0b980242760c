# The store's files on flash (docs/FORMAT.md 2): segment header, boot-time probe of a segment, and
# the state file. Nothing here raises on any byte pattern in these files (docs/FORMAT.md 2).

import json
import os

import micropython
from micropython import const

from edge import codec, wire
from edge.wire import SEG_HEAD_LEN, SEG_VERSION

BLOCK = const(4096)  # littlefs block = NOR erase unit on the ESP32 and the emulated flash
STATE = "state.json"
STATE_TMP = "state.tmp"
_STATE_MAX = const(1024)  # a larger state file is corrupt by definition (FORMAT 2.4)
_U32 = const(0xFFFFFFFF)
_SEQ_LIMIT = 1 << 48  # seqs are 48-bit (FORMAT 1); not a const: above a small int on an ESP32

# probe() result slots
FIRST = const(0)
LAST = const(1)
SIZE = const(2)
OK = const(3)
EPOCH = const(4)


def seg_name(n):
    return "%08x.seg" % n


def footprint(size):
    """Flash bytes a file of `size` bytes occupies: whole blocks (littlefs never shares one)."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


def list_segments(d):
    """Sorted numbers of the segment files (`NNNNNNNN.seg`, lower-case hex) in directory d."""
    nums = []  # type: list
    try:
        names = os.listdir(d)
    except OSError:
        return nums
    for fn in names:
        if len(fn) == 12 and fn.endswith(".seg"):
            try:
                n = int(fn[:8], 16)
            except ValueError:
                continue
            if seg_name(n) == fn and n < _U32:
                nums.append(n)
    nums.sort()
    return nums


def probe(path, cat, buf, full, stats):
    """[first_seq, last_seq, size, ok, epoch] of a segment file, seqs whole (the header's
    epoch added, FORMAT 2.2). `full`: scan every byte (the newest segment of a category);
    otherwise trust the first and last frames when both check, and fall back to a full scan
    when they do not. Counts corrupt frames and torn tails."""
    res = [-1, -1, 0, False, 0]
    mv = memoryview(buf)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            res[SIZE] = size
            f.seek(0)
            n = f.readinto(buf)
            # Case 1: magic, version and category match: readable. Case 2: anything else
            # (another format version, another category, garbage): skipped, never parsed.
            head = wire.seg_head_read(mv[:n])
            if head is None or head[0] != SEG_VERSION or head[1] != cat:
                if size:  # an empty file is a segment cut before its first commit
                    stats["bad_segments"] += 1
                return res
            res[OK] = True
            res[EPOCH] = hi = head[2] << 32
            body = size - SEG_HEAD_LEN
            if not full and body >= codec.REC_LEN and body % codec.REC_LEN == 0 and n >= 36:
                if codec.check_record(mv[:n], SEG_HEAD_LEN) == 1:
                    first = codec.unpack_record(mv, SEG_HEAD_LEN)[0]
                    f.seek(size - codec.REC_LEN)
                    if (
                        f.readinto(buf, codec.REC_LEN) == codec.REC_LEN
                        and codec.check_record(mv[: codec.REC_LEN], 0) == 1
                    ):
                        res[FIRST] = hi | first
                        res[LAST] = hi | codec.unpack_record(mv, 0)[0]
                        return res
            f.seek(SEG_HEAD_LEN)
            _scan(f, buf, res, stats, hi)
    except OSError:
        stats["bad_segments"] += 1
    return res


def _scan(f, buf, res, stats, hi):
    mv = memoryview(buf)
    carry = 0
    bad = False
    while True:
        n = f.readinto(mv[carry:])
        if not n:
            break
        n += carry
        p = 0
        while p < n:
            r = codec.check_record(mv[:n], p)
            if r == 1:
                seq = hi | codec.unpack_record(mv, p)[0]
                if res[FIRST] < 0:
                    res[FIRST] = seq
                res[LAST] = seq
                p += codec.REC_LEN
                bad = False
            elif r == 0:
                if not bad:
                    stats["corrupt_records"] += 1
                    bad = True
                p += 1
            else:
                break
        carry = n - p
        buf[:carry] = buf[p:n]  # a copy: the ranges may overlap
    if carry:
        stats["torn_tails"] += 1  # ignored: appends after boot always start a new segment


# --- state file: temp + rename is atomic on littlefs (FORMAT 2.4) ---------------------------
def _uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _SEQ_LIMIT


def load_state(root):
    """{"boot", "seq_hi", "acked": {category: seq}} with every field type-checked; a missing,
    oversized or malformed file (or field) reads as absent."""
    st = {"boot": 0, "seq_hi": 1, "acked": {}}  # type: dict
    try:
        with open(root + "/" + STATE, "rb") as f:
            raw = f.read(_STATE_MAX)
        doc = json.loads(raw) if len(raw) < _STATE_MAX else None
    except (OSError, ValueError):
        return st
    if not isinstance(doc, dict):
        return st
    for k in ("boot", "seq_hi"):
        if _uint(doc.get(k)):
            st[k] = doc[k]
    acked = doc.get("acked")
    if isinstance(acked, dict):
        for k in acked:
            if isinstance(k, str) and _uint(acked[k]):
                st["acked"][k] = acked[k]
    return st


def save_state(root, boot, seq_hi, acked):
    tmp = root + "/" + STATE_TMP
    with open(tmp, "wb") as f:
        f.write(json.dumps({"v": 1, "boot": boot, "seq_hi": seq_hi, "acked": acked}))
    os.rename(tmp, root + "/" + STATE)


# --- record frames, encoded in place (FORMAT 2.3; byte-identical to codec.pack_record) -----
# One struct.pack_into per reading; the CRC-32 of every frame of a commit is computed by one
# viper call at commit time: twice the ingest rate of codec.pack_record (`edgectl bench store`).
FRAME_FMT = "<BBBIqHBBBi"  # magic, type, payload length, then the codec's payload fields


@micropython.viper
def seal(buf: ptr8, n: int):
    """Write the CRC-32 (IEEE, reflected 0xEDB88320, init and final xor 0xFFFFFFFF) of the
    first 24 bytes of each of the n 28-byte frames in buf into its last 4, little-endian."""
    poly = (uint(0xEDB8) << 16) | uint(0x8320)
    ones = (uint(0xFFFF) << 16) | uint(0xFFFF)
    off = 0
    end = n * 28
    while off < end:
        crc = ones
        i = off
        stop = off + 24
        while i < stop:
            crc ^= uint(buf[i])
            k = 0
            while k < 8:
                crc = (crc >> 1) ^ (poly & (uint(0) - (crc & 1)))
                k += 1
            i += 1
        crc ^= ones
        buf[stop] = crc & 0xFF
        buf[stop + 1] = (crc >> 8) & 0xFF
        buf[stop + 2] = (crc >> 16) & 0xFF
        buf[stop + 3] = (crc >> 24) & 0xFF
        off += 28
