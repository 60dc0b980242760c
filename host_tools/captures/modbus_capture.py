"""Modbus RTU exchanges from a capture, for replay into the agent (docs/REPLAY.md 3.1).

A capture may hold the master's side (requests tx, replies rx), a passive sniff (both rx,
interleaved) or only the replies. Frames are found by their structure and CRC ("MODBUS over
Serial Line V1.02" 2.5.1): a request is 8 bytes (slave, fn 3/4, addr, count, CRC), a response
5 + byte count, an exception 5. Bytes that form no valid frame are a bad frame up to the next
valid frame boundary or the next silent gap (t3.5) on the line, whichever comes first: the parse
resynchronises there, so one bad CRC never loses the replies after it. A bad frame right after
a request is kept as that request's reply (the master saw it, the replay serves it again).

Each request is paired with the reply that follows it; a request followed by another request
timed out. A reply without a request (a reply-only capture) is matched later by slave, function
and register count only.
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from dataclasses import dataclass, field

from edge import wire
from host_tools.captures import capfile

MAX_REPLY = wire.SERVE_MAX  # a reply longer than the serve record holds is not kept


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc_ok(buf: bytes, start: int, end: int) -> bool:
    """CRC-16/MODBUS over buf[start:end-2] equals its last two bytes (low byte first)."""
    c = 0xFFFF
    for b in buf[start : end - 2]:
        c = (c >> 8) ^ _TABLE[(c ^ b) & 0xFF]
    return buf[end - 2] == c & 0xFF and buf[end - 1] == c >> 8


def frame_at(buf: bytes, p: int) -> tuple[str, int] | None:
    """("request" | "response" | "exception", length) of a valid frame at p, or None."""
    n = len(buf) - p
    if n < 5:
        return None
    fn = buf[p + 1]
    if fn in (3, 4):
        if n >= 8 and crc_ok(buf, p, p + 8):
            return "request", 8
        bc = buf[p + 2]
        if bc and not bc & 1 and n >= 5 + bc and crc_ok(buf, p, p + 5 + bc):
            return "response", 5 + bc
    elif fn in (0x83, 0x84) and crc_ok(buf, p, p + 5):
        return "exception", 5
    return None


@dataclass
class Exchange:
    """One request (or a reply-only frame) of the capture and what answered it."""

    t_ms: int
    slave: int
    fn: int
    addr: int | None
    count: int | None
    reply: bytes | None  # None: the master timed out
    latency_ms: int
    kind: str  # "ok", "exception", "bad", "timeout"

    def key(self) -> str:
        a = "?" if self.addr is None else self.addr
        c = "?" if self.count is None else self.count
        return f"slave {self.slave} fn {self.fn} addr {a} count {c}"


@dataclass
class Parsed:
    exchanges: list[Exchange] = field(default_factory=list)
    requests: int = 0
    responses: int = 0
    exceptions: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    bytes: int = 0

    @property
    def frames(self) -> int:
        return self.requests + self.responses + self.exceptions + self.bad_frames

    def summary(self) -> dict:
        kinds = Counter(x.kind for x in self.exchanges)
        return {
            "frames": self.frames,
            "requests": self.requests,
            "responses": self.responses,
            "exceptions": self.exceptions,
            "bad_frames": self.bad_frames,
            "timeouts": kinds["timeout"],
            "reply_only": sum(1 for x in self.exchanges if x.addr is None),
            "garbage_bytes": self.garbage_bytes,
            "keys": dict(Counter(x.key() for x in self.exchanges).most_common(8)),
        }


def gap_us(meta: dict) -> int:
    """The t3.5 silent interval at the capture's baud rate (1.75 ms above 19200 baud)."""
    baud = int(meta.get("baudrate") or 9600)
    return 1750 if baud > 19200 else 35 * 11 * 1_000_000 // (10 * baud)


