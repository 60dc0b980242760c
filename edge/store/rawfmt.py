# Bytes of the raw-partition record log (docs/FORMAT.md 8): block header, data chunk, meta
# record. Pure functions over buffers; nothing here touches the device or raises on any byte
# pattern read from flash.

import struct
from binascii import crc32

from micropython import const

BLOCK = const(4096)  # NOR erase unit (ESP32 SPI flash sector, the emulated partition's block)
HEAD_LEN = const(32)  # block header (7.3)
MAGIC = b"ELOG"
VERSION = const(1)
KIND_DATA = const(1)
KIND_META = const(2)
FREED_OFF = const(24)  # freed marker: FF FF FF FF while live, programmed to 00 00 00 00
_HEAD_FMT = "<4sBBHQI"  # magic, version, kind, reserved, bseq, tag; then the CRC-32 (7.3)
_HEAD_CRC = const(20)

# data chunk (7.4): type, count, flags, boot, seq (whole), ts, then `count` entries, CRC-32
CHUNK_TYPE = const(0xD5)
CHUNK_FMT = "<BBBHQq"
CHUNK_HEAD = const(21)
ENTRY_FMT = "<BHIi"  # channel, seq delta, ts delta, value: the batch entry of FORMAT.md 3.3
ENTRY_LEN = const(11)
MAX_N = const(44)  # entries per chunk: a chunk is at most 509 bytes (one 512-byte read)
MAX_CHUNK = const(509)  # CHUNK_HEAD + MAX_N * ENTRY_LEN + 4
FLAGS_KNOWN = const(0x01)  # bit 0: clock not synchronised (FORMAT.md 4.2)

# meta record (7.5): type, category count, boot, seq_hi, (tag, acked) per category, CRC-32
META_TYPE = const(0xA9)
META_FMT = "<BBHQ"
META_HEAD = const(12)
META_CAT = const(12)
MAX_CATS = const(32)

# parse_head() states
ERASED = const(0)  # all 0xFF: nothing was ever written since the erase (or the erase was cut)
LIVE = const(1)
FREED = const(2)
BAD = const(3)  # anything else: torn erase or header, zeroed by a purge, another version


def cat_tag(name):
    """A category's tag on flash: CRC-32 of its name (names, not config indexes, survive a
    config change that adds or removes a category)."""
    if isinstance(name, str):
        name = name.encode()
    return crc32(name) & 0xFFFFFFFF


def chunk_len(n):
    return CHUNK_HEAD + n * ENTRY_LEN + 4


def meta_len(k):
    return META_HEAD + k * META_CAT + 4


def pack_head(buf, kind, bseq, tag):
    """The 32-byte header of a freshly erased block into buf; bytes 24..31 stay 0xFF."""
    struct.pack_into(_HEAD_FMT, buf, 0, MAGIC, VERSION, kind, 0, bseq, tag)
    struct.pack_into("<I", buf, _HEAD_CRC, crc32(memoryview(buf)[:_HEAD_CRC]) & 0xFFFFFFFF)
    for i in range(FREED_OFF, HEAD_LEN):
        buf[i] = 0xFF


def parse_head(mv):
    """(state, kind, bseq, tag) of a block header read into mv (32 bytes).
    Case 1: every byte 0xFF: ERASED. Case 2: magic, version 1, known kind and CRC match:
    LIVE, or FREED once any bit of the freed marker is 0. Case 3: anything else: BAD."""
    erased = True
    for i in range(HEAD_LEN):
        if mv[i] != 0xFF:
            erased = False
            break
    if erased:
        return ERASED, 0, 0, 0
    magic, version, kind, _r, bseq, tag = struct.unpack_from(_HEAD_FMT, mv, 0)
    if (
        magic != MAGIC
        or version != VERSION
        or kind not in (KIND_DATA, KIND_META)
        or bseq == 0
        or struct.unpack_from("<I", mv, _HEAD_CRC)[0] != crc32(mv[:_HEAD_CRC]) & 0xFFFFFFFF
    ):
        return BAD, 0, 0, 0
    freed = struct.unpack_from("<I", mv, FREED_OFF)[0] != 0xFFFFFFFF
    return (FREED if freed else LIVE), kind, bseq, tag


def check_chunk(mv, p, end):
    """The data chunk at mv[p:end]. Returns its length when valid; 0 when byte p is 0xFF
    (the block's records end: erased space follows the last chunk); -1 when it may be valid
    but runs past `end` (read more); -2 when byte p cannot start a valid chunk (corrupt:
    the reader skips one byte)."""
    return _check(mv, p, end, CHUNK_TYPE)


def check_meta(mv, p, end):
    """The meta record at mv[p:end], with the codes of check_chunk."""
    return _check(mv, p, end, META_TYPE)


def _check(mv, p, end, rtype):
    if p >= end:
        return -1
    t = mv[p]
    if t == 0xFF:
        return 0
    if t != rtype:
        return -2
    if p + 3 > end:
        return -1
    n = mv[p + 1]
    if rtype == CHUNK_TYPE:
        if n == 0 or n > MAX_N or mv[p + 2] & ~FLAGS_KNOWN:
            return -2
        ln = chunk_len(n)
    else:
        if n > MAX_CATS:
            return -2
        ln = meta_len(n)
    if p + ln > end:
        return -1
    if struct.unpack_from("<I", mv, p + ln - 4)[0] != crc32(mv[p : p + ln - 4]) & 0xFFFFFFFF:
        return -2
    return ln


def pack_meta(buf, boot, seq_hi, streams):
    """A meta record into buf[0:] (streams: objects with `name` and `acked`); its length."""
    struct.pack_into(META_FMT, buf, 0, META_TYPE, len(streams), boot, seq_hi)
    p = META_HEAD
    for s in streams:
        struct.pack_into("<IQ", buf, p, cat_tag(s.name), s.acked)
        p += META_CAT
    struct.pack_into("<I", buf, p, crc32(memoryview(buf)[:p]) & 0xFFFFFFFF)
    return p + 4


def meta_fields(mv, p):
    """(boot, seq_hi, {tag: acked}) of a meta record checked valid."""
    _t, k, boot, seq_hi = struct.unpack_from(META_FMT, mv, p)
    acked = {}
    q = p + META_HEAD
    for _ in range(k):
        tag, a = struct.unpack_from("<IQ", mv, q)
        acked[tag] = a
        q += META_CAT
    return boot, seq_hi, acked
