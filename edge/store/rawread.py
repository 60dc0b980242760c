# Reading the raw log (docs/FORMAT.md 8): recovery at boot, the forwarder's reads and acks,
# counts for health and drops, and the purge that zeroes a category's blocks. Functions over
# a RawStore (edge/store/rawlog.py) and one of its streams.

import struct

from edge.store import rawfmt
from edge.store.base import wipe
from edge.store.rawfmt import BLOCK, CHUNK_HEAD, ENTRY_LEN, HEAD_LEN
from edge.store.ring import FREED_DATA, META, NONE


# --- boot --------------------------------------------------------------------------------
def meta_blocks(ring):
    """Live meta blocks, newest first."""
    out = [b for b in range(ring.n) if ring.owner[b] == META]
    out.sort(key=lambda b: -ring.order[b])
    return out


def load_meta(ring, metas):
    """(boot, seq_hi, {tag: acked}) of the last valid record of the newest meta block that
    holds one; (0, 1, {}) when none does (readings are re-sent, seqs restart after the
    highest found in the data). Every other meta block is freed now, so the boot's record
    finds a free block without evicting data; the one read from stays in `metas`."""
    res = None
    for b in metas[:]:
        if res is not None:
            ring.free(b)
            metas.remove(b)
            continue
        off = HEAD_LEN
        found = -1
        while off < BLOCK:
            r, _p = ring.record_in_block(b, off, rawfmt.check_meta)
            if r == 0:
                break
            if r < 0:
                off += 1  # a torn record: only the last one written can be
                continue
            found = off
            off += r
        if found >= 0:
            _r, p = ring.record_at(b, found, BLOCK, rawfmt.check_meta)
            res = rawfmt.meta_fields(ring.rmv, p)
        else:
            ring.free(b)  # newer than the record, but nothing whole in it: a cut rotation
            metas.remove(b)
    return res or (0, 1, {})


def load_streams(st, acked):
    """Link each category's live blocks in allocation order, read each block once (where its
    records end, the highest seq), free the blocks with nothing unacknowledged. Returns the
    highest seq found."""
    ring = st.ring
    tails = [NONE] * len(st.streams)
    for b in ring.in_order():
        i = ring.owner[b]
        if i < len(st.streams):
            tails[i] = _link_sorted(ring, st.streams[i], tails[i], b)
    top = 0
    for s in st.streams:
        s.acked = s.rthr = acked.get(rawfmt.cat_tag(s.name), 0)
        prev = NONE
        b = s.first
        while b != NONE:
            nb = ring.next[b]
            last = walk(st, b)
            top = max(top, last)
            if last <= s.acked:
                # nothing readable, or all acknowledged: free it (earlier ones hold lower seqs)
                ring.free(b)
                if prev == NONE:
                    s.first = nb
                else:
                    ring.next[prev] = nb
            else:
                s.bytes += BLOCK
                prev = b
            b = nb
        s.rblk = s.first
        s.apos = (s.first << 13) | HEAD_LEN
    return top


def last(ring, s):
    """The stream's newest block (NONE when it has none)."""
    b = s.first
    while b != NONE and ring.next[b] != NONE:
        b = ring.next[b]
    return b


def _link_sorted(ring, s, tail, b):
    """Link b into the stream's list by sequence number; returns the new tail."""
    ring.next[b] = NONE
    if tail == NONE:
        s.first = b
        return b
    if ring.order[b] > ring.order[tail]:
        ring.next[tail] = b
        return b
    # a block the allocator skipped over while it was live: older than its neighbours
    prev = NONE
    c = s.first
    while c != NONE and ring.order[c] < ring.order[b]:
        prev = c
        c = ring.next[c]
    ring.next[b] = c
    if prev == NONE:
        s.first = b
    else:
        ring.next[prev] = b
    return tail


def walk(st, b):
    """Read a block's chunks: sets ring.used (where the erased tail starts); counts corrupt
    runs and a torn tail. Returns the block's highest seq, -1 when it has no valid chunk."""
    ring = st.ring
    mv = ring.rmv
    off = HEAD_LEN
    last = -1
    bad = False
    while off < BLOCK:
        r, p = ring.record_in_block(b, off, rawfmt.check_chunk)
        if r == 0:
            break
        if r < 0:
            bad = True
            off += 1
            continue
        if bad:
            st.stats["corrupt_records"] += 1
            bad = False
        k = mv[p + 1]
        seq = struct.unpack_from("<Q", mv, p + 5)[0]
        q = p + CHUNK_HEAD + ENTRY_LEN + 1  # entry 1's seq delta
        for _ in range(k - 1):
            seq += struct.unpack_from("<H", mv, q)[0]
            q += ENTRY_LEN
        last = seq
        off += r
    if bad:
        st.stats["torn_tails"] += 1  # damage up to the erased tail: a cut program
    ring.used[b] = off
    return last


# --- the forwarder's reads ------------------------------------------------------------------
def _chunks(st, b, off, end):
    """(offset, index in ring.rbuf) of the next valid chunk at or after off in block b, or
    (end, -1). Damaged bytes are skipped one at a time (they were counted at boot)."""
    ring = st.ring
    while off < end:
        r, p = ring.record_at(b, off, end, rawfmt.check_chunk)
        if r > 0:
            return off, p
        off += 1
    return end, -1


