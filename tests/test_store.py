"""The flash store (docs/FORMAT.md 2): recovery over 10,000 random and mutated store files,
`edgectl dump`, the record encoder against the shared codec, restart from a flash image."""

import json
import os
import random
import struct
import subprocess
import sys

from edge import codec
from host_tools.board import dump
from tests.store_mp import mp_last_json, mp_run

FUZZ_CASES = 10_000


def segment(first_seq: int, n: int, cat: int = 0) -> bytes:
    buf = bytearray(8 + n * codec.REC_LEN)
    buf[0:8] = b"ESEG\x01" + bytes([cat]) + b"\0\0"
    for i in range(n):
        codec.pack_record(
            buf,
            8 + i * codec.REC_LEN,
            first_seq + i,
            1700000000000 + i * 100,
            3,
            1,
            cat,
            0,
            (i * 37) % 1000 - 500,
        )
    return bytes(buf)


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0 and b:  # bit flips
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # torn tail
        del b[rng.randrange(len(b) + 1) :]
    elif kind == 2:  # inserted garbage
        at = rng.randrange(len(b) + 1)
        b[at:at] = rng.randbytes(rng.randint(1, 60))
    elif kind == 3:  # pure garbage
        b = bytearray(rng.randbytes(rng.randint(0, 3000)))
    elif kind == 4:  # erased or zeroed run
        at = rng.randrange(len(b) + 1)
        b[at : at + rng.randint(1, 200)] = bytes([rng.choice((0, 0xFF))]) * len(b[at : at + 200])
    elif kind == 5 and len(b) > 8:  # another format version or category
        b[4 + rng.randrange(2)] = rng.randrange(256)
    elif kind == 6:  # a duplicated chunk (replayed frames)
        at = rng.randrange(len(b) + 1)
        b[at:at] = b[max(0, at - 56) : at]
    elif kind == 7:  # half-written frame appended
        b += segment(99999, 1)[8 : 8 + rng.randrange(1, 28)]
    return bytes(b)  # kind 8: unchanged


def state_blob(rng: random.Random) -> bytes | None:
    k = rng.randrange(6)
    if k == 0:
        return None
    if k == 1:
        return rng.randbytes(rng.randint(0, 80))
    if k == 2:
        return json.dumps(
            {
                "v": 1,
                "boot": rng.randrange(70000),
                "seq_hi": rng.randrange(2**33),
                "acked": {"essential": rng.randrange(-5, 3000)},
            }
        ).encode()
    if k == 3:
        return rng.choice(
            [
                b"[]",
                b'{"acked": []}',
                b'{"seq_hi": "x"}',
                b'{"acked": {"essential": true}}',
                b"null",
                b"{" * 300,
                b'{"boot": 1e999}',
                b"\xff\xfe",
            ]
        )
    return json.dumps(
        {"v": 1, "boot": 3, "seq_hi": 5000, "acked": {"essential": rng.randrange(0, 200)}}
    ).encode()


def corpus(rng: random.Random, n: int):
    for _ in range(n):
        older = mutate(rng, segment(1, rng.randrange(0, 40))) if rng.randrange(3) == 0 else None
        newest = mutate(rng, segment(1000, rng.randrange(0, 90)))
        yield older, newest, state_blob(rng)


def _blob(b: bytes | None) -> bytes:
    return struct.pack("<I", 0xFFFFFFFF) if b is None else struct.pack("<I", len(b)) + b


def test_recovery_and_dump_never_crash_on_10000_mutated_store_files(micropython, tmp_path):
    cases = list(corpus(random.Random(3), FUZZ_CASES))
    path = tmp_path / "corpus.bin"
    path.write_bytes(b"".join(_blob(a) + _blob(b) + _blob(c) for a, b, c in cases))
    res = mp_last_json("store_fuzz.py", str(path), str(tmp_path / "w"), timeout=600)
    assert res["cases"] == FUZZ_CASES
    assert res["crashes"] == 0, res["errors"]
    flagged = 0
    for i, (older, newest, state) in enumerate(cases):
        rep = dump.Report()
        for name, data in (
            ("00000001.seg", older),
            ("00000002.seg", newest),
            ("state.json", state),
        ):
            if data is not None:
                dump.dump_file(name, data, rep)  # a report for every file, never an exception
        assert rep.lines
        flagged += bool(rep.problems)
        # the host decoder and the device's recovery agree, unless acked readings are skipped
        if state is None and older is None and newest[:6] == b"ESEG\x01\x00":
            assert res["counts"][i] == rep.readings, (i, rep.lines)
    assert FUZZ_CASES // 2 < flagged < FUZZ_CASES  # most mutations are corruption, not all