def parse(items: list[tuple[int, bytes]], gap: int) -> Parsed:
    """Exchanges in `items` ((ts_us, bytes) of both directions, in time order)."""
    buf = b"".join(d for _, d in items)
    offs: list[int] = []  # where each non-empty chunk starts in buf, and its time
    times: list[int] = []
    cut = set()  # byte positions that start after a silent gap
    pos = 0
    for t, d in items:
        if not d:
            continue
        if times and t - times[-1] >= gap:
            cut.add(pos)
        offs.append(pos)
        times.append(t)
        pos += len(d)

    def ts_at(p: int) -> int:
        return times[bisect.bisect_right(offs, p) - 1]

    out = Parsed(bytes=len(buf))
    pending: tuple[int, bytes] | None = None  # (position, request bytes)
    lead = b""  # noise since the last frame: served in front of the reply it preceded

    def attach(p: int, frame: bytes, kind: str) -> None:
        nonlocal pending, lead
        own = frame
        frame, lead = (lead + frame)[-MAX_REPLY:], b""
        t = ts_at(p) // 1000
        if pending is not None and own[0] == pending[1][0]:
            q, req = pending
            addr, count = struct.unpack(">HH", req[2:6])
            lat = max(1, (ts_at(p) - ts_at(q)) // 1000)
            out.exchanges.append(
                Exchange(ts_at(q) // 1000, req[0], req[1], addr, count, frame, lat, kind)
            )
            pending = None
            return
        fn = own[1] & 0x7F if len(own) > 1 else 0
        count = None
        if kind == "ok" or (kind == "bad" and len(own) > 2 and own[1] in (3, 4)):
            count = own[2] // 2
        lat = 1 + len(frame) * 11 * 1000 // 9600  # unknown: the frame's time on the line
        out.exchanges.append(Exchange(t, own[0], fn, None, count, frame, lat, kind))

    def timed_out() -> None:
        nonlocal pending
        if pending is not None:
            q, req = pending
            addr, count = struct.unpack(">HH", req[2:6])
            out.exchanges.append(
                Exchange(ts_at(q) // 1000, req[0], req[1], addr, count, None, 0, "timeout")
            )
            pending = None

    p = 0
    n = len(buf)
    while p < n:
        f = frame_at(buf, p)
        if f is not None:
            kind, length = f
            if kind == "request":
                out.requests += 1
                timed_out()
                lead = b""  # noise before a request answers nothing
                pending = (p, buf[p : p + 8])
            elif kind == "response":
                out.responses += 1
                attach(p, buf[p : p + length], "ok")
            else:
                out.exceptions += 1
                attach(p, buf[p : p + length], "exception")
            p += length
            continue
        q = p + 1
        while q < n and q not in cut and frame_at(buf, q) is None:
            q += 1
        bad = buf[p:q]
        expected = pending is not None and bad[0] == pending[1][0]
        plausible = len(bad) >= 3 and bad[1] in (3, 4, 0x83, 0x84)
        if (expected or (pending is None and plausible)) and len(bad) <= MAX_REPLY:
            out.bad_frames += 1
            attach(p, bad, "bad")
        else:
            out.garbage_bytes += len(bad)
            lead += bad
        p = q
    timed_out()
    return out


def write_serve(path: str, parsed: Parsed, base_ms: int = 0) -> int:
    """The serve file for edge/hal/unix/replay_serve.py; returns the number of exchanges."""
    with open(path, "wb") as f:
        for x in parsed.exchanges:
            flags = (wire.SERVE_ANY_ADDR if x.addr is None else 0) | (
                wire.SERVE_ANY_COUNT if x.count is None else 0
            )
            if x.reply is None:
                flags |= wire.SERVE_NO_REPLY
            f.write(
                wire.serve_record(
                    max(0, x.t_ms - base_ms),
                    min(x.latency_ms, 0xFFFF),
                    flags,
                    x.slave,
                    x.fn,
                    x.addr or 0,
                    x.count or 0,
                    x.reply or b"",  # at most MAX_REPLY by construction
                )
            )
    return len(parsed.exchanges)


def from_chunks(
    chunks: list[capfile.Chunk], meta: dict, lo_us: int = 0, hi_us: int | None = None
) -> Parsed:
    """Parse the rx and tx chunks of a capture within [lo_us, hi_us)."""
    items = [
        (c.ts_us, c.data)
        for c in chunks
        if c.kind in ("rx", "tx") and c.ts_us >= lo_us and (hi_us is None or c.ts_us < hi_us)
    ]
    items.sort(key=lambda it: it[0])  # stable: same-time chunks keep their file order
    return parse(items, gap_us(meta))
