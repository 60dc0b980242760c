"""Capture format, capture from a port, converters, simulator and samples (docs/REPLAY.md)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
import serial

import host_tools  # noqa: F401  (registers replay://)
from host_tools.captures import capfile, simulate
from host_tools.captures import convert as capconvert
from host_tools.captures.frames import FrameCounter

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def edgectl(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "host_tools", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgectl {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_capture(
    path: Path, chunks: list[tuple[str, int, bytes]], meta: dict | None = None
) -> None:
    with capfile.CaptureWriter(str(path), meta or {"port": "test"}) as w:
        for kind, ts, data in chunks:
            w.write(kind, ts, data)


def test_round_trip_binary_and_large_chunks(tmp_path: Path) -> None:
    big = bytes(range(256)) * 300  # 76800 bytes: split into two chunks of <= 65535
    chunks = [
        ("rx", 0, b"A=1\n"),
        ("tx", 5, b"\x55\xaa\x00"),
        ("rx", 10, big),
        ("note", 11, b"hi"),
    ]
    make_capture(tmp_path / "c.ecap", chunks, {"port": "loop://", "baudrate": 9600})
    meta, got, damage = capfile.read_capture(str(tmp_path / "c.ecap"))
    assert damage is None
    assert meta["port"] == "loop://" and meta["baudrate"] == 9600 and "started" in meta
    assert [c.kind for c in got] == ["rx", "tx", "rx", "rx", "note"]
    assert b"".join(c.data for c in got if c.kind == "rx") == b"A=1\n" + big
    assert [len(c.data) for c in got][2:4] == [65535, len(big) - 65535]


def test_header_bytes_match_format_doc(tmp_path: Path) -> None:
    """docs/FORMAT.md: magic, version, flags, meta_len LE, JSON, CRC32; chunk layout."""
    make_capture(tmp_path / "c.ecap", [("rx", 0x0102, b"xy")], {"port": "p", "started": "s"})
    raw = (tmp_path / "c.ecap").read_bytes()
    meta = b'{"port":"p","started":"s"}'
    assert raw[:8] == b"ECAP\x01\x00" + struct.pack("<H", len(meta))
    assert raw[8 : 8 + len(meta)] == meta
    h = 8 + len(meta)
    assert raw[h : h + 4] == struct.pack("<I", capfile.crc32(raw[:h]))
    c = h + 4
    assert raw[c : c + 12] == b"R\x00\x02\x00" + struct.pack("<Q", 0x0102)
    assert raw[c + 12 : c + 14] == b"xy"
    assert raw[c + 14 :] == struct.pack("<I", capfile.crc32(raw[c : c + 14]))


def test_truncated_tail_names_offset_and_keeps_prefix(tmp_path: Path) -> None:
    chunks = [("rx", i * 1000, b"L=%d\n" % i) for i in range(10)]
    make_capture(tmp_path / "c.ecap", chunks)
    raw = (tmp_path / "c.ecap").read_bytes()
    _, full, _ = capfile.read_capture(str(tmp_path / "c.ecap"))
    last = full[-1].offset
    for cut in range(last + 1, len(raw)):  # every cut inside the last chunk
        (tmp_path / "t.ecap").write_bytes(raw[:cut])
        _, got, damage = capfile.read_capture(str(tmp_path / "t.ecap"))
        assert damage is not None and damage.offset == last, cut
        assert "truncated" in damage.reason and f"byte offset {last}" in str(damage)
        assert [c.data for c in got] == [c.data for c in full[:-1]]


def test_corrupt_chunk_names_offset(tmp_path: Path) -> None:
    make_capture(tmp_path / "c.ecap", [("rx", i * 1000, b"L=%d\n" % i) for i in range(10)])
    _, full, _ = capfile.read_capture(str(tmp_path / "c.ecap"))
    raw = bytearray((tmp_path / "c.ecap").read_bytes())
    bad = full[6].offset
    raw[bad + 13] ^= 0x40  # flip a data bit
    (tmp_path / "c.ecap").write_bytes(raw)
    _, got, damage = capfile.read_capture(str(tmp_path / "c.ecap"))
    assert damage.offset == bad and "CRC mismatch" in damage.reason and damage.intact == 6
    assert len(got) == 6
    raw[8] ^= 1  # corrupt the header: nothing can be trusted
    (tmp_path / "c.ecap").write_bytes(raw)
    with pytest.raises(capfile.CaptureError, match="corrupt header.*byte offset"):
        capfile.read_capture(str(tmp_path / "c.ecap"))


def test_readable_while_written(tmp_path: Path) -> None:
    w = capfile.CaptureWriter(str(tmp_path / "live.ecap"), {"port": "x"})
    w.write("rx", 1, b"one\n")
    w.write("rx", 2, b"two\n")
    _, got, damage = capfile.read_capture(str(tmp_path / "live.ecap"))
    assert [c.data for c in got] == [b"one\n", b"two\n"] and damage is None
    w.write("rx", 3, b"three\n")
    _, got, _ = capfile.read_capture(str(tmp_path / "live.ecap"))
    assert len(got) == 3
    w.close()


def test_rotation_by_size(tmp_path: Path) -> None:
    out = str(tmp_path / "r.ecap")
    with capfile.CaptureWriter(out, {"port": "x"}, rotate_bytes=300) as w:
        for i in range(40):
            w.write("rx", i, b"X=%02d\n" % i)
    assert len(w.paths) > 2 and w.paths[1] == str(tmp_path / "r.1.ecap")
    parts = [capfile.read_capture(p) for p in w.paths]
    assert [m["part"] for m, _, _ in parts] == list(range(len(w.paths)))
    data = b"".join(c.data for _, chunks, _ in parts for c in chunks)
    assert data == b"".join(b"X=%02d\n" % i for i in range(40))


def test_capture_cli_from_pty(tmp_path: Path) -> None:
    """`edgectl capture` on a real pty: bytes, frame count, metadata, idle stop."""
    m, s = os.openpty()
    tty.setraw(s)
    link = tmp_path / "port"
    link.symlink_to(os.ttyname(s))
    payload = [b"A=%d;B=2\n" % i for i in range(5)] + [bytes(range(256))]

    def feed() -> None:
        time.sleep(0.6)
        for p in payload:
            os.write(m, p)
            time.sleep(0.02)

    th = threading.Thread(target=feed)
    th.start()
    out = tmp_path / "c.ecap"
    proc = edgectl(
        "capture",
        "--port",
        str(link),
        "--out",
        str(out),
        "--idle",
        "0.5",
        "--framing",
        "line",
        "--meta",
        "appliance=test",
        "--json",
    )
    th.join()
    os.close(m)
    os.close(s)
    meta, chunks, damage = capfile.read_capture(str(out))
    assert damage is None and meta["appliance"] == "test" and meta["baudrate"] == 115200
    assert b"".join(c.data for c in chunks) == b"".join(payload)
    summary = proc.stdout.strip().splitlines()[-1]
    assert '"bytes": %d' % len(b"".join(payload)) in summary and '"stop": "idle"' in summary
    assert '"frames": 6' in summary  # 5 lines, and the binary tail holds one LF (0x0a)


def test_replay_url_handler(tmp_path: Path) -> None:
    make_capture(tmp_path / "c.ecap", [("rx", i * 200_000, b"N=%d\n" % i) for i in range(5)])
    port = serial.serial_for_url(f"replay://{tmp_path}/c.ecap?speed=4", timeout=1)
    t0 = time.monotonic()
    lines = [port.readline() for _ in range(5)]
    took = time.monotonic() - t0
    assert lines == [b"N=%d\n" % i for i in range(5)]
    assert 0.15 < took < 0.6  # 0.8 s of capture at x4 = 0.2 s
    assert port.read(1) == b"" and port.exhausted
    fast = serial.serial_for_url(f"replay://{tmp_path}/c.ecap?speed=0&loop=2&from=0.2", timeout=0)
    assert fast.read(100) == b"".join(b"N=%d\n" % i for i in range(1, 5)) * 2
    with pytest.raises(serial.SerialException, match="unknown option"):
        serial.serial_for_url(f"replay://{tmp_path}/c.ecap?sped=2")


def test_frame_counter_on_samples() -> None:
    for name, framing, want in (
        ("fridge-line.ecap", "line", 600),
        ("tuya-kettle.ecap", "tuya", 680),
    ):
        _, chunks, _ = capfile.read_capture(str(SAMPLES / name))
        fc = FrameCounter("auto")
        for c in chunks:  # byte by byte: framing must survive any chunking
            for i in range(len(c.data)):
                fc.feed(c.data[i : i + 1])
        assert (fc.framing, fc.frames, fc.bad) == (framing, want, 0)


def test_samples_are_synthetic_and_reproducible(tmp_path: Path) -> None:
    for kind, name in (("fridge", "fridge-line.ecap"), ("tuya", "tuya-kettle.ecap")):
        meta, _, _ = capfile.read_capture(str(SAMPLES / name))
        assert meta["synthetic"] is True
        simulate.simulate(kind, str(tmp_path / name), 600)
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes()
    simulate.simulate(
        "meter", str(tmp_path / "m.ecap"), 120, 1.0, 1, "bad_crc@3,timeout@6,garbage@9,busy@13",
        "sniff",
    )  # fmt: skip
    assert (tmp_path / "m.ecap").read_bytes() == (SAMPLES / "meter-modbus.ecap").read_bytes()


def test_convert_spy_log_from_real_pyserial(tmp_path: Path) -> None:
    m, s = os.openpty()
    tty.setraw(s)
    log = tmp_path / "spy.log"
    ser = serial.serial_for_url(f"spy://{os.ttyname(s)}?file={log}", timeout=0.1)
    rx1 = b"T=1;D=0\n" + bytes(range(40))
    os.write(m, rx1)
    time.sleep(0.05)
    got1 = ser.read(len(rx1))
    ser.write(b"\x55\xaa\x00\x00\x00\x00\xff")
    time.sleep(0.2)
    os.write(m, b"X=2\n")
    got2 = ser.read(4)
    ser.close()
    os.close(m)
    os.close(s)
    assert got1 + got2 == rx1 + b"X=2\n"
    edgectl("capture-convert", "spy", str(log), "--out", str(tmp_path / "c.ecap"))
    _, chunks, damage = capfile.read_capture(str(tmp_path / "c.ecap"))
    assert damage is None
    assert [(c.kind, c.data) for c in chunks] == [
        ("rx", rx1),
        ("tx", b"\x55\xaa\x00\x00\x00\x00\xff"),
        ("rx", b"X=2\n"),
    ]
    assert chunks[2].ts_us - chunks[0].ts_us >= 150_000


def test_convert_text_logs(tmp_path: Path) -> None:
    chunks = capconvert.text_to_chunks(["[10.5] A=1", "11.0 A=2", "A=3", "", "12:00:00 x"])
    assert [(c.ts_us, c.data) for c in chunks[:3]] == [
        (0, b"A=1\n"),
        (500_000, b"A=2\n"),
        (1_500_000, b"A=3\n"),
    ]
    iso = capconvert.text_to_chunks(
        ["2024-01-01T00:00:00Z 55 AA 00", "2024-01-01 00:00:02.5 55aa"], hex_frames=True
    )
    assert [(c.ts_us, c.data) for c in iso] == [(0, b"\x55\xaa\x00"), (2_500_000, b"\x55\xaa")]
    (tmp_path / "log.txt").write_text("A=1\nA=2\n")
    edgectl(
        "capture-convert",
        "text",
        str(tmp_path / "log.txt"),
        "--out",
        str(tmp_path / "c.ecap"),
        "--interval",
        "0.25",
        "--eol",
        "crlf",
    )
    _, got, _ = capfile.read_capture(str(tmp_path / "c.ecap"))
    assert [(c.ts_us, c.data) for c in got] == [(0, b"A=1\r\n"), (250_000, b"A=2\r\n")]
    (tmp_path / "bad.txt").write_text("zz\n")
    bad = edgectl(
        "capture-convert",
        "text",
        str(tmp_path / "bad.txt"),
        "--hex",
        "--out",
        str(tmp_path / "b.ecap"),
        check=False,
    )
    assert bad.returncode == 2 and "line 1: no hex bytes" in bad.stderr
