"""A Modbus RTU slave: answers read requests (fn 3 holding, fn 4 input registers) from a
register table, with the exceptions and faults a real meter shows.

Requests are found in the byte stream by their CRC ("MODBUS over Serial Line V1.02" 2.5.1.2):
a window that is not a valid request addressed to this slave slides by one byte, so a request
after line noise is still answered. Exception codes: Application Protocol 7 (2 illegal data
address, 6 server device busy).
"""

from __future__ import annotations

import struct

from host_tools.captures.appliances.faults import Faults
from host_tools.captures.appliances.framing import (
    modbus_crc,
    modbus_exception,
    modbus_response,
)

REQUEST_LEN = 8
EXC_ILLEGAL_ADDRESS = 2
EXC_BUSY = 6


class ModbusSlave:
    """The slave model: feed() takes what the master wrote, returns the frames to answer.

    regs: address -> u16 for fn 3 (and fn 4 unless `input_regs` is given); the caller may
    change it between requests (a meter whose readings move). Addresses in `illegal` answer
    exception 2. `drop_first` / `busy_first` requests get no answer / exception 6 (shorthand for
    the faults `timeout@0..` / `busy@0..`)."""

    reply_delay = 0.002  # seconds between the end of a request and the reply

    def __init__(
        self,
        slave: int,
        regs: dict[int, int],
        input_regs: dict[int, int] | None = None,
        illegal: tuple[int, ...] = (),
        faults: Faults | None = None,
        drop_first: int = 0,
        busy_first: int = 0,
    ) -> None:
        self.slave = slave
        self.regs = regs
        self.input_regs = input_regs
        self.illegal = illegal
        self.faults = faults or Faults()
        for i in range(drop_first):
            self.faults.at.setdefault(i, "timeout")
        for i in range(drop_first, drop_first + busy_first):
            self.faults.at.setdefault(i, "busy")
        self.requests = 0  # valid requests addressed to this slave
        self.answered = 0
        self.log: list[tuple[bytes, bytes | None]] = []  # (request, what went on the wire)
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the master; returns the replies to write, in order."""
        buf = self._buf + data
        out = []
        while len(buf) >= REQUEST_LEN:
            req = buf[:REQUEST_LEN]
            if req[0] != self.slave or modbus_crc(req[:6]) != req[6:]:
                buf = buf[1:]
                continue
            buf = buf[REQUEST_LEN:]
            reply = self.answer(req)
            if reply is not None:
                out.append(reply)
        self._buf = buf[-(REQUEST_LEN - 1) :] if buf else b""
        return out

    def answer(self, req: bytes) -> bytes | None:
        """The wire bytes for one valid request (None: the fault plan says stay silent)."""
        self.requests += 1
        fn = req[1]
        addr, count = struct.unpack(">HH", req[2:6])
        kind = self.faults.next()
        if kind == "busy":
            wire: bytes | None = modbus_exception(self.slave, fn, EXC_BUSY)
        elif fn not in (3, 4):
            wire = modbus_exception(self.slave, fn, 1)  # illegal function
        elif any(a in self.illegal for a in range(addr, addr + count)):
            wire = modbus_exception(self.slave, fn, EXC_ILLEGAL_ADDRESS)
        else:
            table = self.input_regs if fn == 4 and self.input_regs is not None else self.regs
            regs = [table.get(a, 0) for a in range(addr, addr + count)]
            wire = self.faults.apply(kind, modbus_response(self.slave, fn, regs))
        self.log.append((req, wire))
        if wire is not None:
            self.answered += 1
        return wire

    def due(self, now: float) -> list[bytes]:
        """A slave never speaks unasked."""
        return []
