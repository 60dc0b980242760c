"""Regenerate the golden vectors (run only when docs/FORMAT.md changes the format):
    python tests/vectors/make_vectors.py
Inputs are listed here; the bytes and the expected decodes are committed beside this file."""

import json
import os
import zlib

from edge import batchv2, batchv2_read, codec

HERE = os.path.dirname(os.path.abspath(__file__))

BATCHES = [
    # name, device, category, boot, flags, readings (seq, ts, channel, value)
    (
        "batch_simple.bin",
        "fridge-0001",
        "essential",
        7,
        0,
        [(1, 1795000000000, 1, 412), (2, 1795000000250, 2, -1834), (5, 1795000001000, 1, 415)],
    ),
    ("batch_one.bin", "d", "usage", 1, 0, [(4294967295, 0, 255, -2147483648)]),
    (
        "batch_unsynced.bin",
        "heatpump-17",
        "diagnostics",
        65535,
        codec.FLAG_CLOCK_UNSYNCED,
        [(100, 5, 3, 2147483647), (65635, 4294967300, 4, 0)],
    ),
    # seq epoch 1 (FORMAT.md 1): flags bit 1 and a u16 epoch after the names
    (
        "batch_epoch.bin",
        "fridge-0001",
        "usage",
        3,
        0,
        [(4294967296, 1795000000000, 5, 1), (4294967296 + 65535, 1795000000001, 6, 2)],
    ),
    ("batch_epoch_top.bin", "d", "usage", 9, 1, [(2**48 - 2, 7, 1, 0), (2**48 - 1, 8, 1, 1)]),
]
# format 2 (FORMAT.md 3.8): name, device, category, boot, flags, names in payload, readings
BATCHES_V2 = [
    (
        "batch2_fridge.bin",
        "fridge-0001",
        "essential",
        7,
        0,
        False,
        [
            (1, 1795000000000, 1, 412),
            (2, 1795000000000, 2, -1834),
            (4, 1795000001000, 1, 415),
            (5, 1795000001002, 2, -1834),
            (7, 1795000002001, 1, 418),
            (8, 1795000002001, 2, -1830),
        ],
    ),
    (
        "batch2_regular.bin",
        "hp-17",
        "usage",
        1,
        0,
        False,
        [(1000 + i, 1795000000000 + 1000 * i, 5, 2150 + 10 * (i % 2)) for i in range(8)],
    ),
    (
        "batch2_names.bin",
        "heatpump-17",
        "diagnostics",
        65535,
        codec.FLAG_CLOCK_UNSYNCED,
        True,
        [(2**48 - 3, 5, 255, 2147483647), (2**48 - 1, 70000, 0, -2147483648)],
    ),
]
RECORDS = [
    ("records_ok.bin", [(1, 1795000000000, 7, 1, 0, 0, 412), (2, 1795000000250, 7, 5, 2, 0, -3)]),
]


