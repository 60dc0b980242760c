"""Convert other serial logs into captures: pyserial `spy://` hexdump logs and plain text logs
(one line per frame, optional timestamps; hex dumps in any common style). `edgectl
capture-convert`, docs/REPLAY.md 1. The same log always converts to the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import re

from host_tools.captures import capfile
from host_tools.errors import ToolError
from host_tools import argtypes

# pyserial spy:// FormatHexdump line: '{:010.3f} {:4} {}{}' -> "000003.001 RX   0000  48 45 ..."
_SPY_DATA = re.compile(r"^(\d+\.\d+) (RX|TX)\s+([0-9A-F]{4})  (.*)$")
_SPY_OTHER = re.compile(r"^(\d+\.\d+) (\S+)\s+(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEX_COLUMNS = 16 * 3 + 1  # 16 "XX " cells and the extra space after the 8th

# Plain text timestamps at the start of a line: ISO 8601 date-time, HH:MM:SS(.fff) or seconds,
# either in [brackets] (then anything may follow) or followed by a space or tab. A bare integer
# (no brackets, no fraction) counts as seconds only in text mode: in a hex log `55 AA ...` it is
# the first byte.
_TS = (
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
    r"|\d{1,2}:\d\d:\d\d(?:\.\d+)?|\d+\.\d+"
)
_TEXT_TS = re.compile(rf"^(?:\[(?P<b>{_TS}|\d+)\][ \t]*|(?P<ts>{_TS}|\d+)[ \t]+)(?P<rest>.*)$")
_HEX_TS = re.compile(rf"^(?:\[(?P<b>{_TS}|\d+)\][ \t]*|(?P<ts>{_TS})[ \t]+)(?P<rest>.*)$")
# hex data: bytes as 2-digit groups (`55 AA`, `55:AA`, `0x55,0xAA`, `55-aa`) or one run
# (`55aa0300`), after any prefix (`Poll:123:`, `[D][uart_debug:114]: <<<`, `RX Packet: "`)
_SEPS = re.compile(r"[\s:,;\-\"'|]+")
_HEXTOK = re.compile(r"^(?:0[xX])?([0-9A-Fa-f]+)$")
_TX_MARK = re.compile(r"(>>>|->|\bTX\b|\btx\b)")  # what the capturing side sent
FIXED_DAY = "2000-01-01"  # the date of a log without dates (as the simulator's captures)


def spy_to_chunks(lines: list[str]) -> list[capfile.Chunk]:
    """Chunks from a `spy://` hexdump log (RX/TX data rows; control lines become notes)."""
    chunks: list[capfile.Chunk] = []
    cur: tuple[str, int, bytearray] | None = None

    def flush() -> None:
        if cur is not None:
            chunks.append(capfile.Chunk(cur[0], cur[1], bytes(cur[2])))

    for lineno, raw in enumerate(lines, 1):
        line = _ANSI.sub("", raw.rstrip("\r\n"))
        if not line.strip():
            continue
        m = _SPY_DATA.match(line)
        if m:
            ts = round(stamp_seconds(m.group(1), f"spy log line {lineno}") * 1e6)
            kind = m.group(2).lower()
            try:
                data = bytes.fromhex(m.group(4)[:_HEX_COLUMNS])
            except ValueError:
                raise ToolError(f"spy log line {lineno}: bad hex row {line!r}") from None
            if int(m.group(3), 16) == 0 or cur is None or cur[0] != kind:
                flush()
                cur = (kind, ts, bytearray())
            cur[2].extend(data)
            continue
        m = _SPY_OTHER.match(line)
        if not m:
            raise ToolError(f"spy log line {lineno}: not a spy:// hexdump line: {line!r}")
        flush()
        cur = None
        if m.group(3) != "<empty>":
            chunks.append(
                capfile.Chunk(
                    "note",
                    round(stamp_seconds(m.group(1), f"spy log line {lineno}") * 1e6),
                    f"{m.group(2)} {m.group(3)}".encode(),
                )
            )
    flush()
    return _monotonic(chunks)


# A log's timestamps, in seconds (since the epoch or the log's start): more than about 31,000
# years is damage or a hostile file, not a time, and would overflow a datetime or a chunk's
# 64-bit microsecond stamp.
_MAX_SECONDS = 1e12


def stamp_seconds(ts: str, where: str) -> float:
    """_seconds(ts), or a ToolError naming `where` (e.g. "text log line 3") for a date no
    calendar has or a number out of range (NaN and infinity included)."""
    try:
        secs = _seconds(ts)
    except (ValueError, OverflowError) as e:
        raise ToolError(f"{where}: bad timestamp {ts[:40]!r} ({e})") from None
    if not -_MAX_SECONDS <= secs <= _MAX_SECONDS:
        raise ToolError(f"{where}: timestamp {ts[:40]!r} out of range")
    return secs


def _seconds(ts: str) -> float:
    if "-" in ts[:5]:
        when = _dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return when.timestamp()
    if ":" in ts:
        h, m, s = ts.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    return float(ts)


def split_stamp(line: str, hex_frames: bool) -> tuple[str | None, str]:
    """(leading timestamp or None, the rest of the line)."""
    m = (_HEX_TS if hex_frames else _TEXT_TS).match(line)
    if not m:
        return None, line
    return m.group("b") or m.group("ts"), m.group("rest")


def hex_bytes(text: str) -> tuple[bytes, str] | None:
    """(the hex data at the end of `text`, the prefix before it), or None. Tokens are read
    from the end while they keep one style: 2-digit groups, or runs of 4+ digits (even)."""
    toks = [t for t in _SEPS.split(text.strip()) if t]
    style = None
    data: list[bytes] = []
    k = len(toks)
    while k:
        m = _HEXTOK.match(toks[k - 1])
        if not m or len(m.group(1)) % 2:
            break
        kind = "byte" if len(m.group(1)) == 2 else "run"
        if style is not None and kind != style:
            break
        style = kind
        data.append(bytes.fromhex(m.group(1)))
        k -= 1
    if not data:
        return None
    cut = text.rfind(toks[k - 1]) + len(toks[k - 1]) if k else 0
    return b"".join(reversed(data)), text[:cut]


def _direction(prefix: str) -> str:
    if _TX_MARK.search(prefix):
        return "tx"
    return "rx"


def started_of(lines: list[str], hex_frames: bool = False) -> str:
    """The capture's `started`: the log's first timestamp as ISO 8601 UTC; a time of day
    without a date falls on 2000-01-01; a log without timestamps starts at its midnight."""
    for lineno, line in enumerate(lines, 1):
        ts, _ = split_stamp(line.rstrip("\r\n"), hex_frames)
        if ts is None:
            continue
        secs = stamp_seconds(ts, f"text log line {lineno}")
        try:
            if "-" in ts[:5]:
                when = _dt.datetime.fromtimestamp(secs, _dt.timezone.utc)
            elif ":" in ts:
                when = _dt.datetime.fromisoformat(FIXED_DAY + "T00:00:00+00:00")
                when += _dt.timedelta(seconds=secs)
            else:
                break  # seconds since the start: no wall-clock time in the log
        except (ValueError, OverflowError, OSError) as e:
            raise ToolError(f"text log line {lineno}: timestamp {ts[:40]!r} ({e})") from None
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return FIXED_DAY + "T00:00:00.000Z"


def text_to_chunks(
    lines: list[str],
    interval: float = 1.0,
    eol: bytes = b"\n",
    hex_frames: bool = False,
    timestamps: bool = True,
) -> list[capfile.Chunk]:
    """One chunk per non-empty line. A leading timestamp (seconds, HH:MM:SS or ISO 8601) sets
    the time (a time of day that jumps back by more than 12 h passed midnight); lines without
    one come `interval` seconds after the previous line. `hex_frames`: the line ends in hex
    bytes (after any prefix; a `>>>` / `TX` mark in the prefix makes it tx), with no `eol`."""
    chunks: list[capfile.Chunk] = []
    first = None
    t = -interval
    day = 0.0
    last_tod = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        ts, rest = split_stamp(line, hex_frames) if timestamps else (None, line)
        if ts is not None:
            secs = stamp_seconds(ts, f"text log line {lineno}")
            if ":" in ts and "-" not in ts[:5]:  # a time of day: count midnights
                if last_tod is not None and secs < last_tod - 43200:
                    day += 86400
                last_tod = secs
                secs += day
            first = secs if first is None else first
            t = secs - first
            line = rest
        else:
            t += interval
        kind = "rx"
        if hex_frames:
            got = hex_bytes(line)
            if got is None:
                raise ToolError(f"text log line {lineno}: no hex bytes in {line!r}")
            data, prefix = got
            kind = _direction(prefix)
        else:
            data = line.encode("utf-8") + eol
        chunks.append(capfile.Chunk(kind, round(max(t, 0.0) * 1e6), data))
    return _monotonic(chunks)


def _monotonic(chunks: list[capfile.Chunk]) -> list[capfile.Chunk]:
    """Rebase to the first chunk and clamp steps back in time (logs may be out of order)."""
    out = []
    base = chunks[0].ts_us if chunks else 0
    last = 0
    for c in chunks:
        ts = max(last, c.ts_us - base)
        out.append(capfile.Chunk(c.kind, ts, c.data))
        last = ts
    return out


def write_chunks(path: str, meta: dict, chunks: list[capfile.Chunk]) -> int:
    """Write `chunks` as a new capture at `path`; returns the number of data bytes."""
    with capfile.CaptureWriter(path, meta) as w:
        for c in chunks:
            w.write(c.kind, c.ts_us, c.data)
        return w.bytes_written


# a serial log may carry a few bytes of line noise (kept as U+FFFD); more than this share of
# undecodable bytes, or any NUL, means the file is binary, not a log
_NOISE_SHARE = 0.05


def read_log_lines(path: str) -> list[str]:
    """A text log's lines; ToolError if it cannot be read or is binary data, not text."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ToolError(f"cannot read {path}: {e.strerror}") from None
    text = raw.decode("utf-8", errors="replace")
    if b"\0" in raw or text.count("\ufffd") > _NOISE_SHARE * max(1, len(text)):
        raise ToolError(
            f"{path} is binary data, not a text log (for raw bytes record with edgectl capture)"
        )
    return text.splitlines(keepends=True)


def cmd_convert(args: argparse.Namespace) -> int:
    """Handler for `edgectl capture-convert`."""
    lines = read_log_lines(args.input)
    if args.source == "spy":
        try:
            chunks = spy_to_chunks(lines)
        except ToolError as e:
            raise ToolError(f"{args.input}: {e}") from None
        started = FIXED_DAY + "T00:00:00.000Z"  # spy:// logs count seconds from the start
    else:
        eol = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r", "none": b""}[args.eol]
        stamps = not args.no_timestamps
        chunks = text_to_chunks(lines, args.interval, eol, args.hex, stamps)
        started = started_of(lines, args.hex) if stamps else FIXED_DAY + "T00:00:00.000Z"
    # deterministic: the same log gives the same bytes (no conversion time, no directory)
    meta = {
        "source": f"{args.source} log {os.path.basename(args.input)}",
        "tool": "edgectl capture-convert",
        "baudrate": args.baud,
        "started": args.started or started,
    }
    if not chunks:
        raise ToolError(f"{args.input}: no {args.source} log lines to convert (an empty log?)")
    n = write_chunks(args.out, meta, chunks)
    print(f"converted {len(chunks)} chunks, {n} bytes -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `capture-convert` to the edgectl parser."""
    p = sub.add_parser("capture-convert", help="turn a spy:// or plain text log into a capture")
    p.add_argument("source", choices=("spy", "text"), help="log kind")
    p.add_argument("input", type=argtypes.input_file, help="log file")
    p.add_argument("--out", required=True, type=argtypes.new_file, help="capture file to write")
    p.add_argument(
        "--interval",
        type=argtypes.seconds,
        default=1.0,
        help="text: seconds between lines without timestamps (default 1)",
    )
    p.add_argument(
        "--eol",
        choices=("lf", "crlf", "cr", "none"),
        default="lf",
        help="text: line ending appended to each line (default lf)",
    )
    p.add_argument("--hex", action="store_true", help="text: each line is hex bytes")
    p.add_argument(
        "--no-timestamps", action="store_true", help="text: do not look for leading timestamps"
    )
    p.add_argument(
        "--baud", type=argtypes.baud, default=115200, help="baud rate to record in the header"
    )
    p.add_argument(
        "--started",
        metavar="ISO",
        type=argtypes.iso_time,
        help="wall-clock time of the first line (default: from the log, else 2000-01-01)",
    )
    p.set_defaults(func=cmd_convert)
