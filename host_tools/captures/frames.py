"""Count frames in a byte stream for capture/replay statistics (docs/REPLAY.md).

Two framings: the line protocol (`KEY=VALUE;...\\n`, one frame per LF) and Tuya MCU serial
frames (`55 AA ver cmd len16 data checksum`, checksum = sum of all previous bytes mod 256).
"auto" picks Tuya once a `55 AA` header with a valid length is seen, lines otherwise.
This is a counter for reports, not the agent's parser (that lives in edge/bus/).
"""

from __future__ import annotations

TUYA_HEAD = b"\x55\xaa"
TUYA_MIN = 7  # 55 AA ver cmd lenH lenL checksum
FRAMINGS = ("auto", "line", "tuya")


class FrameCounter:
    """Feed bytes, read `frames` (complete frames) and `bad` (Tuya checksum errors)."""

    def __init__(self, framing: str = "auto") -> None:
        if framing not in FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}")
        self.framing = framing
        self.frames = 0
        self.bad = 0
        self._pending = bytearray()

    def feed(self, data: bytes) -> int:
        """Count the frames completed by `data`; returns how many were added."""
        before = self.frames
        if self.framing == "auto":
            self._pending += data
            if TUYA_HEAD in self._pending:
                self.framing = "tuya"
                self._tuya(b"")
            elif b"\n" in self._pending:
                self.framing = "line"
                self._line(b"")
            elif len(self._pending) > 4096:
                del self._pending[:-1]
        elif self.framing == "line":
            self._line(data)
        else:
            self._tuya(data)
        return self.frames - before

    def _line(self, data: bytes) -> None:
        self._pending += data
        cut = self._pending.rfind(b"\n")
        if cut >= 0:
            self.frames += self._pending.count(b"\n", 0, cut + 1)
            del self._pending[: cut + 1]

    def _tuya(self, data: bytes) -> None:
        buf = self._pending
        buf += data
        pos = 0
        while True:
            start = buf.find(TUYA_HEAD, pos)
            if start < 0:
                pos = max(pos, len(buf) - 1)
                break
            if len(buf) - start < TUYA_MIN:
                pos = start
                break
            size = TUYA_MIN + (buf[start + 4] << 8 | buf[start + 5])
            if len(buf) - start < size:
                pos = start
                break
            if sum(buf[start : start + size - 1]) & 0xFF == buf[start + size - 1]:
                self.frames += 1
                pos = start + size
            else:
                self.bad += 1
                pos = start + 1
        del buf[:pos]