def _write(name: str, data: bytes) -> None:
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main() -> None:
    vectors = {"batches": [], "records": []}
    for name, dev, cat, boot, flags, readings in BATCHES:
        w = codec.BatchWriter(dev, 4096)
        w.start(cat, boot, flags)
        for seq, ts, ch, val in readings:
            assert w.add(seq, ts, boot, flags, ch, val)
        data = bytes(w.finish())
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        vectors["batches"].append(
            {
                "file": name,
                "hex": data.hex(),
                "expect": {
                    "device": dev,
                    "category": cat,
                    "boot": boot,
                    "flags": flags,
                    "first_seq": readings[0][0],
                    "count": len(readings),
                    "readings": [list(r) for r in readings],
                },
            }
        )
    for name, dev, cat, boot, flags, names, readings in BATCHES_V2:
        w = batchv2.BatchWriter2(dev, 64, names)
        w.start(cat, boot, flags)
        for seq, ts, ch, val in readings:
            assert w.add(seq, ts, boot, flags, ch, val)
        data = bytes(w.finish())
        assert data[2] == 2, name
        _write(name, data)
        vectors["batches"].append(
            {
                "file": name,
                "hex": data.hex(),
                "format": 2,
                "names": names,
                "expect": {
                    "device": dev if names else None,
                    "category": cat if names else None,
                    "boot": boot,
                    "flags": flags,
                    "first_seq": readings[0][0],
                    "count": len(readings),
                    "readings": [list(r) for r in readings],
                },
            }
        )
    # the same batch with its body as raw DEFLATE (flag bit 3): written here, on the host; no
    # firmware this project runs on can compress (FORMAT.md 3.8.6)
    fridge = bytes.fromhex(vectors["batches"][len(BATCHES)]["hex"])
    head = 4  # magic, version, flags; then boot, count, first_seq, base_ts varints
    for _ in range(4):
        head = batchv2_read.get_uvarint(fridge, head)[1]
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = fridge[:3] + bytes([fridge[3] | batchv2.FLAG_DEFLATE]) + fridge[4:head]
    deflated += z.compress(fridge[head:]) + z.flush()
    _write("batch2_deflate.bin", deflated)
    expect = dict(vectors["batches"][len(BATCHES)]["expect"])
    vectors["batches"].append(
        {"file": "batch2_deflate.bin", "hex": deflated.hex(), "format": 2, "expect": expect}
    )
    bad2 = [
        ("batch2_bad_flags.bin", fridge[:3] + b"\x02" + fridge[4:]),  # bit 1 is reserved
        ("batch2_truncated.bin", fridge[:-2]),
        ("batch2_trailing.bin", fridge + b"\x00"),
        ("batch2_count.bin", fridge[:5] + b"\x07" + fridge[6:]),  # count 7, body holds 6
        ("batch2_seq0.bin", fridge[:6] + b"\x00" + fridge[7:]),  # first_seq 0
    ]
    for name, data in bad2:
        _write(name, data)
        vectors["batches"].append({"file": name, "hex": data.hex(), "expect": "FormatError"})
    good = bytes.fromhex(vectors["batches"][0]["hex"])
    bad = [
        ("batch_bad_magic.bin", b"XB" + good[2:]),
        ("batch_bad_version.bin", good[:2] + b"\x09" + good[3:]),
        ("batch_truncated.bin", good[:-3]),
        ("batch_bad_name.bin", good[:21] + b"\x00" + good[22:]),
        ("batch_bad_flags.bin", good[:4] + b"\x04" + good[5:]),
        # the epoch flag set on a batch written without the epoch field: the body is 2 short
        ("batch_epoch_missing.bin", good[:4] + b"\x02" + good[5:]),
    ]
    for name, data in bad:
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(data)
        vectors["batches"].append({"file": name, "hex": data.hex(), "expect": "FormatError"})
    for name, recs in RECORDS:
        buf = bytearray(codec.REC_LEN * len(recs))
        for i, r in enumerate(recs):
            codec.pack_record(buf, i * codec.REC_LEN, *r)
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(buf)
        vectors["records"].append({"file": name, "expect": [list(r) for r in recs]})
        flipped = bytearray(buf)
        flipped[10] ^= 0x01  # one bit in the first record's payload
        torn = bytes(buf[: codec.REC_LEN + 11])
        for fname, data, expect in (
            ("records_bitflip.bin", flipped, ["corrupt"] * codec.REC_LEN + [list(recs[1])]),
            ("records_torn.bin", torn, [list(recs[0]), "torn"]),
        ):
            with open(os.path.join(HERE, fname), "wb") as f:
                f.write(data)
            vectors["records"].append({"file": fname, "expect": expect})
    with open(os.path.join(HERE, "vectors.json"), "w") as f:
        json.dump(vectors, f, indent=1)
    rawlog_vector()


def rawlog_vector() -> None:
    """rawlog.img: a raw log partition of 8 blocks written by the agent's own store under unix
    MicroPython (tests/mp/rawlog_vector.py; docs/FORMAT.md 6.9), with what the workload left
    unacknowledged by its own bookkeeping (not by decoding the image)."""
    import subprocess

    from host_tools.paths import micropython_path, mp_env

    env = mp_env()
    root = os.path.dirname(os.path.dirname(HERE))
    env["MICROPYPATH"] = ".frozen:" + root + ":" + os.path.join(root, "tests", "mp")
    img = os.path.join(HERE, "rawlog.img")
    out = subprocess.run(
        [micropython_path(), os.path.join(root, "tests", "mp", "rawlog_vector.py"), "build", img],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    doc = json.loads(out.strip().splitlines()[-1])
    with open(os.path.join(HERE, "rawlog.json"), "w") as f:
        json.dump({"file": "rawlog.img", "blocks": 8, "expect": doc["expect"]}, f, indent=1)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["rawlog"]:
        rawlog_vector()  # only the raw log vector (python tests/vectors/make_vectors.py rawlog)
    else:
        main()
