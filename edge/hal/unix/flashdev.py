# Emulated NOR flash for the unix port: program = AND, erase = 0xFF, 4096-byte blocks, 2 MiB
# like the ESP32 4 MB image's filesystem; RAM- or image-file-backed. With `nor=True` it is a raw
# partition that enforces the rules the raw record log relies on (docs/FORMAT.md 8.1).
# Block callbacks never allocate (littlefs may call them with the heap locked): copies run in
# viper over preallocated buffers, failures return -EIO.

from array import array

import micropython
from micropython import const

BLOCK_SIZE = const(4096)
BLOCKS_2MIB = const(512)
_EIO = const(-5)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_ERASE = const(6)
# image-file transfers go through one small buffer: littlefs programs at most its 128-byte
# cache at a time, and the emulator's RAM is not the device's (a board's flash is not on the heap)
_CHUNK = const(256)
_PAGE = const(256)  # SPI NOR page: the unit of one page-program command
_PAGES = const(16)  # pages per 4096-byte block


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    i = 0
    while i < n:
        dst[doff + i] = src[soff + i]
        i += 1


@micropython.viper
def _program(dst: ptr8, doff: int, src: ptr8, soff: int, n: int) -> int:
    """NOR program: dst &= src. Returns how many bytes asked to raise a 0 bit to 1."""
    bad = 0
    i = 0
    while i < n:
        old = dst[doff + i]
        new = src[soff + i]
        if new & (old ^ 0xFF):
            bad += 1
        dst[doff + i] = old & new
        i += 1
    return bad


@micropython.viper
def _violations(dst: ptr8, doff: int, src: ptr8, soff: int, n: int) -> int:
    """Bytes of a program that break the raw-partition rules (docs/FORMAT.md 8.1): a byte
    written as 0xFF is left alone; any other value must clear bits only, and a byte already
    programmed since the last erase may only be programmed again to 0x00 (zeroing)."""
    bad = 0
    i = 0
    while i < n:
        old = dst[doff + i]
        new = src[soff + i]
        if new != 0xFF and ((new & (old ^ 0xFF)) or (old != 0xFF and new != 0)):
            bad += 1
        i += 1
    return bad


@micropython.viper
def _fill(dst: ptr8, doff: int, n: int, v: int):
    i = 0
    while i < n:
        dst[doff + i] = v
        i += 1


