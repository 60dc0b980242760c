"""`edgectl replay`: play a capture back into a pty, a port, or the agent (docs/REPLAY.md).

Bytes go out with their captured timing scaled by `--speed` (or as fast as possible with
`--fast`); at the end the tool reports the timing error. `--agent BOARD` runs the real agent
under unix MicroPython with a virtual clock instead (host_tools/agent/replay.py).
"""

from __future__ import annotations

import fcntl
import contextlib
import hashlib
import json
import os
import re
import select
import statistics
import sys
import termios
import time
import tty
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

from host_tools.captures import capfile
from host_tools.captures.frames import FrameCounter
from host_tools.errors import ToolError

PTY_POLL_S = 0.02


def parse_time(text: str) -> float:
    """Seconds from `90`, `1.5`, `1:30`, `01:02:03`, `2h`, `5m`, `30s` or `1h2m3s`."""
    text = text.strip()
    try:
        if ":" in text:
            total = 0.0
            for part in text.split(":"):
                total = total * 60 + float(part)
            return total
        return float(text)
    except ValueError:
        pass
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or m is None:
        raise ToolError(f"bad time {text!r} (use seconds, MM:SS, HH:MM:SS or 1h2m3s)")
    h, mi, s = (float(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def load(paths: list[str]) -> tuple[dict, list[capfile.Chunk], capfile.CaptureError | None]:
    """Read capture files (rotation parts in order); stops at the first damage, which is
    returned (not raised) so the intact prefix can still be replayed."""
    meta: dict = {}
    chunks: list[capfile.Chunk] = []
    for i, path in enumerate(paths):
        try:
            m, part, damage = capfile.read_capture(path)
        except OSError as e:
            raise ToolError(f"cannot read {path}: {e.strerror}") from None
        if i == 0:
            meta = m
        chunks.extend(part)
        if damage is not None:
            return meta, chunks, damage
    return meta, chunks, None


def schedule(
    chunks: Iterable[capfile.Chunk],
    kinds: tuple[str, ...] = ("rx",),
    t_from: float | None = None,
    t_to: float | None = None,
    loop: int = 1,
) -> list[tuple[int, bytes]]:
    """(due_us, data) pairs to send: chunks of `kinds` within [t_from, t_to) seconds,
    rebased to start at 0, repeated `loop` times (each repeat starts one median gap after
    the previous one ends)."""
    lo = int((t_from or 0) * 1e6)
    hi = None if t_to is None else int(t_to * 1e6)
    picked = [
        c for c in chunks if c.kind in kinds and c.ts_us >= lo and (hi is None or c.ts_us < hi)
    ]
    if not picked:
        return []
    base = picked[0].ts_us if t_from is None else lo
    one = [(c.ts_us - base, c.data) for c in picked]
    gaps = [b[0] - a[0] for a, b in zip(one, one[1:], strict=False)]
    period = one[-1][0] + (int(statistics.median(gaps)) if gaps else 0)
    out: list[tuple[int, bytes]] = []
    for k in range(max(1, loop)):
        out.extend((ts + k * period, data) for ts, data in one)
    return out


@dataclass
class TimingReport:
    """How closely the output followed the schedule. `span_error` is the relative error of the
    whole run's duration; lateness is per chunk (actual minus scheduled send time)."""

    chunks: int = 0
    bytes: int = 0
    seconds: float = 0.0
    scheduled_seconds: float = 0.0
    span_error: float = 0.0
    late_median_ms: float = 0.0
    late_p95_ms: float = 0.0
    late_max_ms: float = 0.0

    def line(self) -> str:
        """One human-readable summary line."""
        return (
            f"timing error: {self.span_error * 100:.2f}% over {self.scheduled_seconds:.3f} s "
            f"scheduled ({self.seconds:.3f} s actual); per-chunk lateness median "
            f"{self.late_median_ms:.2f} ms, p95 {self.late_p95_ms:.2f} ms, "
            f"max {self.late_max_ms:.2f} ms"
        )


def pace(
    items: list[tuple[int, bytes]],
    write: Callable[[bytes], object],
    speed: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TimingReport:
    """Call `write(data)` for each item at `due_us / speed` after the start (`speed` None:
    as fast as possible); returns the timing report."""
    rep = TimingReport()
    late: list[float] = []
    t0 = clock()
    first = last = 0.0
    for n, (due_us, data) in enumerate(items):
        due = 0.0 if not speed else due_us / 1e6 / speed
        if speed:
            wait = t0 + due - clock()
            if wait > 0:
                sleep(wait)
        write(data)
        now = clock() - t0
        if not n:
            first = now
        last = now
        late.append((now - due) * 1000)
        rep.chunks += 1
        rep.bytes += len(data)
    rep.seconds = clock() - t0
    if items:
        rep.scheduled_seconds = 0.0 if not speed else (items[-1][0] - items[0][0]) / 1e6 / speed
        if rep.scheduled_seconds > 0:
            rep.span_error = abs((last - first) - rep.scheduled_seconds) / rep.scheduled_seconds
        late.sort()
        rep.late_median_ms = statistics.median(late)
        rep.late_p95_ms = late[min(len(late) - 1, int(len(late) * 0.95))]
        rep.late_max_ms = late[-1]
    return rep


class PtyOut:
    """A pty whose slave end is linked at `link`; `write` feeds the master.

    The slave stays closed on our side so the master reports POLLHUP until a reader opens
    the link; `wait_reader` uses that to start the replay only once someone listens
    (set the slave raw before writing, or the line discipline edits the bytes).
    """

    def __init__(self, link: str) -> None:
        self.link = link
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.name = os.ttyname(slave)
        os.close(slave)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(self.name, link)

    def reader_attached(self) -> bool:
        """True while some process has the slave open."""
        p = select.poll()
        p.register(self.master, select.POLLHUP)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def wait_reader(self, timeout: float) -> None:
        """Block until a reader opens the link; ToolError after `timeout` seconds."""
        end = time.monotonic() + timeout
        while not self.reader_attached():
            if time.monotonic() > end:
                raise ToolError(f"nobody opened {self.link} within {timeout:g} s")
            time.sleep(PTY_POLL_S)

    def write(self, data: bytes) -> None:
        """Write all of `data` to the master (blocks while the pty buffer is full)."""
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def drain(self, timeout: float = 2.0) -> None:
        """Wait until the reader took everything we wrote (or left), up to `timeout`.

        Closing the master discards what the reader has not read yet. Bytes written to the
        master reach the slave's input queue (TIOCINQ) asynchronously, so the queue must be
        seen empty twice, PTY_POLL_S apart, after a first pause."""
        end = time.monotonic() + timeout
        buf = bytearray(4)
        fd = os.open(self.name, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        empty = 0
        try:
            while empty < 2 and time.monotonic() < end:
                time.sleep(PTY_POLL_S)
                fcntl.ioctl(fd, termios.TIOCINQ, buf)  # bytes waiting in the slave's input
                empty = empty + 1 if int.from_bytes(buf, sys.byteorder) == 0 else 0
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the master and remove the link."""
        os.close(self.master)
        if os.path.islink(self.link) and os.readlink(self.link) == self.name:
            os.unlink(self.link)


@dataclass
class ReplayResult:
    """Summary of a replay; `to_json()` is the `--json` line (docs/REPLAY.md 3)."""

    frames: int = 0
    readings: int | None = None
    seconds: float = 0.0
    digest: str = ""
    bytes: int = 0
    chunks: int = 0
    timing: TimingReport | None = None
    damage: dict | None = None
    inputs: dict | None = None  # --agent: per-input counters and byte ledgers at the end
    modbus: dict | None = None  # --agent, Modbus: the capture's frames and what was served
    why: list | None = None  # --agent: why no (or too few) readings came out, in words
    health_inputs: dict | None = None  # --agent: `inputs` of the agent's last status message

    def to_json(self) -> str:
        """The JSON summary line."""
        return json.dumps(asdict(self), sort_keys=True)


def damage_dict(damage: capfile.CaptureError | None) -> dict | None:
    """The damage as a JSON-friendly dict (file, offset, reason, intact chunks)."""
    if damage is None:
        return None
    return {
        "file": damage.path,
        "offset": damage.offset,
        "reason": damage.reason,
        "intact_chunks": damage.intact,
    }


@contextlib.contextmanager
def progress_bar(total: float, label: str = "replay"):
    """A progress bar on stderr while the block runs, when stderr is a terminal (a script's
    output stays clean): yields `update(done, text)`; the bar shows the time left."""
    if not sys.stderr.isatty():
        yield lambda done, text="": None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.fields[at]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=max(total, 1), at="")
        yield lambda done, text="": bar.update(task, completed=min(done, total), at=text)


def replay_items(
    items: list[tuple[int, bytes]],
    write: Callable[[bytes], object],
    speed: float | None,
    framing: str = "auto",
) -> ReplayResult:
    """Pace `items` into `write`, counting frames and hashing the bytes sent (a progress bar
    of the capture time sent on a terminal)."""
    counter = FrameCounter(framing)
    digest = hashlib.sha256()
    span_s = items[-1][0] / 1e6 if items else 0.0
    sent = [0]

    def out(data: bytes) -> None:
        write(data)
        counter.feed(data)
        digest.update(data)
        at = items[min(sent[0], len(items) - 1)][0] / 1e6
        sent[0] += 1
        show(at, f"{at:.0f} of {span_s:.0f} s of capture")

    t0 = time.monotonic()
    with progress_bar(span_s) as show:
        timing = pace(items, out, speed)
    return ReplayResult(
        frames=counter.frames,
        seconds=time.monotonic() - t0,
        digest=digest.hexdigest(),
        bytes=timing.bytes,
        chunks=timing.chunks,
        timing=timing,
    )


def replay_to_pty(
    items: list[tuple[int, bytes]],
    link: str,
    speed: float | None,
    wait: float = 30.0,
    framing: str = "auto",
    announce: Callable[[str], None] | None = None,
    settle: float = 0.2,
) -> ReplayResult:
    """Create a pty at `link`, wait for a reader (then `settle` seconds), replay, let the
    reader drain, close."""
    out = PtyOut(link)
    try:
        if announce:
            announce(f"pty {out.name} linked at {link}; waiting for a reader")
        out.wait_reader(wait)
        # pyserial's open() flushes the input queue after opening the device: give the
        # reader a moment so the first chunk is not discarded by that flush.
        time.sleep(settle)
        result = replay_items(items, out.write, speed, framing)
        out.drain()
        return result
    finally:
        out.close()


def replay_to_port(
    items: list[tuple[int, bytes]],
    url: str,
    speed: float | None,
    baudrate: int,
    framing: str = "auto",
) -> ReplayResult:
    """Open `url` with pyserial and replay into it."""
    from host_tools.captures.capture import open_port

    ser = open_port(url, baudrate)
    try:
        result = replay_items(items, ser.write, speed, framing)
        ser.flush()
        return result
    finally:
        ser.close()