def test_store_frames_are_byte_identical_to_the_codec(micropython, tmp_path):
    script = tmp_path / "seal.py"
    script.write_text(
        "import struct\nfrom edge import codec\nfrom edge.store import segment\n"
        "a = bytearray(28 * 40); b = bytearray(28 * 40)\n"
        "for i in range(40):\n"
        "    v = (i * 2654435761) % 4294967296\n"
        "    args = (v, v * 1000 - 2**40, v % 65536, i, i % 5, i % 2, (v % 2**31) - 2**30)\n"
        "    codec.pack_record(a, i * 28, *args)\n"
        "    struct.pack_into(segment.FRAME_FMT, b, i * 28, 0xA5, 1, 21, *args)\n"
        "segment.seal(b, 40)\nprint(a == b, a.hex()[:56])\n"
    )
    r = mp_run(str(script))
    assert r.stdout.startswith("True"), r.stdout + r.stderr


def test_dump_cli_exit_codes(tmp_path):
    good = tmp_path / "00000001.seg"
    good.write_bytes(segment(1, 5))
    bad = tmp_path / "00000002.seg"
    data = bytearray(segment(6, 5))
    data[40] ^= 0x10
    bad.write_bytes(bytes(data))
    cli = [sys.executable, "-m", "host_tools", "dump"]
    r = subprocess.run(cli + [str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "5 readings, seq 1..5" in r.stdout
    r = subprocess.run(cli + [str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "corrupt bytes" in r.stdout
    r = subprocess.run(cli + [str(tmp_path / "missing")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_flash_image_survives_restarts_and_dumps_with_littlefs_python(micropython, tmp_path):
    img = str(tmp_path / "store.img")
    r = mp_run("store_image.py", img, "120", "3", heap="1M")
    assert r.returncode == 0, r.stdout + r.stderr
    boots = [json.loads(line) for line in r.stdout.splitlines()]
    assert boots[0]["recovered"] == []
    for prev, cur in zip(boots, boots[1:], strict=False):
        assert cur["first"] > prev["last"]  # seq never reused across boots
        # everything committed in earlier boots (nothing acked) comes back, in order
        assert cur["recovered"][-120:] == list(range(prev["first"], prev["last"] + 1))
    assert os.path.getsize(img) == 2 * 1024 * 1024
    rep = dump.dump_path(img)
    assert not rep.problems and rep.readings == 360
    assert any(line.startswith("littlefs image: 512 blocks") for line in rep.lines)


def test_seqs_cross_2_to_the_32_without_wrapping(tmp_path):
    """docs/FORMAT.md 1: the store's seqs are 48-bit. Ten readings from 2^32 - 5 land in two
    segments (epoch 0 and epoch 1 in their headers), come back whole after a reboot, leave as
    one batch per epoch, and the next seq after the reboot lies above all of them. Before the
    epoch rule the 32-bit field wrapped: readings 2^32.. came back as seqs 0..4, below the
    ack cursor, and were never forwarded."""
    start = 2**32 - 5
    out = mp_last_json("store_epoch.py", str(tmp_path), str(start))
    assert [s[1] for s in out["segments"]] == [0, 1]
    assert out["batches"] == [[start, 2**32 - 1, 5], [2**32, 2**32 + 4, 5]]
    assert out["next_seq"] > 2**32 + 4


def test_segment_index_matches_a_list_model_and_costs_a_third(micropython):
    """The store's in-RAM segment index (edge/store/segindex.py): random appends, deletions
    and updates agree with a list of lists, and an entry costs at most a third of one."""
    r = mp_last_json("segindex_model.py")
    assert r["steps"] == 20000
    assert r["entry_bytes"] * 3 <= r["list_entry_bytes"], r
