# Batch payload format 2 (docs/FORMAT.md section 3.8): the readings of one batch as columns per
# channel (seq, timestamp, value), each coded as differences in order-k Exp-Golomb codes.
# Dual-runtime like edge/codec.py: the agent writes with this file; edge/batchv2_read.py reads.

from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is only a compiler hint on MicroPython.

    def const(x):  # type: ignore[misc]
        return x


from edge import codec

VERSION = const(2)
FLAG_NAMES = const(0x04)  # device id and category follow the header (3.8.1)
FLAG_DEFLATE = const(0x08)  # the body is a raw DEFLATE stream (RFC 1951)
FLAGS_KNOWN = const(0x0D)  # CLOCK_UNSYNCED | NAMES | DEFLATE; bit 1 and bits 4-7 are zero
MAX_CHANNELS = const(32)  # distinct channels in one batch; the writer closes the batch at 33
MAX_COUNT = const(65535)
_MAX_OFF = const(0x3FFFFFFF)  # seq and ts offsets from the batch's first reading (small ints)
_MAX_K = const(30)
K_BITS = const(5)
MAX_ZEROS = const(70)  # a longer run of zero bits is no code of this format (3.8.3)
SEQ_LIMIT = 1 << 48  # seqs are 48-bit (FORMAT.md 1)
_NIB = b"\x00\x01\x02\x02\x03\x03\x03\x03\x04\x04\x04\x04\x04\x04\x04\x04"


def _bitlen_loop(x):
    n = 0
    while x >= 0x10000:
        x >>= 16
        n += 16
    while x >= 16:
        x >>= 4
        n += 4
    return n + _NIB[x]


try:
    (1).bit_length()  # type: ignore[attr-defined]

    def bitlen(x):
        return x.bit_length()

except AttributeError:  # MicroPython has no int.bit_length()
    bitlen = _bitlen_loop


def zigzag(x):
    return x + x if x >= 0 else -x - x - 1


def put_uvarint(buf, p, v):
    """LEB128: 7 bits per byte, least significant group first, bit 7 = more follows."""
    while v >= 0x80:
        buf[p] = (v & 0x7F) | 0x80
        v >>= 7
        p += 1
    buf[p] = v
    return p + 1


def uvarint_len(v):
    n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


# --- encoder ------------------------------------------------------------------------------------


def output_size(device, max_readings):
    """Bytes of the output buffer a BatchWriter2 of this many readings needs."""
    return codec.batch_header_len(device, b"x" * 64) + 2 + max_readings * codec.ENTRY_LEN + 16