class FlashDev:
    """Block device for `vfs.VfsLfs2` (extended protocol: readblocks/writeblocks with an
    offset, ioctl 6 = erase). `image`: path of a file holding the flash (created erased when
    missing), else RAM. Counts reads, programs, programmed bytes and erases; `cut_after(k)`
    makes operation k+1 the power cut: it is torn (`torn` modulo its length bytes of it
    happen) and every later operation fails with EIO, like a dead supply.

    `wear=True` counts per block (`erase_counts`, `prog_counts`) and programs per page since
    its last erase (`max_page_progs`, the most any page took; `page_limit` > 0 refuses the
    program that would exceed it, as on chips with a partial-page program limit). Off by
    default: the tables take 16 bytes of RAM per block. `nor=True` (a raw partition, not a
    filesystem): a program that breaks the rules of `_violations` is refused whole with EIO and
    counted in `violations`."""

    def __init__(
        self, blocks=BLOCKS_2MIB, image=None, mem=None, nor=False, wear=False, page_limit=0
    ):
        self.blocks = blocks
        self.size = blocks * BLOCK_SIZE
        self.nor = nor
        self.page_limit = page_limit
        self.erase_counts = array("I")
        self.prog_counts = array("I")
        self.page_progs = bytearray(blocks * _PAGES if wear else 0)  # saturates at 255
        if wear:
            for _ in range(blocks):
                self.erase_counts.append(0)
                self.prog_counts.append(0)
        self.file = None
        self.mem = None
        self.scratch = bytearray(_CHUNK)
        if image is not None:
            try:
                self.file = open(image, "r+b")
            except OSError:
                self.file = open(image, "w+b")
            end = self.file.seek(0, 2)
            if end < self.size:  # extend with erased blocks
                self._erase_file(end, self.size - end)
        else:
            if mem is None:
                mem = bytearray(self.size)  # in place: no `bytes * n` temporary
                _fill(mem, 0, self.size, 0xFF)
            self.mem = mem  # a new device over an old bytearray = a reboot over the same chip
        self.reset_counters()
        self.cut_at = -1
        self.torn = 0
        self.dead = False

    def reset_counters(self):
        self.ops = 0
        self.reads = 0
        self.progs = 0
        self.prog_bytes = 0
        self.erases = 0
        self.overwrites = 0  # programs that tried to set a 0 bit back to 1 (a driver bug)
        self.violations = 0  # nor=True: programs refused for breaking the raw-partition rules
        self.max_page_progs = 0
        for i in range(len(self.erase_counts)):
            self.erase_counts[i] = 0
            self.prog_counts[i] = 0

    def cut_after(self, k, torn=0):
        """Cut power at operation k+1 (program or erase); `torn` % its length bytes happen."""
        self.cut_at = self.ops + k
        self.torn = torn

    def _cut(self):
        # True when this operation must not (fully) happen; no allocation here
        if self.dead:
            return True
        if self.ops == self.cut_at:
            self.dead = True
            return True
        self.ops += 1
        return False

    # --- block protocol ----------------------------------------------------------------
    def readblocks(self, block, buf, off=0):
        if self.dead:
            return _EIO
        pos = block * BLOCK_SIZE + off
        n = len(buf)
        if pos < 0 or pos + n > self.size:
            return _EIO
        self.reads += 1
        if self.mem is not None:
            _copy(buf, 0, self.mem, pos, n)
        else:  # file-backed (__init__ sets exactly one of mem/file); mypy cannot see that
            self.file.seek(pos)  # type: ignore[union-attr]
            self.file.readinto(buf, n)  # type: ignore[union-attr]
        return 0

    def writeblocks(self, block, buf, off=0):
        n = len(buf)
        pos = block * BLOCK_SIZE + off
        if self.dead or pos < 0 or pos + n > self.size:
            return _EIO
        if self.nor and not self._allowed(pos, buf, n):
            return _EIO  # refused whole, counted in `violations`
        if self._cut():
            if self.torn:
                self._prog(pos, buf, self.torn % n)
                self.torn = 0
            return _EIO
        self.progs += 1
        self.prog_bytes += n
        if self.page_progs:
            self._count_wear(pos, n)
        self._prog(pos, buf, n)
        return 0

    def _count_wear(self, pos, n):
        self.prog_counts[pos // BLOCK_SIZE] += 1
        page = pos // _PAGE
        while page * _PAGE < pos + n:  # every page this program touches
            k = self.page_progs[page]
            if k < 255:
                k += 1
                self.page_progs[page] = k
            if k > self.max_page_progs:
                self.max_page_progs = k
            page += 1

    def _allowed(self, pos, buf, n):
        """Raw-partition rules over the whole program before any byte of it happens."""
        bad = 0
        if self.mem is not None:
            bad = _violations(self.mem, pos, buf, 0, n)
        elif self.file is not None:
            sc = self.scratch
            done = 0
            while done < n:
                k = min(n - done, _CHUNK)
                self.file.seek(pos + done)
                self.file.readinto(sc, k)
                bad += _violations(sc, 0, buf, done, k)  # type: ignore[arg-type]
                done += k
        if not bad and self.page_limit and self.page_progs:
            page = pos // _PAGE
            while page * _PAGE < pos + n:
                if self.page_progs[page] >= self.page_limit:
                    bad = 1
                page += 1
        if bad:
            self.violations += 1
        return not bad

    def _prog(self, pos, buf, n):
        if self.mem is not None:
            self.overwrites += _program(self.mem, pos, buf, 0, n)
            return
        f = self.file  # file-backed: __init__ sets exactly one of mem/file
        if f is None:
            return
        sc = self.scratch
        done = 0
        while done < n:  # read-modify-write in chunks of the scratch buffer
            k = min(n - done, _CHUNK)
            f.seek(pos + done)
            f.readinto(sc, k)
            # viper takes any buffer for a ptr8 argument; the stubs type ptr8 as a class
            self.overwrites += _program(sc, 0, buf, done, k)  # type: ignore[arg-type]
            f.seek(pos + done)
            f.write(sc, 0, k)
            done += k

    def _erase(self, block, n):
        if n == BLOCK_SIZE and self.page_progs:  # a whole erase restarts the page counts
            for p in range(block * _PAGES, block * _PAGES + _PAGES):
                self.page_progs[p] = 0
        pos = block * BLOCK_SIZE
        if self.mem is not None:
            _fill(self.mem, pos, n, 0xFF)
        else:
            self._erase_file(pos, n)

    def _erase_file(self, pos, n):
        f = self.file
        if f is None:
            return
        sc = self.scratch
        _fill(sc, 0, _CHUNK, 0xFF)  # type: ignore[arg-type]
        f.seek(pos)
        while n > 0:
            k = min(n, _CHUNK)
            f.write(sc, 0, k)
            n -= k

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.blocks
        if op == _IOCTL_BLOCK_SIZE:
            return BLOCK_SIZE
        if op == _IOCTL_ERASE:
            if not 0 <= arg < self.blocks:
                return _EIO
            if self._cut():
                if self.torn:
                    self._erase(arg, self.torn % BLOCK_SIZE)  # a partial erase
                    self.torn = 0
                return _EIO
            self.erases += 1
            if self.erase_counts:
                self.erase_counts[arg] += 1
            self._erase(arg, BLOCK_SIZE)
            return 0
        return 0  # 1 init, 2 deinit, 3 sync

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def mount(dev, path="/flash"):
    """Mount `dev` as littlefs v2 at `path` (format it when it holds no filesystem), as the
    ESP32 port mounts its flash. Returns the VfsLfs2 object."""
    import vfs

    # the esp32 stubs derive VfsLfs2 from AbstractBlockDev (it is a filesystem, not a block device)
    try:
        fs = vfs.VfsLfs2(dev)  # type: ignore[abstract]
    except OSError:
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)  # type: ignore[abstract]
    vfs.mount(fs, path)
    return fs
