"""Frame builders for the appliance protocols, as the appliance side writes them.

Tuya MCU serial protocol: `55 AA ver cmd len16 data sum8` (sum8 of every earlier byte).
Modbus RTU ("MODBUS over Serial Line V1.02" 2.5): `slave fn data crc16`, CRC low byte first.
"""

from __future__ import annotations

import struct


def tuya_frame(cmd: int, data: bytes = b"", ver: int = 3) -> bytes:
    """One Tuya serial frame; the MCU writes ver 0x03, the module ver 0x00."""
    head = bytes((0x55, 0xAA, ver, cmd)) + struct.pack(">H", len(data)) + data
    return head + bytes((sum(head) & 0xFF,))


def tuya_dp(dpid: int, dtype: int, value: bytes) -> bytes:
    """One DP unit: dpid u8, type u8, len u16 BE, value."""
    return struct.pack(">BBH", dpid, dtype, len(value)) + value


def modbus_crc(data: bytes) -> bytes:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), as the two bytes sent on the wire."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def modbus_request(slave: int, fn: int, addr: int, count: int) -> bytes:
    """A read request (fn 3 holding / fn 4 input registers)."""
    body = struct.pack(">BBHH", slave, fn, addr, count)
    return body + modbus_crc(body)


def modbus_response(slave: int, fn: int, regs: list[int]) -> bytes:
    """A normal read response carrying `regs` (u16 each)."""
    body = bytes((slave, fn, 2 * len(regs))) + b"".join(
        struct.pack(">H", r & 0xFFFF) for r in regs
    )
    return body + modbus_crc(body)


def modbus_exception(slave: int, fn: int, code: int) -> bytes:
    """An exception response (Application Protocol 7): fn | 0x80, one code byte."""
    body = bytes((slave, fn | 0x80, code))
    return body + modbus_crc(body)


def corrupt_check(frame: bytes) -> bytes:
    """The same frame with its last check byte inverted (bad CRC / bad sum8)."""
    return frame[:-1] + bytes((frame[-1] ^ 0xFF,))
