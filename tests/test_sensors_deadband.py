"""Sampler policy (edge/deadband.py): deadband, minimum interval with a held latest value,
maximum silent interval."""

import pytest

from edge.deadband import Deadband, Gate


class Feed:
    """A source that emits scripted (channel, value) pairs at given ticks."""

    def __init__(self, script):
        self.script = script

    def poll(self, now, emit):
        n = 0
        for t, ch, v in self.script:
            if t == now:
                emit(ch, v)
                n += 1
        return n


def run(channels, script, until):
    db = Deadband(channels)
    g = Gate(Feed(script), db)
    out = []
    for now in range(0, until, 10):
        g.poll(now, lambda c, v, now=now: out.append((now, c, v)))
    return out, db


def test_deadband_reports_only_changes_beyond_the_threshold():
    out, db = run(
        [{"id": 1, "deadband": 10}],
        [(0, 1, 100), (10, 1, 105), (20, 1, 111), (30, 1, 101), (40, 1, 100)],
        100,
    )
    assert out == [(0, 1, 100), (20, 1, 111), (40, 1, 100)]
    assert db.suppressed == 2


def test_minimum_interval_holds_the_latest_value():
    out, _ = run(
        [{"id": 1, "deadband": 0, "interval_ms": 100}],
        [(0, 1, 1), (10, 1, 2), (50, 1, 3), (150, 1, 4), (160, 1, 3), (300, 1, 9)],
        400,
    )
    # 2 and 3 held; 3 reported at 100 ms; 4 then back to 3 within the interval: cancelled;
    # 9 arrives after the interval: reported at once
    assert out == [(0, 1, 1), (100, 1, 3), (300, 1, 9)]


def test_max_silent_interval_reports_an_unchanged_value():
    script = [(t, 1, 50) for t in range(0, 1000, 100)]
    out, _ = run([{"id": 1, "deadband": 5, "max_silent_ms": 300}], script, 1000)
    assert [t for t, _, _ in out] == [0, 300, 600, 900]


def test_channels_without_policy_pass_through():
    out, db = run([{"id": 1, "deadband": 5}], [(0, 2, 7), (10, 2, 7)], 30)
    assert out == [(0, 2, 7), (10, 2, 7)] and not db.suppressed


def test_bad_policy_names_the_key():
    with pytest.raises(ValueError, match=r"channels\[0\]\.deadband"):
        Deadband([{"id": 1, "deadband": -1}])
