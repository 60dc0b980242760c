# Durable reading store: one append-only segment stream per consent category (DESIGN.md 3,
# docs/FORMAT.md 2). commit() is the durability point; the ack cursor deletes whole segments.

import json
import os
import struct

from micropython import const

from edge import codec

_SEG_MAGIC = b"ESEG"
_SEG_VERSION = const(1)
_SEG_HEAD_LEN = const(8)  # magic 4, version u8, category index u8, reserved u16
_SEQ_RESERVE = const(1024)  # seqs reserved per state write, so a seq is never reused
_READ_BUF = const(2048)
_STATE = "state.json"
_STATE_TMP = "state.tmp"


class StoreError(Exception):
    pass


def _seg_name(n):
    return "%08x.seg" % n


class _Stream:
    """The segments of one category, oldest first. A segment is [segno, first_seq, last_seq,
    size]; last_seq is -1 until the reader or the writer has seen the segment's end."""

    def __init__(self, idx, name, policy, root, flush_n):
        self.idx = idx
        self.name = name
        self.quota = policy.get("quota", 0)
        self.reject_new = policy.get("evict", "drop_oldest") == "reject_new"
        self.dir = root + "/" + name
        self.segs = []
        self.active = None  # open file of segs[-1] while it takes appends
        self.buf = bytearray(flush_n * codec.REC_LEN)
        self.n = 0  # records pending in buf (not yet durable)
        self.acked = 0  # highest acknowledged seq
        self.rseg = 0  # reader: segno and offset of the next record to send
        self.roff = _SEG_HEAD_LEN
        self.aseg = 0  # reader position just after the last acknowledged record
        self.aoff = _SEG_HEAD_LEN
        self.bytes = 0
        self.next_segno = 1  # segment numbers never repeat within a boot

    def seg_index(self, segno):
        for i, s in enumerate(self.segs):
            if s[0] >= segno:
                return i
        return len(self.segs)


