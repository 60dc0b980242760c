"""Serial ports for `flash`, `deploy`, `logs`, `capture` and `replay`: a `--port` is checked
while the command line is parsed (a device path must be a character device, a URL must use a
pyserial scheme), and `flash`, `deploy` and `logs` find the board themselves when exactly one
USB serial adapter is attached (as esptool and mpremote do; docs/CLI.md section 4)."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterable

from host_tools.errors import ToolError

# pyserial's URL handlers (serial/urlhandler/protocol_*.py) and ours (replay://, the
# captures/protocol_replay.py handler)
URL_SCHEMES = ("loop", "spy", "rfc2217", "socket", "hwgrep", "alt", "cp2110", "replay")

# USB vendor ids of the serial bridges on ESP32 boards: Espressif's own USB (S2/S3/C3/C6),
# Silicon Labs CP210x, WCH CH340/CH9102, FTDI, Prolific
BOARD_VIDS = {
    0x303A: "Espressif",
    0x10C4: "CP210x",
    0x1A86: "CH34x",
    0x0403: "FTDI",
    0x067B: "PL2303",
}


def serial_port(text: str) -> str:
    """argparse type: a pyserial URL with a known scheme, or a path that is not an existing
    file or directory (a tty, a pty, a vboard's link, or one not plugged in yet: opening it
    reports that). A regular file or a directory is refused with what is attached instead."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in URL_SCHEMES:
            raise argparse.ArgumentTypeError(
                f"{text}: unknown URL scheme {scheme!r} (pyserial knows "
                f"{', '.join(s + '://' for s in URL_SCHEMES)})"
            )
        return text
    try:
        st = os.stat(text)
    except OSError:
        return text  # not there yet (a board being plugged in, a dry run): opening says so
    if not stat.S_ISCHR(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a character device"
        raise argparse.ArgumentTypeError(f"{text} is {kind}, not a serial port{_attached()}")
    return text


def _attached() -> str:
    found = [p.device for p in _comports()]
    return f"; attached: {', '.join(found)}" if found else "; no USB serial port is attached"


def _comports() -> list:
    try:
        from serial.tools import list_ports

        return [p for p in list_ports.comports() if getattr(p, "vid", None)]
    except (ImportError, OSError):
        return []


def pick_board_port(ports: Iterable) -> str:
    """The one attached board's port among `ports` (pyserial ListPortInfo objects); ToolError
    when there is none or more than one (then --port decides)."""
    usb = [p for p in ports if getattr(p, "vid", None)]
    boards = [p for p in usb if p.vid in BOARD_VIDS] or usb
    if len(boards) == 1:
        return boards[0].device
    if not boards:
        raise ToolError(
            "no board found on USB: plug one in (a data cable, not charge-only) or pass --port"
        )
    listed = ", ".join(f"{p.device} ({BOARD_VIDS.get(p.vid, hex(p.vid))})" for p in boards)
    raise ToolError(f"{len(boards)} boards attached ({listed}): choose one with --port")


def board_port(port: str | None) -> str:
    """`--port` as given, or the only attached board's port (printed, so a log shows it)."""
    if port:
        return port
    found = pick_board_port(_comports())
    print(f"edgectl: using {found}, the only USB serial port attached", file=sys.stderr)
    return found
