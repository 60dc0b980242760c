# Shared codec: flash records and MQTT batch payloads (docs/FORMAT.md).
# Dual-runtime: the agent (MicroPython) and the host tools (CPython) import this same file.

import struct

try:
    from micropython import const
except ImportError:  # CPython: const() is only a compiler hint on MicroPython.

    def const(x):  # type: ignore[misc]
        return x


try:
    from binascii import crc32
except ImportError:  # pragma: no cover - every supported runtime has binascii.crc32
    from zlib import crc32  # type: ignore[import-not-found,no-redef]  # CPython-only module


class FormatError(ValueError):
    """A record or batch does not follow docs/FORMAT.md."""


# --- Flash record (FORMAT.md section 2) -------------------------------------------------
REC_MAGIC = const(0xA5)
REC_TYPE_READING = const(1)
# payload: seq u32 (low bits; the segment header holds the epoch), ts i64 (ms), boot u16,
# channel u8, category u8, flags u8, value i32
REC_PAYLOAD_FMT = "<IqHBBBi"
REC_PAYLOAD_LEN = const(21)
# frame: magic u8, type u8, len u8, payload, crc32 u32 (over magic..payload)
REC_HEAD_LEN = const(3)
REC_LEN = const(28)  # 3 + 21 + 4

FLAG_CLOCK_UNSYNCED = const(0x01)  # ts is ms since boot `boot`, not Unix time (FORMAT.md 2.3)
FLAG_SEQ_EPOCH = const(0x02)  # batch header: a u16 seq epoch follows the names (FORMAT.md 3.1)
# seqs are 48-bit: the low 32 bits in the fixed-width fields, the epoch (upper 16) once per
# segment or batch (FORMAT.md 1)
SEQ_LIMIT = 1 << 48
SEQ_LOW = 0xFFFFFFFF


def pack_record(buf, off, seq, ts, boot, channel, category, flags, value):
    """Write one framed reading record into buf at off; returns the frame length. Only the
    low 32 bits of seq are written: the segment header holds its epoch (FORMAT.md 2.2)."""
    buf[off] = REC_MAGIC
    buf[off + 1] = REC_TYPE_READING
    buf[off + 2] = REC_PAYLOAD_LEN
    struct.pack_into(
        REC_PAYLOAD_FMT, buf, off + 3, seq & SEQ_LOW, ts, boot, channel, category, flags, value
    )
    end = off + 3 + REC_PAYLOAD_LEN
    struct.pack_into("<I", buf, end, crc32(memoryview(buf)[off:end]) & 0xFFFFFFFF)
    return REC_LEN


def check_record(mv, off):
    """Validate the frame at off. Returns 1 valid, 0 corrupt, -1 truncated (torn tail)."""
    n = len(mv) - off
    if n < REC_HEAD_LEN:
        return -1
    if mv[off] != REC_MAGIC or mv[off + 1] != REC_TYPE_READING or mv[off + 2] != REC_PAYLOAD_LEN:
        return 0
    if n < REC_LEN:
        return -1
    end = off + 3 + REC_PAYLOAD_LEN
    want = struct.unpack_from("<I", mv, end)[0]
    if crc32(mv[off:end]) & 0xFFFFFFFF != want:
        return 0
    return 1


def unpack_record(mv, off):
    """(seq, ts, boot, channel, category, flags, value) of a frame already checked valid."""
    return struct.unpack_from(REC_PAYLOAD_FMT, mv, off + 3)


# --- Batch payload (FORMAT.md section 3) ------------------------------------------------
BATCH_MAGIC = b"EB"
BATCH_VERSION = const(1)
ENC_BINARY = const(0)
ENC_JSON = const(1)
ENC_COLUMNS = const(2)  # format 2's only body: columns per channel (FORMAT.md 3.8)
# fixed part after the magic: version u8, encoding u8, flags u8, boot u16, first_seq u32 (low),
# count u16, base_ts i64, then device id and category as (u8 length, ASCII bytes), then the
# seq epoch u16 when flags bit 1 is set
BATCH_FIXED_FMT = "<BBBHIHq"
BATCH_FIXED_LEN = const(19)
# one entry: channel u8, seq delta u16, ts delta u32 (ms), value i32
ENTRY_FMT = "<BHIi"
ENTRY_LEN = const(11)
MAX_SEQ_DELTA = const(0xFFFF)
MAX_TS_DELTA = 0xFFFFFFFF
MAX_NAME = const(64)


def batch_header_len(device, category, epoch=0):
    return 2 + BATCH_FIXED_LEN + 2 + len(device) + len(category) + (2 if epoch else 0)


