"""`edgectl vboard`: a virtual board for deploys without hardware (docs/DEPLOY.md 0).

Unix MicroPython runs behind a pty whose slave is symlinked at `--link`, so mpremote, pyserial
and esptool see a serial port. The board's root filesystem is littlefs on an emulated NOR
flash backed by `--image` (host_tools/board/mp/vboard_boot.py), so files survive a reboot; its
raw log partition (boards/README.md) is the emulated flash in `IMAGE.log`, its ROM partition
(ROMFS, written by `mpremote romfs deploy`, mounted at /rom) is `IMAGE.rom`. When the
MicroPython process exits (mpremote's Ctrl-D soft reset makes the unix port exit), the launcher
prints `soft reboot`, starts a new one on the same image and re-enters the raw REPL if the host
was in it, so mpremote works without `resume`. The board's UARTs are bridged to what the user
names with `--uart` (host_tools/board/uartbridge.py). A unix socket beside the link
(`LINK.ctl`) is its reset button: `reset` starts a fresh process that boots /main.py.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import socket
import stat
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path

from host_tools.board.uartbridge import UartBridges, UartSpec, parse_uart
from host_tools.errors import ToolError
from host_tools.paths import micropython_path
from host_tools import argtypes

BOOT_SCRIPT = Path(__file__).resolve().parent / "mp" / "vboard_boot.py"
DEFAULT_IMAGE_BYTES = 2 * 1024 * 1024
DEFAULT_LOG_BYTES = 1024 * 1024  # the unix-sim board's log_partition size
DEFAULT_ROM_BYTES = 256 * 1024  # the ROM partition (`edgectl deploy --romfs`, docs/DEPLOY.md 9)


def log_image(image: Path) -> Path:
    """The raw log partition's image beside the filesystem image (boards/README.md)."""
    return image.with_name(image.name + ".log")


def rom_image(image: Path) -> Path:
    """The ROM partition's image beside the filesystem image: the board mounts it at /rom."""
    return image.with_name(image.name + ".rom")


_CTRL_A, _CTRL_B = 0x01, 0x02


def make_image(path: Path, size: int = DEFAULT_IMAGE_BYTES) -> None:
    """Create a blank (erased, all 0xFF) flash image unless one exists (then check that it is
    one: a user's file is never booted as a board's flash); the board formats it."""
    if path.exists():
        check_image(path)
        return
    if size <= 0 or size % 4096:
        raise ToolError(f"image size must be a positive multiple of 4096, got {size}")
    with path.open("wb") as f:
        block = b"\xff" * 65536
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def check_image(path: Path) -> None:
    """ToolError unless `path` looks like a flash image: a regular file of whole 4 KiB sectors
    that is erased (0xFF) or holds a littlefs superblock; the raw log and ROM partitions'
    images beside it (`.log`, `.rom`) need only the size."""
    if not path.is_file():
        raise ToolError(f"--image {path} is not a regular file")
    size = path.stat().st_size
    if size < 4096 or size % 4096:
        raise ToolError(
            f"--image {path} is {size} bytes, not a flash image (whole 4096-byte sectors): "
            "name a new file and the vboard creates one"
        )
    with path.open("rb") as f:
        head = f.read(8192)
    erased = head[:4096] == b"\xff" * 4096
    lfs = head[8:16] == b"littlefs" or head[4096 + 8 : 4096 + 16] == b"littlefs"
    if not (erased or lfs or path.name.endswith((".log", ".rom"))):
        raise ToolError(
            f"--image {path} is neither erased nor a littlefs image: not a flash image this "
            "tool made; name a new file"
        )


def lock_image(path: Path):
    """An exclusive lock on the image for this vboard's life: two boards on one flash would
    corrupt it. Returns the open file that holds the lock."""
    f = path.open("rb")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ToolError(f"--image {path} is in use by another vboard; give each its own") from None
    return f


