"""`edgectl capture-convert text`: hex with spaces, colons, prefixes and directions; timestamps
from the log (ISO 8601, HH:MM:SS.mmm across midnight, seconds since start); the same log always
converts to the same bytes (no conversion-time stamps)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from host_tools.captures import capfile
from host_tools.captures import convert as capconvert
from tests.test_capture import edgectl

FRAME = bytes.fromhex("55aa0307000501010001011a")


def chunks(lines, **kw):
    return [
        (c.kind, c.ts_us, c.data) for c in capconvert.text_to_chunks(lines, hex_frames=True, **kw)
    ]


def test_spaced_hex_without_a_timestamp_keeps_its_first_byte():
    """`55 AA ...` is data, not "55 seconds" followed by data."""
    got = chunks(["55 AA 03 07 00 05 01 01 00 01 01 1A", "55 AA 03 07 00 05 01 01 00 01 01 1A"])
    assert got == [("rx", 0, FRAME), ("rx", 1_000_000, FRAME)]


@pytest.mark.parametrize(
    "line",
    [
        "55:AA:03:07:00:05:01:01:00:01:01:1A",
        "55aa0307000501010001011a",
        "0x55 0xAA 0x03 0x07 0x00 0x05 0x01 0x01 0x00 0x01 0x01 0x1A",
        "55-aa-03-07-00-05-01-01-00-01-01-1a",
        "Poll:123:55aa0307000501010001011a",
        "Poll:12:55aa0307000501010001011a",  # a 2-digit field before a hex run is not data
        "[D][uart_debug:114]: <<< 55:AA:03:07:00:05:01:01:00:01:01:1A",
        'TYA: RX Packet: "55aa0307000501010001011a"',
        "rx 55 AA 03 07 00 05 01 01 00 01 01 1A",
    ],
)
def test_hex_styles_and_prefixes(line):
    assert chunks([line]) == [("rx", 0, FRAME)]


def test_direction_marks():
    got = chunks([">>> 55:AA:00:00:00:00:FF", "<<< 55 AA 03 00 00 01 01 04", "TX: 55aa00000000ff"])
    assert [k for k, _, _ in got] == ["tx", "rx", "tx"]


def test_timestamps_from_the_log():
    iso = chunks(["2024-01-01T23:59:59.500Z 55 AA", "2024-01-02T00:00:01Z 55 AA"])
    assert [t for _, t, _ in iso] == [0, 1_500_000]
    tod = chunks(["23:59:59.900 55 AA", "[00:00:00.100] 55 AA", "[00:00:01.100]55 AA"])
    assert [t for _, t, _ in tod] == [0, 200_000, 1_200_000]  # across midnight
    secs = chunks(["0.000 55 AA", "12.5 55 AA"])
    assert [t for _, t, _ in secs] == [0, 12_500_000]


def test_started_comes_from_the_log():
    lines = ["2024-03-05T10:20:30.250Z A=1", "2024-03-05T10:20:31Z A=2"]
    assert capconvert.started_of(lines) == "2024-03-05T10:20:30.250Z"
    assert capconvert.started_of(["10:20:30.5 A=1"]) == "2000-01-01T10:20:30.500Z"
    assert capconvert.started_of(["A=1"]) == "2000-01-01T00:00:00.000Z"


def test_same_log_converts_to_the_same_bytes(tmp_path: Path):
    log = tmp_path / "tuya.log"
    log.write_text("12:00:00.000 55 AA 03 07 00 05 01 01 00 01 01 1A\n12:00:01.250 55:AA:00\n")
    digests = []
    for run in range(2):
        out = tmp_path / f"c{run}.ecap"
        edgectl("capture-convert", "text", str(log), "--hex", "--out", str(out))
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    meta, got, _ = capfile.read_capture(str(tmp_path / "c0.ecap"))
    assert meta["started"] == "2000-01-01T12:00:00.000Z"
    assert [(c.ts_us, c.data) for c in got] == [(0, FRAME), (1_250_000, b"\x55\xaa\x00")]


def test_odd_hex_is_an_error_naming_the_line(tmp_path: Path):
    (tmp_path / "bad.txt").write_text("55 AA\nPoll: 5aa\n")
    r = edgectl(
        "capture-convert", "text", str(tmp_path / "bad.txt"), "--hex",
        "--out", str(tmp_path / "b.ecap"), check=False,
    )  # fmt: skip
    assert r.returncode == 2 and "line 2: no hex bytes" in r.stderr