class BatchWriter:
    """Packs readings of one category into a preallocated buffer (no allocation per reading)."""

    def __init__(self, device, capacity):
        """capacity: a size in bytes, or a writable buffer to pack into (the forwarder passes a
        view of the MQTT client's packet buffer, so a batch is built where it is sent from)."""
        if not 0 < len(device) <= MAX_NAME:
            raise ValueError("device id length must be 1..64")
        self.device = device if isinstance(device, bytes) else device.encode()
        self.buf = bytearray(capacity) if isinstance(capacity, int) else capacity
        self.mv = memoryview(self.buf)
        self.count = 0
        self.last_seq = 0  # set by add(); read only once count > 0
        self.last_ts = 0
        self.epoch = 0

    def start(self, category, boot, flags):
        if isinstance(category, str):
            category = category.encode()
        if not 0 < len(category) <= MAX_NAME:
            raise ValueError("category name length must be 1..64")
        self.category = category
        self.boot = boot
        self.flags = flags
        self.count = 0
        self.pos = batch_header_len(self.device, category)

    def room(self):
        return (len(self.buf) - self.pos) // ENTRY_LEN

    def add(self, seq, ts, boot, flags, channel, value):
        """Append one reading; False when it cannot join this batch (full, or a delta or
        the boot/clock flags do not fit), so the caller closes the batch and starts another."""
        if self.count == 0:
            if boot != self.boot or flags != self.flags:
                self.boot = boot
                self.flags = flags
            self.first_seq = seq
            self.base_ts = ts
            self.epoch = seq >> 32
            self.pos = batch_header_len(self.device, self.category, self.epoch)
            ds = 0
            dt = 0
        else:
            if boot != self.boot or flags != self.flags or seq >> 32 != self.epoch:
                return False
            ds = seq - self.last_seq
            dt = ts - self.last_ts
            if ds <= 0 or ds > MAX_SEQ_DELTA or dt < 0 or dt > MAX_TS_DELTA:
                return False
        if self.pos + ENTRY_LEN > len(self.buf):
            return False
        struct.pack_into(ENTRY_FMT, self.buf, self.pos, channel, ds, dt, value)
        self.pos += ENTRY_LEN
        self.last_seq = seq
        self.last_ts = ts
        self.count += 1
        return True

    def finish(self):
        """Write the header; returns a memoryview of the whole payload."""
        b = self.buf
        b[0:2] = BATCH_MAGIC
        struct.pack_into(
            BATCH_FIXED_FMT,
            b,
            2,
            BATCH_VERSION,
            ENC_BINARY,
            self.flags | (FLAG_SEQ_EPOCH if self.epoch else 0),
            self.boot,
            self.first_seq & SEQ_LOW,
            self.count,
            self.base_ts,
        )
        p = 2 + BATCH_FIXED_LEN
        for name in (self.device, self.category):
            b[p] = len(name)
            b[p + 1 : p + 1 + len(name)] = name
            p += 1 + len(name)
        if self.epoch:
            struct.pack_into("<H", b, p, self.epoch)
        return self.mv[: self.pos]


def read_names(mv, p, device, category):
    """The device id and category of a batch header at p ((u8 length, ASCII) each, FORMAT.md
    3.1): ([device, category], offset after them). A name another than the topic's (device,
    category, when given) is refused (identity is the channel, docs/MQTT.md)."""
    names = []
    for _ in range(2):
        if p >= len(mv):
            raise FormatError("batch header truncated")
        n = mv[p]
        if n == 0 or n > MAX_NAME or p + 1 + n > len(mv):
            raise FormatError("bad name length %d at offset %d" % (n, p))
        for c in mv[p + 1 : p + 1 + n]:
            if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 45 or c == 95):
                raise FormatError("name at offset %d is not [A-Za-z0-9_-]" % p)
        names.append(bytes(mv[p + 1 : p + 1 + n]).decode())
        p += 1 + n
    if device is not None and names[0] != device:
        raise FormatError("payload names device %r, not %r" % (names[0], device))
    if category is not None and names[1] != category:
        raise FormatError("payload names category %r, not %r" % (names[1], category))
    return names, p


