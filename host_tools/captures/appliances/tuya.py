"""Tuya MCUs (the appliance side of the Tuya serial protocol), answering a Wi-Fi module.

`TuyaMCU`: the normal (mains-powered) protocol, module -> MCU commands: 0x00 heartbeat (first
answer 0x00 after the MCU booted, then 0x01), 0x01 product info (JSON), 0x02 working mode,
0x03 Wi-Fi status (acknowledged with an empty frame), 0x08 DP query (answered with DP reports,
cmd 0x07). `LowPowerSensor`: the low-power protocol, where the MCU drives the session.
"""

from __future__ import annotations

import struct

from host_tools.captures.appliances.faults import Faults
from host_tools.captures.appliances.framing import tuya_frame

PRODUCT = b'{"p":"abcdefgh12345678","v":"1.0.0","m":0}'


def split_frames(buf: bytes) -> tuple[list[bytes], bytes]:
    """The checksum-valid frames in `buf` and the unparsed rest (a frame still arriving)."""
    frames: list[bytes] = []
    while True:
        i = buf.find(b"\x55\xaa")
        if i < 0 or len(buf) - i < 7:
            return frames, (buf[i:] if i >= 0 else buf[-1:])
        n = struct.unpack(">H", buf[i + 4 : i + 6])[0]
        if len(buf) - i < 7 + n:
            return frames, buf[i:]
        frame, buf = buf[i : i + 7 + n], buf[i + 7 + n :]
        if sum(frame[:-1]) & 0xFF == frame[-1]:
            frames.append(frame)


class TuyaMCU:
    """The MCU model: feed() takes module frames, returns the frames the MCU writes back.

    reports: DP report frames sent after each DP query, each preceded by `noise`, and every
    `report_s` seconds once the module's first heartbeat was answered (0: only when asked).
    mode: the working-mode answer's data (b"": module self-processing; two bytes, the LED and
    reset GPIOs: MCU cooperation). Every frame the MCU writes passes through `faults`."""

    reply_delay = 0.0

    def __init__(
        self,
        reports: list[bytes] = (),  # type: ignore[assignment]
        noise: bytes = b"",
        product: bytes = PRODUCT,
        mode: bytes = b"",
        faults: Faults | None = None,
        report_s: float = 0.0,
    ) -> None:
        self.reports = list(reports)
        self.report_s = report_s
        self._next_report = 0.0
        self.noise = noise
        self.product = product
        self.mode = mode
        self.faults = faults or Faults()
        self.heartbeats = 0
        self.cmds: list[int] = []  # commands received from the module, in order
        self.received: list[bytes] = []  # the module's frames
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the module; returns the MCU's frames, in order."""
        frames, self._buf = split_frames(self._buf + data)
        out: list[bytes] = []
        for frame in frames:
            self.cmds.append(frame[3])
            self.received.append(frame)
            out += self._send(self.answer(frame[3], frame[6:-1]))
        return out

    def _send(self, frames: list[bytes]) -> list[bytes]:
        out = []
        for frame in frames:
            wire = self.faults.apply(self.faults.next(), frame)
            if wire is not None:
                out.append(wire)
        return out

    def answer(self, cmd: int, data: bytes) -> list[bytes]:
        """The MCU's frames for one module command (before faults)."""
        if cmd == 0x00:
            self.heartbeats += 1
            return [tuya_frame(0x00, b"\x00" if self.heartbeats == 1 else b"\x01")]
        if cmd == 0x01:
            return [tuya_frame(0x01, self.product)]
        if cmd == 0x02:
            return [tuya_frame(0x02, self.mode)]
        if cmd == 0x03:
            return [tuya_frame(0x03)]
        if cmd == 0x08:
            return [self.noise + r for r in self.reports]
        return []

    def due(self, now: float) -> list[bytes]:
        """DP reports the MCU sends unasked by time `now` (every `report_s` seconds)."""
        if not self.report_s or not self.heartbeats or now < self._next_report:
            return []
        self._next_report = now + self.report_s
        return self._send([self.noise + r for r in self.reports])


class LowPowerSensor:
    """A battery sensor's MCU on the Tuya low-power ("Wi-Fi power-off") protocol: it answers
    the module's product query (frames ver 0x00, as these MCUs send), acknowledges the Wi-Fi
    status and, once the module says "connected to the cloud" (0x04), asks for the local time
    (0x06) and the DP cache (0x10), then sends each of `reports` ((cmd, data): 0x05 real-time
    DPs, or 0x08 with a 7-byte time first) after the module acknowledged the previous one."""

    reply_delay = 0.0

    def __init__(self, reports: list[tuple[int, bytes]], product: bytes = PRODUCT) -> None:
        self.reports = list(reports)
        self.product = product
        self.cmds: list[int] = []
        self.answers: dict[int, list[bytes]] = {}  # module frames by command: data
        self._buf = b""
        self._queue: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        frames, self._buf = split_frames(self._buf + data)
        out: list[bytes] = []
        for frame in frames:
            cmd, body = frame[3], frame[6:-1]
            self.cmds.append(cmd)
            self.answers.setdefault(cmd, []).append(body)
            if cmd == 0x01:
                out.append(tuya_frame(0x01, self.product, ver=0))
            elif cmd == 0x02:
                out.append(tuya_frame(0x02, ver=0))
                if body == b"\x04" and not self._queue:
                    self._queue = [tuya_frame(0x06, ver=0), tuya_frame(0x10, b"\x00", ver=0)]
                    self._queue += [tuya_frame(c, d, ver=0) for c, d in self.reports]
                    out.append(self._queue.pop(0))
            elif self._queue and cmd in (0x05, 0x06, 0x08, 0x10):
                out.append(self._queue.pop(0))  # the previous one was answered
        return out

    def due(self, now: float) -> list[bytes]:
        return []
