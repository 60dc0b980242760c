"""A Tuya MCU (the appliance side of the Tuya serial protocol), answering a Wi-Fi module.

Normal (mains-powered) protocol, module -> MCU commands: 0x00 heartbeat (first answer 0x00
after the MCU booted, then 0x01), 0x01 product info (JSON), 0x02 working mode, 0x03 Wi-Fi
status (acknowledged with an empty frame), 0x08 DP query (answered with DP reports, cmd 0x07).
"""

from __future__ import annotations

import struct

from host_tools.captures.appliances.faults import Faults
from host_tools.captures.appliances.framing import tuya_frame

PRODUCT = b'{"p":"abcdefgh12345678","v":"1.0.0","m":0}'


class TuyaMCU:
    """The MCU model: feed() takes module frames, returns the frames the MCU writes back.

    reports: DP report frames sent after each DP query, each preceded by `noise`.
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
    ) -> None:
        self.reports = list(reports)
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
        buf = self._buf + data
        out: list[bytes] = []
        while True:
            i = buf.find(b"\x55\xaa")
            if i < 0 or len(buf) - i < 7:
                buf = buf[i:] if i >= 0 else buf[-1:]
                break
            n = struct.unpack(">H", buf[i + 4 : i + 6])[0]
            if len(buf) - i < 7 + n:
                buf = buf[i:]
                break
            frame, buf = buf[i : i + 7 + n], buf[i + 7 + n :]
            if sum(frame[:-1]) & 0xFF != frame[-1]:
                continue
            self.cmds.append(frame[3])
            self.received.append(frame)
            for reply in self.answer(frame[3], frame[6:-1]):
                wire = self.faults.apply(self.faults.next(), reply)
                if wire is not None:
                    out.append(wire)
        self._buf = buf
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
        """Frames the MCU sends unasked by time `now` (none in this model)."""
        return []
