"""Following one device's readings for a live page: which stored rows the page has not seen yet
(docs/DASHBOARD.md 3).

Seqs do not arrive in order. One device numbers all its categories from one counter, but each
category travels in its own batches with its own latency budget (docs/MQTT.md 9), so a batch of
`diagnostics` with seqs 95-99 may be committed after a batch of `essential` with seqs 100-120;
and a device re-sends after a reconnect. "Everything after the highest seq sent" would miss the
late rows for good. A `SeqWindow` remembers the seqs it has handed out above a floor and asks
the store for everything above the floor each time; a seq that never comes (purged on the device
after a revocation, dropped by a full store) stops holding the floor back after `hold_s` seconds
or `hold_seqs` seqs, so the rows read per update stay bounded.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

Rows = list[tuple]  # (seq, ts, boot, category, channel, value, received_ms), seq order


class SeqWindow:
    """The seqs of one device a page has been sent: every seq <= floor, plus `sent` above it."""

    def __init__(self, hold_seqs: int = 20_000, hold_s: float = 300.0, clock=time.monotonic):
        self.hold_seqs = hold_seqs
        self.hold_s = hold_s
        self.clock = clock
        self.floor = -1
        self.top = -1
        self.sent: set[int] = set()
        self._marks: deque[tuple[float, int]] = deque()  # (when, top then): to age holes out

    def start(self, rows: Rows) -> None:
        """The page starts from these rows (the newest ones): older seqs are not followed."""
        self.sent = {r[0] for r in rows}
        self.top = rows[-1][0] if rows else -1
        # a device's seqs start at 1 (docs/FORMAT.md 3): with nothing stored yet, 0 is complete
        self.floor = rows[0][0] - 1 if rows else 0
        self._marks.clear()
        self._advance()

    def take(self, rows: Rows) -> Rows:
        """Of rows read above the floor (seq order), those not sent yet; marks them sent."""
        new = [r for r in rows if r[0] > self.floor and r[0] not in self.sent]
        for r in new:
            self.sent.add(r[0])
            if r[0] > self.top:
                self.top = r[0]
        return new

    def settle(self) -> None:
        """After an update: move the floor over what is complete and over holes too old."""
        now = self.clock()
        self._marks.append((now, self.top))
        while self._marks and now - self._marks[0][0] > self.hold_s:
            self.floor = max(self.floor, self._marks.popleft()[1])
        self.floor = max(self.floor, self.top - self.hold_seqs)
        self._advance()

    def _advance(self) -> None:
        while self.floor + 1 in self.sent:
            self.floor += 1
        if self.sent and min(self.sent) <= self.floor:
            self.sent = {s for s in self.sent if s > self.floor}


def unseen(
    window: SeqWindow, read_after: Callable[[int, int], Rows], step: int
) -> tuple[Rows, bool]:
    """Rows the page has not been sent, at most about `step` of them: (rows in seq order, more
    to come). read_after(seq, limit) reads a device's rows with a greater seq."""
    after = window.floor
    out: Rows = []
    while True:
        rows = read_after(after, step)
        out += window.take(rows)
        if len(rows) < step:
            window.settle()
            return out, False
        after = rows[-1][0]
        if len(out) >= step:
            window.settle()
            return out, True
