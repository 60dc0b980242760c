"""Capture file reader and writer (docs/FORMAT.md, section 5 "Capture format").

A capture is a small header (magic, version, JSON metadata with the port settings, CRC32)
followed by append-only chunks: kind (rx/tx/note), timestamp in microseconds since the start,
raw bytes, CRC32. Every chunk is written with one `write()` and flushed, so a reader may open
the file while the capture is still running. A reader stops at the first damaged chunk and
reports its byte offset; every chunk before it is intact and usable.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from host_tools.errors import ToolError

MAGIC = b"ECAP"
VERSION = 1
HEAD_FMT = "<4sBBH"  # magic, version, flags, meta_len
HEAD_LEN = 8
CHUNK_FMT = "<BBHQ"  # kind, flags, len, ts_us
CHUNK_HEAD_LEN = 12
CRC_LEN = 4
MAX_DATA = 0xFFFF

KIND_RX = 0x52  # 'R': bytes the capturing port received (what the appliance/board sent)
KIND_TX = 0x54  # 'T': bytes the capturing side sent to the appliance
KIND_NOTE = 0x4E  # 'N': UTF-8 text: a marker or an event (settings change, port closed)
KIND_NAMES = {KIND_RX: "rx", KIND_TX: "tx", KIND_NOTE: "note"}
KIND_CODES = {v: k for k, v in KIND_NAMES.items()}

SUFFIX = ".ecap"


class CaptureError(ToolError):
    """A capture file is damaged or not a capture; `offset` is the byte offset of the damage."""

    def __init__(self, path: str, offset: int, reason: str, intact: int = 0) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        self.intact = intact
        super().__init__(f"{path}: {reason} at byte offset {offset}")


@dataclass(frozen=True)
class Chunk:
    """One chunk: `kind` is "rx", "tx" or "note"; `ts_us` counts from the capture start."""

    kind: str
    ts_us: int
    data: bytes
    offset: int = -1  # byte offset of the chunk in its file; -1 when not read from a file


def crc32(data: bytes | memoryview) -> int:
    """CRC-32 (IEEE 802.3, zlib/binascii: reflected poly 0xEDB88320, init and xorout ~0)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_header(meta: dict) -> bytes:
    """Header bytes for `meta` (a JSON-serialisable dict)."""
    body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(body) > 0xFFFF:
        raise ToolError("capture metadata is larger than 65535 bytes")
    head = struct.pack(HEAD_FMT, MAGIC, VERSION, 0, len(body)) + body
    return head + struct.pack("<I", crc32(head))


def encode_chunk(kind: str, ts_us: int, data: bytes) -> bytes:
    """One chunk's bytes; `data` must be at most 65535 bytes (see `CaptureWriter.write`)."""
    if len(data) > MAX_DATA:
        raise ValueError("chunk data longer than 65535 bytes")
    if ts_us < 0 or ts_us >= 1 << 64:
        raise ValueError("chunk timestamp out of range")
    head = struct.pack(CHUNK_FMT, KIND_CODES[kind], 0, len(data), ts_us)
    return head + data + struct.pack("<I", crc32(head + data))


