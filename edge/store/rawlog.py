# Durable reading store on a raw NOR partition (docs/FORMAT.md 8): the interface of the
# littlefs segment store (edge/store/store.py) over a ring of erase blocks. A commit is one
# page program of the pending chunk (no erase); a block is erased once per 4 KiB of records.

import struct
from binascii import crc32

from micropython import const

from edge import codec
from edge.store import rawfmt, rawread
from edge.store.base import StoreBase, has_buffer, new_stats
from edge.store.rawfmt import BLOCK, CHUNK_HEAD, ENTRY_LEN, HEAD_LEN
from edge.store.ring import META, NONE, Ring, RingError

_SEQ_RESERVE = const(1024)  # seqs reserved per meta write, so a seq is never reused
_ENOSPC = const(28)
_U32 = const(0xFFFFFFFF)
_CHUNK_ROOM = const(25)  # a chunk's header and CRC (rawfmt.chunk_len(0))
_FULL_CHUNK = const(505)  # CHUNK_HEAD + MAX_N * ENTRY_LEN: the open chunk takes no more


class StoreError(Exception):
    pass


class _Stream:
    """One category: its live blocks as a list linked through ring.next, oldest first; the
    commit buffer with its open chunk; the reader and the acknowledged positions (a block, the
    offset of a chunk in it, and the seq up to which that chunk is done). 17 attributes: the
    most a MicroPython instance holds in its smallest attribute table but one."""

    def __init__(self, name, policy):
        self.name = name
        self.quota = policy.get("quota", 0)
        self.reject_new = policy.get("evict", "drop_oldest") == "reject_new"
        self.first = NONE
        self.bytes = 0  # flash footprint: whole blocks
        self.wblk = NONE  # the block taking this boot's commits (always the last), else NONE
        # commit buffer, allocated by the first append (a category without consent never
        # gets one) and released when a revocation purges the category
        self.buf = None
        self.n = 0  # readings pending in buf (not yet durable)
        self.wpos = 0  # bytes of buf in use
        self.cpos = -1  # start of the open chunk in buf, -1 when none is open
        self.lseq = 0  # seq and timestamp of the last reading appended
        self.lts = 0
        self.acked = 0  # highest acknowledged seq
        self.rblk = NONE  # reader: block, chunk offset, seqs up to rthr already handed out
        self.roff = HEAD_LEN
        self.rthr = 0
        self.apos = apos(NONE, HEAD_LEN)  # the acknowledged position: block and chunk offset


def apos(b, off):
    """A stream's acknowledged position as one small int: block << 13 | offset (<= 4096)."""
    return (b << 13) | off


def ablk(s):
    return s.apos >> 13


def aoff(s):
    return s.apos & 0x1FFF


class RawStore(StoreBase):
    backend = "rawlog"

    def __init__(self, dev, cfg, categories, hal):
        sc = cfg["store"]
        self.hal = hal
        self.flush_n = sc["flush_n"]
        self.flush_ms = sc["flush_ms"]
        self.total_bytes = sc["total_bytes"]
        # the pending readings' chunks and room for two breaks (a flags change, a seq gap)
        self.buf_len = self.flush_n * ENTRY_LEN + 3 * _CHUNK_ROOM
        self.stats = new_stats()  # type: dict
        self.stats["erases"] = 0
        self.stats["programs"] = 0
        self.stats["orphan_blocks"] = 0  # live blocks of a category the config no longer has
        self.last_commit = hal.ticks_ms()
        self.streams = []
        tags = {}  # type: dict
        for i, name in enumerate(categories):
            tag = rawfmt.cat_tag(name)
            if tag in tags:
                raise StoreError(
                    "categories %s and %s share a tag" % (categories[tags[tag]], name)
                )
            tags[tag] = i
            self.streams.append(_Stream(name, cfg["categories"][name]))
        try:
            self.ring = Ring(dev, self.stats)
        except RingError as e:
            raise StoreError(str(e))
        if self.ring.n < len(categories) + 3:
            raise StoreError("log partition too small: %d blocks" % self.ring.n)
        self.mblk = NONE
        self.moff = 0
        self.ring.scan(tags)
        metas = rawread.meta_blocks(self.ring)
        boot, seq_hi, acked = rawread.load_meta(self.ring, metas)
        top = rawread.load_streams(self, acked)
        self.ring.order = None  # whole sequence numbers are needed only to link at boot
        self.boot = (boot + 1) & 0xFFFF
        self.next_seq = max(seq_hi, top + 1, 1)
        self.seq_hi = self.next_seq
        # a block takes appends only in the boot that allocated it (docs/FORMAT.md 8.2): the
        # boot's meta record opens a new meta block, then the older ones are freed
        self._save_state(True)
        for b in metas:
            self.ring.free(b)

    # --- meta ----------------------------------------------------------------------------
    def _save_state(self, new_block=False):
        if self.next_seq >= self.seq_hi:
            self.seq_hi = self.next_seq + _SEQ_RESERVE
        ring = self.ring
        if (
            new_block
            or self.mblk == NONE
            or self.moff + rawfmt.meta_len(len(self.streams)) > BLOCK
        ):
            old = self.mblk
            b = self._alloc(rawfmt.KIND_META, 0, META, None)
            ring.program(b, HEAD_LEN, self._pack_meta())
            self.mblk = b
            self.moff = HEAD_LEN
            if old != NONE:
                ring.free(old)  # only once the new block holds a whole record
        else:
            ring.program(self.mblk, self.moff, self._pack_meta())
        self.moff += rawfmt.meta_len(len(self.streams))
        self.moved = False
        self.last_save = self.hal.ticks_ms()

    def _pack_meta(self):
        """The meta record in the ring's read buffer (no buffer of its own)."""
        ring = self.ring
        ring.wblk = -1  # the read window is gone
        ln = rawfmt.pack_meta(ring.rbuf, self.boot, self.seq_hi, self.streams)
        return ring.rmv[:ln]

    # --- ingest --------------------------------------------------------------------------
    def append(self, cat, channel, ts, flags, value):
        """Buffer one reading; returns its seq, or -1 when the category's policy rejects it."""
        s = self.streams[cat]
        if s.reject_new and s.quota and self._would_exceed(s):
            self._drop("quota", s, 1)
            return -1
        if not has_buffer(self, s, self.buf_len):
            return -1
        seq = self.next_seq
        if seq >= codec.SEQ_LIMIT:
            self._drop("seq_exhausted", s, 1)  # never reused (docs/FORMAT.md 1)
            return -1
        self.next_seq = seq + 1
        if self.next_seq >= self.seq_hi:
            self._save_state()  # reserve the next block of seqs before using it
        ds = seq - s.lseq
        dt = ts - s.lts
        c = s.cpos
        if (
            c < 0
            or flags != s.buf[c + 2]
            or s.wpos - c == _FULL_CHUNK
            or ds > 0xFFFF
            or not 0 <= dt <= _U32
        ):
            # a new chunk: the first reading, a flags change, or deltas that do not fit
            if s.cpos >= 0:
                self._close_chunk(s)
            if s.wpos + _CHUNK_ROOM + ENTRY_LEN > len(s.buf):
                self._commit_stream(s)
            s.cpos = s.wpos
            struct.pack_into(
                rawfmt.CHUNK_FMT, s.buf, s.wpos, rawfmt.CHUNK_TYPE, 0, flags, self.boot, seq, ts
            )
            s.wpos += CHUNK_HEAD
            ds = 0
            dt = 0
        struct.pack_into(rawfmt.ENTRY_FMT, s.buf, s.wpos, channel, ds, dt, value)
        s.wpos += ENTRY_LEN
        s.n += 1
        s.lseq = seq
        s.lts = ts
        self.stats["appended"] += 1
        if s.n >= self.flush_n:
            self._commit_stream(s)
        return seq

    def _would_exceed(self, s):
        room = BLOCK - self.ring.used[s.wblk] if s.wblk != NONE else 0
        grow = BLOCK if s.wpos + _CHUNK_ROOM + ENTRY_LEN > room else 0
        return s.bytes + grow > s.quota

    def _close_chunk(self, s):
        """Write the open chunk's count and CRC-32 (docs/FORMAT.md 8.4)."""
        buf = s.buf
        buf[s.cpos + 1] = (s.wpos - s.cpos - CHUNK_HEAD) // ENTRY_LEN
        crc = crc32(memoryview(buf)[s.cpos : s.wpos]) & 0xFFFFFFFF
        struct.pack_into("<I", buf, s.wpos, crc)
        s.wpos += 4
        s.cpos = -1

    def _commit_stream(self, s):
        """Program the pending chunks after the last record of the stream's block: whole
        chunks that fit, the rest into a newly allocated block."""
        if s.cpos >= 0:
            self._close_chunk(s)
        ring = self.ring
        buf = s.buf
        mv = memoryview(buf)
        p = 0
        end = s.wpos
        while p < end:
            b = s.wblk
            room = BLOCK - ring.used[b] if b != NONE else 0
            q = p
            while q < end and q - p + rawfmt.chunk_len(buf[q + 1]) <= room:
                q += rawfmt.chunk_len(buf[q + 1])
            if q == p:
                self._new_block(s)
                continue
            try:
                ring.program(b, ring.used[b], mv[p:q])
            except OSError:
                # Case 1: a cut: nothing more happens. Case 2: the chip refused: what that
                # program left is read as corrupt bytes; this block takes no more commits.
                s.wblk = NONE
                ring.used[b] = BLOCK
                raise
            ring.used[b] += q - p
            p = q
        self.stats["committed"] += s.n
        self.stats["commits"] += 1
        s.n = 0
        s.wpos = 0
        self._enforce_quota(s)

    # --- blocks, quotas, eviction ---------------------------------------------------------
    def _alloc(self, kind, tag, owner, keep):
        b = self.ring.alloc(kind, tag, owner)
        while b < 0:
            # every block is live: evict the oldest block of the biggest category
            if not self._evict_any(keep, "nospace"):
                raise OSError(_ENOSPC)
            b = self.ring.alloc(kind, tag, owner)
        return b

    def _new_block(self, s):
        b = self._alloc(rawfmt.KIND_DATA, rawfmt.cat_tag(s.name), self.streams.index(s), s)
        if s.first == NONE:
            s.first = s.rblk = b
            s.roff = HEAD_LEN
            s.apos = apos(b, HEAD_LEN)
        else:
            self.ring.next[rawread.last(self.ring, s)] = b
        s.wblk = b
        s.bytes += BLOCK

    def _units(self, s):
        return s.bytes // BLOCK

    def _evictable(self, t, keep):
        return t.bytes // BLOCK - (1 if t.wblk != NONE or t is keep else 0)

    def _delete_oldest(self, s, reason):
        b = s.first
        n = rawread.count_after(self, b, aoff(s), s.acked) if b == ablk(s) else 0
        if n:
            self._drop(reason, s, n)
        self.unlink_first(s)

    def unlink_first(self, s):
        """Free the stream's oldest block on flash, then forget it."""
        ring = self.ring
        b = s.first
        ring.free(b)
        s.first = ring.next[b]
        if s.first == NONE:
            s.wblk = NONE
        s.bytes -= BLOCK
        self.stats["deleted_segments"] += 1
        if s.rblk == b:
            s.rblk, s.roff = s.first, HEAD_LEN
        if ablk(s) == b:
            s.apos = apos(s.first, HEAD_LEN)

    # --- forwarding, acknowledgement, purge: edge/store/rawread.py --------------------------
    def fill(self, cat, writer):
        return rawread.fill(self, self.streams[cat], writer)

    def ack(self, cat, seq, pos, off):
        rawread.ack(self, self.streams[cat], seq, pos, off)

    def rewind(self, cat):
        """Re-send from the first unacknowledged reading (after a reconnect)."""
        s = self.streams[cat]
        s.rblk, s.roff, s.rthr = ablk(s), aoff(s), s.acked

    def unsent(self, cat):
        s = self.streams[cat]
        b = s.rblk
        return b != NONE and (s.roff < self.ring.used[b] or self.ring.next[b] != NONE)

    def unsent_bytes(self, cat):
        """Readings after the reader position, as bytes of 28-byte records (the unit of the
        segment store): an upper bound (every 11 bytes of chunks counted as a reading), found
        without reading flash."""
        s = self.streams[cat]
        return rawread.estimate(self.ring, s.rblk, s.roff) * codec.REC_LEN

    def backlog(self, cat):
        """Committed readings not yet acknowledged, as bytes of 28-byte records (an upper
        bound, as unsent_bytes)."""
        s = self.streams[cat]
        return rawread.estimate(self.ring, ablk(s), aoff(s)) * codec.REC_LEN

    def unacked(self, cat):
        """Readings of a category not yet acknowledged: committed (an upper bound, as
        backlog) plus buffered."""
        s = self.streams[cat]
        return rawread.estimate(self.ring, ablk(s), aoff(s)) + s.n

    def first_unacked(self, cat):
        return rawread.first_unacked(self, self.streams[cat])

    def oldest_seq(self, cat):
        return rawread.oldest_seq(self, self.streams[cat])

    def purge(self, cat):
        return rawread.purge(self, self.streams[cat])

    def close(self):
        self.commit()
        self._save_state()
