# The raw log's blocks (docs/FORMAT.md 8): a ring of 4096-byte NOR blocks on a partition
# (esp32.Partition on a board, the emulated flash on unix), each erased just before it is
# reused, handed out in address order from where the last one was taken (wear levelling), a
# table of what each block holds, and windowed reads of the records in a block.

from array import array

import micropython
from micropython import const

from edge.store import rawfmt
from edge.store.rawfmt import BLOCK, HEAD_LEN

FREE = const(0xFF)  # owner: nothing live (erased, freed meta, bad header, unknown category)
META = const(0xFE)
FREED_DATA = const(0x40)  # owner | stream index: freed, not yet erased: a purge zeroes it
NONE = const(0xFFFF)  # end of a stream's block list
_EIO = const(5)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_ERASE = const(6)
_RBUF = const(512)  # holds the largest chunk (rawfmt.MAX_CHUNK) or meta record


class RingError(Exception):
    pass


def _ok(r):
    # the emulated flash returns -EIO like littlefs's callbacks; esp32.Partition raises OSError
    if r:
        raise OSError(_EIO)


class Ring:
    def __init__(self, dev, stats):
        self.dev = dev
        self.stats = stats
        n = dev.ioctl(_IOCTL_BLOCK_COUNT, 0)
        if dev.ioctl(_IOCTL_BLOCK_SIZE, 0) != BLOCK or not 4 <= n < NONE:
            raise RingError("log partition must have 4 .. 65534 blocks of 4096 bytes")
        self.n = n
        # per block, preallocated: 6 bytes of RAM per 4 KiB of flash
        self.owner = bytearray(n)
        # low 8 bits of the block sequence number: with the index, it names a block in the
        # positions the forwarder holds (pos()); the whole number orders blocks only at boot
        # (`order`, dropped once the streams are linked)
        self.gen = bytearray(n)
        self.next = array("H", bytes(2 * n))
        self.used = array("H", bytes(2 * n))  # bytes from the block start to its records' end
        self.order = None
        self.top = 0  # highest block sequence number on the partition
        self.ptr = 0  # where the next allocation starts looking
        self.rbuf = bytearray(_RBUF)
        self.rmv = memoryview(self.rbuf)
        self.wblk = -1  # the block and byte range rbuf holds (read window)
        self.woff = 0
        self.wlen = 0
        self.zeros = None  # a purge's zero page, allocated on first use

    # --- device --------------------------------------------------------------------------
    def read(self, b, off, buf):
        _ok(self.dev.readblocks(b, buf, off))

    def program(self, b, off, buf):
        if b == self.wblk:
            self.wblk = -1  # the window may no longer match the flash
        _ok(self.dev.writeblocks(b, buf, off))
        self.stats["programs"] += 1

    def erase(self, b):
        if b == self.wblk:
            self.wblk = -1
        _ok(self.dev.ioctl(_IOCTL_ERASE, b))
        self.stats["erases"] += 1

    # --- boot ----------------------------------------------------------------------------
    def scan(self, tags):
        """Read every block header. Data blocks of a known category tag (tags: tag -> stream
        index) get that index as owner; freed ones FREED_DATA | index; live meta blocks META;
        everything else FREE. The allocation pointer follows the newest block."""
        newest = -1
        self.order = array("I", bytes(4 * self.n))
        head = self.rmv[:HEAD_LEN]
        self.wblk = -1
        for b in range(self.n):
            self.read(b, 0, head)
            state, kind, bseq, tag = rawfmt.parse_head(head)
            self.owner[b] = FREE
            self.next[b] = NONE
            if state == rawfmt.BAD or bseq > 0xFFFFFFFF:  # 2^32 allocations: 500 GB written
                if any(x for x in head):  # a zeroed header is a purged block, not damage
                    self.stats["bad_segments"] += 1
                continue
            if state == rawfmt.ERASED:
                continue
            self.order[b] = bseq
            self.gen[b] = bseq & 0xFF
            if bseq > self.top:
                self.top = bseq
                newest = b
            if kind == rawfmt.KIND_META:
                if state == rawfmt.LIVE:
                    self.owner[b] = META
            elif tag in tags:
                i = tags[tag]
                self.owner[b] = i if state == rawfmt.LIVE else FREED_DATA | i
            elif state == rawfmt.LIVE:
                self.stats["orphan_blocks"] += 1  # a category no longer in the config
        self.ptr = (newest + 1) % self.n

    def in_order(self):
        """Block indexes, oldest allocation first (by sequence number: each pass of the
        allocator goes up the partition, so this is the ring from the pointer on)."""
        return [(self.ptr + k) % self.n for k in range(self.n)]

    # --- allocation ----------------------------------------------------------------------
    def alloc(self, kind, tag, owner):
        """Erase the next free block at or after the pointer and give it a header. Returns
        its index, or -1 when no block may be taken (the caller evicts, then retries). Data
        never takes the last free block: it is the spare the meta record moves into when
        its block is full or the device boots (docs/FORMAT.md 8.2)."""
        spare = 1 if kind == rawfmt.KIND_DATA else 0
        found = -1
        for k in range(self.n):
            b = (self.ptr + k) % self.n
            if self.owner[b] == FREE or self.owner[b] & 0xC0 == FREED_DATA:
                if found < 0:
                    found = b
                elif spare == 0:
                    break
                else:
                    spare -= 1
        if found < 0 or spare:
            return -1
        b = found
        self.owner[b] = FREE  # not live until its header is on flash
        self.erase(b)
        self.top += 1
        self.wblk = -1  # the header is built in the read buffer
        rawfmt.pack_head(self.rbuf, kind, self.top, tag)
        self.program(b, 0, self.rmv[: rawfmt.FREED_OFF])
        self.owner[b] = owner
        self.gen[b] = self.top & 0xFF
        self.next[b] = NONE
        self.used[b] = HEAD_LEN
        self.ptr = (b + 1) % self.n
        return b

    def pos(self, b):
        """The block as a u32 the forwarder keeps with a batch: index and low sequence bits,
        so a block freed and allocated again in the meantime (a lap of the ring for each of
        256 generations) is not taken for it."""
        return (b << 8) | self.gen[b]

    def free(self, b):
        """Program the block's freed marker (no erase: it is erased when next allocated)."""
        o = self.owner[b]
        self.program(b, rawfmt.FREED_OFF, b"\0\0\0\0")
        self.owner[b] = FREE if o == META else FREED_DATA | o

    def zero(self, b):
        """Make a block's records unreadable (a purge): program 0x00 over its records, then
        over its header. NOR can always clear bits; the records go first, so a cut leaves a
        block whose header still names the category and the next boot's purge finds it."""
        if self.zeros is None:
            self.zeros = bytes(256)
        end = self.used[b] if self.owner[b] < FREED_DATA else BLOCK
        off = HEAD_LEN
        while off < end:
            k = min(256, end - off)
            self.program(b, off, memoryview(self.zeros)[:k])
            off += k
        self.program(b, 0, memoryview(self.zeros)[:HEAD_LEN])
        self.owner[b] = FREE

    # --- reads of records -----------------------------------------------------------------
    def erased_from(self, b, off):
        """True when every byte of block b from off to its end reads 0xFF."""
        while off < BLOCK:
            k = min(_RBUF, BLOCK - off)
            self.read(b, off, self.rmv[:k])
            self.wblk = b
            self.woff = off
            self.wlen = k
            # viper takes any buffer for a ptr8 argument; the stubs type ptr8 as a class
            if not _all_ff(self.rbuf, k):  # type: ignore[arg-type]
                return False
            off += k
        return True

    def record_in_block(self, b, off, check):
        """record_at() over the whole block, where a 0xFF byte is the end of the records only
        when every byte after it is 0xFF too (otherwise it is damage: -2)."""
        r, p = self.record_at(b, off, BLOCK, check)
        if r == 0 and not self.erased_from(b, off):
            return -2, p
        return r, p

    def record_at(self, b, off, end, check):
        """Validate the record at (b, off) with `check` (rawfmt.check_chunk / check_meta),
        reading a window of the block into rbuf when needed. Returns (length or the check's
        code, index of the record in rbuf). `end`: where the block's records may end."""
        while True:
            if self.wblk == b and self.woff <= off < self.woff + self.wlen:
                p = off - self.woff
                r = check(self.rmv, p, self.wlen)
                if r != -1 or self.woff + self.wlen >= end or p == 0:
                    # Case 1: decided inside the window. Case 2: the record runs past the
                    # end of the block's records: torn. Case 3: it does not fit a full window.
                    return (-2 if r == -1 else r), p
            k = min(_RBUF, end - off)
            if k <= 0:
                return 0, 0
            self.read(b, off, self.rmv[:k])
            self.wblk = b
            self.woff = off
            self.wlen = k


@micropython.viper
def _all_ff(buf: ptr8, n: int) -> bool:
    i = 0
    while i < n:
        if buf[i] != 0xFF:
            return False
        i += 1
    return True
