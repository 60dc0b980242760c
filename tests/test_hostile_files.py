"""Hostile files given to the host tools that read them: `edgectl dump` (segment files, state
files, raw log images), `edgectl replay` (captures) and `edgectl capture-convert` (spy:// and
text logs). Each starts from a valid file and breaks it the ways a damaged or hand-made file
is broken: truncated at any offset, bits flipped, bytes inserted, length fields set to 2^31 or
2^32 - 1, numbers too large for a float. Every case must end as the command's contract says
(exit 0, 1 for "damage found" where the command reports damage, or 2 with one line
`edgectl: message`), never with a traceback or a hang (docs/SECURITY.md 2.5).

The CLI runs in-process (host_tools.cli.main), so the corpus takes seconds."""

from __future__ import annotations

import contextlib
import io
import json
import random
import signal
import socket
import struct
import threading
from pathlib import Path

import pytest

from host_tools import cli
from tests.test_store import segment

ROOT = Path(__file__).resolve().parent.parent
CASES = 60  # mutations per valid file (deterministic seeds)
HANG_S = 20  # bounds a hang only: a case takes milliseconds


def _mutations(good: bytes, seed: int, cases: int = CASES):
    """(name, bytes) of `cases` broken versions of `good`."""
    rng = random.Random(seed)
    yield "empty", b""
    for _ in range(cases):
        b = bytearray(good)
        kind = rng.randrange(6)
        if kind == 0:  # truncated
            cut = rng.randrange(len(b))
            yield f"truncated@{cut}", bytes(b[:cut])
            continue
        if kind == 1:  # bits flipped
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 2:  # bytes inserted
            at = rng.randrange(len(b))
            b[at:at] = rng.randbytes(rng.randint(1, 64))
        elif kind in (3, 4):  # a length or count field made huge
            at = rng.randrange(max(1, len(b) - 4))
            big = (0x7FFFFFFF, 0xFFFFFFFF, 0x80000000, 0xFFFF)[rng.randrange(4)]
            fmt = "<I" if kind == 3 else ">I"
            b[at : at + 4] = struct.pack(fmt, big)
        else:  # a run of one byte
            at = rng.randrange(len(b))
            b[at : at + 64] = bytes([rng.choice((0x00, 0xFF, 0x7B, 0x5B))]) * 64
        yield f"mutation{kind}@{rng.getstate()[1][0] % 1000}", bytes(b)


def _alarm(signum, frame):
    raise TimeoutError(f"no answer within {HANG_S} s")


