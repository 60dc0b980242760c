"""The virtual board's UARTs: `edgectl vboard --uart NAME[:BAUD]=TARGET` (docs/DEPLOY.md 0).

The board's root filesystem is its emulated flash, so a host path such as /tmp/ttyAPPL does not
exist inside it. Each bridged UART gets a pty pair instead: the board opens the slave as
`/dev/uart/NAME` (a host directory of symlinks that vboard_boot.py mounts there), and two
threads pump bytes between the master and TARGET, opened with pyserial: a pty or tty path (an
`edgectl simulate --serve` link, a USB-serial adapter) or any pyserial URL (`replay://x.ecap`,
`socket://`, `rfc2217://`, `loop://`). NAME is the board file's UART name the config uses
(`"uart": "appliance"`); the board's own TX/RX pins mean nothing here.

Like a UART's receive FIFO, the board side never blocks the bridge: bytes the board does not
read (no agent running, a reboot) are dropped once the pty's buffer is full, and counted. When
TARGET goes away (the simulator was restarted, the adapter unplugged) the bridge says so and
opens it again every second, as a board's UART just hears silence until the cable is back.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import tempfile
import threading
import tty
from dataclasses import dataclass

from host_tools.errors import ToolError

DEFAULT_BAUD = 9600
_SPEC = re.compile(r"^([A-Za-z0-9_-]{1,32})(?::(\d{3,7}))?=(.+)$")


@dataclass
class UartSpec:
    """One `--uart` argument: the board UART's name, the baud rate for TARGET, TARGET."""

    name: str
    baud: int
    target: str


def parse_uart(text: str) -> UartSpec:
    """`NAME[:BAUD]=TARGET`, e.g. `appliance=/tmp/ttyAPPL`, `meter:19200=/dev/ttyUSB0`,
    `appliance=replay://washer.ecap?speed=10`; ToolError naming what is wrong."""
    m = _SPEC.match(text.strip())
    if not m:
        raise ToolError(
            f"--uart {text!r}: expected NAME[:BAUD]=PATH_OR_URL, e.g. appliance=/tmp/ttyAPPL"
        )
    baud = int(m.group(2) or DEFAULT_BAUD)
    if not 300 <= baud <= 5_000_000:
        raise ToolError(f"--uart {text!r}: baud {baud} is outside 300..5000000")
    return UartSpec(m.group(1), baud, m.group(3))


def open_target(spec: UartSpec):
    """TARGET opened with pyserial (paths and URLs alike); ToolError naming the UART and the
    path when it cannot be opened."""
    import serial

    import host_tools  # noqa: F401  (registers the replay:// handler with pyserial)

    if "://" not in spec.target and not os.path.exists(spec.target):
        raise ToolError(
            f"vboard: uart {spec.name!r}: {spec.target} does not exist (start the simulator "
            "or plug in the adapter first, or give a pyserial URL)"
        )
    try:
        return serial.serial_for_url(spec.target, baudrate=spec.baud, timeout=0.05)
    except (serial.SerialException, OSError, ValueError) as e:
        raise ToolError(f"vboard: uart {spec.name!r}: cannot open {spec.target}: {e}") from None


class Bridge:
    """One bridged UART: the pty the board opens and the pump threads to TARGET."""

    def __init__(self, spec: UartSpec, directory: str, log=print) -> None:
        self.spec = spec
        self.log = log
        self.port = open_target(spec)
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)  # our own slave fd: the master never sees EIO across reboots
        os.set_blocking(self.master, False)
        self.path = os.path.join(directory, spec.name)
        os.symlink(os.ttyname(self.slave), self.path)
        self.to_board = 0
        self.to_target = 0
        self.dropped = 0  # bytes for the board that found its receive buffer full
        self.lost = 0  # times TARGET went away (a simulator stopped, an adapter unplugged)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._board_to_target, daemon=True),
            threading.Thread(target=self._target_to_board, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _fail(self, port, e: Exception) -> None:
        """TARGET failed: close it; the reader thread opens it again (like a UART whose
        other end was unplugged, the board just sees silence meanwhile)."""
        with self._lock:
            if self.port is not port or self._stop.is_set():
                return
            self.port = None
            self.lost += 1
        self.log(f"vboard: uart {self.spec.name!r} ({self.spec.target}): lost ({e}); reopening")
        try:
            port.close()
        except Exception:  # noqa: BLE001 - closing a lost port may fail again
            pass

    def _board_to_target(self) -> None:
        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self.master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return  # our own pty: only when the board is being closed
            port = self.port
            if port is None:
                continue  # nobody on the other end: the bytes go nowhere
            try:
                port.write(data)
            except Exception as e:  # noqa: BLE001 - any pyserial backend's failure
                self._fail(port, e)
                continue
            self.to_target += len(data)

    def _target_to_board(self) -> None:
        while not self._stop.is_set():
            port = self.port
            if port is None:
                if self._stop.wait(1.0):
                    return
                try:
                    self.port = open_target(self.spec)
                except ToolError:
                    continue
                self.log(f"vboard: uart {self.spec.name!r} ({self.spec.target}): reopened")
                continue
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as e:  # noqa: BLE001 - any pyserial backend's failure
                self._fail(port, e)
                continue
            if not data:
                continue
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                n = 0
            except OSError:
                return  # our own pty: only when the board is being closed
            self.to_board += n
            self.dropped += len(data) - n

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        port, self.port = self.port, None
        try:
            if port is not None:
                port.close()
        except Exception:  # noqa: BLE001 - closing a lost port may fail again
            pass
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class UartBridges:
    """Every bridged UART of one virtual board, and the directory the board mounts."""

    def __init__(self, specs: list[UartSpec], log=print) -> None:
        names = [s.name for s in specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ToolError(f"vboard: uart {sorted(dup)[0]!r} is bridged twice")
        self.directory = tempfile.mkdtemp(prefix="vboard-uarts-")
        self.bridges: list[Bridge] = []
        try:
            for s in specs:
                self.bridges.append(Bridge(s, self.directory, log))
        except BaseException:
            self.close()
            raise

    def describe(self) -> list[str]:
        return [
            f"uart {b.spec.name} -> {b.spec.target} ({b.spec.baud} baud)" for b in self.bridges
        ]

    def close(self) -> None:
        for b in self.bridges:
            b.close()
        shutil.rmtree(self.directory, ignore_errors=True)
