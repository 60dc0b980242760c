"""Host-side appliance simulators for the bus tests: frame builders, a Tuya MCU and a Modbus RTU
slave that answer on the master side of a pty (the agent opens the slave side)."""

from __future__ import annotations

import os
import select
import struct
import threading
import time
import tty


def tuya_frame(cmd: int, data: bytes = b"", ver: int = 3) -> bytes:
    """One Tuya MCU serial frame: 55 AA ver cmd len16 data sum8."""
    head = bytes([0x55, 0xAA, ver, cmd]) + struct.pack(">H", len(data)) + data
    return head + bytes([sum(head) & 0xFF])


def tuya_dp(dpid: int, typ: int, value: bytes) -> bytes:
    """One DP unit: dpid type len16 value."""
    return bytes([dpid, typ]) + struct.pack(">H", len(value)) + value


def modbus_crc(data: bytes) -> bytes:
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def modbus_response(slave: int, fn: int, regs: list[int]) -> bytes:
    body = bytes([slave, fn, 2 * len(regs)]) + b"".join(
        struct.pack(">H", r & 0xFFFF) for r in regs
    )
    return body + modbus_crc(body)


def modbus_exception(slave: int, fn: int, code: int) -> bytes:
    body = bytes([slave, fn | 0x80, code])
    return body + modbus_crc(body)


class Pty:
    """A raw pty pair; `path` is what the agent opens (also symlinked to `link` when given)."""

    def __init__(self, link: str | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        if link:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(self.path, link)
            self.path = link

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if r else b""

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _Responder(threading.Thread):
    def __init__(self, pty: Pty) -> None:
        super().__init__(daemon=True)
        self.pty = pty
        self.stop = threading.Event()
        self.received: list[bytes] = []

    def run(self) -> None:
        buf = b""
        while not self.stop.is_set():
            try:
                chunk = self.pty.read(0.05)
            except OSError:
                return
            if chunk:
                buf = self.handle(buf + chunk)

    def handle(self, buf: bytes) -> bytes:  # pragma: no cover - overridden
        return b""


class TuyaMCUSim(_Responder):
    """Answers the module's heartbeat (0x00 first, then 0x01), product query, working-mode query
    and DP query; after the DP query it sends `reports` (frames), with `noise` between them."""

    def __init__(self, pty: Pty, reports: list[bytes], noise: bytes = b"") -> None:
        super().__init__(pty)
        self.reports = reports
        self.noise = noise
        self.heartbeats = 0
        self.cmds: list[int] = []

    def handle(self, buf: bytes) -> bytes:
        while True:
            i = buf.find(b"\x55\xaa")
            if i < 0 or len(buf) - i < 7:
                return buf[i:] if i >= 0 else b""
            n = struct.unpack(">H", buf[i + 4 : i + 6])[0]
            if len(buf) - i < 7 + n:
                return buf[i:]
            frame, buf = buf[i : i + 7 + n], buf[i + 7 + n :]
            cmd = frame[3]
            self.cmds.append(cmd)
            if cmd == 0x00:
                self.pty.write(tuya_frame(0x00, b"\x00" if self.heartbeats == 0 else b"\x01"))
                self.heartbeats += 1
            elif cmd == 0x01:
                self.pty.write(tuya_frame(0x01, b'{"p":"abcdefgh12345678","v":"1.0.0","m":0}'))
            elif cmd == 0x02:
                self.pty.write(tuya_frame(0x02))
            elif cmd == 0x03:
                self.pty.write(tuya_frame(0x03))
            elif cmd == 0x08:
                for r in self.reports:
                    self.pty.write(self.noise + r)


class ModbusSlaveSim(_Responder):
    """Answers fn 3/4 reads from `regs` (address -> u16). `drop_first` requests get no answer
    (timeout path); addresses in `illegal` give exception 2; `busy_first` answers exception 6."""

    def __init__(
        self,
        pty: Pty,
        slave: int,
        regs: dict[int, int],
        drop_first: int = 0,
        illegal: tuple[int, ...] = (),
        busy_first: int = 0,
    ) -> None:
        super().__init__(pty)
        self.slave = slave
        self.regs = regs
        self.drop = drop_first
        self.busy = busy_first
        self.illegal = illegal
        self.requests = 0

    def handle(self, buf: bytes) -> bytes:
        while len(buf) >= 8:
            req, buf = buf[:8], buf[8:]
            if modbus_crc(req[:6]) != req[6:] or req[0] != self.slave:
                continue
            self.requests += 1
            fn = req[1]
            addr, count = struct.unpack(">HH", req[2:6])
            if self.drop > 0:
                self.drop -= 1
                continue
            time.sleep(0.002)
            if self.busy > 0:
                self.busy -= 1
                self.pty.write(modbus_exception(self.slave, fn, 6))
            elif addr in self.illegal:
                self.pty.write(modbus_exception(self.slave, fn, 2))
            else:
                regs = [self.regs.get(a, 0) for a in range(addr, addr + count)]
                self.pty.write(modbus_response(self.slave, fn, regs))
        return buf
