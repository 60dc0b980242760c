"""Argument types for every `edgectl` command: a bad value is refused while parsing, in one
line that names the option (`edgectl: run: argument --port: 70000 is not a TCP port
1..65535`), before anything starts, opens or writes (docs/CLI.md section 1).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from collections.abc import Callable

from edge import wire

# unix MicroPython's `-X heapsize=` syntax: a number and an optional k/m (py/mpconfig.h units);
# below 16 KiB the agent cannot even import
_HEAP = re.compile(r"^([0-9]+)([kKmM]?)$")
_HEAP_MIN = 16 * 1024
_HEAP_MAX = 1 << 30


def _number(cast: type, lo: float | None, hi: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.number = True  # type: ignore[attr-defined]  # the CLI corpus feeds every number a word
    parse.__name__ = what
    return parse


tcp_port = _number(int, 1, 65535, "a TCP port 1..65535")
positive_int = _number(int, 1, None, "a whole number of at least 1")
count = _number(int, 0, None, "a whole number of at least 0")
positive_float = _number(float, 1e-9, 1e9, "a number above 0")
seconds = _number(float, 1e-9, 1e9, "a number of seconds above 0")
whole_seconds = _number(int, 1, 10**9, "a whole number of seconds of at least 1")
seconds_or_zero = _number(float, 0, 1e9, "a number of seconds, 0 or more")
fraction = _number(float, 0, 1, "a fraction 0..1")
baud = _number(int, 50, 20_000_000, "a baud rate 50..20000000")


def heapsize(text: str) -> str:
    """A unix MicroPython heap size (`256k`, `2m`, `300000`), kept as text for `-X heapsize=`."""
    m = _HEAP.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a heap size like 256k or 2m")
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]
    if not _HEAP_MIN <= size <= _HEAP_MAX:
        raise argparse.ArgumentTypeError(f"{text} is not a heap size from 16k to 1024m")
    return text.strip()


heapsize.number = True  # type: ignore[attr-defined]


def name(text: str) -> str:
    """A device id or topic prefix: one MQTT topic level of 1-64 letters, digits, '_' or '-'
    (docs/MQTT.md section 1), so it can never carry a `/`, `+` or `#` into a topic."""
    if not wire.name_ok(text):
        raise argparse.ArgumentTypeError(f"{text!r} must be 1-64 letters, digits, '_' or '-'")
    return text


def device_id(text: str) -> str:
    """A device id: one topic level, as `name` (docs/MQTT.md section 1)."""
    if not wire.name_ok(text):
        raise argparse.ArgumentTypeError(
            f"device id {text!r} must be 1-64 letters, digits, '_' or '-'"
        )
    return text


def input_file(text: str) -> str:
    """An existing regular file to read: not a directory, FIFO or device (those would block or
    never end), refused while parsing with the reason."""
    try:
        st = os.stat(text)
    except OSError as e:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: permission denied")
    return text


def output_file(text: str) -> str:
    """A file the tool writes: its directory exists and it is not a directory or special file.
    Whether an existing file may be replaced is the command's decision."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if os.path.exists(text) and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    return text


def new_file(text: str) -> str:
    """An output file that must not exist yet (the tool never replaces what it did not make)."""
    output_file(text)
    if os.path.lexists(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is never overwritten")
    return text


def link_path(text: str) -> str:
    """Where a tool creates a symlink to its pty: free, or a symlink (a stale one of ours).
    Never a file or directory the user has there."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    parent = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    if os.path.lexists(text) and not os.path.islink(text):
        kind = "directory" if os.path.isdir(text) else "file"
        raise argparse.ArgumentTypeError(
            f"{text} is an existing {kind}, not a link this tool made; refusing to replace it"
        )
    return text


def input_path(text: str) -> str:
    """An existing regular file or directory to read (not a FIFO or device)."""
    if os.path.isdir(text):
        return text
    return input_file(text)


def directory(text: str) -> str:
    """A directory the tool fills: existing, or creatable (not an existing file)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    if os.path.lexists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    return text


def key_value(text: str) -> str:
    """`KEY=VALUE` with a non-empty KEY."""
    key, eq, _ = text.partition("=")
    if not eq or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return text


def checked(parse: Callable[[str], object], what: str) -> Callable[[str], str]:
    """An argument type from an API parser that raises ToolError: the text is kept as given
    (the handler parses it again), a bad one is refused while parsing."""
    from host_tools.errors import ToolError

    def check(text: str) -> str:
        try:
            parse(text)
        except (ToolError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    check.__name__ = what
    return check


def iso_time(text: str) -> str:
    """An ISO 8601 date and time (`2026-01-31T08:00:00Z`), kept as given."""
    import datetime

    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return text


def board(text: str) -> str:
    """A board name (boards/NAME.json) or board file path that loads, kept as given."""
    from host_tools.errors import ToolError
    from host_tools.paths import board_file

    try:
        board_file(text)
    except ToolError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
