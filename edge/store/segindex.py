# The in-RAM index of one category's segment files, oldest first (docs/FORMAT.md 2). The store
# keeps one entry per segment file from the ack cursor to the newest, so while the broker is
# unreachable the index grows with the backlog, up to the category's quota. An entry is four
# 64-bit slots of one array (a 5-slot list per segment cost about 100 bytes of heap on unix
# 64-bit), allocated by the first segment, and reading a field allocates nothing.

from array import array

from micropython import const

_START = const(8)  # entries before the first growth
_W = const(4)  # slots per entry
_NO = const(0)  # file number (NNNNNNNN.seg), never reused
_SIZE = const(1)  # bytes in the file, header included; | _UNREADABLE
_FIRST = const(2)  # first seq in the file, -1 until the first commit
_LAST = const(3)  # highest seq seen, -1 until the reader or the writer reached the end
_UNREADABLE = const(0x20000000)  # the header did not check (docs/FORMAT.md 2.2): never read
# (bit 29: a small int on a 32-bit port too; a segment is at most 1 MiB, store.segment_bytes)
_NONE = array("q")  # shared by every index without a segment yet (an unused category)


class SegIndex:
    """Entries i = 0 (oldest) .. len()-1 (newest). Deleting the oldest moves a start offset;
    the array is compacted, or doubled when more than half of it is in use, only when an
    append finds no room at its end."""

    def __init__(self):
        self.h = 0  # slot of entry 0, over _W
        self.n = 0
        self.a = _NONE  # array("q"), allocated by the first append

    def __len__(self):
        return self.n

    def append(self, segno, first, last, size, readable):
        a = self.a
        end = self.h + self.n
        if end * _W == len(a):
            src = a
            if not len(src) or self.n * 2 > end:
                a = self.a = array("q", bytes(16 * len(src) or 8 * _W * _START))
            h = self.h * _W
            for i in range(self.n * _W):
                a[i] = src[h + i]
            self.h = 0
            end = self.n
        p = end * _W
        a[p + _NO] = segno
        a[p + _SIZE] = size if readable else size | _UNREADABLE
        a[p + _FIRST] = first
        a[p + _LAST] = last
        self.n += 1

    def pop_oldest(self):
        """Forget entry 0 (its file was deleted)."""
        self.n -= 1
        self.h = self.h + 1 if self.n else 0

    def find(self, segno):
        """The index of the first entry whose file number is >= segno, or len()."""
        a = self.a
        p = self.h * _W
        for i in range(self.n):
            if a[p] >= segno:
                return i
            p += _W
        return self.n

    def segno(self, i):
        return self.a[(self.h + i) * _W]

    def size(self, i):
        return self.a[(self.h + i) * _W + _SIZE] & (_UNREADABLE - 1)

    def readable(self, i):
        return not self.a[(self.h + i) * _W + _SIZE] & _UNREADABLE

    def first(self, i):
        return self.a[(self.h + i) * _W + _FIRST]

    def last(self, i):
        return self.a[(self.h + i) * _W + _LAST]

    def set_first(self, i, seq):
        self.a[(self.h + i) * _W + _FIRST] = seq

    def set_last(self, i, seq):
        self.a[(self.h + i) * _W + _LAST] = seq

    def grow(self, i, nbytes):
        self.a[(self.h + i) * _W + _SIZE] += nbytes
