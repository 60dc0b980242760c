# What both store backends share (edge/store/store.py on littlefs, edge/store/rawlog.py on a
# raw partition): the counters, group commit by time, drop accounting, lazy cursor saves and
# eviction by category size. A backend provides _commit_stream, _save_state (which clears
# `moved`, set by ack()), _delete_oldest, _units (its segments or blocks of a category) and
# _evictable.

from micropython import const

_CURSOR_MS = const(10000)  # cursor writes at most this often (save_cursor)
_LOW = const(0xFFFFFFFF)


def new_stats():
    """The store counters (docs/HEALTH.md): every drop by reason and category."""
    return {
        "appended": 0,
        "committed": 0,
        "commits": 0,
        "acked": 0,
        "deleted_segments": 0,
        "corrupt_records": 0,
        "torn_tails": 0,
        "bad_segments": 0,
        "dropped": {},
    }


def wipe(buf):
    """Zero a purged category's commit buffer in place (docs/CONSENT.md 5: nothing of it stays
    readable). The buffer is kept: a grant after a revocation then needs no new block, which a
    fragmented heap may not have in the sampler (an append cannot wait or fail)."""
    if buf is not None:
        for i in range(len(buf)):
            buf[i] = 0


def _tick(st, now):
    """Group commit by time (default every 1 s)."""
    if st.hal.ticks_diff(now, st.last_commit) >= st.flush_ms:
        st.commit()


def _commit(st):
    """Make every buffered reading durable."""
    for s in st.streams:
        if s.n:
            st._commit_stream(s)
    st.last_commit = st.hal.ticks_ms()


def _pending(st):
    n = 0
    for s in st.streams:
        n += s.n
    return n


def _buffered(st, cat):
    """Readings of the category appended but not yet committed (the forwarder's latency
    budget counts them as waiting, docs/MQTT.md 9)."""
    return st.streams[cat].n


def _used_bytes(st):
    n = 0
    for s in st.streams:
        n += s.bytes
    return n


def has_buffer(st, s, size):
    """Give the stream its commit buffer (allocated by its first append: a category without
    consent never pays for one). True when it has one; with no block free the reading is
    dropped and counted (`no_memory`) instead of stopping the sampler."""
    if s.buf is None:
        try:
            s.buf = bytearray(size)
        except MemoryError:
            st._drop("no_memory", s, 1)
            return False
    return True


def _drop(st, reason, s, n):
    d = st.stats["dropped"]
    key = reason + ":" + s.name
    d[key] = d.get(key, 0) + n


def _whole(st, low):
    """The whole seq whose low 32 bits are `low`, among the last 2^32 handed out (the
    forwarder keeps only the low bits of the batches in flight, docs/FORMAT.md 1)."""
    n = st.next_seq
    seq = n - (n & _LOW) + low
    return seq if seq < n else seq - _LOW - 1


def _save_cursor(st, force=False):
    """Persist the ack cursors, lazily: an unsaved ack only means duplicates later, and
    every state write costs flash programs and, in time, erases. Writes only when a
    cursor moved, and then at most every 10 s unless `force`."""
    now = st.hal.ticks_ms()
    if not force and (not st.moved or st.hal.ticks_diff(now, st.last_save) < _CURSOR_MS):
        return
    st._save_state()


def _enforce_quota(st, s):
    while s.quota and s.bytes > s.quota and st._units(s) > 1:
        st._delete_oldest(s, "quota")
    while st.total_bytes and st.used_bytes() > st.total_bytes:
        if not st._evict_any(None, "full"):
            break


def _evict_any(st, keep, reason):
    """Delete the oldest segment or block of the biggest category (never one taking
    appends, nor the last one of `keep`). False when there is nothing to delete."""
    big = None
    for t in st.streams:
        if st._evictable(t, keep) > 0 and (big is None or t.bytes > big.bytes):
            big = t
    if big is None:
        return False
    st._delete_oldest(big, reason)
    return True


class StoreBase:
    """The methods both backends share, written as functions of an untyped `st`: the
    attributes they use are the backend's, set in its __init__."""

    tick = _tick
    commit = _commit
    pending = _pending
    buffered = _buffered
    used_bytes = _used_bytes
    _drop = _drop
    whole = _whole
    save_cursor = _save_cursor
    _enforce_quota = _enforce_quota
    _evict_any = _evict_any
