"""The raw-partition record log (docs/FORMAT.md 8): the golden vector decoded by the host and
recovered by the agent, byte-identical when the agent writes it again; recovery over mutated
images; purged readings unreadable anywhere on the partition; the emulated partition's NOR
rules; wear levelling; restarts; the ESP32 HAL's partition; backend choice; `edgectl dump`."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys

import pytest

from host_tools.board import dump, dump_raw
from tests.conftest import ROOT
from tests.store_mp import mp_last_json, mp_run

VEC = os.path.join(ROOT, "tests", "vectors")
with open(os.path.join(VEC, "rawlog.json")) as f:
    VECTOR = json.load(f)
with open(os.path.join(VEC, VECTOR["file"]), "rb") as f:
    IMAGE = f.read()
FUZZ_CASES = 800  # mutated images in the default run
FUZZ_CASES_SLOW = 5000  # with --slow
USAGE_CHANNEL = 5  # tests/mp/rawlog_work.py channel_of("usage"): 1 + its category index


def _streams(data: bytes) -> dict[str, list[list[int]]]:
    log = dump_raw.decode(data)
    return {
        name: [list(r) for r in log.streams.get(dump_raw.tag_of(name), [])]
        for name in VECTOR["expect"]
    }


def test_golden_vector_decodes_on_the_host():
    assert _streams(IMAGE) == VECTOR["expect"]
    rep = dump.Report()
    dump_raw.dump_raw_image(IMAGE, rep)
    assert not rep.problems and rep.readings == sum(len(v) for v in VECTOR["expect"].values())


def test_golden_vector_recovers_on_the_device(micropython, tmp_path):
    img = tmp_path / "v.img"
    img.write_bytes(IMAGE)
    got = mp_last_json("rawlog_vector.py", "read", str(img))
    assert got["got"] == VECTOR["expect"]
    assert got["stats"]["corrupt_records"] == got["stats"]["torn_tails"] == 0


def test_device_writes_the_golden_bytes(micropython, tmp_path):
    img = tmp_path / "v.img"
    doc = mp_last_json("rawlog_vector.py", "build", str(img))
    assert doc["violations"] == 0
    assert doc["expect"] == VECTOR["expect"]
    assert img.read_bytes() == IMAGE  # the format did not drift from docs/FORMAT.md 8


def _chunks_anywhere(data: bytes):
    """Every CRC-valid data chunk at any byte offset of the image, block structure ignored:
    what someone reading the raw partition could still recover."""
    out = []
    for p in range(len(data) - dump_raw.CHUNK_HEAD - 4):
        if data[p] != dump_raw.CHUNK_TYPE:
            continue
        n = data[p + 1]
        ln = dump_raw.CHUNK_HEAD + n * dump_raw.ENTRY_LEN + 4
        if 1 <= n <= dump_raw.MAX_N and p + ln <= len(data):
            if dump_raw.crc(data[p : p + ln - 4]) == struct.unpack_from("<I", data, p + ln - 4)[0]:
                blk = dump_raw.Block(0, "live", dump_raw.KIND_DATA)
                dump_raw.parse_records(
                    data[p - dump_raw.HEAD_LEN : p + ln].ljust(dump_raw.BLOCK, b"\xff"), blk
                )
                out.extend(blk.readings)
    return out


def test_purged_readings_are_unreadable_anywhere_on_the_partition(micropython, tmp_path):
    # 1500 `usage` readings, about half acknowledged (blocks freed, not erased), then the
    # revocation's purge, then 50 new ones: only those 50 may be found anywhere in the image,
    # live, freed or orphaned blocks alike
    img = tmp_path / "purge.img"
    r = mp_last_json("rawlog_unit.py", "purge", str(img))
    assert r["purged"] > 0 and r["violations"] == 0
    found = {x[0] for x in _chunks_anywhere(img.read_bytes()) if x[4] == USAGE_CHANNEL}
    assert found == set(r["after"])
    # the vector's purge too (its second boot purged `usage`)
    allowed = {x[0] for x in VECTOR["expect"]["usage"]}
    assert {x[0] for x in _chunks_anywhere(IMAGE) if x[4] == USAGE_CHANNEL} <= allowed
    # a purge that only frees the blocks: the check sees the readings still there
    r = mp_last_json("rawlog_unit.py", "purge", str(img), "nozero")
    leaked = {x[0] for x in _chunks_anywhere(img.read_bytes()) if x[4] == USAGE_CHANNEL}
    assert len(leaked & set(r["before"])) > 1000


def mutate(rng: random.Random, data: bytes) -> list[tuple[int, bytes]]:
    """Patches (offset, bytes) that damage an image the ways flash and power cuts do."""
    size = len(data)
    blk = rng.randrange(size // 4096) * 4096
    kind = rng.randrange(12)
    if kind == 0:  # bit flips anywhere
        out = []
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(size)
            out.append((p, bytes([data[p] ^ (1 << rng.randrange(8))])))
        return out
    if kind == 1:  # a bit flip in a block header
        p = blk + rng.randrange(32)
        return [(p, bytes([data[p] ^ (1 << rng.randrange(8))]))]
    if kind == 2:  # a partial erase (0xFF run), e.g. a cut erase
        p = blk + rng.randrange(4096)
        return [(p, b"\xff" * min(rng.randint(1, 3000), blk + 4096 - p))]
    if kind == 3:  # a zeroed run
        p = rng.randrange(size)
        return [(p, bytes(min(rng.randint(1, 500), size - p)))]
    if kind == 4:  # garbage bytes
        p = rng.randrange(size)
        return [(p, rng.randbytes(min(rng.randint(1, 200), size - p)))]
    if kind == 5:  # a whole block of garbage
        return [(blk, rng.randbytes(4096))]
    if kind == 6:  # one block copied over another (same sequence number twice)
        src = rng.randrange(size // 4096) * 4096
        return [(blk, data[src : src + 4096])]
    if kind == 7:  # two blocks swapped
        other = rng.randrange(size // 4096) * 4096
        return [(blk, data[other : other + 4096]), (other, data[blk : blk + 4096])]
    if kind == 8:  # a torn tail: the end of a block's records half programmed
        p = blk + rng.randrange(32, 4096)
        return [(p, bytes(b & rng.randrange(256) for b in data[p : p + rng.randint(1, 60)]))]
    if kind == 9:  # another format version in a header
        return [(blk + 4, bytes([rng.choice((0, 2, 0xFF))]))]
    if kind == 10:  # the whole partition garbage
        return [(0, rng.randbytes(size))]
    return []  # unchanged


def test_recovery_over_mutated_images(micropython, tmp_path):
    _fuzz(tmp_path, 17, FUZZ_CASES)


@pytest.mark.slow
def test_recovery_over_mutated_images_slow(micropython, tmp_path):
    _fuzz(tmp_path, 23, FUZZ_CASES_SLOW)


def _fuzz(tmp_path, seed: int, n: int) -> None:
    base = tmp_path / "base.img"
    r = mp_run("rawlog_fuzz.py", "base", str(base))
    assert r.returncode == 0, r.stderr
    data = base.read_bytes()
    rng = random.Random(seed)
    cases = [mutate(rng, data) for _ in range(n)]
    blob = bytearray()
    for patches in cases:
        blob += struct.pack("<H", len(patches))
        for off, b in patches:
            blob += struct.pack("<II", off, len(b)) + b
    (tmp_path / "patches.bin").write_bytes(blob)
    res = mp_last_json(
        "rawlog_fuzz.py", "run", str(base), str(tmp_path / "patches.bin"), heap="8M", timeout=3600
    )
    assert res["cases"] == n
    assert res["crashes"] == 0, res["errors"]
    assert res["corrupt"] == 0  # no delivered reading differs from what was written
    assert res["violations"] == 0  # recovery never programs against the NOR rules
    reported = 0
    names = ("essential", "diagnostics", "usage")
    for i, patches in enumerate(cases):
        img = bytearray(data)
        for off, b in patches:
            img[off : off + len(b)] = b
        rep = dump.Report()
        dump_raw.dump_raw_image(bytes(img), rep)  # a report for every image, never an exception
        reported += bool(rep.problems)
        # the host decoder (written from docs/FORMAT.md) and the device agree on every image
        log = dump_raw.decode(bytes(img))
        host = [len(log.streams.get(dump_raw.tag_of(n), [])) for n in names]
        assert res["counts"][i] == host, (i, patches[:1])
    assert n // 3 < reported < n  # most damage is reported, not all is damage


def test_emulated_partition_enforces_the_nor_rules(micropython):
    r = mp_last_json("rawlog_unit.py", "nor")
    assert r["erased_program"] == 0 and r["zero_written"] == 0 and r["leave_alone"] == 0
    assert r["raise_a_bit"] == -5 and r["program_again"] == -5  # refused whole, with EIO
    assert r["page_limit"] == -5 and r["other_page"] == 0  # partial-page program limit
    assert r["past_end"] == -5 and r["bad_erase"] == -5
    assert r["violations"] == 3
    assert r["bytes"] == [0x12, 0xFF]  # the erase reset the page and its program count
    assert r["erase_counts"] == [1, 0, 0, 0] and r["prog_counts"][0] == 5


def test_wear_is_levelled_over_the_ring(micropython):
    r = mp_last_json("rawlog_unit.py", "wear", "20")
    counts = r["counts"]
    mean = sum(counts) / len(counts)
    # every block takes its turn, so the most worn block is close to the mean; blocks that
    # held the meta record, or the slow category's data (static blocks the allocator steps
    # over), are erased less, never more
    assert max(counts) / mean <= 1.15, counts
    assert min(counts) >= 1, counts
    assert r["location_blocks"] == 1 and r["violations"] == 0
    assert r["erases"] / r["commits"] < 0.04  # one erase per ~30 commits of 10 readings


def test_seq_never_reused_and_data_survives_restarts(micropython, tmp_path):
    img = str(tmp_path / "log.img")
    boots = mp_last_json("rawlog_unit.py", "restarts", img, "4")
    assert boots[0]["recovered"] == []
    seen = []
    for prev, cur in zip(boots, boots[1:], strict=False):
        assert cur["first"] > prev["last"]
        seen += list(range(prev["first"], prev["last"] + 1))
        assert cur["recovered"] == seen  # nothing acknowledged: everything comes back, in order
    assert os.path.getsize(img) == 16 * 4096


def test_esp32_hal_opens_the_log_partition(micropython):
    r = mp_last_json("rawlog_unit.py", "esp32")
    assert r["missing"] is True
    assert r["recovered"] == 500 and r["violations"] == 0
    assert "encrypted" in r["encrypted"]


def test_backend_choice(micropython, tmp_path):
    r = mp_last_json("rawlog_unit.py", "backend", str(tmp_path))
    assert r["auto/partition"] == "rawlog" and r["auto/none"] == "segments"
    assert r["rawlog/partition"] == "rawlog" and r["segments/partition"] == "segments"
    assert r["rawlog/none"].startswith("error: config key 'store.backend' is 'rawlog'")


def test_dump_cli_reads_raw_log_images(tmp_path):
    good = tmp_path / "log.img"
    good.write_bytes(IMAGE)
    cli = [sys.executable, "-m", "host_tools", "dump"]
    r = subprocess.run(cli + [str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "raw log image: 8 blocks" in r.stdout and "essential:" in r.stdout
    assert "no corruption" in r.stdout
    bad = bytearray(IMAGE)
    log = dump_raw.decode(IMAGE)
    blk = next(b for b in log.blocks if b.state == "live" and b.readings)
    bad[blk.index * 4096 + 100] ^= 0x04  # one bit inside a chunk
    (tmp_path / "bad.img").write_bytes(bytes(bad))
    r = subprocess.run(cli + [str(tmp_path / "bad.img")], capture_output=True, text=True)
    assert r.returncode == 1 and f"block {blk.index}: corrupt bytes" in r.stdout


def test_a_purge_keeps_the_commit_buffer_and_a_full_heap_drops_instead_of_raising(micropython):
    # a grant after a revocation needs no new block (the purge zeroed and kept the buffer);
    # with no block free for a category's first buffer the reading is a counted drop: before,
    # the purge dropped the buffer and the next append raised MemoryError in the sampler
    r = mp_last_json("rawlog_unit.py", "nomem", heap="1M")
    assert "error" not in r, r
    assert r["kept"] and r["zeroed"] and r["after_purge"] >= 0, r
    assert r["first_buffer"] >= 0 or r["dropped"].get("no_memory:diagnostics") == 1, r