def decode_batch(data, device=None, category=None):
    """Decode a batch payload into a dict with a `readings` list of (seq, ts, channel, value).
    device and category: the identity the topic gives (`{prefix}/{device}/t/{category}`); a
    payload that names another one is refused, and a format 2 payload without names takes
    them from here. Raises FormatError on anything that is not format 1 or 2."""
    mv = memoryview(data)
    if len(mv) < 4:
        raise FormatError("batch too short: %d bytes" % len(mv))
    if bytes(mv[0:2]) != BATCH_MAGIC:
        raise FormatError("bad batch magic")
    if mv[2] == 2:
        from edge import batchv2_read  # loaded only where format 2 is received

        return batchv2_read.decode(mv, device, category)
    if len(mv) < 2 + BATCH_FIXED_LEN + 2:
        raise FormatError("batch too short: %d bytes" % len(mv))
    version, enc, flags, boot, first_seq, count, base_ts = struct.unpack_from(
        BATCH_FIXED_FMT, mv, 2
    )
    if version != BATCH_VERSION:
        raise FormatError("unknown batch version %d" % version)
    if flags & ~(FLAG_CLOCK_UNSYNCED | FLAG_SEQ_EPOCH):
        raise FormatError("unknown flag bits 0x%02x" % flags)
    names, p = read_names(mv, 2 + BATCH_FIXED_LEN, device, category)
    epoch = 0
    if flags & FLAG_SEQ_EPOCH:
        if p + 2 > len(mv):
            raise FormatError("batch header truncated: no seq epoch")
        epoch = struct.unpack_from("<H", mv, p)[0]
        p += 2
        if not epoch:
            raise FormatError("seq epoch 0 with the epoch flag set")
        flags &= ~FLAG_SEQ_EPOCH
    first_seq |= epoch << 32
    if enc == ENC_JSON:
        import json

        body = json.loads(bytes(mv[p:]))
        if not isinstance(body, list) or len(body) != count:
            raise FormatError("json body does not hold %d readings" % count)
        readings = [(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in body]
    elif enc == ENC_BINARY:
        if len(mv) - p != count * ENTRY_LEN:
            raise FormatError(
                "body is %d bytes, %d readings need %d" % (len(mv) - p, count, count * ENTRY_LEN)
            )
        readings = []
        seq = first_seq
        ts = base_ts
        for i in range(count):
            ch, ds, dt, val = struct.unpack_from(ENTRY_FMT, mv, p + i * ENTRY_LEN)
            if i and ds == 0:
                raise FormatError("seq delta 0 in entry %d" % i)
            seq += ds
            ts += dt
            readings.append((seq, ts, ch, val))
        if seq >> 32 != epoch:
            raise FormatError("entries leave seq epoch %d" % epoch)
    else:
        raise FormatError("unknown encoding %d" % enc)
    if readings and readings[0][0] != first_seq:
        raise FormatError("first entry seq does not match header")
    return {
        "version": version,
        "encoding": enc,
        "flags": flags,
        "boot": boot,
        "first_seq": first_seq,
        "count": count,
        "device": names[0],
        "category": names[1],
        "readings": readings,
    }


# --- Status (docs/HEALTH.md 1) ----------------------------------------------------------
# compact key -> the full document's key; values in seconds are scaled to ms
_STATUS_KEYS = (
    ("s", "state"),
    ("b", "boot"),
    ("rc", "reset_cause"),
    ("rd", "reset_detail"),
    ("hf", "heap_free"),
    ("sd", "store_depth"),
    ("ob", "oldest_unsent_boot"),
    ("dr", "drops"),
    ("er", "errors"),
    ("rx", "reconnects"),
    ("cv", "consent_version"),
    ("fw", "flash_writes"),
    ("wf", "wifi"),
    ("ot", "ota"),
)


def decode_status(doc, previous=None):
    """A status message (a parsed JSON object) with the full document's key names: a compact
    snapshot is expanded, a change message (`d: 1`) is expanded and merged over `previous`
    (the last status of that device), a full document and the Last Will pass unchanged."""
    if not isinstance(doc, dict) or "state" in doc or not ("s" in doc or "d" in doc):
        return doc
    change = doc.get("d") == 1
    out = dict(previous) if change and isinstance(previous, dict) else {}
    for short, name in _STATUS_KEYS:
        if short in doc:
            out[name] = doc[short]
    if "up" in doc:
        out["uptime_ms"] = doc["up"] * 1000 if isinstance(doc["up"], int) else None
    if "oa" in doc or not change:
        oa = doc.get("oa")
        out["oldest_unsent_age_ms"] = oa * 1000 if isinstance(oa, int) else None
    if "ck" in doc or not change:
        ck = doc.get("ck")
        if isinstance(ck, list) and len(ck) == 3:
            out["clock"] = {
                "synced": True,
                "boot": ck[0],
                "sync_ticks": ck[1],
                "sync_wall_ms": ck[2],
            }
        else:
            out["clock"] = {"synced": False}
    n = doc.get("n")
    if isinstance(n, list) and len(n) == 2:
        out["sampled"], out["acked"] = n
    if not change:
        out.setdefault("drops", {})
        out.setdefault("errors", {})
    out["compact"] = "change" if change else "snapshot"
    return out


# --- Topics (DESIGN.md section 5) -------------------------------------------------------


def topic(prefix, device, *parts):
    """`{prefix}/{device}/part/...` as bytes."""
    s = prefix + "/" + device
    for part in parts:
        s += "/" + part
    return s.encode()
