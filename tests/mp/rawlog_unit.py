# MicroPython side of tests/test_rawlog.py: one case per run, one JSON line out.
#   rawlog_unit.py nor                 the emulated partition's NOR rules and wear counters
#   rawlog_unit.py wear LAPS           wear levelling over a small ring
#   rawlog_unit.py restarts IMAGE N    N boots over a file-backed partition
#   rawlog_unit.py esp32               the ESP32 HAL's log partition over a fake esp32 module
#   rawlog_unit.py backend             store.backend auto / rawlog / segments in open_store
#   rawlog_unit.py purge IMAGE [nozero] a revocation's purge; the image is left for the host
#   rawlog_unit.py nomem               a purge keeps the commit buffer; an append with no block
#                                      free for a first buffer is a counted drop, not an error
import json
import sys

import rawlog_work as work

from edge import codec, config
from edge.hal.unix.flashdev import FlashDev
from edge.store.rawlog import RawStore


def case_nor():
    dev = FlashDev(4, nor=True, wear=True, page_limit=3)
    out = {}
    out["erased_program"] = dev.writeblocks(0, b"\xf0\x0f", 10)
    out["raise_a_bit"] = dev.writeblocks(0, b"\xff\x1f", 10)  # 0x0f -> 0x1f: 0 back to 1
    out["program_again"] = dev.writeblocks(0, b"\xe0", 10)  # clears more bits of a written byte
    out["zero_written"] = dev.writeblocks(0, b"\x00\x00", 10)  # zeroing is allowed
    out["leave_alone"] = dev.writeblocks(0, b"\xff\x00", 10)  # 0xFF programs nothing
    out["page_limit"] = dev.writeblocks(0, b"\x00", 11)  # a 4th program of page 0
    out["other_page"] = dev.writeblocks(0, b"\x00", 300)
    out["past_end"] = dev.writeblocks(3, b"\x00\x00", 4095)
    out["erase"] = dev.ioctl(6, 0)
    out["after_erase"] = dev.writeblocks(0, b"\x12", 10)
    out["bad_erase"] = dev.ioctl(6, 4)
    out["bytes"] = list(dev.mem[10:12])
    out["violations"] = dev.violations
    out["erase_counts"] = list(dev.erase_counts)
    out["prog_counts"] = list(dev.prog_counts)
    out["max_page_progs"] = dev.max_page_progs
    return out


def case_wear(laps):
    """A 32-block ring: `essential` acked as it goes, `location` holding one slow block for the
    whole run (a static block the allocator must step over)."""
    cfg = config.load(None, {"store": {"flush_n": 10, "flush_ms": 1000000}})
    cats = config.category_ids(cfg)
    dev = FlashDev(32, nor=True, wear=True)
    st = RawStore(dev, cfg, cats, work.Hal())
    loc = cats.index("location")
    w = codec.BatchWriter("w", 64 + 100 * codec.ENTRY_LEN)
    seq = 0
    while dev.erases < laps * 32:
        for _ in range(10):
            seq = st.append(0, 1, work.ts_of(seq), 0, seq)
        st.commit()
        if seq % 2000 < 10:
            st.append(loc, 9, work.ts_of(seq), 0, 0)
            st.commit()
        w.start("essential", st.boot, 0)
        n, pos, off = st.fill(0, w)
        if n:
            st.ack(0, w.last_seq, pos, off)
        if seq % 5000 < 10:
            st.save_cursor(True)
    counts = list(dev.erase_counts)
    return {
        "erases": dev.erases,
        "counts": counts,
        "commits": st.stats["commits"],
        "max_page_progs": dev.max_page_progs,
        "violations": dev.violations,
        "location_blocks": st.streams[loc].bytes // 4096,
    }


def case_restarts(image, n):
    boots = []
    for _ in range(n):
        dev = FlashDev(16, image=image, nor=True)
        st = RawStore(dev, work.CFG, work.CATS, work.Hal())
        seen = [r[0] for r in work.read_back(st, "essential")[0]]
        first = st.next_seq
        for i in range(120):
            st.append(0, 1, work.ts_of(first + i), 0, i)
        st.close()
        dev.close()
        boots.append({"boot": st.boot, "first": first, "last": first + 119, "recovered": seen})
    return boots


class _Part:
    """esp32.Partition at the hardware edge: extended block protocol that raises OSError (the
    port's check_esp_err) instead of returning an error code; info() as the port's."""

    def __init__(self, blocks, encrypted=False):
        self.dev = FlashDev(blocks, nor=True)
        self.encrypted = encrypted

    def readblocks(self, b, buf, off=0):
        if self.dev.readblocks(b, buf, off):
            raise OSError(5)

    def writeblocks(self, b, buf, off):
        if self.dev.writeblocks(b, buf, off):
            raise OSError(5)

    def ioctl(self, op, arg):
        r = self.dev.ioctl(op, arg)
        if op == 6 and r:
            raise OSError(5)
        return r

    def info(self):
        return (1, 0x40, 0x300000, self.dev.size, "log", self.encrypted)


class _Esp32:
    TYPE_DATA = 1
    parts = {}

    class Partition:
        TYPE_DATA = 1

        @staticmethod
        def find(kind, subtype=0xFF, label=None):
            p = _Esp32.parts.get(label)
            return [p] if p is not None and kind == 1 else []


