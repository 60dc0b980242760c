# Shared contract beside edge/codec.py: the small rules the agent and the host tools must apply
# byte for byte alike. Dual-runtime: MicroPython on the device, CPython in host_tools (the one
# copy; golden vectors in tests/vectors/wire.json are checked under both, tests/test_wire.py).

import hashlib
import struct

try:
    from micropython import const
except ImportError:  # CPython: const() is only a compiler hint on MicroPython.

    def const(x):  # type: ignore[misc]
        return x


# --- names: device ids, category names, the topic prefix (docs/CONFIG.md, type `name`) ------
NAME_MAX = const(64)


def name_ok(s):
    """1..64 ASCII letters, digits, '_' or '-': safe as an MQTT topic level (no '/', '+', '#')
    and as a file name. ASCII by range, not str.isalpha(): CPython's accepts 'é', MicroPython's
    does not, and both sides must agree on which device ids exist."""
    if not isinstance(s, str) or not 0 < len(s) <= NAME_MAX:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c == "_" or c == "-"):
            return False
    return True


# --- topics: {prefix}/{device}/LEAF[/name] (docs/MQTT.md 2), joined by codec.topic() ------
T_TELEMETRY = "t"  # t/{category}: batches, QoS 1
T_STATUS = "status"  # retained status; the Last Will
T_META = "meta"  # retained channel metadata
T_CMD = "cmd"  # cmd/{name}: commands in
T_REPLY = "reply"  # reply/{name}: their replies
T_RECEIPT = "consent/receipt"  # retained consent receipt
T_ACK = "ack"  # end-to-end acknowledgements from the collector
T_OTA = "ota"  # ota/...: retained update chunks (docs/OTA.md)


# --- ticks: an ESP32's millisecond ticks wrap at 2^30 (MicroPython time.ticks_ms; the 64-bit
# unix port's at 2^62). Differences taken modulo 2^30 are right on both for stamps less than
# 2^29 ms (6.2 days) apart, which is what a clock mapping covers (docs/FORMAT.md 4.4).
TICKS_PERIOD = const(0x40000000)
TICKS_HALF = const(0x20000000)


def ticks_diff(a, b):
    """a - b for tick values, in -2^29 .. 2^29-1 (MicroPython time.ticks_diff)."""
    return ((a - b + TICKS_HALF) & (TICKS_PERIOD - 1)) - TICKS_HALF


def ticks_to_wall(ts, sync_ticks, sync_wall):
    """Wall-clock ms of a tick stamp of the boot whose clock sync mapped sync_ticks to
    sync_wall ms (docs/FORMAT.md 4.4, 4.5): valid within about 6 days of the sync."""
    return sync_wall + ticks_diff(ts, sync_ticks)


# --- consent updates and state (docs/CONSENT.md 4) -----------------------------------------
CONSENT_SCHEME = "edge-consent/1"
CONSENT_STATE = "consent.json"  # in the store's root
CONSENT_STATE_FORMAT = const(1)


def consent_signed_bytes(device, doc):
    """The canonical bytes an update's signature covers: one line each for the scheme, device,
    version, sorted grants, sorted denies and the issue time, and a last line `rebase` when
    the update carries `"rebase": true`, so it cannot be added in transit (docs/CONSENT.md 4)."""
    lines = [
        CONSENT_SCHEME,
        device,
        str(doc.get("version")),
        ",".join(sorted(doc.get("grant", []))),
        ",".join(sorted(doc.get("deny", []))),
        str(doc.get("ts", 0)),
    ]
    if doc.get("rebase") is True:
        lines.append("rebase")
    return "\n".join(lines).encode()


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) from hashlib.sha256: MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(64):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def consent_sig(key, device, doc):
    """The `sig` field of a signed update: the HMAC as lower-case hex."""
    return "".join("%02x" % b for b in hmac_sha256(key, consent_signed_bytes(device, doc)))


def consent_state(
    version, grants, source, salt_hex, ts=None, issued=None, receipt=None, purged_total=None
):
    """The consent state file's document (format 1): what the device enforces after a boot.
    grants: {category: bool}; salt_hex: the pseudonym salt (docs/CONSENT.md 7) in hex."""
    return {
        "format": CONSENT_STATE_FORMAT,
        "version": version,
        "grants": grants,
        "ts": ts,
        "issued": issued,
        "source": source,
        "salt": salt_hex,
        "receipt": receipt,
        "purged_total": purged_total or {},
    }


# --- segment header (docs/FORMAT.md 2.2) ---------------------------------------------------
SEG_MAGIC = b"ESEG"
SEG_VERSION = const(1)
SEG_HEAD_LEN = const(8)  # magic 4, version u8, category index u8, seq epoch u16 LE


def seg_head(buf, cat, epoch):
    """Write a segment header into buf[0:8]. epoch: the upper 16 bits of every seq the segment
    holds (docs/FORMAT.md 1)."""
    buf[0:4] = SEG_MAGIC
    buf[4] = SEG_VERSION
    buf[5] = cat
    buf[6] = epoch & 0xFF
    buf[7] = epoch >> 8


def seg_head_read(mv):
    """(version, category, epoch) of a segment header, or None when the bytes are not one
    (too short, wrong magic). The caller decides what an unknown version means."""
    if len(mv) < SEG_HEAD_LEN or bytes(mv[0:4]) != SEG_MAGIC:
        return None
    return mv[4], mv[5], mv[6] | mv[7] << 8


# --- replay feed (host -> agent, docs/FORMAT.md 5.4) ----------------------------------------
FEED_HEAD_FMT = "<IH"  # due ms u32, length u16, little-endian
FEED_HEAD_LEN = const(6)
FEED_MAX = const(256)  # data bytes per record


def feed_records(due_ms, data):
    """The feed records for bytes due at due_ms: pieces of at most FEED_MAX bytes."""
    out = b""
    for pos in range(0, len(data), FEED_MAX):
        piece = data[pos : pos + FEED_MAX]
        out += struct.pack(FEED_HEAD_FMT, due_ms, len(piece)) + piece
    return out


# Modbus serve file: one record per recorded exchange, in capture order (docs/FORMAT.md 5.4)
SERVE_HEAD_FMT = "<IHBBBHHH"  # t_ms, latency_ms, flags, slave, fn, addr, count, len
SERVE_HEAD_LEN = const(15)
SERVE_MAX = const(300)  # reply bytes per record
SERVE_ANY_ADDR = const(1)  # the request is unknown (a reply-only capture): any first register
SERVE_ANY_COUNT = const(2)  # the count is unknown (an exception or garbled reply)
SERVE_NO_REPLY = const(4)  # the master timed out: serve silence


def serve_record(t_ms, latency_ms, flags, slave, fn, addr, count, reply):
    """One serve record: the header and the reply as recorded (at most SERVE_MAX bytes)."""
    if len(reply) > SERVE_MAX:
        raise ValueError("serve record: reply of %d bytes (at most %d)" % (len(reply), SERVE_MAX))
    head = struct.pack(SERVE_HEAD_FMT, t_ms, latency_ms, flags, slave, fn, addr, count, len(reply))
    return head + reply


def serve_head(buf):
    """(t_ms, latency_ms, flags, slave, fn, addr, count, len) of the header in buf[0:15].
    Raises ValueError on a reply length over SERVE_MAX (a damaged file)."""
    r = struct.unpack_from(SERVE_HEAD_FMT, buf, 0)
    if r[7] > SERVE_MAX:
        raise ValueError("replay serve file: bad record")
    return r


def feed_head(buf):
    """(due ms, length) of the record header in buf[0:6]. Raises ValueError on a length over
    FEED_MAX (a damaged feed)."""
    due, n = struct.unpack_from(FEED_HEAD_FMT, buf, 0)
    if n > FEED_MAX:
        raise ValueError("replay feed: record of %d bytes (at most %d)" % (n, FEED_MAX))
    return due, n