def _edgectl(*argv: str) -> tuple[int, str, str]:
    """host_tools.cli.main in-process: (exit code, stdout, stderr). Anything it raises is a
    failure of the test (a traceback for the user)."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(argv))
            except SystemExit as e:  # argparse
                rc = int(e.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue()


def _check(results: list, ok_codes: tuple[int, ...]) -> dict:
    """Every case answered by the contract; returns the count per exit code."""
    by_code: dict[int, int] = {}
    for name, (rc, _out, err) in results:
        by_code[rc] = by_code.get(rc, 0) + 1
        assert rc in ok_codes, (name, rc, err)
        if rc == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("edgectl: "), (name, err)
    return by_code


def _run_corpus(
    tmp_path: Path, good: bytes, suffix: str, seed: int, argv, cases: int = CASES
) -> list:
    results = []
    for i, (name, data) in enumerate(_mutations(good, seed, cases)):
        p = tmp_path / f"case{i}{suffix}"  # suffix "/state.json": a directory per case
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        try:
            results.append((name, _edgectl(*argv(str(p)))))
        except Exception as e:  # noqa: BLE001 - reported with the case that raised it
            pytest.fail(f"{name}: {e.__class__.__name__}: {e}")
    return results


def test_dump_hostile_segment_files(tmp_path):
    good = segment(1, 40)
    results = _run_corpus(tmp_path, good, ".seg", 1, lambda p: ("dump", p))
    by_code = _check(results, (0, 1, 2))
    print(f"dump .seg: {len(results)} cases, exit codes {by_code}")
    assert by_code.get(1, 0) > 0  # damage is reported, not passed over


def test_dump_hostile_state_files(tmp_path):
    good = json.dumps({"v": 1, "boot": 3, "seq_hi": 1024, "acked": {"usage": 12}}).encode()
    assert _edgectl("dump", str(_write(tmp_path / "state.json", good)))[0] == 0
    results = _run_corpus(tmp_path, good, "/state.json", 2, lambda p: ("dump", p))
    for doc in ("[]", "1", '"x"', '{"acked": []}', '{"acked": {"a": "b"}}', "[" * 100000):
        p = _write(tmp_path / "state.json", doc.encode())
        results.append((doc[:20], _edgectl("dump", str(p))))
    by_code = _check(results, (0, 1, 2))
    print(f"dump state.json: {len(results)} cases, exit codes {by_code}")
    assert by_code.get(1, 0) > 0  # damage is reported, not passed over


def test_dump_hostile_raw_log_images(tmp_path):
    good = (ROOT / "tests" / "vectors" / "rawlog.img").read_bytes()
    results = _run_corpus(tmp_path, good, ".img", 3, lambda p: ("dump", p))
    by_code = _check(results, (0, 1, 2))
    print(f"dump raw log image: {len(results)} cases, exit codes {by_code}")


@pytest.fixture
def sink_url():
    """A pyserial `socket://` URL whose far end reads and discards everything: a port that
    takes a capture as fast as it is played (loop:// holds 4 KiB, then blocks)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def drain() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                while c.recv(65536):
                    pass

    threading.Thread(target=drain, daemon=True).start()
    yield f"socket://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


@pytest.mark.parametrize("sample,cases", [("fridge-line.ecap", 20), ("tuya-kettle.ecap", 10)])
def test_replay_hostile_captures(tmp_path, sample, cases, sink_url):
    """Replayed into a port as fast as possible: the whole path that reads and plays a
    capture, without a pty or a board (pyserial's socket:// port takes 0.3 s to open, hence
    fewer cases)."""
    good = (ROOT / "samples" / sample).read_bytes()
    results = _run_corpus(
        tmp_path, good, ".ecap", 4, lambda p: ("replay", p, "--port", sink_url, "--fast"), cases
    )
    by_code = _check(results, (0, 2))
    print(f"replay {sample}: {len(results)} cases, exit codes {by_code}")
    assert by_code.get(0, 0) > 0 and by_code.get(2, 0) > 0


SPY_LOG = (
    "000000.000 Serial port opened\n"
    "000000.012 RX   0000  55 AA 03 07 00 05 01 01  00 01 01 1A              U...........\n"
    "000001.020 TX   0000  55 AA 00 00 00 00 FF                               U......\n"
    "000002.512 RX   0000  55 AA 03 07 00 05 01 01  00 01 01 1A 55 AA 03 07  U...........U...\n"
    "000002.512 RX   0010  00 05 01 01 00 01 01 1A                           ........\n"
    "000003.000 BRK  <empty>\n"
)
TEXT_LOG = (
    "2026-01-02T03:04:05.678Z temp=4.5\n"
    "[2026-01-02 03:04:06.000] temp=4.6 door=0\n"
    "03:04:07.250 RX: 55 AA 03 07\n"
    "12.5 hello\n"
)


@pytest.mark.parametrize(
    "kind,good,extra",
    [
        ("spy", SPY_LOG, ()),
        ("text", TEXT_LOG, ()),
        ("text", TEXT_LOG, ("--hex",)),
    ],
)
def test_capture_convert_hostile_logs(tmp_path, kind, good, extra):
    out = str(tmp_path / "out.ecap")
    data = good.encode()
    results = _run_corpus(
        tmp_path, data, ".log", 5, lambda p: ("capture-convert", kind, p, "--out", out, *extra)
    )
    # numbers no float holds, dates no calendar has
    for line in (
        "9" * 400 + ".5 RX   0000  55 AA\n",
        "9" * 400 + ".5 hello\n",
        "[" + "9" * 400 + "] hello\n",
        "9999-99-99T99:99:99.999Z hello\n",
        "0000-00-00 00:00:00 hello\n",
        "99:99:99.999 hello\n",
        "000000.000 RX   0000  " + "G" * 60 + "\n",
    ):
        p = tmp_path / "line.log"
        p.write_text(good + line)
        results.append(
            (line[:30], _edgectl("capture-convert", kind, str(p), "--out", out, *extra))
        )
    by_code = _check(results, (0, 2))
    print(f"capture-convert {kind} {' '.join(extra)}: {len(results)} cases, exit codes {by_code}")


def _littlefs_image() -> bytes:
    """A littlefs image as a board's store leaves it: a segment file and a state file."""
    from littlefs import LittleFS

    fs = LittleFS(block_size=4096, block_count=8)
    fs.makedirs("/store/usage", exist_ok=True)
    with fs.open("/store/usage/00000001.seg", "wb") as f:
        f.write(segment(1, 40))
    with fs.open("/store/state.json", "wb") as f:
        f.write(json.dumps({"boot": 3, "seq_hi": 64, "acked": {"usage": 12}}).encode())
    return bytes(fs.context.buffer)


def test_dump_hostile_littlefs_images(tmp_path):
    good = _littlefs_image()
    assert _edgectl("dump", str(_write(tmp_path / "good.img", good)))[0] == 0
    results = _run_corpus(tmp_path, good, ".img", 6, lambda p: ("dump", p))
    # the mutations above land anywhere in 32 KiB, mostly in erased space; these hit the
    # bytes littlefs wrote (superblock, directories, file data), which the mount and the
    # walk read
    rng = random.Random(7)
    written = [i for i, x in enumerate(good) if x != 0xFF]
    for i in range(60):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.choice(written)
            b[at] = rng.randrange(256) if i % 2 else b[at] ^ 1 << rng.randrange(8)
        p = _write(tmp_path / f"written{i}.img", bytes(b))
        results.append((f"written bytes #{i}", _edgectl("dump", str(p))))
    by_code = _check(results, (0, 1, 2))
    print(f"dump littlefs image: {len(results)} cases, exit codes {by_code}")


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p
