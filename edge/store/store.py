# Durable reading store: one append-only segment stream per consent category (docs/DESIGN.md "The
# data path", docs/FORMAT.md 2). commit() is the durability point; the ack cursor deletes whole
# segments.

import os
import struct

from micropython import const

from edge import codec
from edge.store import segment
from edge.store.base import StoreBase, has_buffer, new_stats, wipe
from edge.store.segindex import SegIndex
from edge.store.segment import BLOCK, footprint, seg_name
from edge.wire import SEG_HEAD_LEN, seg_head

_SEQ_RESERVE = const(1024)  # seqs reserved per state write, so a seq is never reused
_READ_BUF = const(1024)  # fill() keeps a segment open for its next read
_ENOSPC = const(28)
_FRAME = segment.FRAME_FMT
_LOW = const(0xFFFFFFFF)  # a record holds a seq's low 32 bits; its segment the epoch (FORMAT 1)


class StoreError(Exception):
    pass


class _Stream:
    """The segments of one category, oldest first (edge/store/segindex.py).
    Seqs here are whole (48-bit, FORMAT 1); a segment's records share first_seq's epoch.
    `bytes` is the flash footprint (whole blocks) of all its segments."""

    def __init__(self, idx, name, policy, root):
        self.idx = idx
        self.name = name
        self.quota = policy.get("quota", 0)
        self.reject_new = policy.get("evict", "drop_oldest") == "reject_new"
        self.dir = root + "/" + name
        self.segs = SegIndex()
        self.active = None  # open file of the newest segment while it takes appends
        # commit buffer, allocated by the first append (a category without consent never gets one:
        # bounded RAM, docs/DESIGN.md "Requirements") and released when a revocation purges the
        # category
        self.buf = None
        self.n = 0  # records pending in buf (not yet durable)
        self.acked = 0  # highest acknowledged seq
        self.rseg = 0  # reader: segno and offset of the next record to send
        self.roff = SEG_HEAD_LEN
        self.aseg = 0  # reader position just after the last acknowledged record
        self.aoff = SEG_HEAD_LEN
        self.bytes = 0
        self.next_segno = 1  # segment numbers never repeat


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
        self.rfile = None  # fill()'s open segment file, and its number
        self.rno = -1
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
        self.moved = False  # the cursors on flash are the ones in RAM
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
            s.segs.append(segno, r[segment.FIRST], r[segment.LAST], r[segment.SIZE], r[segment.OK])
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
        if not has_buffer(self, s, self.flush_n * codec.REC_LEN):
            return -1
        seq = self.next_seq
        if not seq & _LOW and not self._new_epoch(seq):
            self._drop("seq_exhausted", s, 1)
            return -1
        self.next_seq = seq + 1
        if self.next_seq >= self.seq_hi:
            self._save_state()  # reserve the next block of seqs before using it
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
        segs = s.segs
        i = len(segs) - 1
        if segs.first(i) < 0:
            segs.set_first(i, hi | struct.unpack_from("<I", s.buf, codec.REC_HEAD_LEN)[0])
        segs.set_last(i, hi | last)
        size = segs.size(i)
        s.bytes += footprint(size + nbytes) - footprint(size)
        segs.grow(i, nbytes)
        self.stats["committed"] += s.n
        self.stats["commits"] += 1
        s.n = 0
        self._enforce_quota(s)

    def _write(self, s, nbytes):
        # littlefs copies a synced file's partly filled last block before it appends (COW,
        # docs/FORMAT.md 2.1). A commit that would cross into a new block while the last one is
        # more than half full starts a new segment instead: it never copies more than half a block
        # and wastes less than half of one.
        if s.active is not None:
            size = s.segs.size(len(s.segs) - 1)
            tail = size % BLOCK
            if size + nbytes > self.segment_bytes or (tail > BLOCK // 2 and tail + nbytes > BLOCK):
                self._close_active(s)
        if s.active is None:
            self._open_segment(s)
        s.active.write(memoryview(s.buf)[:nbytes])
        s.active.flush()  # the durability point (docs/FORMAT.md 2.1)

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
        s.segs.append(segno, -1, -1, SEG_HEAD_LEN, True)
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
        unacked = self._after(s.segs, 0, s.aseg, s.aoff)
        if unacked:
            self._drop(reason, s, unacked)
        self._remove_segment(s)

    def _after(self, segs, i, segno, off):
        """Readings of segment i that lie after position (segno, off)."""
        no = segs.segno(i)
        if no < segno or not segs.readable(i):
            return 0
        n = (segs.size(i) - SEG_HEAD_LEN) // codec.REC_LEN
        if no == segno:
            n -= (off - SEG_HEAD_LEN) // codec.REC_LEN
        return max(n, 0)

    def _remove_segment(self, s):
        segs = s.segs
        no = segs.segno(0)
        s.bytes -= footprint(segs.size(0))
        segs.pop_oldest()
        try:
            os.remove(s.dir + "/" + seg_name(no))
        except OSError:
            pass
        self.stats["deleted_segments"] += 1
        nxt = segs.segno(0) if len(segs) else s.next_segno
        if s.rseg <= no:
            s.rseg, s.roff = nxt, SEG_HEAD_LEN
        if s.aseg <= no:
            s.aseg, s.aoff = nxt, SEG_HEAD_LEN

    # --- forwarding ----------------------------------------------------------------------
    def fill(self, cat, writer):
        """Add committed, unsent readings of a category to a codec.BatchWriter until it is
        full. Returns (count, seg, off): the reader position after the last one added.
        Only frames whose CRC checks are returned (FORMAT 2.3); bad bytes are skipped."""
        s = self.streams[cat]
        try:
            return self._fill(s, writer)
        finally:
            self._close_reader()

    def _read(self, s, no):
        """Read the segment `no` from s.roff into rbuf; its file stays open for the next read
        of the same fill (one open per segment, not one per buffer). Returns the byte count."""
        f = self.rfile
        if f is None or self.rno != no:
            self._close_reader()
            f = self.rfile = open(s.dir + "/" + seg_name(no), "rb")
            self.rno = no
        f.seek(s.roff)
        return f.readinto(self.rbuf)

    def _close_reader(self):
        f = self.rfile
        self.rfile = None
        self.rno = -1
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def _fill(self, s, writer):
        segs = s.segs
        added = 0
        while True:
            i = segs.find(s.rseg)
            if i >= len(segs):
                break
            no = segs.segno(i)
            last = i == len(segs) - 1
            if no != s.rseg:
                s.rseg, s.roff = no, SEG_HEAD_LEN
            n = 0
            if segs.readable(i):
                try:
                    n = self._read(s, no)
                except OSError:
                    self._close_reader()
            p = 0
            full = False
            bad = False
            # the segment's epoch << 32
            hi = segs.first(i)
            hi = hi - (hi & _LOW) if hi > 0 else 0
            top = segs.last(i)
            mv = self.rmv[:n]  # one view per read, not one per record (bounded RAM)
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
                if top < seq:
                    top = seq
                p += codec.REC_LEN
            segs.set_last(i, top)
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
                s.roff = max(s.roff, segs.size(i))
                break
            s.rseg, s.roff = segs.segno(i + 1), SEG_HEAD_LEN
        return added, s.rseg, s.roff

    def ack(self, cat, seq, seg, off):
        """The broker acknowledged everything of `cat` up to seq (reader position seg/off)."""
        s = self.streams[cat]
        if seq <= s.acked:
            return
        self.stats["acked"] += 1
        s.acked = seq
        self.moved = True
        s.aseg, s.aoff = seg, off
        # whole segments below the acknowledged position are deleted (docs/FORMAT.md 2.2)
        segs = s.segs
        while len(segs) > 1 and segs.segno(0) < seg and segs.last(0) <= seq:
            self._remove_segment(s)

    def rewind(self, cat):
        """Re-send from the first unacknowledged reading (after a reconnect)."""
        s = self.streams[cat]
        s.rseg, s.roff = s.aseg, s.aoff

    def backlog(self, cat):
        """Committed bytes of a category not yet acknowledged (an upper bound)."""
        s = self.streams[cat]
        segs = s.segs
        n = 0
        for i in range(segs.find(s.aseg), len(segs)):
            n += segs.size(i) - SEG_HEAD_LEN
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
        segs = s.segs
        i = segs.find(s.aseg)
        off = s.aoff
        while i < len(segs):
            if segs.segno(i) != s.aseg:
                off = SEG_HEAD_LEN
            if segs.readable(i) and off + codec.REC_LEN <= segs.size(i):
                try:
                    with open(s.dir + "/" + seg_name(segs.segno(i)), "rb") as f:
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
        segs = s.segs
        n = 0
        for i in range(segs.find(s.rseg), len(segs)):
            if segs.segno(i) > s.rseg:
                n += segs.size(i) - SEG_HEAD_LEN
            else:
                n += segs.size(i) - s.roff
        return n

    def unsent(self, cat):
        s = self.streams[cat]
        segs = s.segs
        i = segs.find(s.rseg)
        return i < len(segs) and (i < len(segs) - 1 or s.roff < segs.size(i))

    def oldest_seq(self, cat):
        """The seq of the first reading still held for the category, -1 when none."""
        segs = self.streams[cat].segs
        for i in range(len(segs)):
            if segs.first(i) >= 0:
                return segs.first(i)
        return -1

    def purge(self, cat):
        """Delete every unsent reading of a category (consent revoked): buffered, committed
        and not yet published. Returns the count."""
        s = self.streams[cat]
        n = s.n
        s.n = 0
        wipe(s.buf)
        self._close_active(s)
        for i in range(len(s.segs)):
            n += self._after(s.segs, i, s.rseg, s.roff)  # in-flight ones were sent already
        while len(s.segs):
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