def utc_now_iso() -> str:
    """The current wall-clock time as ISO 8601 UTC with milliseconds (the `started` key)."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def part_path(path: str, part: int) -> str:
    """File name of rotation part `part` (0 is `path` itself): `x.ecap` -> `x.1.ecap`."""
    if part == 0:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.{part}{ext}"


class CaptureWriter:
    """Append chunks to a capture file; rotates to a new part when `rotate_bytes` is reached.

    Each chunk goes out with a single unbuffered `write()`, so a concurrent reader sees whole
    chunks or a truncated tail, never a reordered one.
    """

    def __init__(self, path: str, meta: dict, rotate_bytes: int | None = None) -> None:
        self.path = path
        self.meta = dict(meta)
        self.meta.setdefault("started", utc_now_iso())
        self.rotate_bytes = rotate_bytes
        self.part = 0
        self.paths: list[str] = []
        self.bytes_written = 0  # data bytes, all parts
        self.chunks_written = 0
        self._size = 0
        self._fh: BinaryIO | None = None
        self._open_part()

    def _open_part(self) -> None:
        path = part_path(self.path, self.part)
        meta = dict(self.meta)
        if self.rotate_bytes:
            meta["part"] = self.part
        self._fh = open(path, "wb", buffering=0)
        head = encode_header(meta)
        self._fh.write(head)
        self._size = len(head)
        self.paths.append(path)

    def write(self, kind: str, ts_us: int, data: bytes) -> None:
        """Append `data` as one or more chunks of `kind` stamped `ts_us`."""
        if self._fh is None:
            raise ValueError("capture writer is closed")
        view = memoryview(data)
        pos = 0
        while True:
            piece = bytes(view[pos : pos + MAX_DATA])
            if self.rotate_bytes and self._size >= self.rotate_bytes:
                self._fh.close()
                self.part += 1
                self._open_part()
            blob = encode_chunk(kind, ts_us, piece)
            self._fh.write(blob)
            self._size += len(blob)
            self.chunks_written += 1
            if kind != "note":
                self.bytes_written += len(piece)
            pos += MAX_DATA
            if pos >= len(view):
                break

    def note(self, ts_us: int, text: str) -> None:
        """Append a note chunk (UTF-8 text)."""
        self.write("note", ts_us, text.encode("utf-8"))

    def close(self) -> None:
        """Close the current part."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureReader:
    """Read one capture file. `meta` is the header; iterate `chunks()`; `damage` is set
    (a `CaptureError`, not raised) when iteration stopped at a damaged or truncated chunk.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as fh:
            self._buf = fh.read()
        self.damage: CaptureError | None = None
        self.meta, self.data_offset = self._parse_header()

    def _parse_header(self) -> tuple[dict, int]:
        buf = self._buf
        if len(buf) < HEAD_LEN:
            raise CaptureError(self.path, len(buf), "truncated header (file ends)")
        magic, version, flags, meta_len = struct.unpack_from(HEAD_FMT, buf, 0)
        if magic != MAGIC:
            raise CaptureError(self.path, 0, f"not a capture file (magic {magic!r})")
        if version != VERSION:
            raise CaptureError(self.path, 4, f"unsupported capture version {version}")
        if flags != 0:
            raise CaptureError(self.path, 5, f"unknown header flags 0x{flags:02x}")
        end = HEAD_LEN + meta_len
        if len(buf) < end + CRC_LEN:
            raise CaptureError(self.path, len(buf), "truncated header (file ends)")
        (want,) = struct.unpack_from("<I", buf, end)
        if crc32(buf[:end]) != want:
            raise CaptureError(self.path, end, "corrupt header (CRC mismatch)")
        try:
            meta = json.loads(buf[HEAD_LEN:end].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CaptureError(self.path, HEAD_LEN, f"corrupt header metadata ({e})") from None
        if not isinstance(meta, dict):
            raise CaptureError(self.path, HEAD_LEN, "corrupt header metadata (not an object)")
        return meta, end + CRC_LEN

    def chunks(self) -> Iterator[Chunk]:
        """Yield intact chunks in file order; stop at the first damage (see `damage`)."""
        buf = self._buf
        mv = memoryview(buf)
        off = self.data_offset
        last_ts = 0
        count = 0
        self.damage = None
        while off < len(buf):
            reason = None
            if len(buf) - off < CHUNK_HEAD_LEN:
                reason = f"truncated chunk header ({len(buf) - off} of {CHUNK_HEAD_LEN} bytes)"
            else:
                code, flags, n, ts = struct.unpack_from(CHUNK_FMT, buf, off)
                end = off + CHUNK_HEAD_LEN + n
                if code not in KIND_NAMES or flags != 0:
                    reason = f"corrupt chunk (kind 0x{code:02x}, flags 0x{flags:02x})"
                elif len(buf) < end + CRC_LEN:
                    have = len(buf) - off
                    reason = f"truncated chunk ({have} of {end + CRC_LEN - off} bytes)"
                elif crc32(mv[off:end]) != struct.unpack_from("<I", buf, end)[0]:
                    reason = "corrupt chunk (CRC mismatch)"
                elif ts < last_ts:
                    reason = f"corrupt chunk (timestamp {ts} us goes back from {last_ts} us)"
            if reason is not None:
                self.damage = CaptureError(self.path, off, reason, count)
                return
            yield Chunk(KIND_NAMES[code], ts, bytes(mv[off + CHUNK_HEAD_LEN : end]), off)
            last_ts = ts
            count += 1
            off = end + CRC_LEN


def read_capture(path: str) -> tuple[dict, list[Chunk], CaptureError | None]:
    """Header metadata, every intact chunk, and the damage that stopped reading (or None)."""
    reader = CaptureReader(path)
    chunks = list(reader.chunks())
    return reader.meta, chunks, reader.damage
