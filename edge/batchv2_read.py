# Batch payload format 2, the reader (docs/FORMAT.md 3.8): used by codec.decode_batch on the
# host and in tests under both interpreters; the agent never loads it (it only writes format 2).

from edge import codec
from edge.batchv2 import (
    FLAGS_KNOWN,
    K_BITS,
    MAX_ZEROS,
    FLAG_DEFLATE,
    FLAG_NAMES,
    MAX_CHANNELS,
    SEQ_LIMIT,
    VERSION,
    bitlen,
)


def unzigzag(z):
    return z >> 1 if not z & 1 else -(z >> 1) - 1


def get_uvarint(mv, p, limit_bits=64):
    """(value, next offset); FormatError when truncated or wider than limit_bits."""
    v = 0
    shift = 0
    while True:
        if p >= len(mv):
            raise codec.FormatError("varint truncated at offset %d" % p)
        b = mv[p]
        p += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if shift >= limit_bits:
            raise codec.FormatError("varint too long at offset %d" % p)
    if v >> limit_bits:
        raise codec.FormatError("varint out of range at offset %d" % p)
    return v, p


class _Bits:
    """Reads the body's bits, most significant first."""

    def __init__(self, mv, p):
        self.mv = mv
        self.p = p
        self.acc = 0
        self.n = 0

    def bits(self, n):
        while self.n < n:
            if self.p >= len(self.mv):
                raise codec.FormatError("body truncated")
            self.acc = (self.acc << 8) | self.mv[self.p]
            self.p += 1
            self.n += 8
        self.n -= n
        x = self.acc >> self.n
        self.acc &= (1 << self.n) - 1
        return x

    def eg(self, k):
        """One order-k Exp-Golomb code: z zero bits, then z + k + 1 bits starting with a 1."""
        z = 0
        while not self.acc:  # the buffered bits are all zero: count them and load a byte
            z += self.n
            if z > MAX_ZEROS:
                raise codec.FormatError("no Exp-Golomb code at byte %d" % self.p)
            if self.p >= len(self.mv):
                raise codec.FormatError("body truncated")
            self.acc = self.mv[self.p]
            self.p += 1
            self.n = 8
        lead = self.n - bitlen(self.acc)
        z += lead
        if z > MAX_ZEROS:
            raise codec.FormatError("no Exp-Golomb code at byte %d" % self.p)
        self.n -= lead
        return self.bits(z + k + 1) - (1 << k)


def _column(rd, n, order):
    """Values of one column (3.8.4); a list of n ints."""
    k = rd.bits(K_BITS)
    regular = rd.bits(1)
    out = []
    prev = 0
    step = 0
    for j in range(n):
        if regular and j >= order:
            r = 0
        else:
            r = unzigzag(rd.eg(k))
        if order == 2 and j >= 1:
            step += r
            r = step
        prev += r
        out.append(prev)
    return out


def decode(mv, device=None, category=None):
    """Decode a format 2 payload (magic and version already checked by codec.decode_batch)."""
    flags = mv[3]
    if flags & ~FLAGS_KNOWN:
        raise codec.FormatError("unknown flag bits 0x%02x" % flags)
    boot, p = get_uvarint(mv, 4, 16)
    count, p = get_uvarint(mv, p, 16)
    first_seq, p = get_uvarint(mv, p, 48)
    zts, p = get_uvarint(mv, p, 64)
    base_ts = unzigzag(zts)
    if not count:
        raise codec.FormatError("count 0")
    if not first_seq:
        raise codec.FormatError("seq 0")
    if flags & FLAG_NAMES:
        (device, category), p = codec.read_names(mv, p, device, category)
    body = mv[p:]
    if flags & FLAG_DEFLATE:
        body = memoryview(_inflate(body, count * 32 + 64))
    rd = _Bits(body, 0)
    nch = rd.eg(0) + 1
    if nch > count or nch > MAX_CHANNELS:
        raise codec.FormatError("%d channels for %d readings" % (nch, count))
    chans = []
    sizes = []
    seen = {}
    total = 0
    for _ in range(nch):
        ch = rd.bits(8)
        n = rd.eg(0) + 1
        if ch in seen:
            raise codec.FormatError("channel %d listed twice" % ch)
        seen[ch] = True
        total += n
        if total > count:
            raise codec.FormatError("channel sizes exceed count %d" % count)
        chans.append(ch)
        sizes.append(n)
    if total != count:
        raise codec.FormatError("channel sizes add up to %d, count is %d" % (total, count))
    readings = []
    for t in range(nch):
        n = sizes[t]
        seqs = _column(rd, n, 2)
        tss = _column(rd, n, 2)
        vals = _column(rd, n, 1)
        for j in range(n):
            if seqs[j] < 0 or (j and seqs[j] <= seqs[j - 1]):
                raise codec.FormatError("seqs of channel %d do not rise" % chans[t])
            v = vals[j]
            if v < -0x80000000 or v > 0x7FFFFFFF:
                raise codec.FormatError("value %d of channel %d is not an i32" % (v, chans[t]))
            readings.append((first_seq + seqs[j], base_ts + tss[j], chans[t], v))
    if rd.p != len(body) or rd.acc:
        raise codec.FormatError("%d bytes or bits after the body" % (len(body) - rd.p))
    readings.sort()
    prev_seq = first_seq - 1
    prev_ts = base_ts
    for seq, ts, _ch, _v in readings:
        if seq == prev_seq:
            raise codec.FormatError("seq %d twice" % seq)
        if ts < prev_ts:
            raise codec.FormatError("timestamp of seq %d goes back" % seq)
        prev_seq = seq
        prev_ts = ts
    if readings[0][0] != first_seq or readings[0][1] != base_ts:
        raise codec.FormatError("first reading does not match the header")
    if prev_seq >= SEQ_LIMIT:
        raise codec.FormatError("seq beyond 48 bits")
    return {
        "version": VERSION,
        "encoding": codec.ENC_COLUMNS,
        "flags": flags & codec.FLAG_CLOCK_UNSYNCED,
        "boot": boot,
        "first_seq": first_seq,
        "count": count,
        "device": device,
        "category": category,
        "readings": readings,
    }


def _inflate(data, limit):
    """The raw DEFLATE (RFC 1951) body, at most `limit` bytes out; the stream must end exactly
    at the end of the payload."""
    data = bytes(data)
    try:
        import zlib  # type: ignore[import-not-found]  # CPython (the host) only
    except ImportError:
        zlib = None
    if zlib is not None:
        d = zlib.decompressobj(-15)
        try:
            out = d.decompress(data, limit)
        except zlib.error as e:
            raise codec.FormatError("bad deflated body: %s" % e)
        if d.unconsumed_tail or not d.eof or d.unused_data:
            raise codec.FormatError("deflated body cut, too long or followed by bytes")
        return out
    import deflate  # MicroPython: decompression is in every port with "extra features"
    import io

    src = io.BytesIO(data)
    try:
        out = deflate.DeflateIO(src, deflate.RAW).read(limit + 1)
    except (OSError, ValueError, EOFError) as e:
        raise codec.FormatError("bad deflated body: %r" % e)
    if len(out) > limit or src.tell() != len(data):
        raise codec.FormatError("deflated body cut, too long or followed by bytes")
    return out
