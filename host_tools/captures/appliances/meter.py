"""A power meter on Modbus RTU, polled by a master that behaves like the agent's
(edge/bus/modbus.py: one request at a time, timeout, retries, busy retried), for synthetic
captures with faults (`edgectl simulate meter`).

Registers (slave 1): input registers 0-1 voltage (float32, ABCD), 2-3 current (float32, CDAB:
low word first), 4-5 energy in Wh (u32); holding register 100 the cabinet temperature in 0.1 degF
(i16), 101 a status word (bit 0 running, bits 4-6 the tariff). Every value changes at every poll,
so a reply served twice or to the wrong request shows in the readings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Iterator

from host_tools.captures.appliances.faults import Faults
from host_tools.captures.appliances.framing import modbus_crc, modbus_request
from host_tools.captures.appliances.modbus import ModbusSlave

SLAVE = 1
READS: list[dict[str, Any]] = [
    {
        "fn": 4,
        "addr": 0,
        "count": 6,
        "map": {
            "0": {"ch": 1, "type": "f32"},
            "2": {"ch": 2, "type": "f32", "swap": "word"},
            "4": {"ch": 3, "type": "u32"},
        },
    },
    {
        "fn": 3,
        "addr": 100,
        "count": 2,
        "map": {
            "100": {"ch": 4, "type": "i16", "scale": 5 / 9, "offset": -160 / 9},
            "101": [{"ch": 5, "bit": 0}, {"ch": 6, "bits": [4, 3]}],
        },
    },
]
CHANNELS = [
    {"id": 1, "name": "voltage", "category": "essential", "unit": "V", "decimals": 1},
    {"id": 2, "name": "current", "category": "essential", "unit": "A", "decimals": 3},
    {"id": 3, "name": "energy", "category": "essential", "unit": "Wh"},
    {"id": 4, "name": "cabinet_temp", "category": "essential", "unit": "°C", "decimals": 2},
    {"id": 5, "name": "running", "category": "essential"},
    {"id": 6, "name": "tariff", "category": "essential"},
]


def device_config(interval_ms: int, timeout_ms: int = 300, retries: int = 2) -> dict:
    """The device config that maps the meter's registers (the capture's sidecar)."""
    return {
        "device_id": "meter-replay",
        "channels": [dict(c) for c in CHANNELS],
        "inputs": [
            {
                "type": "modbus",
                "uart": "appliance",
                "slave": SLAVE,
                "interval_ms": interval_ms,
                "timeout_ms": timeout_ms,
                "retries": retries,
                "reads": READS,
            }
        ],
    }


def _f32_words(x: float, low_first: bool = False) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [lo, hi] if low_first else [hi, lo]


def registers(poll: int) -> tuple[dict[int, int], dict[int, int]]:
    """(input registers, holding registers) at poll number `poll`."""
    volts = 229.5 + (poll % 7) * 0.25  # exact in float32
    amps = 1.5 + (poll % 5) * 0.125
    energy = 100_000 + 37 * poll
    inputs = dict(enumerate(_f32_words(volts) + _f32_words(amps, True)))
    inputs[4], inputs[5] = energy >> 16, energy & 0xFFFF
    temp_df = 700 + 5 * (poll % 9)  # 70.0 .. 74.0 degF
    status = 1 | (((poll % 3) + 1) << 4) | 0x0100  # bit 8: a flag nobody maps
    return inputs, {100: temp_df, 101: status}


def readings(poll: int, read: int) -> list[tuple[int, int]]:
    """The (channel, stored value) pairs a good reply to `read` at `poll` decodes to."""
    inputs, holding = registers(poll)
    if read == 0:
        volts = struct.unpack(">f", struct.pack(">HH", inputs[0], inputs[1]))[0]
        amps = struct.unpack(">f", struct.pack(">HH", inputs[3], inputs[2]))[0]
        return [(1, round(volts * 10)), (2, round(amps * 1000)), (3, inputs[4] << 16 | inputs[5])]
    temp_c = holding[100] * 5 / 9 - 160 / 9
    st = holding[101]
    return [(4, round(temp_c * 100)), (5, st & 1), (6, (st >> 4) & 7)]


@dataclass
class Exchange:
    """One request of the master and what came back (None: nothing)."""

    poll: int
    read: int
    t_us: int
    request: bytes
    reply: bytes | None
    reply_us: int = 0
    good: bool = False


@dataclass
class Session:
    exchanges: list[Exchange] = field(default_factory=list)

    def expected(self) -> list[tuple[int, int]]:
        """Readings of every good reply, in order."""
        out: list[tuple[int, int]] = []
        for x in self.exchanges:
            if x.good:
                out += readings(x.poll, x.read)
        return out


def _good(reply: bytes | None, fn: int, count: int) -> bool:
    """A valid response is in `reply` (a master skips noise before it)."""
    n = 5 + 2 * count
    for i in range(len(reply or b"") - n + 1):
        f = reply[i : i + n]  # type: ignore[index]
        if f[0] == SLAVE and f[1] == fn and f[2] == 2 * count and modbus_crc(f[:-2]) == f[-2:]:
            return True
    return False


def poll_session(
    polls: int,
    interval_ms: int,
    faults: Faults | None = None,
    timeout_ms: int = 300,
    retries: int = 2,
    baud: int = 9600,
) -> Session:
    """The master polls both reads `polls` times, every `interval_ms`, retrying like the agent
    (a timeout, a bad frame or a busy answer is retried `retries` times)."""
    slave = ModbusSlave(SLAVE, {}, {}, faults=faults)
    char_us = 11 * 1_000_000 // baud  # start + 8 data + parity/stop: 11 bits a byte
    gap_us = max(2000, 35 * char_us // 10)  # t3.5 (Serial Line 2.5.1.1)
    s = Session()
    for poll in range(polls):
        t = poll * interval_ms * 1000
        slave.input_regs, slave.regs = registers(poll)
        for k, rd in enumerate(READS):
            for _ in range(retries + 1):
                req = modbus_request(SLAVE, rd["fn"], rd["addr"], rd["count"])
                reply = slave.answer(req)
                t_reply = t + len(req) * char_us + int(slave.reply_delay * 1e6)
                good = _good(reply, rd["fn"], rd["count"])
                x = Exchange(poll, k, t, req, reply, t_reply, good)
                s.exchanges.append(x)
                if x.good:
                    t = t_reply + len(reply or b"") * char_us + gap_us
                    break
                busy = reply is not None and len(reply) == 5 and reply[1] & 0x80
                t = (t_reply + 5 * char_us if busy else t + timeout_ms * 1000) + gap_us
    return s


def capture_items(s: Session, record: str) -> Iterator[tuple[str, int, bytes]]:
    """(kind, ts_us, bytes) to write: `master` (requests tx, replies rx: the master's port),
    `sniff` (both rx: a passive tap on the bus) or `replies` (replies only, rx)."""
    for x in s.exchanges:
        if record != "replies":
            yield ("tx" if record == "master" else "rx"), x.t_us, x.request
        if x.reply is not None:
            yield "rx", x.reply_us, x.reply
