"""`edgectl logs --port P`: a board's console, from its boot (docs/DEPLOY.md 6).

By default the board is reset once the port is open, so the boot's output is not lost: a real
ESP32 through its USB-serial auto-reset circuit (RTS pulls EN low while DTR keeps IO0 high, so
it boots from flash), a virtual board through its control socket (`LINK.ctl`). `--attach`
only listens. Lines about a reset (ESP32 ROM `rst:0x..`, the vboard's reset, the agent's
`boot: ... reset cause ...`) and errors (tracebacks with their exception line, ESP32 panics,
config errors, the watchdog) are highlighted when the output is a terminal (`--color`).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import stat
import sys
import time
from typing import Callable, TextIO

from host_tools.board.flash import PORT_HINT
from host_tools.board.vboard import control_path
from host_tools.errors import ToolError
from host_tools import argtypes
from host_tools.board.ports import board_port, serial_port

RESET_RE = re.compile(
    r"^rst:0x|^vboard: hard reset|^soft reboot|reset cause|\"reset_cause\"|^ets \w+ +\d"
)
ERROR_RE = re.compile(
    r"^Traceback \(most recent call last\)|^Guru Meditation|^Backtrace:|abort\(\) was called"
    r"|^Brownout detector|^edge: config error|^edge: incomplete deploy|^@log watchdog:"
    r"|^@log (mqtt|wifi): .*(fail|refused|no association|lost)"
)
RESET_COLOR, ERROR_COLOR, PLAIN = "\x1b[1;33m", "\x1b[1;31m", "\x1b[0m"


class Highlighter:
    """Classifies console lines: "reset", "error" or None. A traceback is an error from its
    first line through the exception line that ends it (the first line not indented)."""

    def __init__(self) -> None:
        self.in_traceback = False

    def kind(self, line: str) -> str | None:
        if self.in_traceback:
            if not line.startswith((" ", "\t")):
                self.in_traceback = False  # the exception line itself
            return "error"
        if line.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return "error"
        if ERROR_RE.search(line):
            return "error"
        if RESET_RE.search(line):
            return "reset"
        return None


def is_vboard(port: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(control_path(port)).st_mode)
    except OSError:
        return False


def reset_vboard(port: str) -> None:
    """Press the virtual board's reset button (its control socket)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(control_path(port))
            s.sendall(b"reset\n")
            answer = s.recv(64).strip()
        except OSError as e:
            raise ToolError(f"virtual board on {port} did not take the reset: {e}") from None
    if answer != b"ok":
        raise ToolError(f"virtual board on {port} refused the reset: {answer!r}")


def pulse_reset(ser) -> None:
    """EN low for 100 ms through RTS, DTR released so IO0 stays high (boot from flash): what
    the ESP32 DevKit auto-reset circuit and the S3/C3 USB-Serial-JTAG do with these lines."""
    try:
        ser.dtr = False
        ser.rts = True
        time.sleep(0.1)
        ser.rts = False
    except OSError as e:
        raise ToolError(
            f"cannot reset the board on {ser.port} through RTS ({e.strerror or e}): press its "
            "reset button, or use --attach"
        ) from None


def open_port(port: str, baud: int):
    """The console port, opened without asserting DTR/RTS (asserted, an ESP32's auto-reset
    circuit would hold it in reset or in the download mode)."""
    import serial

    import host_tools  # noqa: F401  (registers the replay:// handler with pyserial)

    if "://" not in port and not os.path.exists(port):
        raise ToolError(f"serial port {port} not found: {PORT_HINT}")
    ser = serial.serial_for_url(port, baudrate=baud, timeout=0.1, do_not_open=True)
    ser.dtr = False
    ser.rts = False
    try:
        ser.open()
    except (serial.SerialException, OSError) as e:
        raise ToolError(f"cannot open {port}: {e}: {PORT_HINT}") from None
    return ser


def follow(
    ser,
    seconds: float,
    emit: Callable[[str, str | None], None],
    until: str | None = None,
) -> int:
    """Read the console line by line, `emit(line, kind)` each; a partial line (a prompt) is
    emitted after 0.3 s of quiet. Stops after `seconds` (0: never), once a line contains
    `until`, or raises ToolError when the port goes away. Returns the number of lines."""
    import serial

    hl = Highlighter()
    end = time.monotonic() + seconds if seconds else None
    buf = b""
    quiet_since = time.monotonic()
    lines = 0
    while end is None or time.monotonic() < end:
        try:
            data = ser.read(max(1, ser.in_waiting))
        except (serial.SerialException, OSError) as e:
            raise ToolError(f"lost the board on {ser.port} ({e}): {PORT_HINT}") from None
        now = time.monotonic()
        if data:
            buf += data
            quiet_since = now
        while b"\n" in buf or (buf and now - quiet_since > 0.3):
            raw, sep, buf = buf.partition(b"\n")
            line = raw.decode("utf-8", "replace").rstrip("\r")
            emit(line, hl.kind(line))
            lines += 1
            if until and until in line:
                return lines
    return lines


def printer(out: TextIO, color: bool) -> Callable[[str, str | None], None]:
    def emit(line: str, kind: str | None) -> None:
        if color and kind:
            line = (RESET_COLOR if kind == "reset" else ERROR_COLOR) + line + PLAIN
        out.write(line + "\n")
        out.flush()

    return emit


def logs(
    port: str,
    reset: bool = True,
    seconds: float = 0,
    baud: int = 115200,
    color: bool = False,
    until: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Show the console of the board on `port`; reset it first unless `reset` is False."""
    ser = open_port(port, baud)
    try:
        if reset:
            if is_vboard(port):
                reset_vboard(port)
            else:
                pulse_reset(ser)
        return follow(ser, seconds, printer(out, color), until)
    finally:
        ser.close()


def cmd_logs(args: argparse.Namespace) -> int:
    """CLI handler for `edgectl logs`."""
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    try:
        logs(board_port(args.port), not args.attach, args.seconds, args.baud, color, args.until)
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl logs`."""
    p = sub.add_parser("logs", help="show a board's console from its boot (resets it first)")
    p.add_argument(
        "--port", type=serial_port, help="serial port or vboard link (default: the only USB board)"
    )
    p.add_argument("--attach", action="store_true", help="only listen: do not reset the board")
    p.add_argument(
        "--baud", type=argtypes.baud, default=115200, help="console baud rate (default 115200)"
    )
    p.add_argument(
        "--seconds",
        type=argtypes.seconds_or_zero,
        default=0,
        help="stop after this long (default: until Ctrl-C)",
    )
    p.add_argument("--until", metavar="TEXT", help="stop after the first line containing TEXT")
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="highlight reset and error lines (auto: when the output is a terminal)",
    )
    p.set_defaults(func=cmd_logs)