def _take_controlling_tty() -> None:
    # Runs in the child after setsid(): make its pty the controlling terminal, so a Ctrl-C
    # byte from the host becomes SIGINT (KeyboardInterrupt) as on a board's UART REPL.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class VirtualBoard:
    """Own the ptys and the MicroPython child; `serve()` pumps bytes until stopped."""

    def __init__(
        self,
        link: Path,
        image: Path,
        soft_reset: bool = True,
        heapsize: str | None = None,
        uarts: list[UartSpec] | None = None,
    ):
        self.link, self.image, self.soft_reset, self.heapsize = link, image, soft_reset, heapsize
        self.uarts = UartBridges(uarts or [])  # the board's UARTs (host_tools/board/uartbridge.py)
        self.raw = False  # host has the board in the raw REPL (last of Ctrl-A / Ctrl-B seen)
        self.host_m, self.host_s = pty.openpty()
        # Raw both ends: the host tool sees exactly the bytes MicroPython writes. Keeping our
        # own slave fd open means the master never hits EIO when the host closes the port.
        tty.setraw(self.host_m)
        tty.setraw(self.host_s)
        if self.link.exists() and not self.link.is_symlink():
            raise ToolError(f"--link {self.link} exists and is not a link; refusing to replace it")
        self.ctl = _control_socket(self.link)  # first: it may refuse, and leave nothing behind
        if self.link.is_symlink():
            self.link.unlink()  # a stale link of an earlier vboard
        os.symlink(os.ttyname(self.host_s), self.link)
        # Like a UART with nobody listening, console output is dropped, never queued until
        # the agent blocks on print(); a host that opens the port sees output from then on.
        os.set_blocking(self.host_m, False)
        self.child: subprocess.Popen | None = None
        self.child_m = -1
        self.running = True

    def start_child(self, run_main: bool) -> None:
        """Boot: a fresh MicroPython process on a fresh pty, root fs on the image."""
        m, s = pty.openpty()
        # A UART does not translate "\n" to "\r\n" nor echo: turn off OPOST and ECHO. Keep
        # ISIG so Ctrl-C interrupts a running main.py (the REPL sets its own raw mode).
        attrs = termios.tcgetattr(s)
        attrs[1] &= ~termios.OPOST
        attrs[3] &= ~(termios.ECHO | termios.ECHONL)
        termios.tcsetattr(s, termios.TCSANOW, attrs)
        argv = [micropython_path()]
        if self.heapsize:
            argv += ["-X", f"heapsize={self.heapsize}"]
        argv += ["-i", str(BOOT_SCRIPT)]
        env = dict(
            os.environ,
            VBOARD_IMAGE=str(self.image),
            VBOARD_LOG_IMAGE=str(log_image(self.image)),
            VBOARD_ROM_IMAGE=str(rom_image(self.image)),
            VBOARD_RUN_MAIN="1" if run_main else "0",
            VBOARD_UARTS=self.uarts.directory,
        )
        env.pop("MICROPYPATH", None)
        self.child = subprocess.Popen(
            argv,
            stdin=s,
            stdout=s,
            stderr=s,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_take_controlling_tty,
        )
        os.close(s)
        self.child_m = m

    def _reap_child(self) -> None:
        if self.child_m >= 0:
            os.close(self.child_m)
            self.child_m = -1
        if self.child and self.child.poll() is None:
            self.child.kill()
        if self.child:
            self.child.wait()

    def _reboot(self) -> None:
        was_raw = self.raw
        self._reap_child()
        if not self.soft_reset:
            self.running = False
            return
        self._to_host(b"soft reboot\r\n")
        self.start_child(run_main=not was_raw)
        if was_raw:
            # Wait for the friendly prompt so the REPL reads Ctrl-A in raw tty mode.
            self._pump_child_until(b">>> ", 5.0)
            os.write(self.child_m, b"\r\x01")

    def _pump_child_until(self, marker: bytes, timeout: float) -> None:
        seen = b""
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            r, _, _ = select.select([self.child_m], [], [], 0.05)
            if not r:
                continue
            try:
                data = os.read(self.child_m, 4096)
            except OSError:
                return
            seen = (seen + data)[-256:]
            # Swallow the banner and prompt: mpremote waits for "raw REPL; CTRL-B to exit".

    def _to_host(self, data: bytes) -> None:
        try:
            os.write(self.host_m, data)
        except BlockingIOError:
            pass  # nobody reads the console: the bytes go nowhere, as on a board's UART

    def hard_reset(self) -> None:
        """The EN button: a fresh MicroPython process that runs /boot.py and /main.py, whatever
        the host was doing (`edgectl logs` uses it to catch the boot)."""
        self._reap_child()
        self.raw = False
        self._to_host(b"\r\nvboard: hard reset (EN)\r\n")
        self.start_child(run_main=True)

    def _control(self) -> None:
        """One request on the control socket (`reset`), answered `ok` or with an error."""
        conn, _ = self.ctl.accept()
        with conn:
            conn.settimeout(2)
            try:
                cmd = conn.recv(64).strip()
            except OSError:
                return
            if cmd == b"reset":
                self.hard_reset()
                conn.sendall(b"ok\n")
            else:
                conn.sendall(b"unknown command %r\n" % cmd)

    def _track(self, data: bytes) -> None:
        for b in data:
            if b == _CTRL_A:
                self.raw = True
            elif b == _CTRL_B:
                self.raw = False

    def serve(self) -> None:
        """Copy bytes both ways until stopped; reboot the child whenever it exits."""
        self.start_child(run_main=True)
        while self.running:
            fds: list[int | socket.socket] = [self.host_m, self.ctl]
            if self.child_m >= 0:
                fds.append(self.child_m)
            try:
                r, _, _ = select.select(fds, [], [], 0.2)
            except InterruptedError:
                continue
            if self.ctl in r:
                self._control()
            if self.host_m in r:
                try:
                    data = os.read(self.host_m, 4096)
                except BlockingIOError:
                    data = b""
                self._track(data)
                if self.child_m >= 0:
                    try:
                        os.write(self.child_m, data)
                    except OSError:
                        pass
            if self.child_m in r:
                try:
                    data = os.read(self.child_m, 4096)
                except OSError:
                    data = b""
                if data:
                    self._to_host(data)
                else:
                    self._reboot()
            elif self.child and self.child.poll() is not None:
                self._reboot()

    def close(self) -> None:
        """Stop the child and remove the link (the image stays)."""
        self.running = False
        self._reap_child()
        self.uarts.close()
        for fd in (self.host_m, self.host_s):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link.is_symlink():
            self.link.unlink()
        self.ctl.close()
        try:
            os.unlink(control_path(self.link))
        except OSError:
            pass


def control_path(link: Path | str) -> str:
    """The vboard's control socket beside its port link (`edgectl logs` resets through it)."""
    return str(link) + ".ctl"


def _control_socket(link: Path) -> socket.socket:
    path = control_path(link)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ToolError(
                f"{path} exists and is not a vboard's control socket; refusing to replace it"
            )
        os.unlink(path)  # a stale socket of an earlier vboard on this link
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(2)
    return s


def run_vboard(
    link: Path,
    image: Path,
    image_bytes: int,
    soft_reset: bool,
    heapsize: str | None,
    uarts: list[UartSpec] | None = None,
) -> None:
    """Create the images if needed and serve the board until SIGTERM/SIGINT."""
    make_image(image, image_bytes)
    make_image(log_image(image), DEFAULT_LOG_BYTES)
    make_image(rom_image(image), DEFAULT_ROM_BYTES)
    lock = lock_image(image)
    board = VirtualBoard(link, image, soft_reset, heapsize, uarts)

    def stop(_sig: int, _frame: object) -> None:
        board.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"vboard: {link} -> {os.ttyname(board.host_s)}, image {image}", flush=True)
    for line in board.uarts.describe():
        print(f"vboard: {line}", flush=True)
    try:
        board.serve()
    finally:
        board.close()
        lock.close()


def spawn(
    link: Path, image: Path, timeout: float = 10.0, uarts: tuple[str, ...] = ()
) -> subprocess.Popen:
    """Start `python -m host_tools.board.vboard` in the background and wait for its port link
    (tests and `edgectl bench deploy`); `uarts` are `--uart` arguments. Stop it with
    terminate()."""
    if link.is_symlink():
        link.unlink()
    argv = [sys.executable, "-m", "host_tools.board.vboard", "--link", str(link)]
    argv += ["--image", str(image)]
    for u in uarts:
        argv += ["--uart", u]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + timeout
    while not link.is_symlink():
        if time.monotonic() > end or proc.poll() is not None:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace").strip()
            raise ToolError(f"virtual board did not start: {out[-200:] or 'no output'}")
        time.sleep(0.02)
    return proc


def cmd_vboard(args: argparse.Namespace) -> int:
    """CLI handler for `edgectl vboard`."""
    uarts = [parse_uart(u) for u in args.uart]
    run_vboard(
        Path(args.link),
        Path(args.image),
        args.image_bytes,
        not args.no_soft_reset,
        args.heapsize,
        uarts,
    )
    return 0


def image_bytes(text: str) -> int:
    """`--image-bytes`: a flash size in whole 4 KiB sectors, 64 KiB to 64 MiB."""
    try:
        size = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if size % 4096 or not 64 * 1024 <= size <= 64 << 20:
        raise argparse.ArgumentTypeError(f"{text} is not a multiple of 4096 from 64 KiB to 64 MiB")
    return size


image_bytes.number = True  # type: ignore[attr-defined]


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl vboard`."""
    p = sub.add_parser(
        "vboard", help="virtual board: unix MicroPython behind a pty, littlefs root"
    )
    p.add_argument(
        "--link",
        required=True,
        type=argtypes.link_path,
        help="symlink to create for the board's serial port",
    )
    p.add_argument(
        "--image",
        default="vboard.img",
        type=argtypes.output_file,
        help="flash image file (created if missing)",
    )
    p.add_argument(
        "--image-bytes", type=image_bytes, default=DEFAULT_IMAGE_BYTES, help="new image size"
    )
    p.add_argument(
        "--heapsize",
        type=argtypes.heapsize,
        help="MicroPython -X heapsize, e.g. 110wK (default: port default)",
    )
    p.add_argument("--no-soft-reset", action="store_true", help="exit when MicroPython exits")
    p.add_argument(
        "--uart",
        action="append",
        default=[],
        metavar="NAME[:BAUD]=PATH|URL",
        type=argtypes.checked(parse_uart, "a UART spec"),
        help="bridge the board UART NAME (as the config names it) to a pty/tty path or a "
        "pyserial URL, e.g. appliance=/tmp/ttyAPPL or appliance=replay://x.ecap (repeatable)",
    )
    p.set_defaults(func=cmd_vboard)


if __name__ == "__main__":
    # `python -m host_tools.board.vboard --link ...`: the same as `edgectl vboard`, without loading
    # every other command module (used by the tests' fixture).
    _parser = argparse.ArgumentParser(prog="vboard")
    register(_parser.add_subparsers())
    _args = _parser.parse_args(["vboard"] + sys.argv[1:])
    try:
        sys.exit(_args.func(_args))
    except ToolError as _e:
        print(f"edgectl: {_e}", file=sys.stderr)
        sys.exit(2)
