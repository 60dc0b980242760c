# Virtual board boot script (MicroPython, unix port): `micropython -i vboard_boot.py`.
# Puts the root filesystem on littlefs over an emulated NOR flash backed by an image file,
# like an ESP32's /, opens the raw log partition's image, then runs /boot.py and (unless
# entered for the raw REPL) /main.py.
# Started by host_tools/board/vboard.py (docs/DEPLOY.md 0).

import os
import sys

import vfs

_BLOCK = 4096


class FileFlash:
    # Extended block protocol (readblocks/writeblocks with offset, ioctl erase) over a file
    # opened before the root switch. NOR semantics: a program can only clear bits
    # (new = old & data); erase sets the block to 0xFF. Nothing here allocates per call
    # beyond the preallocated scratch buffer, because littlefs may call it with the heap
    # locked.

    def __init__(self, path):
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        self.count = self.f.tell() // _BLOCK
        self.scratch = bytearray(256)
        self.ff = b"\xff" * 256

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * _BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        if off is None:
            # Simple protocol: erase then program whole blocks.
            n = len(buf) // _BLOCK
            for i in range(n):
                self.ioctl(6, block + i)
            off = 0
        pos = block * _BLOCK + off
        mv = memoryview(buf)
        s = self.scratch
        done = 0
        total = len(buf)
        while done < total:
            n = min(256, total - done)
            self.f.seek(pos + done)
            self.f.readinto(s)
            for i in range(n):
                s[i] &= mv[done + i]
            self.f.seek(pos + done)
            self.f.write(s, n)
            done += n
        return 0

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.count
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase one block
            self.f.seek(arg * _BLOCK)
            for _ in range(_BLOCK // 256):
                self.f.write(self.ff)
            return 0
        return 0


def _mount_root(image):
    dev = FileFlash(image)
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        # A blank (all 0xFF) image: format it, as MicroPython's esp32 _boot.py does.
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.umount("/")
    vfs.mount(fs, "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    for d in ("/lib",):
        try:
            os.mkdir(d)
        except OSError:
            pass


def _run(name):
    try:
        os.stat(name)
    except OSError:
        return
    try:
        exec(open(name, "r").read(), {"__name__": "__main__"})
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    except SystemExit as e:
        # exit code 75: the agent asked for a board reset (edge/ota/boot.py, RESET_EXIT) and
        # the unix port has no machine.reset(): end this process as a reset would; the
        # launcher starts a fresh one, which runs /main.py (host_tools/board/vboard.py)
        if e.args and e.args[0] == 75:
            os.system("kill -9 $PPID")
        raise
    except Exception as e:  # noqa: BLE001 - a board prints the error and drops to the REPL
        sys.print_exception(e)


def _open_log(path):
    # The board's raw log partition (docs/FORMAT.md 8) on its own image file, opened before the
    # root switch hides the host's files; the unix HAL finds it as module `_vboard_log`.
    try:
        dev = FileFlash(path)
    except OSError:
        return

    class _Log:
        pass

    _Log.dev = dev
    sys.modules["_vboard_log"] = _Log


_ROMFS_HEADER = b"\xd2\xcd\x31"


class RomPartition:
    # The board's ROM partition over an image file, behind the `vfs.rom_ioctl` protocol that
    # MicroPython 1.25+ ports with ROMFS provide and `mpremote romfs deploy` drives: 1 -> number
    # of partitions, 2 -> the partition as a buffer, 3 -> prepare (erase) a range, 4 -> write,
    # 5 -> finish (here: the image file is written), 6 -> erase block size. The unix port has
    # vfs.VfsRom but no ROM partition; the image is held in a bytearray on this process's heap
    # (a board maps it from flash).
    def __init__(self, path):
        self.f = open(path, "r+b")  # opened before the root switch, kept for op 5
        self.mem = bytearray(self.f.read())

    def ioctl(self, op, rom_id=0, *args):
        if op == 1:
            return 1
        if rom_id != 0:
            return -19  # ENODEV: one partition
        if op == 2:
            return memoryview(self.mem)
        if op == 3:  # (offset, length) or (length): erased to 0xFF, as flash
            off, n = args if len(args) == 2 else (0, args[0])
            if off < 0 or off + n > len(self.mem):
                return -22
            self.mem[off : off + n] = b"\xff" * n
            return 4  # the smallest write
        if op == 4:
            off, buf = args
            if off < 0 or off + len(buf) > len(self.mem):
                return -22
            self.mem[off : off + len(buf)] = buf
            return 0
        if op == 5:
            self.f.seek(0)
            self.f.write(self.mem)
            self.f.flush()
            return 0
        if op == 6:
            return _BLOCK
        return -22


def _rom(rom):
    # `import vfs` then finds the module with rom_ioctl (a built-in module is looked up in
    # sys.modules first), and a valid image is mounted at /rom with /rom and /rom/lib on
    # sys.path, as MicroPython's ESP32 port does at boot.
    class _Vfs:
        pass

    for k in dir(vfs):
        if not k.startswith("__"):
            setattr(_Vfs, k, getattr(vfs, k))
    _Vfs.rom_ioctl = rom.ioctl
    sys.modules["vfs"] = _Vfs
    if rom.mem[:3] == _ROMFS_HEADER:
        try:
            vfs.mount(vfs.VfsRom(memoryview(rom.mem)), "/rom")
        except OSError as e:
            print("vboard: ROM partition not mounted:", e)
            return
        sys.path[2:2] = ["/rom", "/rom/lib"]


_image = os.getenv("VBOARD_IMAGE")
if _image:
    if os.getenv("VBOARD_LOG_IMAGE"):
        _open_log(os.getenv("VBOARD_LOG_IMAGE"))
    try:
        _rom_part = RomPartition(os.getenv("VBOARD_ROM_IMAGE") or "")
    except OSError:
        _rom_part = None
    except MemoryError:  # a small -X heapsize: the partition is held on this heap
        print("vboard: no heap for the ROM partition image: /rom not mounted")
        _rom_part = None
    _mount_root(_image)
    if _rom_part:
        _rom(_rom_part)
    del _rom_part
del _image
# The UARTs bridged with `edgectl vboard --uart NAME=...`: a host directory of ptys, mounted
# where the unix HAL looks for them (edge/hal/unix/hal.py VBOARD_UARTS).
_uarts = os.getenv("VBOARD_UARTS")
if _uarts:
    vfs.mount(vfs.VfsPosix(_uarts), "/dev/uart")
del _uarts
_run("/boot.py")
if os.getenv("VBOARD_RUN_MAIN") == "1":
    _run("/main.py")