class Store:
    def __init__(self, root, cfg, categories, hal):
        sc = cfg["store"]
        self.root = root
        self.hal = hal
        self.flush_n = sc["flush_n"]
        self.flush_ms = sc["flush_ms"]
        self.segment_bytes = max(sc["segment_bytes"], _SEG_HEAD_LEN + codec.REC_LEN)
        self.total_bytes = sc["total_bytes"]
        self.rbuf = bytearray(_READ_BUF)
        self.rmv = memoryview(self.rbuf)
        self.head = bytearray(_SEG_HEAD_LEN)
        # counters: every drop by reason and category (DESIGN.md 3, health status)
        self.stats = {"appended": 0, "committed": 0, "commits": 0, "acked": 0, "deleted_segments": 0,
                      "corrupt_records": 0, "torn_tails": 0, "dropped": {}}
        self.last_commit = hal.ticks_ms()
        self.streams = []
        _mkdir(root)
        st = self._load_state()
        self.boot = (st.get("boot", 0) + 1) & 0xFFFF
        max_seq = 0
        for i, name in enumerate(categories):
            s = _Stream(i, name, cfg["categories"][name], root, self.flush_n)
            s.acked = st.get("acked", {}).get(name, 0)
            max_seq = max(max_seq, self._scan(s))
            self.streams.append(s)
        self.next_seq = max(st.get("seq_hi", 1), max_seq + 1, 1)
        self.seq_hi = self.next_seq
        self._save_state()

    # --- state file: temp + rename is atomic on littlefs and POSIX (FORMAT.md 2.4) -------
    def _load_state(self):
        try:
            with open(self.root + "/" + _STATE, "rb") as f:
                st = json.loads(f.read())
            if isinstance(st, dict):
                return st
        except (OSError, ValueError):
            pass
        return {}

    def _save_state(self):
        if self.next_seq >= self.seq_hi:
            self.seq_hi = self.next_seq + _SEQ_RESERVE
        acked = {}
        for s in self.streams:
            acked[s.name] = s.acked
        tmp = self.root + "/" + _STATE_TMP
        with open(tmp, "wb") as f:
            f.write(json.dumps({"v": 1, "boot": self.boot, "seq_hi": self.seq_hi, "acked": acked}))
        os.rename(tmp, self.root + "/" + _STATE)

    # --- boot scan -----------------------------------------------------------------------
    def _scan(self, s):
        """List the category's segments; returns the highest seq found."""
        _mkdir(s.dir)
        nums = []
        for fn in os.listdir(s.dir):
            if fn.endswith(".seg") and len(fn) == 12:
                try:
                    nums.append(int(fn[:8], 16))
                except ValueError:
                    pass
        nums.sort()
        top = 0
        for segno in nums:
            first, last, size = self._scan_segment(s, segno)
            s.segs.append([segno, first, last, size])
            s.bytes += size
            if last > top:
                top = last
            elif first > top:
                top = first
        # Appends after boot always go to a new segment: a torn tail is never extended.
        s.next_segno = nums[-1] + 1 if nums else 1
        s.rseg = s.aseg = nums[0] if nums else 1
        return top

    def _scan_segment(self, s, segno):
        """(first_seq, last_seq, size) of a segment. Reads the whole file: records self-check."""
        first = last = -1
        size = 0
        try:
            with open(s.dir + "/" + _seg_name(segno), "rb") as f:
                off = 0
                carry = 0
                while True:
                    n = f.readinto(self.rmv[carry:])
                    if not n:
                        break
                    n += carry
                    p = _SEG_HEAD_LEN if off == 0 else 0
                    while p < n:
                        r = codec.check_record(self.rmv[:n], p)
                        if r == 1:
                            seq = codec.unpack_record(self.rmv, p)[0]
                            if first < 0:
                                first = seq
                            last = seq
                            p += codec.REC_LEN
                        elif r == 0:
                            p += 1
                        else:
                            break
                    carry = n - p
                    self.rbuf[:carry] = self.rbuf[p:n]
                    off += p
                size = off + carry
        except OSError:
            pass
        return first, last, size

    # --- ingest --------------------------------------------------------------------------
    def append(self, cat, channel, ts, flags, value):
        """Buffer one reading; returns its seq, or -1 when the category's policy rejects it."""
        s = self.streams[cat]
        if s.reject_new and s.quota and s.bytes + (s.n + 1) * codec.REC_LEN > s.quota:
            self._drop("quota", s, 1)
            return -1
        seq = self.next_seq
        self.next_seq = seq + 1
        if self.next_seq >= self.seq_hi:
            self._save_state()  # reserve the next block of seqs before using it
        codec.pack_record(s.buf, s.n * codec.REC_LEN, seq, ts, self.boot, channel, cat, flags, value)
        s.n += 1
        self.stats["appended"] += 1
        if s.n == self.flush_n:
            self._commit_stream(s)
        return seq

    def tick(self, now):
        """Group commit by time (default every 1 s, DESIGN.md 3)."""
        if self.hal.ticks_diff(now, self.last_commit) >= self.flush_ms:
            self.commit()

    def commit(self):
        """Make every buffered reading durable."""
        for s in self.streams:
            if s.n:
                self._commit_stream(s)
        self.last_commit = self.hal.ticks_ms()

    def pending(self):
        n = 0
        for s in self.streams:
            n += s.n
        return n

    def _commit_stream(self, s):
        nbytes = s.n * codec.REC_LEN
        if s.active is None or s.segs[-1][3] + nbytes > self.segment_bytes:
            self._open_segment(s)
        seg = s.segs[-1]
        s.active.write(memoryview(s.buf)[:nbytes])
        s.active.flush()  # the durability point (TOOLCHAIN.md 3)
        last = struct.unpack_from("<I", s.buf, (s.n - 1) * codec.REC_LEN + codec.REC_HEAD_LEN)[0]
        if seg[1] < 0:
            seg[1] = struct.unpack_from("<I", s.buf, codec.REC_HEAD_LEN)[0]
        seg[2] = last
        seg[3] += nbytes
        s.bytes += nbytes
        self.stats["committed"] += s.n
        self.stats["commits"] += 1
        s.n = 0
        self._enforce_quota(s)

    def _open_segment(self, s):
        if s.active is not None:
            s.active.close()
        segno = s.next_segno
        s.next_segno += 1
        self.head[0:4] = _SEG_MAGIC
        self.head[4] = _SEG_VERSION
        self.head[5] = s.idx
        s.active = open(s.dir + "/" + _seg_name(segno), "wb")
        s.active.write(self.head)
        s.segs.append([segno, -1, -1, _SEG_HEAD_LEN])
        s.bytes += _SEG_HEAD_LEN
        if len(s.segs) == 1:
            s.rseg = s.aseg = segno
            s.roff = s.aoff = _SEG_HEAD_LEN

    def _enforce_quota(self, s):
        while s.quota and s.bytes > s.quota and len(s.segs) > 1:
            self._delete_oldest(s, "quota")
        while self.total_bytes and self.used_bytes() > self.total_bytes:
            big = None
            for t in self.streams:
                if len(t.segs) > 1 and (big is None or t.bytes > big.bytes):
                    big = t
            if big is None:
                break
            self._delete_oldest(big, "full")

    def used_bytes(self):
        n = 0
        for s in self.streams:
            n += s.bytes
        return n

    def _delete_oldest(self, s, reason):
        seg = s.segs[0]
        unacked = self._after(seg, s.aseg, s.aoff)
        if unacked:
            self._drop(reason, s, unacked)
        self._remove_segment(s)

    def _after(self, seg, segno, off):
        """Readings of a segment that lie after position (segno, off)."""
        if seg[0] < segno:
            return 0
        n = (seg[3] - _SEG_HEAD_LEN) // codec.REC_LEN
        if seg[0] == segno:
            n -= (off - _SEG_HEAD_LEN) // codec.REC_LEN
        return max(n, 0)

    def _remove_segment(self, s):
        seg = s.segs.pop(0)
        try:
            os.remove(s.dir + "/" + _seg_name(seg[0]))
        except OSError:
            pass
        s.bytes -= seg[3]
        self.stats["deleted_segments"] += 1
        nxt = s.segs[0][0] if s.segs else s.next_segno
        if s.rseg <= seg[0]:
            s.rseg, s.roff = nxt, _SEG_HEAD_LEN
        if s.aseg <= seg[0]:
            s.aseg, s.aoff = nxt, _SEG_HEAD_LEN

    def _drop(self, reason, s, n):
        d = self.stats["dropped"]
        key = reason + ":" + s.name
        d[key] = d.get(key, 0) + n

    # --- forwarding ----------------------------------------------------------------------
    def fill(self, cat, writer):
        """Add committed, unsent readings of a category to a codec.BatchWriter until it is
        full. Returns (count, seg, off): the reader position after the last one added."""
        s = self.streams[cat]
        added = 0
        while True:
            i = s.seg_index(s.rseg)
            if i >= len(s.segs):
                break
            seg = s.segs[i]
            if seg[0] != s.rseg:
                s.rseg, s.roff = seg[0], _SEG_HEAD_LEN
            try:
                with open(s.dir + "/" + _seg_name(seg[0]), "rb") as f:
                    f.seek(s.roff)
                    n = f.readinto(self.rbuf)
            except OSError:
                n = 0
            p = 0
            full = False
            while p < n:
                r = codec.check_record(self.rmv[:n], p)
                if r < 0:
                    break
                if r == 0:
                    self.stats["corrupt_records"] += 1
                    p += 1
                    continue
                seq, ts, boot, ch, _cat, flags, val = codec.unpack_record(self.rmv, p)
                if seq > s.acked:
                    if not writer.add(seq, ts, boot, flags, ch, val):
                        full = True
                        break
                    added += 1
                if seg[2] < seq:
                    seg[2] = seq
                p += codec.REC_LEN
            s.roff += p
            if full:
                break
            if p == 0 or (p < n and n < len(self.rbuf)):
                # nothing more here: the end of the active segment, or a torn tail
                if i == len(s.segs) - 1:
                    break
                if p < n:
                    self.stats["torn_tails"] += 1
                s.rseg, s.roff = s.segs[i + 1][0], _SEG_HEAD_LEN
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
        while len(s.segs) > 1 and s.segs[0][0] < seg and s.segs[0][2] <= seq:
            self._remove_segment(s)

    def rewind(self, cat):
        """Re-send from the first unacknowledged reading (after a reconnect)."""
        s = self.streams[cat]
        s.rseg, s.roff = s.aseg, s.aoff

    def save_cursor(self):
        """Persist the ack cursors (lazily: an unsaved ack only means duplicates later)."""
        self._save_state()

    def backlog(self, cat):
        """Committed bytes of a category not yet acknowledged (an upper bound)."""
        s = self.streams[cat]
        n = 0
        for seg in s.segs:
            if seg[0] >= s.aseg:
                n += seg[3] - _SEG_HEAD_LEN
        return n - (s.aoff - _SEG_HEAD_LEN)

    def unsent(self, cat):
        s = self.streams[cat]
        i = s.seg_index(s.rseg)
        return i < len(s.segs) and (i < len(s.segs) - 1 or s.roff < s.segs[i][3])

    def purge(self, cat):
        """Delete every unsent reading of a category (consent revoked): buffered, committed
        and not yet published. Returns the count."""
        s = self.streams[cat]
        n = s.n
        s.n = 0
        if s.active is not None:
            s.active.close()
            s.active = None
        for seg in s.segs:
            n += self._after(seg, s.rseg, s.roff)  # in-flight ones were sent already
        while s.segs:
            self._remove_segment(s)
        s.rseg = s.aseg = s.next_segno
        s.roff = s.aoff = _SEG_HEAD_LEN
        if n:
            self._drop("purged", s, n)
        return n

    def close(self):
        self.commit()
        for s in self.streams:
            if s.active is not None:
                s.active.close()
                s.active = None
        self._save_state()


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass
