# Durable reading store: one append-only segment stream per consent category (DESIGN.md 3,
# docs/FORMAT.md 2). commit() is the durability point; the ack cursor deletes whole segments.

import os
import struct

from micropython import const

from edge import codec
from edge.store import segment
from edge.store.base import StoreBase, new_stats
from edge.store.segment import BLOCK, footprint, seg_name
from edge.wire import SEG_HEAD_LEN, seg_head

_SEQ_RESERVE = const(1024)  # seqs reserved per state write, so a seq is never reused
_READ_BUF = const(2048)
_ENOSPC = const(28)
_FRAME = segment.FRAME_FMT
_LOW = const(0xFFFFFFFF)  # a record holds a seq's low 32 bits; its segment the epoch (FORMAT 1)

# A segment is a 5-slot list, named by these indices: a class instance (even with __slots__)
# costs a third more heap per segment on MicroPython and an attribute lookup per access.
SEG_NO = const(0)  # file number (NNNNNNNN.seg), never reused
SEG_FIRST = const(1)  # first seq in the file, -1 until the first commit
SEG_LAST = const(2)  # highest seq seen, -1 until the reader or the writer reached the end
SEG_SIZE = const(3)  # bytes in the file, header included
SEG_READABLE = const(4)  # the header checked (docs/FORMAT.md 2.2); False: never read


class StoreError(Exception):
    pass


class _Stream:
    """The segments of one category, oldest first (each a list indexed by the SEG_* slots).
    Seqs here are whole (48-bit, FORMAT 1); a segment's records share first_seq's epoch.
    `bytes` is the flash footprint (whole blocks) of all its segments."""

    def __init__(self, idx, name, policy, root):
        self.idx = idx
        self.name = name
        self.quota = policy.get("quota", 0)
        self.reject_new = policy.get("evict", "drop_oldest") == "reject_new"
        self.dir = root + "/" + name
        self.segs = []
        self.active = None  # open file of segs[-1] while it takes appends
        # commit buffer, allocated by the first append (a category without consent never gets
        # one, issue 4 memory) and released when a revocation purges the category
        self.buf = None
        self.n = 0  # records pending in buf (not yet durable)
        self.acked = 0  # highest acknowledged seq
        self.saved = 0  # `acked` as last written to the state file
        self.rseg = 0  # reader: segno and offset of the next record to send
        self.roff = SEG_HEAD_LEN
        self.aseg = 0  # reader position just after the last acknowledged record
        self.aoff = SEG_HEAD_LEN
        self.bytes = 0
        self.next_segno = 1  # segment numbers never repeat

    def seg_index(self, segno):
        for i, s in enumerate(self.segs):
            if s[SEG_NO] >= segno:
                return i
        return len(self.segs)


class Store(StoreBase):
    backend = "segments"

    def __init__(self, root, cfg, categories, hal):
        sc = cfg["store"]
        self.root = root
        self.hal = hal
        self.flush_n = sc["flush_n"]
        self.flush_ms = sc["flush_ms"]
        self.segment_bytes = max(sc["segment_bytes"], SEG_HEAD_LEN + codec.REC_LEN)
        self.total_bytes = sc["total_bytes"]
        self.rbuf = bytearray(_READ_BUF)
        self.rmv = memoryview(self.rbuf)
        self.head = bytearray(SEG_HEAD_LEN)
        self.rec = bytearray(codec.REC_LEN)  # first_unacked()'s frame
        self.stats = new_stats()  # type: dict
        self.last_commit = hal.ticks_ms()
        self.streams = []
        _mkdir(root)
        st = segment.load_state(root)
        self.boot = (st["boot"] + 1) & 0xFFFF
        max_seq = 0
        for i, name in enumerate(categories):
            s = _Stream(i, name, cfg["categories"][name], root)
            s.acked = st["acked"].get(name, 0)
            max_seq = max(max_seq, self._scan(s))
            self.streams.append(s)
        self.next_seq = max(st["seq_hi"], max_seq + 1, 1)
        self.seq_hi = self.next_seq
        self._save_state()

    def _save_state(self):
        if self.next_seq >= self.seq_hi:
            self.seq_hi = self.next_seq + _SEQ_RESERVE
        acked = {}
        for s in self.streams:
            acked[s.name] = s.acked
        segment.save_state(self.root, self.boot, self.seq_hi, acked)
        for s in self.streams:
            s.saved = s.acked
        self.last_save = self.hal.ticks_ms()

    # --- boot scan -----------------------------------------------------------------------
    def _scan(self, s):
        """List the category's segments; returns the highest seq found. Only the newest
        segment is read in full (ESP32 boot time); older ones by their first/last frame."""
        _mkdir(s.dir)
        nums = segment.list_segments(s.dir)
        top = 0
        for i, segno in enumerate(nums):
            r = segment.probe(
                s.dir + "/" + seg_name(segno), s.idx, self.rbuf, i == len(nums) - 1, self.stats
            )
            s.segs.append(
                [segno, r[segment.FIRST], r[segment.LAST], r[segment.SIZE], r[segment.OK]]
            )
            s.bytes += footprint(r[2])
            top = max(top, r[0], r[1])
        # Appends after boot always go to a new segment: a torn tail is never extended.
        s.next_segno = nums[-1] + 1 if nums else 1
        s.rseg = s.aseg = nums[0] if nums else 1
        return top

    # --- ingest --------------------------------------------------------------------------
    def append(self, cat, channel, ts, flags, value):
        """Buffer one reading; returns its seq, or -1 when the category's policy rejects it."""
        s = self.streams[cat]
        if s.reject_new and s.quota and s.bytes + (s.n + 1) * codec.REC_LEN > s.quota:
            self._drop("quota", s, 1)
            return -1
        seq = self.next_seq
        if not seq & _LOW and not self._new_epoch(seq):
            self._drop("seq_exhausted", s, 1)
            return -1
        self.next_seq = seq + 1
        if self.next_seq >= self.seq_hi:
            self._save_state()  # reserve the next block of seqs before using it
        if s.buf is None:
            s.buf = bytearray(self.flush_n * codec.REC_LEN)
        struct.pack_into(
            _FRAME,
            s.buf,
            s.n * codec.REC_LEN,
            codec.REC_MAGIC,
            codec.REC_TYPE_READING,
            codec.REC_PAYLOAD_LEN,
            seq & _LOW,  # the segment header holds the epoch (FORMAT 2.2)
            ts,
            self.boot,
            channel,
            cat,
            flags,
            value,
        )
        s.n += 1
        self.stats["appended"] += 1
        if s.n == self.flush_n:
            self._commit_stream(s)
        return seq

    def _new_epoch(self, seq):
        """seq is the first of a seq epoch (FORMAT 1): a segment holds one epoch, so everything
        buffered is committed and every open segment closed; appends then open new segments
        whose headers name the new epoch. False at 2^48: seqs are exhausted, never reused."""
        if seq >= codec.SEQ_LIMIT:
            return False
        self.commit()
        for s in self.streams:
            self._close_active(s)
        return True

    def _epoch(self):
        """epoch << 32 of the readings being committed: by _new_epoch, that of the last seq."""
        last = self.next_seq - 1
        return last - (last & _LOW)

    def _commit_stream(self, s):
        nbytes = s.n * codec.REC_LEN
        segment.seal(s.buf, s.n)  # the frames' CRCs (FORMAT 2.3)
        for attempt in range(3):
            try:
                self._write(s, nbytes)
                break
            except OSError as e:
                # Case 1: the filesystem is full (more than the quotas allow for, e.g. other
                # files): evict the oldest segment anywhere and retry in a new segment.
                # Case 2: anything else (EIO: the flash died) goes to the caller.
                if e.args[0] != _ENOSPC or attempt == 2:
                    raise
                self._close_active(s)
                if not self._evict_any(s, "nospace"):
                    raise
        hi = self._epoch()
        last = struct.unpack_from("<I", s.buf, (s.n - 1) * codec.REC_LEN + codec.REC_HEAD_LEN)[0]
        seg = s.segs[-1]
        if seg[SEG_FIRST] < 0:
            seg[SEG_FIRST] = hi | struct.unpack_from("<I", s.buf, codec.REC_HEAD_LEN)[0]
        seg[SEG_LAST] = hi | last
        s.bytes += footprint(seg[SEG_SIZE] + nbytes) - footprint(seg[SEG_SIZE])
        seg[SEG_SIZE] += nbytes
        self.stats["committed"] += s.n
        self.stats["commits"] += 1
        s.n = 0
        self._enforce_quota(s)

    def _write(self, s, nbytes):
        # littlefs copies a synced file's partly filled last block before it appends (COW,
        # TOOLCHAIN 8). A commit that would cross into a new block while the last one is more
        # than half full starts a new segment instead: it never copies more than half a block
        # and wastes less than half of one.
        if s.active is not None:
            size = s.segs[-1][SEG_SIZE]
            tail = size % BLOCK
            if size + nbytes > self.segment_bytes or (tail > BLOCK // 2 and tail + nbytes > BLOCK):
                self._close_active(s)
        if s.active is None:
            self._open_segment(s)
        s.active.write(memoryview(s.buf)[:nbytes])
        s.active.flush()  # the durability point (TOOLCHAIN.md 3)

    def _close_active(self, s):
        f = s.active
        s.active = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass  # its committed content is already on flash

    def _open_segment(self, s):
        segno = s.next_segno
        s.next_segno += 1
        seg_head(self.head, s.idx, self._epoch() >> 32)
        s.active = open(s.dir + "/" + seg_name(segno), "wb")
        s.segs.append([segno, -1, -1, SEG_HEAD_LEN, True])
        s.bytes += footprint(SEG_HEAD_LEN)
        if len(s.segs) == 1:
            s.rseg = s.aseg = segno
            s.roff = s.aoff = SEG_HEAD_LEN
        s.active.write(self.head)

    def _units(self, s):
        return len(s.segs)

    def _evictable(self, t, keep):
        return len(t.segs) - (1 if t.active is not None or t is keep else 0)

    def _delete_oldest(self, s, reason):
        seg = s.segs[0]
        unacked = self._after(seg, s.aseg, s.aoff)
        if unacked:
            self._drop(reason, s, unacked)
        self._remove_segment(s)

    def _after(self, seg, segno, off):
        """Readings of a segment that lie after position (segno, off)."""
        if seg[SEG_NO] < segno or not seg[SEG_READABLE]:
            return 0
        n = (seg[SEG_SIZE] - SEG_HEAD_LEN) // codec.REC_LEN
        if seg[SEG_NO] == segno:
            n -= (off - SEG_HEAD_LEN) // codec.REC_LEN
        return max(n, 0)

    def _remove_segment(self, s):
        seg = s.segs.pop(0)
        try:
            os.remove(s.dir + "/" + seg_name(seg[SEG_NO]))
        except OSError:
            pass
        s.bytes -= footprint(seg[SEG_SIZE])
        self.stats["deleted_segments"] += 1
        nxt = s.segs[0][SEG_NO] if s.segs else s.next_segno
        if s.rseg <= seg[SEG_NO]:
            s.rseg, s.roff = nxt, SEG_HEAD_LEN
        if s.aseg <= seg[SEG_NO]:
            s.aseg, s.aoff = nxt, SEG_HEAD_LEN

    # --- forwarding ----------------------------------------------------------------------
    def fill(self, cat, writer):
        """Add committed, unsent readings of a category to a codec.BatchWriter until it is
        full. Returns (count, seg, off): the reader position after the last one added.
        Only frames whose CRC checks are returned (FORMAT 2.3); bad bytes are skipped."""
        s = self.streams[cat]
        added = 0
        while True:
            i = s.seg_index(s.rseg)
            if i >= len(s.segs):
                break
            seg = s.segs[i]
            last = i == len(s.segs) - 1
            if seg[SEG_NO] != s.rseg:
                s.rseg, s.roff = seg[SEG_NO], SEG_HEAD_LEN
            n = 0
            if seg[SEG_READABLE]:
                try:
                    with open(s.dir + "/" + seg_name(seg[SEG_NO]), "rb") as f:
                        f.seek(s.roff)
                        n = f.readinto(self.rbuf)
                except OSError:
                    pass
            p = 0
            full = False
            bad = False
            # the segment's epoch << 32
            hi = seg[SEG_FIRST] - (seg[SEG_FIRST] & _LOW) if seg[SEG_FIRST] > 0 else 0
            mv = self.rmv[:n]  # one view per read, not one per record (issue 4 memory)
            while p < n:
                r = codec.check_record(mv, p)
                if r < 0:
                    break
                if r == 0:
                    if not bad:
                        self.stats["corrupt_records"] += 1
                        bad = True
                    p += 1
                    continue
                bad = False
                seq, ts, boot, ch, _cat, flags, val = codec.unpack_record(self.rmv, p)
                seq |= hi
                if seq > s.acked:
                    if not writer.add(seq, ts, boot, flags, ch, val):
                        full = True
                        break
                    added += 1
                if seg[SEG_LAST] < seq:
                    seg[SEG_LAST] = seq
                p += codec.REC_LEN
            s.roff += p
            if full or (p and n == len(self.rbuf)):
                if full:
                    break
                continue  # more of this segment
            # no further whole frame in this segment. Case 1: the active segment: more may
            # come. Case 2: a closed one with a torn tail or unreadable: done with it.
            # Case 3: a closed one read to its end: go on with the next.
            if last and s.active is not None:
                break
            if p < n:
                self.stats["torn_tails"] += 1
            if last:
                s.roff = max(s.roff, seg[SEG_SIZE])
                break
            s.rseg, s.roff = s.segs[i + 1][SEG_NO], SEG_HEAD_LEN
        return added, s.rseg, s.roff

    def ack(self, cat, seq, seg, off):
        """The broker acknowledged everything of `cat` up to seq (reader position seg/off)."""
        s = self.streams[cat]
        if seq <= s.acked:
            return
        self.stats["acked"] += 1
        s.acked = seq
        s.aseg, s.aoff = seg, off
        # whole segments below the acknowledged position are deleted (DESIGN.md 3)
        while len(s.segs) > 1 and s.segs[0][SEG_NO] < seg and s.segs[0][SEG_LAST] <= seq:
            self._remove_segment(s)

    def rewind(self, cat):
        """Re-send from the first unacknowledged reading (after a reconnect)."""
        s = self.streams[cat]
        s.rseg, s.roff = s.aseg, s.aoff

    def backlog(self, cat):
        """Committed bytes of a category not yet acknowledged (an upper bound)."""
        s = self.streams[cat]
        n = 0
        for seg in s.segs:
            if seg[SEG_NO] >= s.aseg:
                n += seg[SEG_SIZE] - SEG_HEAD_LEN
        return n - (s.aoff - SEG_HEAD_LEN)

    def unacked(self, cat):
        """Readings of a category not yet acknowledged: committed (an upper bound, from the
        byte count) plus buffered."""
        return max(self.backlog(cat), 0) // codec.REC_LEN + self.streams[cat].n

    def first_unacked(self, cat):
        """(ts, boot, flags) of the first reading after the ack position, from flash or from
        the commit buffer; None when there is none or it cannot be read (the health status's
        oldest unsent age)."""
        s = self.streams[cat]
        i = s.seg_index(s.aseg)
        off = s.aoff
        while i < len(s.segs):
            seg = s.segs[i]
            if seg[SEG_NO] != s.aseg:
                off = SEG_HEAD_LEN
            if seg[SEG_READABLE] and off + codec.REC_LEN <= seg[SEG_SIZE]:
                try:
                    with open(s.dir + "/" + seg_name(seg[SEG_NO]), "rb") as f:
                        f.seek(off)
                        n = f.readinto(self.rec)
                except OSError:
                    n = 0
                if n == codec.REC_LEN and codec.check_record(self.rec, 0) == 1:
                    r = codec.unpack_record(self.rec, 0)
                    return r[1], r[2], r[5]
                return None
            i += 1
        if s.n:  # buffered, not yet committed (its CRC is written at commit)
            r = struct.unpack_from(codec.REC_PAYLOAD_FMT, s.buf, codec.REC_HEAD_LEN)
            return r[1], r[2], r[5]
        return None

    def unsent_bytes(self, cat):
        """Committed bytes after the reader position: an upper bound on what fill() adds,
        found without touching the filesystem (the forwarder's latency budget)."""
        s = self.streams[cat]
        n = 0
        for seg in s.segs:
            if seg[SEG_NO] > s.rseg:
                n += seg[SEG_SIZE] - SEG_HEAD_LEN
            elif seg[SEG_NO] == s.rseg:
                n += seg[SEG_SIZE] - s.roff
        return n

    def unsent(self, cat):
        s = self.streams[cat]
        i = s.seg_index(s.rseg)
        return i < len(s.segs) and (i < len(s.segs) - 1 or s.roff < s.segs[i][SEG_SIZE])

    def oldest_seq(self, cat):
        """The seq of the first reading still held for the category, -1 when none."""
        for seg in self.streams[cat].segs:
            if seg[SEG_FIRST] >= 0:
                return seg[SEG_FIRST]
        return -1

    def purge(self, cat):
        """Delete every unsent reading of a category (consent revoked): buffered, committed
        and not yet published. Returns the count."""
        s = self.streams[cat]
        n = s.n
        s.n = 0
        s.buf = None
        self._close_active(s)
        for seg in s.segs:
            n += self._after(seg, s.rseg, s.roff)  # in-flight ones were sent already
        while s.segs:
            self._remove_segment(s)
        s.rseg = s.aseg = s.next_segno
        s.roff = s.aoff = SEG_HEAD_LEN
        if n:
            self._drop("purged", s, n)
        return n

    def close(self):
        self.commit()
        for s in self.streams:
            self._close_active(s)
        self._save_state()


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass
