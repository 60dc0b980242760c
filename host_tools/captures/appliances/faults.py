"""Faults an appliance model injects into what it sends, by reply index or by rate.

Kinds (what a logic analyser on a misbehaving bus shows):
- `timeout`: no reply at all;
- `bad_crc`: the reply with its last check byte inverted (Modbus CRC16 / Tuya sum8);
- `garbage`: noise bytes written before the reply;
- `truncate`: only the first half of the reply;
- `busy`: Modbus exception 6 instead of the data (a model without it treats it as `timeout`).

Text form (`--faults`): comma-separated `KIND@N` (the N-th reply, from 0) or `KIND:RATE`
(probability per reply, seeded), e.g. `bad_crc@3,timeout@5,garbage:0.01`.
"""

from __future__ import annotations

import random

from host_tools.captures.appliances.framing import corrupt_check

KINDS = ("timeout", "bad_crc", "garbage", "truncate", "busy")
GARBAGE = b"\x00\xff\x13\x55"  # includes a lone Tuya header byte and a NUL line break


class Faults:
    """Which fault (if any) hits each reply; deterministic for a given plan and seed."""

    def __init__(
        self,
        at: dict[int, str] | None = None,
        rates: dict[str, float] | None = None,
        seed: int = 1,
        garbage: bytes = GARBAGE,
    ) -> None:
        self.at = dict(at or {})
        self.rates = dict(rates or {})
        for kind in list(self.at.values()) + list(self.rates):
            if kind not in KINDS:
                raise ValueError(f"unknown fault {kind!r} (choose {', '.join(KINDS)})")
        for kind, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {kind} must be 0..1, got {rate}")
        self.garbage = garbage
        self._rnd = random.Random(seed)
        self.index = 0
        self.injected: list[tuple[int, str]] = []

    @classmethod
    def parse(cls, text: str, seed: int = 1) -> Faults:
        """Faults from the text form; raises ValueError naming the bad item."""
        at: dict[int, str] = {}
        rates: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            kind, sep, arg = item.replace("-", "_").partition("@")
            try:
                if sep:
                    at[int(arg)] = kind
                else:
                    kind, sep, arg = item.replace("-", "_").partition(":")
                    if not sep:
                        raise ValueError
                    rates[kind] = float(arg)
            except ValueError:
                raise ValueError(f"bad fault {item!r}: use KIND@N or KIND:RATE") from None
        return cls(at, rates, seed)

    def next(self) -> str | None:
        """The fault for the next reply (advances the reply index)."""
        i = self.index
        self.index += 1
        kind = self.at.get(i)
        if kind is None:
            for k, rate in self.rates.items():
                if self._rnd.random() < rate:
                    kind = k
                    break
        if kind is not None:
            self.injected.append((i, kind))
        return kind

    def apply(self, kind: str | None, frame: bytes) -> bytes | None:
        """What goes on the wire for `frame` under `kind` (None: nothing is sent)."""
        if kind is None:
            return frame
        if kind in ("timeout", "busy"):
            return None
        if kind == "bad_crc":
            return corrupt_check(frame)
        if kind == "garbage":
            return self.garbage + frame
        return frame[: max(1, len(frame) // 2)]  # truncate
