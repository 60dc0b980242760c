"""pyserial URL handler `replay://FILE?speed=X`: read a capture as if it were a port
(docs/REPLAY.md 4).

Registered by `host_tools/__init__.py`, which adds `host_tools` to
`serial.protocol_handler_packages`; after `import host_tools`, any pyserial tool can open
`serial.serial_for_url("replay:///path/cap.ecap?speed=10")`. Options: `speed=X` (0 = no
pacing), `loop=N`, `from=T`, `to=T`, `direction=rx|tx|both`. The clock starts at `open()`.
Writes are accepted and discarded (counted in `bytes_written`). A damaged capture replays
its intact prefix; the damage is in `.damage`.
"""

from __future__ import annotations

import time
import urllib.parse

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from host_tools.captures import replay
from host_tools.captures.capfile import CaptureError
from host_tools.errors import ToolError


class Serial(SerialBase):
    """A read-only serial port fed from a capture file with its timing scaled by `speed`."""

    def __init__(self, *args, **kwargs) -> None:
        self._items: list[tuple[int, bytes]] = []
        self._next = 0
        self._buf = bytearray()
        self._t0 = 0.0
        self.speed = 1.0
        self.damage: CaptureError | None = None
        self.meta: dict = {}
        self.bytes_written = 0
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        """Load the capture named by the URL and start its clock."""
        if self.is_open:
            raise SerialException("Port is already open.")
        if self.port is None:
            raise SerialException("Port must be configured before it can be used.")
        self._load(self.port)
        self._t0 = time.monotonic()
        self.is_open = True

    def _load(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "replay":
            raise SerialException(f"expected replay://FILE?speed=X, got {url!r}")
        path = urllib.parse.unquote(parts.netloc + parts.path)
        opts = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query, True).items()}
        unknown = set(opts) - {"speed", "loop", "from", "to", "direction"}
        if unknown:
            raise SerialException(f"replay://: unknown option(s) {', '.join(sorted(unknown))}")
        try:
            self.speed = float(opts.get("speed", 1.0))
            loop = int(opts.get("loop", 1))
            t_from = replay.parse_time(opts["from"]) if "from" in opts else None
            t_to = replay.parse_time(opts["to"]) if "to" in opts else None
            direction = opts.get("direction", "rx")
            kinds = ("rx", "tx") if direction == "both" else (direction,)
            self.meta, chunks, self.damage = replay.load([path])
        except (ValueError, ToolError) as e:
            raise SerialException(f"replay://: {e}") from None
        if self.speed < 0:
            raise SerialException("replay://: speed must be >= 0")
        self._items = replay.schedule(chunks, kinds, t_from, t_to, loop)
        self._next = 0
        self._buf = bytearray()

    def _release(self) -> float | None:
        """Move due chunks into the buffer; seconds until the next one (None: no more)."""
        now = time.monotonic() - self._t0
        while self._next < len(self._items):
            due_us, data = self._items[self._next]
            due = due_us / 1e6 / self.speed if self.speed else 0.0
            if due > now:
                return due - now
            self._buf += data
            self._next += 1
        return None

    def _reconfigure_port(self) -> None:
        """Port settings mean nothing for a capture; accepted as is."""

    @property
    def in_waiting(self) -> int:
        """Bytes due by now and not yet read."""
        if not self.is_open:
            raise PortNotOpenError()
        self._release()
        return len(self._buf)

    @property
    def exhausted(self) -> bool:
        """True once every byte of the capture has been read."""
        return self._next >= len(self._items) and not self._buf

    def read(self, size: int = 1) -> bytes:
        """Up to `size` bytes; waits for due bytes up to the timeout (forever if None).
        At the end of the capture it returns what is left (possibly b'') without waiting."""
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        out = bytearray()
        while True:
            wait = self._release()
            take = min(size - len(out), len(self._buf))
            out += self._buf[:take]
            del self._buf[:take]
            if len(out) >= size or wait is None:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            time.sleep(wait)
        return bytes(out)

    # pyserial's stubs take the 3.12 Buffer protocol here; any bytes-like object works
    def write(self, data: bytes) -> int:  # type: ignore[override]
        """Discard `data` (a capture cannot answer); returns its length."""
        if not self.is_open:
            raise PortNotOpenError()
        self.bytes_written += len(data)
        return len(data)

    def reset_input_buffer(self) -> None:
        """Drop bytes already due."""
        self._release()
        self._buf.clear()

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on output."""

    @property
    def out_waiting(self) -> int:
        return 0

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
