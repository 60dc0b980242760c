"""Line appliances: debug consoles and controllers that print one text line per interval.

`fridge_lines` is the fridge of `edgectl simulate fridge` (docs/INPUTS.md line protocol
`KEY=VALUE;...`): T_FRIDGE / T_FREEZER in degrees C with one decimal, DOOR=OPEN|CLOSED,
COMP=0|1, POWER in W; deterministic for a seed. `LineAppliance` plays any such line source on
a link in real time.
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator

from host_tools.captures.appliances.faults import Faults


def fridge_lines(seconds: float, interval: float, seed: int) -> Iterator[tuple[int, bytes]]:
    """(ts_us, line) of a fridge whose compressor cycles and whose door opens now and then."""
    rnd = random.Random(seed)
    fridge, freezer, comp, door_left = 5.0, -18.0, 0, 0
    n = int(seconds / interval)
    for i in range(n):
        if door_left:
            door_left -= 1
            fridge += 0.08
        elif rnd.random() < 0.003:
            door_left = rnd.randint(5, 40)
        fridge += -0.012 if comp else 0.006
        freezer += -0.02 if comp else 0.01
        if fridge > 5.5:
            comp = 1
        elif fridge < 3.0:
            comp = 0
        power = (85 + rnd.randint(-3, 3)) if comp else rnd.randint(1, 2)
        noise = rnd.randint(-1, 1) / 10
        line = (
            f"T_FRIDGE={fridge + noise:.1f};T_FREEZER={freezer:.1f};"
            f"DOOR={'OPEN' if door_left else 'CLOSED'};COMP={comp};POWER={power}\n"
        )
        yield round(i * interval * 1e6), line.encode()


class LineAppliance:
    """Writes timed lines (ts_us, bytes) when their time comes; ignores what it is sent.
    Every line passes through `faults` (garbage before it, truncated, dropped, last byte
    flipped)."""

    reply_delay = 0.0

    def __init__(self, lines: Iterable[tuple[int, bytes]], faults: Faults | None = None) -> None:
        self._lines = iter(lines)
        self._next = next(self._lines, None)
        self.faults = faults or Faults()
        self.sent = 0

    def feed(self, data: bytes) -> list[bytes]:
        return []

    def due(self, now: float) -> list[bytes]:
        out = []
        while self._next is not None and self._next[0] <= now * 1e6:
            wire = self.faults.apply(self.faults.next(), self._next[1])
            if wire is not None:
                out.append(wire)
            self._next = next(self._lines, None)
        self.sent += len(out)
        return out