def fill(st, s, writer):
    """Add committed readings after the reader position to a codec.BatchWriter until it is
    full. Returns (count, block, offset): the position to acknowledge (block: ring.pos())."""
    ring = st.ring
    mv = ring.rmv
    added = 0
    b = s.rblk
    while b != NONE:
        end = ring.used[b]
        full = False
        while True:
            off, p = _chunks(st, b, s.roff, end)
            s.roff = off
            if p < 0:
                break
            k = mv[p + 1]
            flags = mv[p + 2]
            boot, seq, ts = struct.unpack_from("<HQq", mv, p + 3)
            q = p + CHUNK_HEAD
            for _ in range(k):
                ch, ds, dt, val = struct.unpack_from(rawfmt.ENTRY_FMT, mv, q)
                seq += ds
                ts += dt
                q += ENTRY_LEN
                if seq > s.rthr:
                    if not writer.add(seq, ts, boot, flags, ch, val):
                        full = True
                        break
                    s.rthr = seq
                    added += 1
            if full:
                break  # this chunk again next time; rthr skips what was handed out
            s.roff = off + rawfmt.chunk_len(k)
        if full or ring.next[b] == NONE:
            break
        b = ring.next[b]
        s.rblk = b
        s.roff = HEAD_LEN
    return added, (ring.pos(s.rblk) if s.rblk != NONE else 0), s.roff


def ack(st, s, seq, pos, off):
    """The broker acknowledged the stream up to seq; (pos, off) is the reader position fill()
    returned after it. Blocks before that position are freed."""
    if seq <= s.acked:
        return
    st.stats["acked"] += 1
    s.acked = seq
    ring = st.ring
    b = s.first
    while b != NONE and ring.pos(b) != pos and b != s.rblk:
        b = ring.next[b]
    if b == NONE or ring.pos(b) != pos:
        return  # Case 1: its block is gone (evicted, purged): nothing before it is left
    while s.first != b:  # Case 2: free everything before the acknowledged position
        st.unlink_first(s)
    s.apos = (b << 13) | off


def count_after(st, b, off, thr):
    """Readings with seq > thr in block b from the chunk at off on (reads flash)."""
    ring = st.ring
    mv = ring.rmv
    n = 0
    end = ring.used[b]
    while True:
        off, p = _chunks(st, b, off, end)
        if p < 0:
            return n
        k = mv[p + 1]
        seq = struct.unpack_from("<Q", mv, p + 5)[0]
        q = p + CHUNK_HEAD + 1
        for _ in range(k):
            seq += struct.unpack_from("<H", mv, q)[0]
            q += ENTRY_LEN
            if seq > thr:
                n += 1
        off += rawfmt.chunk_len(k)


def estimate(ring, b, off):
    """An upper bound on a stream's readings from position (b, off) on, without reading
    flash: its bytes of records from there, every ENTRY_LEN of them counted as a reading."""
    n = 0
    while b != NONE:
        n += max(ring.used[b] - off, 0)
        b = ring.next[b]
        off = HEAD_LEN
    return n // ENTRY_LEN


def first_unacked(st, s):
    """(ts, boot, flags) of the first reading after the acknowledged position, from flash or
    from the commit buffer; None when there is none."""
    ring = st.ring
    mv = ring.rmv
    b = s.apos >> 13
    off = s.apos & 0x1FFF
    while b != NONE:
        off, p = _chunks(st, b, off, ring.used[b])
        if p >= 0:
            k = mv[p + 1]
            flags = mv[p + 2]
            boot, seq, ts = struct.unpack_from("<HQq", mv, p + 3)
            q = p + CHUNK_HEAD + 1
            for _ in range(k):
                ds, dt = struct.unpack_from("<HI", mv, q)
                seq += ds
                ts += dt
                q += ENTRY_LEN
                if seq > s.acked:
                    return ts, boot, flags
            off += rawfmt.chunk_len(k)
            continue
        b = ring.next[b]
        off = HEAD_LEN
    if s.n:  # buffered, not yet committed: the first chunk of the commit buffer
        flags = s.buf[2]
        boot, _seq, ts = struct.unpack_from("<HQq", s.buf, 3)
        return ts, boot, flags
    return None


def oldest_seq(st, s):
    """The seq of the first readable reading still held for the stream, -1 when none."""
    ring = st.ring
    b = s.first
    while b != NONE:
        _off, p = _chunks(st, b, HEAD_LEN, ring.used[b])
        if p >= 0:
            return struct.unpack_from("<Q", ring.rmv, p + 5)[0]
        b = ring.next[b]
    return -1


def purge(st, s):
    """Delete every unsent reading of the stream (consent revoked) and make every byte of
    its records on flash unreadable: its live blocks and its freed blocks not yet erased are
    zeroed (ring.zero). Returns how many unsent readings were purged."""
    ring = st.ring
    n = s.n
    s.n = 0
    wipe(s.buf)
    s.wpos = 0
    s.cpos = -1
    b = s.rblk
    off = s.roff
    while b != NONE:  # from the reader on: in-flight ones were sent already
        n += count_after(st, b, off, s.rthr)
        b = ring.next[b]
        off = HEAD_LEN
    b = s.first
    while b != NONE:
        nb = ring.next[b]
        ring.zero(b)
        st.stats["deleted_segments"] += 1
        b = nb
    idx = st.streams.index(s)
    for b in range(ring.n):
        if ring.owner[b] == FREED_DATA | idx:
            ring.zero(b)
    s.first = s.wblk = s.rblk = NONE
    s.bytes = 0
    s.roff = HEAD_LEN
    s.apos = (NONE << 13) | HEAD_LEN
    s.rthr = s.acked
    if n:
        st._drop("purged", s, n)
    return n
