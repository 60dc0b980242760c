# Leighton-Micali hash-based signatures (RFC 8554), the verifying half: HSS (section 6) over LMS
# (section 5) over LM-OTS (section 4), SHA-256 only: the one hash every MicroPython port's
# hashlib has. Shared contract: the host's signer (host_tools/release/keys.py) imports the
# constants and coef/checksum from this file. Why this scheme: docs/OTA.md section 3.

import hashlib
import struct

try:
    from micropython import const
except ImportError:  # CPython (the host imports this file): const() is a compiler hint only

    def const(x):  # type: ignore[misc]
        return x


# RFC 8554 section 3.1.3 domain separators (u16)
D_PBLC = const(0x8080)
D_MESG = const(0x8181)
D_LEAF = const(0x8282)
D_INTR = const(0x8383)
N = const(32)  # SHA-256 output, both n (LM-OTS) and m (LMS)
ID_LEN = const(16)  # the key pair identifier I
LMS_PUB_LEN = const(56)  # u32 lms type, u32 ots type, I, T[1] (section 5.3)

# LM-OTS typecodes (section 4.1): code -> (w, p, ls)
OTS_TYPES = {1: (1, 265, 7), 2: (2, 133, 6), 3: (4, 67, 4), 4: (8, 34, 0)}
# LMS typecodes (section 5.1): code -> tree height h
LMS_TYPES = {5: 5, 6: 10, 7: 15, 8: 20, 9: 25}
_MAX_LEVELS = const(8)  # HSS allows 1..8 levels (section 6)


class SignatureError(ValueError):
    pass


def coef(s, i, w):
    """The i-th w-bit digit of byte string s (section 3.1.3, Coef)."""
    return ((1 << w) - 1) & (s[(i * w) >> 3] >> (8 - (w * (i % (8 // w)) + w)))


def checksum(q, w, ls):
    """Cksm(Q) of section 4.4 as its two bytes."""
    top = (1 << w) - 1
    total = 0
    for i in range((N * 8) // w):
        total += top - coef(q, i, w)
    total = (total << ls) & 0xFFFF
    return bytes((total >> 8, total & 0xFF))


def ots_sig_len(ots_type):
    if ots_type not in OTS_TYPES:
        raise SignatureError("unknown LM-OTS type %r" % ots_type)
    return 4 + N + N * OTS_TYPES[ots_type][1]


def lms_sig_len(sig, off):
    """Length of the LMS signature at sig[off:], from the types it names (section 5.4)."""
    if len(sig) < off + 8:
        raise SignatureError("signature truncated")
    ots = ots_sig_len(struct.unpack_from(">I", sig, off + 4)[0])
    if len(sig) < off + 4 + ots + 4:
        raise SignatureError("signature truncated")
    t = struct.unpack_from(">I", sig, off + 4 + ots)[0]
    if t not in LMS_TYPES:
        raise SignatureError("unknown LMS type %r" % t)
    return 4 + ots + 4 + N * LMS_TYPES[t]


def _ots_candidate(ident, q, msg, sig, off, ots_type):
    """Algorithm 4b: the LM-OTS public key the signature at sig[off:] implies for msg."""
    w, p, ls = OTS_TYPES[ots_type]
    h = hashlib.sha256(ident)
    h.update(struct.pack(">IH", q, D_MESG))
    h.update(sig[off + 4 : off + 4 + N])  # C, the randomiser
    if callable(msg):
        msg(h)  # a message streamed from flash: feeds h itself
    else:
        h.update(msg)
    qd = h.digest()
    qc = qd + checksum(qd, w, ls)
    # one 55-byte buffer for every chain step: I || u32(q) || u16(i) || u8(j) || tmp
    buf = bytearray(ID_LEN + 7 + N)
    buf[0:ID_LEN] = ident
    struct.pack_into(">I", buf, ID_LEN, q)
    tmp = memoryview(buf)[ID_LEN + 7 :]
    kc = hashlib.sha256(ident)
    kc.update(struct.pack(">IH", q, D_PBLC))
    top = (1 << w) - 1
    pos = off + 4 + N
    for i in range(p):
        struct.pack_into(">H", buf, ID_LEN + 4, i)
        tmp[:] = sig[pos : pos + N]
        for j in range(coef(qc, i, w), top):
            buf[ID_LEN + 6] = j
            tmp[:] = hashlib.sha256(buf).digest()
        kc.update(tmp)
        pos += N
    return kc.digest()


def lms_verify(pub, msg, sig, off=0, end=None):
    """True when sig[off:end] is a valid LMS signature of msg under the 56-byte public key
    pub (Algorithm 6a); SignatureError when it is malformed."""
    if end is None:
        end = len(sig)
    if len(pub) != LMS_PUB_LEN:
        raise SignatureError("LMS public key must be %d bytes" % LMS_PUB_LEN)
    lms_type, ots_type = struct.unpack_from(">II", pub, 0)
    if lms_type not in LMS_TYPES:
        raise SignatureError("unknown LMS type %r in the key" % lms_type)
    ident = bytes(pub[8 : 8 + ID_LEN])
    if end - off != lms_sig_len(sig, off):
        raise SignatureError("LMS signature has the wrong length")
    q, sig_ots = struct.unpack_from(">II", sig, off)
    ots = ots_sig_len(ots_type)
    if sig_ots != ots_type or struct.unpack_from(">I", sig, off + 4 + ots)[0] != lms_type:
        raise SignatureError("signature types differ from the key's")
    height = LMS_TYPES[lms_type]
    if q >= 1 << height:
        raise SignatureError("leaf index out of range")
    node = (1 << height) + q
    h = hashlib.sha256(ident)
    h.update(struct.pack(">IH", node, D_LEAF))
    h.update(_ots_candidate(ident, q, msg, sig, off + 4, ots_type))
    tmp = h.digest()
    pos = off + 4 + ots + 4
    while node > 1:
        h = hashlib.sha256(ident)
        h.update(struct.pack(">IH", node >> 1, D_INTR))
        if node & 1:
            h.update(sig[pos : pos + N])
            h.update(tmp)
        else:
            h.update(tmp)
            h.update(sig[pos : pos + N])
        tmp = h.digest()
        node >>= 1
        pos += N
    return tmp == pub[8 + ID_LEN :]


def hss_verify(pub, msg, sig):
    """True when sig is a valid HSS signature of msg (bytes, or a callable that feeds the message
    to the hash object it is given) under the HSS public key pub
    (u32 levels || LMS public key, section 6.3); SignatureError when malformed."""
    if len(pub) != 4 + LMS_PUB_LEN:
        raise SignatureError("HSS public key must be %d bytes" % (4 + LMS_PUB_LEN))
    levels = struct.unpack_from(">I", pub, 0)[0]
    if not 1 <= levels <= _MAX_LEVELS:
        raise SignatureError("HSS key has %d levels" % levels)
    if len(sig) < 4 or struct.unpack_from(">I", sig, 0)[0] != levels - 1:
        raise SignatureError("signature does not match the key's number of levels")
    key = bytes(pub[4:])
    off = 4
    for _ in range(levels - 1):
        n = lms_sig_len(sig, off)
        child = bytes(sig[off + n : off + n + LMS_PUB_LEN])
        if len(child) != LMS_PUB_LEN or not lms_verify(key, child, sig, off, off + n):
            return False
        key = child
        off += n + LMS_PUB_LEN
    return lms_verify(key, msg, sig, off)
