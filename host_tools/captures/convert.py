"""Convert other serial logs into captures: pyserial `spy://` hexdump logs and plain text logs
(one line per frame, optional timestamps). `edgectl capture-convert` (issue 8).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re

from host_tools.captures import capfile
from host_tools.errors import ToolError

# pyserial spy:// FormatHexdump line: '{:010.3f} {:4} {}{}' -> "000003.001 RX   0000  48 45 ..."
_SPY_DATA = re.compile(r"^(\d+\.\d+) (RX|TX)\s+([0-9A-F]{4})  (.*)$")
_SPY_OTHER = re.compile(r"^(\d+\.\d+) (\S+)\s+(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEX_COLUMNS = 16 * 3 + 1  # 16 "XX " cells and the extra space after the 8th

# Plain text timestamps at the start of a line, optionally in [brackets]:
# ISO 8601 date-time, HH:MM:SS(.fff) or seconds (float).
_TEXT_TS = re.compile(
    r"^\[?(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"
    r"|\d{1,2}:\d\d:\d\d(?:\.\d+)?|\d+\.\d+|\d+)\]?[ \t]+(?P<rest>.*)$"
)


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
            ts = round(float(m.group(1)) * 1e6)
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
                    "note", round(float(m.group(1)) * 1e6), f"{m.group(2)} {m.group(3)}".encode()
                )
            )
    flush()
    return _monotonic(chunks)


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


def text_to_chunks(
    lines: list[str],
    interval: float = 1.0,
    eol: bytes = b"\n",
    hex_frames: bool = False,
    timestamps: bool = True,
) -> list[capfile.Chunk]:
    """One rx chunk per non-empty line. A leading timestamp (seconds, HH:MM:SS or ISO 8601)
    sets the time; lines without one come `interval` seconds after the previous line.
    `hex_frames`: the line is hex bytes (binary protocols) and gets no `eol`."""
    chunks: list[capfile.Chunk] = []
    first = None
    t = -interval
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        m = _TEXT_TS.match(line) if timestamps else None
        if m:
            secs = _seconds(m.group("ts"))
            first = secs if first is None else first
            t = secs - first
            line = m.group("rest")
        else:
            t += interval
        if hex_frames:
            try:
                data = bytes.fromhex(line)
            except ValueError:
                raise ToolError(f"text log line {lineno}: not hex bytes: {line!r}") from None
        else:
            data = line.encode("utf-8") + eol
        chunks.append(capfile.Chunk("rx", round(max(t, 0.0) * 1e6), data))
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


def cmd_convert(args: argparse.Namespace) -> int:
    """Handler for `edgectl capture-convert`."""
    try:
        with open(args.input, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError as e:
        raise ToolError(f"cannot read {args.input}: {e.strerror}") from None
    if args.source == "spy":
        chunks = spy_to_chunks(lines)
    else:
        eol = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r", "none": b""}[args.eol]
        chunks = text_to_chunks(lines, args.interval, eol, args.hex, not args.no_timestamps)
    meta = {
        "source": f"{args.source} log {args.input}",
        "tool": "edgectl capture-convert",
        "baudrate": args.baud,
    }
    n = write_chunks(args.out, meta, chunks)
    print(f"converted {len(chunks)} chunks, {n} bytes -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `capture-convert` to the edgectl parser."""
    p = sub.add_parser("capture-convert", help="turn a spy:// or plain text log into a capture")
    p.add_argument("source", choices=("spy", "text"), help="log kind")
    p.add_argument("input", help="log file")
    p.add_argument("--out", required=True, help="capture file to write")
    p.add_argument(
        "--interval",
        type=float,
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
    p.add_argument("--baud", type=int, default=115200, help="baud rate to record in the header")
    p.set_defaults(func=cmd_convert)