class BatchWriter2:
    """Packs readings of one category as format 2. Same interface as codec.BatchWriter (the
    forwarder and edge/clock.py Stamper use either). add() only stores into preallocated
    arrays; finish() codes the columns into the output buffer. The output buffer is sized for
    format 1, and a batch whose format 2 coding is not smaller is sent as format 1 instead, so
    a device set to format 2 never sends more bytes than format 1 would."""

    def __init__(self, device, max_readings, names=False, out=None):
        if not 0 < len(device) <= codec.MAX_NAME:
            raise ValueError("device id length must be 1..64")
        self.device = device if isinstance(device, bytes) else device.encode()
        n = max_readings
        self.cap = n
        self.names = names
        # format 1 writer over the one output buffer: fallback, and its size bounds format 2
        # (16 bytes more: format 2 stops at the first code that passes the format 1 size);
        # `out`: a writable buffer to use instead (the forwarder's view of the client's packet
        # buffer, see codec.BatchWriter)
        size = output_size(self.device, n)
        self.v1 = codec.BatchWriter(self.device, size if out is None else out[:size])
        self.buf = self.v1.buf
        self.mv = self.v1.mv
        self.tix = bytearray(n)  # table index of each reading's channel
        self.sq = array("I", bytes(4 * n))  # seq - first_seq
        self.tq = array("I", bytes(4 * n))  # ts - base_ts
        self.val = array("i", bytes(4 * n))
        self.order = array("H", bytes(2 * n))  # reading indices grouped by channel (finish)
        self.slot = bytearray(256)  # channel id -> table index + 1
        self.tab = bytearray(MAX_CHANNELS)  # table index -> channel id, first appearance order
        self.ncnt = array("H", bytes(2 * MAX_CHANNELS))
        self.hist = array("H", bytes(2 * 40))  # bit lengths 0..39 (values < 2^34)
        self.count = 0
        self.nch = 0
        self.last_seq = 0
        self.last_ts = 0
        self.fallbacks = 0  # batches sent as format 1 because format 2 was not smaller
        self.acc = 0
        self.nacc = 0
        self.pos = 0
        self.end = 0

    def start(self, category, boot, flags):
        if isinstance(category, str):
            category = category.encode()
        if not 0 < len(category) <= codec.MAX_NAME:
            raise ValueError("category name length must be 1..64")
        self.category = category
        self.boot = boot
        self.flags = flags
        for i in range(self.nch):
            self.slot[self.tab[i]] = 0
        self.count = 0
        self.nch = 0

    def add(self, seq, ts, boot, flags, channel, value):
        """Append one reading; False when it cannot join this batch (full, another boot or
        clock flag, seq or time not rising, too far from the first reading, a 33rd channel,
        or a step format 1 could not carry), so the caller closes the batch."""
        i = self.count
        if i == 0:
            self.boot = boot
            self.flags = flags
            self.first_seq = seq
            self.base_ts = ts
        else:
            if boot != self.boot or flags != self.flags or i >= self.cap:
                return False
            ds = seq - self.last_seq
            if ds <= 0 or ds > codec.MAX_SEQ_DELTA or ts < self.last_ts:
                return False
            if seq >> 32 != self.first_seq >> 32:  # format 1 keeps one seq epoch per batch
                return False
            if seq - self.first_seq > _MAX_OFF or ts - self.base_ts > _MAX_OFF:
                return False
        s = self.slot[channel]
        if not s:
            if self.nch >= MAX_CHANNELS:
                return False
            self.tab[self.nch] = channel
            self.ncnt[self.nch] = 0
            self.nch += 1
            s = self.nch
            self.slot[channel] = s
        self.tix[i] = s - 1
        self.ncnt[s - 1] += 1
        self.sq[i] = seq - self.first_seq
        self.tq[i] = ts - self.base_ts
        self.val[i] = value
        self.last_seq = seq
        self.last_ts = ts
        self.count = i + 1
        return True

    def _column(self, a, lo, hi, order):
        """One column (3.8.4) of the readings order[lo:hi] from array a. Order 2 codes the
        first value, the first difference, then differences of differences; order 1 the first
        value, then differences. Bits go most significant first; the accumulator keeps fewer
        than 8 bits between codes, so it stays a small int on a 32-bit port for every code of
        up to 22 bits (no allocation while coding). Two passes: bit-length histogram (to
        choose k), then the codes."""
        h = self.hist
        for b in range(len(h)):
            h[b] = 0
        idx = self.order
        nib = _NIB
        prev = 0
        step = 0
        nonzero = False
        for j in range(lo, hi):
            x = a[idx[j]]
            r = x - prev
            prev = x
            if order == 2 and j > lo:
                r, step = r - step, r
            if r and j - lo >= order:
                nonzero = True
            z = r + r if r >= 0 else -r - r - 1  # zigzag
            if z < 16:
                h[nib[z]] += 1
            elif z < 256:
                h[nib[z >> 4] + 4] += 1
            elif z > 0xFFFFFFFF:  # a value jump of 2^31 or more: sent as format 1
                self.pos = self.end
                return
            else:
                h[bitlen(z)] += 1
        regular = hi - lo > order and not nonzero
        if regular:  # only the first `order` values are coded: choose k for them alone
            for b in range(len(h)):
                h[b] = 0
            prev = 0
            for j in range(lo, lo + order):
                x = a[idx[j]]
                r = x - prev
                prev = x
                h[bitlen(r + r if r >= 0 else -r - r - 1)] += 1
            hi = lo + order
        k = _best_k(h)
        one = 1 << k
        buf = self.buf
        acc = (self.acc << (K_BITS + 1)) | (k << 1) | (1 if regular else 0)
        nacc = self.nacc + K_BITS + 1
        pos = self.pos
        end = self.end
        prev = 0
        step = 0
        for j in range(lo, hi):
            x = a[idx[j]]
            r = x - prev
            prev = x
            if order == 2 and j > lo:
                r, step = r - step, r
            x = (r + r if r >= 0 else -r - r - 1) + one
            if x < 16:
                m = nib[x]
            elif x < 256:
                m = nib[x >> 4] + 4
            else:
                m = bitlen(x)
            n = m + m - 1 - k  # m - 1 - k zero bits, then x in m bits
            acc = (acc << n) | x
            nacc += n
            while nacc >= 8:
                nacc -= 8
                buf[pos] = (acc >> nacc) & 0xFF
                pos += 1
            acc &= (1 << nacc) - 1
            if pos >= end:
                break  # not smaller than format 1: finish() falls back (buf has room for one code)
        self.acc = acc
        self.nacc = nacc
        self.pos = pos

    def _bits(self, x, n):
        """n < 16 bits of x into the output."""
        acc = (self.acc << n) | x
        nacc = self.nacc + n
        while nacc >= 8:
            nacc -= 8
            if self.pos < self.end:
                self.buf[self.pos] = (acc >> nacc) & 0xFF
            self.pos += 1
        self.acc = acc & ((1 << nacc) - 1)
        self.nacc = nacc

    def _eg(self, v, k):
        """Order-k Exp-Golomb code of a small v >= 0 (3.8.3)."""
        x = v + (1 << k)
        m = bitlen(x)
        if m + m - 1 - k > 15:
            self._bits(0, m - 1 - k)
            self._bits(x >> 8, m - 8)
            self._bits(x & 0xFF, 8)
        else:
            self._bits(x, m + m - 1 - k)

    def _encode2(self):
        """Code the body after a header written at self.pos; False when it would not end
        before self.end (the format 1 size of this batch)."""
        nch = self.nch
        cnt = self.ncnt
        idx = self.order
        # group reading indices by channel, first-appearance order (a counting sort)
        start = 0
        for t in range(nch):
            c = cnt[t]
            cnt[t] = start
            start += c
        for i in range(self.count):
            t = self.tix[i]
            idx[cnt[t]] = i
            cnt[t] += 1
        self.acc = 0
        self.nacc = 0
        self._eg(nch - 1, 0)
        lo = 0
        for t in range(nch):
            self._bits(self.tab[t], 8)
            self._eg(cnt[t] - lo - 1, 0)  # group size - 1 (cnt[t] is now the group's end)
            lo = cnt[t]
        lo = 0
        for t in range(nch):
            hi = cnt[t]
            if self.pos >= self.end:
                return False
            self._column(self.sq, lo, hi, 2)
            self._column(self.tq, lo, hi, 2)
            self._column(self.val, lo, hi, 1)
            lo = hi
        if self.nacc:
            self._bits(0, 8 - self.nacc)
        # restore the per-channel counts (start() and a fallback do not need them, but a
        # second finish() of the same batch must give the same bytes)
        lo = 0
        for t in range(nch):
            hi = cnt[t]
            cnt[t] = hi - lo
            lo = hi
        return self.pos < self.end

    def header_len(self):
        n = 4 + uvarint_len(self.boot) + uvarint_len(self.count)
        n += uvarint_len(self.first_seq) + uvarint_len(zigzag(self.base_ts))
        if self.names:
            n += 2 + len(self.device) + len(self.category)
        return n

    def finish(self):
        """The payload of the batch as a memoryview of the output buffer: format 2, or format
        1 when format 2 would not be smaller."""
        b = self.buf
        v1_len = codec.batch_header_len(self.device, self.category) + self.count * codec.ENTRY_LEN
        if self.first_seq >> 32:
            v1_len += 2
        if self.count:
            p = self.header_len()
            self.pos = p
            self.end = v1_len
            if self._encode2():
                n = self.pos
                b[0:2] = codec.BATCH_MAGIC
                b[2] = VERSION
                b[3] = self.flags | (FLAG_NAMES if self.names else 0)
                q = put_uvarint(b, 4, self.boot)
                q = put_uvarint(b, q, self.count)
                q = put_uvarint(b, q, self.first_seq)
                q = put_uvarint(b, q, zigzag(self.base_ts))
                if self.names:
                    for name in (self.device, self.category):
                        b[q] = len(name)
                        b[q + 1 : q + 1 + len(name)] = name
                        q += 1 + len(name)
                return self.mv[:n]
        self.fallbacks += 1
        w = self.v1
        w.start(self.category, self.boot, self.flags)
        for i in range(self.count):
            w.add(
                self.first_seq + self.sq[i],
                self.base_ts + self.tq[i],
                self.boot,
                self.flags,
                self.tab[self.tix[i]],
                self.val[i],
            )
        return w.finish()


def _best_k(h):
    """The Exp-Golomb order with the fewest bits for a histogram of value bit lengths: a value
    of b bits costs k + 1 bits when b <= k, else 2b - 1 - k (give or take one bit)."""
    top = len(h) - 1
    while top > 0 and not h[top]:
        top -= 1
    n = 0
    above = 0  # values longer than k bits, and the sum of their (2b - 1)
    above_bits = 0
    for b in range(top + 1):
        n += h[b]
        if b:
            above += h[b]
            above_bits += h[b] * (b + b - 1)
    best = 0
    best_bits = -1
    for k in range(min(top, _MAX_K) + 1):
        bits = (k + 1) * (n - above) + above_bits - k * above
        if best_bits < 0 or bits < best_bits:
            best = k
            best_bits = bits
        if k < top:
            above -= h[k + 1]
            above_bits -= h[k + 1] * (k + k + 1)
    return best
