"""`edgectl capture`: record a serial port's raw bytes with timestamps (docs/REPLAY.md 1).

Opens the port with `serial.serial_for_url` (real ports, `rfc2217://`, `socket://`, `loop://`,
`replay://`), appends every read as an rx chunk (docs/FORMAT.md "Capture format") and shows
live byte and frame counts. Stops after `--duration`, after `--idle` seconds without data,
when the port goes away, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import serial

from host_tools.captures import capfile
from host_tools.captures.frames import FRAMINGS, FrameCounter
from host_tools.errors import ToolError
from host_tools import argtypes
from host_tools.board.ports import serial_port

READ_TIMEOUT_S = 0.05


@dataclass
class CaptureStats:
    """What a capture recorded."""

    bytes: int = 0
    chunks: int = 0
    frames: int = 0
    seconds: float = 0.0
    stop: str = ""
    files: list[str] = field(default_factory=list)


def open_port(url: str, baudrate: int = 115200, **settings: Any) -> serial.Serial:
    """Open `url` with pyserial; a failure becomes a ToolError with the usual hint."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=READ_TIMEOUT_S, **settings)
    except (serial.SerialException, ValueError, OSError) as e:
        raise ToolError(f"cannot open {url}: {e} (check cable, port name and driver)") from None


def port_meta(ser: serial.SerialBase, url: str) -> dict:
    """Header metadata describing the port settings (docs/FORMAT.md, capture metadata keys)."""
    return {
        "port": url,
        "baudrate": ser.baudrate,
        "bytesize": ser.bytesize,
        "parity": ser.parity,
        "stopbits": ser.stopbits,
        "xonxoff": bool(ser.xonxoff),
        "rtscts": bool(ser.rtscts),
        "tool": "edgectl capture",
    }


def run_capture(
    ser: serial.Serial,
    writer: capfile.CaptureWriter,
    duration: float | None = None,
    idle: float | None = None,
    framing: str = "auto",
    progress: Callable[[CaptureStats], None] | None = None,
) -> CaptureStats:
    """Copy everything `ser` receives into `writer` until a stop condition; returns stats."""
    stats = CaptureStats()
    counter = FrameCounter(framing)
    t0 = time.monotonic_ns()
    last_data = None
    next_progress = 0.0
    ser.timeout = READ_TIMEOUT_S
    try:
        while True:
            data = b""
            closed = None
            try:
                data = ser.read(max(1, ser.in_waiting))
                if data and ser.in_waiting:  # take the rest of a burst into the same chunk
                    data += ser.read(ser.in_waiting)
            except (serial.SerialException, OSError) as e:
                closed = e  # keep what the first read returned
            now_ns = time.monotonic_ns()
            now = (now_ns - t0) / 1e9
            if data:
                writer.write("rx", (now_ns - t0) // 1000, data)
                stats.bytes += len(data)
                stats.chunks += 1
                stats.frames += counter.feed(data)
                last_data = now
            if closed is not None:
                writer.note((now_ns - t0) // 1000, f"port closed: {closed}")
                stats.stop = "port closed"
                break
            stats.seconds = now
            if progress is not None and now >= next_progress:
                progress(stats)
                next_progress = now + 0.5
            if duration is not None and now >= duration:
                stats.stop = "duration"
                break
            if idle is not None and last_data is not None and now - last_data >= idle:
                stats.stop = "idle"
                break
    except KeyboardInterrupt:
        stats.stop = "interrupted"
    stats.files = list(writer.paths)
    return stats


def capture_to_file(
    url: str,
    out: str,
    baudrate: int = 115200,
    rotate_bytes: int | None = None,
    extra_meta: dict | None = None,
    **kwargs: Any,
) -> CaptureStats:
    """Open `url`, capture into `out` (see `run_capture` for kwargs), close both."""
    ser = open_port(url, baudrate)
    try:
        meta = port_meta(ser, url)
        meta.update(extra_meta or {})
        with capfile.CaptureWriter(out, meta, rotate_bytes) as writer:
            return run_capture(ser, writer, **kwargs)
    finally:
        ser.close()


def _progress_printer(stream) -> Callable[[CaptureStats], None]:
    tty = stream.isatty()
    state = {"next": 0.0}

    def show(st: CaptureStats) -> None:
        line = f"capture: {st.bytes} B, {st.frames} frames, {st.chunks} chunks, {st.seconds:.1f} s"
        if tty:
            stream.write("\r" + line)
        elif st.seconds >= state["next"]:
            stream.write(line + "\n")
            state["next"] = st.seconds + 10.0
        stream.flush()

    return show


def _meta_pairs(pairs: list[str]) -> dict:
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ToolError(f"--meta expects KEY=VALUE, got {pair!r}")
        meta[key] = value
    return meta


def cmd_capture(args: argparse.Namespace) -> int:
    """Handler for `edgectl capture`."""
    meta = _meta_pairs(args.meta)
    stats = capture_to_file(
        args.port,
        args.out,
        baudrate=args.baud,
        rotate_bytes=args.rotate_bytes,
        extra_meta=meta,
        duration=args.duration,
        idle=args.idle,
        framing=args.framing,
        progress=None if args.quiet else _progress_printer(sys.stderr),
    )
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    print(
        f"captured {stats.bytes} bytes, {stats.frames} frames in {stats.chunks} chunks, "
        f"{stats.seconds:.1f} s ({stats.stop}) -> {', '.join(stats.files)}"
    )
    if args.json:
        print(json.dumps(asdict(stats), sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `capture` to the edgectl parser."""
    p = sub.add_parser("capture", help="record a serial port's bytes with timestamps")
    p.add_argument(
        "--port",
        required=True,
        type=serial_port,
        help="pyserial URL or device (/dev/ttyUSB0, rfc2217://...)",
    )
    p.add_argument(
        "--out", required=True, type=argtypes.new_file, help="capture file to write (.ecap)"
    )
    p.add_argument("--baud", type=argtypes.baud, default=115200, help="baud rate (default 115200)")
    p.add_argument("--duration", type=argtypes.seconds, help="stop after S seconds")
    p.add_argument(
        "--idle", type=argtypes.seconds, help="stop after S seconds without data (once data came)"
    )
    p.add_argument(
        "--rotate-bytes", type=argtypes.positive_int, help="start a new part file after N bytes"
    )
    p.add_argument("--framing", choices=FRAMINGS, default="auto", help="frame counting")
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=argtypes.key_value,
        help="extra header metadata (repeatable), e.g. appliance=fridge",
    )
    p.add_argument("--quiet", action="store_true", help="no live counts")
    p.add_argument("--json", action="store_true", help="last line of stdout is a JSON summary")
    p.set_defaults(func=cmd_capture)