def _esp32_hal():
    class _Machine:
        PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5

        @staticmethod
        def reset_cause():
            return 1

        class RTC:
            def memory(self, data=None):
                return b""

    sys.modules["machine"] = _Machine
    sys.modules["esp32"] = _Esp32
    from edge.hal import esp32

    return esp32.Hal()


def case_esp32():
    hal = _esp32_hal()
    out = {"missing": hal.log_device("store", {"label": "log"}) is None}
    _Esp32.parts["log"] = _Part(64)
    dev = hal.log_device("store", {})  # the label defaults to "log"
    st = RawStore(dev, work.CFG, work.CATS, work.Hal())
    for i in range(500):
        st.append(0, 1, work.ts_of(i + 1), 0, i)
    st.close()
    st = RawStore(dev, work.CFG, work.CATS, work.Hal())
    out["recovered"] = len(work.read_back(st, "essential")[0])
    out["violations"] = dev.dev.violations
    _Esp32.parts["enc"] = _Part(64, True)
    try:
        hal.log_device("store", {"label": "enc"})
        out["encrypted"] = "accepted"
    except OSError as e:
        out["encrypted"] = str(e)
    return out


class _UnixHal(work.Hal):
    def __init__(self, dev):
        self.dev = dev

    def log_device(self, path, spec):
        return self.dev


def case_backend(root):
    from edge.store.backend import BackendError, open_store

    out = {}
    for kind, dev in (
        ("auto", FlashDev(16, nor=True)),
        ("auto", None),
        ("rawlog", FlashDev(16, nor=True)),
        ("segments", FlashDev(16, nor=True)),
        ("rawlog", None),
    ):
        cfg = config.load(None, {"store": {"backend": kind, "path": root}})
        try:
            st = open_store(cfg, _UnixHal(dev), root, config.category_ids(cfg))
            got = st.backend
        except BackendError as e:
            got = "error: " + str(e)
        out["%s/%s" % (kind, "partition" if dev else "none")] = got
    return out


def case_purge(image, variant):
    """`usage` readings, some sent and acknowledged (their blocks freed, not yet erased), the
    rest unsent; then a purge; then new `usage` readings. `nozero`: a purge that frees blocks
    without zeroing them (what the host's check must catch)."""
    from edge.store.ring import FREE, FREED_DATA, Ring

    if variant == "nozero":

        def free_only(ring, b):
            if ring.owner[b] < FREED_DATA:
                ring.free(b)
            ring.owner[b] = FREE

        Ring.zero = free_only
    dev = FlashDev(32, nor=True)
    st = RawStore(dev, work.CFG, work.CATS, work.Hal())
    usage = work.CATS.index("usage")
    ch = work.channel_of("usage")
    before = []
    for _ in range(1500):
        seq = st.next_seq
        st.append(usage, ch, work.ts_of(seq), 0, work.value_of(seq))
        before.append(seq)
    st.commit()
    w = codec.BatchWriter("p", 64 + 90 * codec.ENTRY_LEN)
    for _ in range(8):  # about half of them sent and acknowledged
        w.start("usage", st.boot, 0)
        n, pos, off = st.fill(usage, w)
        st.ack(usage, w.last_seq, pos, off)
    purged = st.purge(usage)
    after = []
    for _ in range(50):
        seq = st.next_seq
        st.append(usage, ch, work.ts_of(seq), 0, work.value_of(seq))
        after.append(seq)
    st.close()
    with open(image, "wb") as f:
        f.write(dev.mem)
    return {"before": before, "after": after, "purged": purged, "violations": dev.violations}


def case_nomem():
    import gc

    dev = FlashDev(32, nor=True)
    st = RawStore(dev, work.CFG, work.CATS, work.Hal())
    usage = work.CATS.index("usage")
    diag = work.CATS.index("diagnostics")
    ch = work.channel_of("usage")
    for _ in range(5):
        st.append(usage, ch, work.ts_of(st.next_seq), 0, 7)
    buf = st.streams[usage].buf
    st.purge(usage)
    out = {"kept": st.streams[usage].buf is buf, "zeroed": not any(buf)}
    # the heap full but for small holes: no block for a first commit buffer
    hog = []
    for size in (1024, 256, 64):
        try:
            while True:
                hog.append(bytearray(size))
        except MemoryError:
            pass
    del hog[-6:]  # room for small allocations only
    gc.collect()
    try:
        out["first_buffer"] = st.append(diag, work.channel_of("diagnostics"), 1, 0, 1)
        out["after_purge"] = st.append(usage, ch, work.ts_of(st.next_seq), 0, 8)
    except MemoryError as e:
        out["error"] = str(e)
    del hog
    gc.collect()
    out["dropped"] = st.stats["dropped"]
    return out


CASES = {
    "nomem": lambda: case_nomem(),
    "purge": lambda: case_purge(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""),
    "nor": lambda: case_nor(),
    "wear": lambda: case_wear(int(sys.argv[2])),
    "restarts": lambda: case_restarts(sys.argv[2], int(sys.argv[3])),
    "esp32": lambda: case_esp32(),
    "backend": lambda: case_backend(sys.argv[2]),
}
print(json.dumps(CASES[sys.argv[1]]()))
