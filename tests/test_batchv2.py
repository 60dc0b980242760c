"""Batch format 2 (docs/FORMAT.md 3.8): round trips, the format 1 fallback, identity from the
topic, and a decoder that refuses every broken payload with FormatError under both
interpreters (the golden vectors themselves are checked in tests/test_codec.py)."""

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import batchv2, codec
from tests.conftest import ROOT, run_mp

VEC = os.path.join(ROOT, "tests", "vectors")


def _encode(readings, boot=3, flags=0, names=False, cap=200, device="dev-1", category="usage"):
    """Add readings until the writer refuses one; (payload bytes, readings taken)."""
    w = batchv2.BatchWriter2(device, cap, names)
    w.start(category, boot, flags)
    taken = []
    for seq, ts, ch, val in readings:
        if not w.add(seq, ts, boot, flags, ch, val):
            break
        taken.append((seq, ts, ch, val))
    return bytes(w.finish()), taken, w


def _v1_len(n, device="dev-1", category="usage"):
    return codec.batch_header_len(device.encode(), category.encode()) + n * codec.ENTRY_LEN


steps = st.lists(
    st.tuples(
        st.integers(1, 70),  # seq step (other categories take seqs between)
        st.one_of(st.integers(0, 20), st.integers(0, 120_000)),  # ms since the previous
        st.integers(0, 9),  # channel
        st.one_of(st.integers(-40, 40), st.integers(-(2**31), 2**31 - 1)),  # value
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 2**48 - 2**20), st.integers(-(2**40), 2**42), st.booleans())
def test_roundtrip_and_never_larger_than_format_1(rs, seq0, ts0, names):
    seq, ts, readings = seq0, ts0, []
    for ds, dt, ch, val in rs:
        seq += ds
        ts += dt
        readings.append((seq, ts, ch, val))
    data, taken, _w = _encode(readings, names=names)
    assert taken, "the first reading always fits"
    b = codec.decode_batch(data, "dev-1", "usage")
    assert b["readings"] == taken
    assert b["device"] == "dev-1" and b["category"] == "usage"
    assert len(data) <= _v1_len(len(taken)) + (2 if taken[0][0] >> 32 else 0)


def test_writer_refuses_what_does_not_fit():
    w = batchv2.BatchWriter2("dev", 3)
    w.start("usage", 1, 0)
    assert w.add(10, 1000, 1, 0, 1, 5)
    assert not w.add(10, 1000, 1, 0, 1, 5)  # seq must rise
    assert not w.add(11, 999, 1, 0, 1, 5)  # time must not go back
    assert not w.add(11, 1000, 2, 0, 1, 5)  # another boot
    assert not w.add(11, 1000, 1, codec.FLAG_CLOCK_UNSYNCED, 1, 5)  # another clock flag
    assert not w.add(10 + 0x10000, 1000, 1, 0, 1, 5)  # a seq step format 1 could not carry
    assert not w.add(11, 1000 + 2**30, 1, 0, 1, 5)  # too far from the first reading
    assert w.add(11, 1000, 1, 0, 2, 5)
    assert w.add(12, 1000, 1, 0, 3, 5)
    assert not w.add(13, 1000, 1, 0, 1, 5)  # full
    assert codec.decode_batch(bytes(w.finish()))["count"] == 3


def test_a_33rd_channel_starts_a_new_batch():
    readings = [(i + 1, 1000 + i, i, i) for i in range(40)]
    data, taken, _w = _encode(readings)
    assert len(taken) == batchv2.MAX_CHANNELS
    assert codec.decode_batch(data)["readings"] == taken


def test_start_forgets_the_previous_batch():
    w = batchv2.BatchWriter2("dev", 10)
    for base in (1, 100):
        w.start("usage", 1, 0)
        for i in range(5):
            assert w.add(base + i, 5000 + 10 * i, 1, 0, 7 + i % 2, base * i)
        b = codec.decode_batch(bytes(w.finish()))
        assert [r[0] for r in b["readings"]] == list(range(base, base + 5))


def test_incompressible_batch_goes_as_format_1():
    """Values that jump over the whole i32 range cost more than 11 bytes in format 2: the
    writer sends that batch as format 1, which every collector reads."""
    rng = random.Random(7)
    readings = []
    seq, ts = 1, 10**12
    for _ in range(50):
        seq += rng.randint(1, 60000)
        ts += rng.randint(0, 10**6)
        readings.append((seq, ts, rng.randint(0, 20), rng.randint(-(2**31), 2**31 - 1)))
    data, taken, w = _encode(readings)
    assert data[2] == 1 and w.fallbacks == 1
    assert codec.decode_batch(data, "dev-1", "usage")["readings"] == taken
    assert len(data) == _v1_len(len(taken))


def test_regular_columns_cost_almost_nothing():
    """One channel, consecutive seqs, a reading every second, a constant value: the seq, time
    and value columns are regular (3.8.4): header plus a few bytes, whatever the count."""
    readings = [(500 + i, 1795000000000 + 1000 * i, 1, 2150) for i in range(200)]
    data, taken, _w = _encode(readings)
    assert len(taken) == 200
    assert len(data) < 30, len(data)
    assert codec.decode_batch(data)["readings"] == taken


def test_identity_comes_from_the_topic():
    readings = [(1, 1000, 1, 5), (2, 2000, 1, 6)]
    nameless, _t, _w = _encode(readings)
    named, _t, _w = _encode(readings, names=True)
    b = codec.decode_batch(nameless, "fridge-9", "usage")
    assert (b["device"], b["category"]) == ("fridge-9", "usage")
    assert codec.decode_batch(nameless)["device"] is None
    with pytest.raises(codec.FormatError, match="device"):
        codec.decode_batch(named, "fridge-9", "usage")
    with pytest.raises(codec.FormatError, match="category"):
        codec.decode_batch(named, "dev-1", "essential")
    w1 = codec.BatchWriter("dev-1", 256)
    w1.start("usage", 3, 0)
    w1.add(1, 1000, 3, 0, 1, 5)
    with pytest.raises(codec.FormatError, match="device"):  # format 1 is held to it too
        codec.decode_batch(bytes(w1.finish()), "dev-2", "usage")


def _mutants(seed: int, n: int):
    rng = random.Random(seed)
    names = sorted(f for f in os.listdir(VEC) if f.startswith("batch2_"))
    goods = []
    for f in names:
        with open(os.path.join(VEC, f), "rb") as fh:
            goods.append(fh.read())
    for _ in range(n):
        d = bytearray(rng.choice(goods))
        op = rng.randrange(4)
        if op == 0:
            for _ in range(rng.randint(1, 4)):
                d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del d[rng.randrange(len(d)) :]
        elif op == 2:
            d += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            d[4 + rng.randrange(len(d) - 4)] = rng.choice((0x00, 0x7F, 0x80, 0xFF))
        yield bytes(d)


def test_fuzzed_payloads_give_format_errors_only_cpython():
    decoded = rejected = 0
    for d in _mutants(1, 20000):
        try:
            b = codec.decode_batch(d)
        except codec.FormatError:
            rejected += 1
            continue
        decoded += 1
        assert 1 <= b["count"] == len(b["readings"])
        seqs = [r[0] for r in b["readings"]]
        assert seqs == sorted(set(seqs)) and seqs[0] == b["first_seq"]
    assert rejected > 10000 and decoded > 100, (rejected, decoded)


def test_fuzzed_payloads_give_format_errors_only_micropython(micropython, tmp_path):
    cases = tmp_path / "cases.bin"
    with open(cases, "wb") as f:
        for d in _mutants(2, 3000):
            f.write(len(d).to_bytes(2, "little") + d)
    script = tmp_path / "fuzz.py"
    script.write_text(
        "import json, sys\nfrom edge import codec\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "p = 0\n"
        "while p < len(data):\n"
        "    n = data[p] | data[p + 1] << 8\n"
        "    d = data[p + 2 : p + 2 + n]\n"
        "    p += 2 + n\n"
        "    try:\n"
        "        b = codec.decode_batch(d)\n"
        "        print(json.dumps([list(r) for r in b['readings']]))\n"
        "    except codec.FormatError:\n"
        "        print('\"E\"')\n"
    )
    r = run_mp(str(script), str(cases), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    got = [json.loads(line) for line in r.stdout.splitlines()]
    want = []
    for d in _mutants(2, 3000):
        try:
            want.append([list(r) for r in codec.decode_batch(d)["readings"]])
        except codec.FormatError:
            want.append("E")
    assert got == want  # same verdict and the same readings under both interpreters


def test_agent_sends_format_2_and_the_collector_gets_every_reading(agents, broker):
    """The real agent (unix MicroPython) with batch.format 2 against mosquitto: every reading
    arrives once with the values format 1 gives, in fewer bytes; the topic supplies the
    identity the payload leaves out."""
    from tests.test_e2e import _run

    got = {}
    for fmt in (1, 2):
        final, stats, readings = _run(agents, broker, f"fmt{fmt}-1", 1200, batch={"format": fmt})
        assert stats["unique"] == final["appended"] == 400 and stats["rejected"] == 0
        got[fmt] = (sorted((r[1] - readings[0][1], r[4], r[5]) for r in readings), final)
    assert [r[1:] for r in got[1][0]] == [r[1:] for r in got[2][0]]  # same channels and values
    assert got[2][1]["tx_bytes"] < got[1][1]["tx_bytes"]
