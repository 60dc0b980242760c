"""Golden vectors for the shared codec, decoded by CPython and by unix MicroPython."""

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import codec
from tests.conftest import ROOT, mp_json
from tests.mp.record_scan import scan

VEC = os.path.join(ROOT, "tests", "vectors")
with open(os.path.join(VEC, "vectors.json")) as f:
    VECTORS = json.load(f)


def _read(name: str) -> bytes:
    with open(os.path.join(VEC, name), "rb") as f:
        return f.read()


def _cpython_decode(name: str):
    try:
        b = codec.decode_batch(_read(name))
    except codec.FormatError:
        return "FormatError"
    return {k: (list(map(list, v)) if k == "readings" else v) for k, v in b.items()}


@pytest.mark.parametrize("vec", VECTORS["batches"], ids=lambda v: v["file"])
def test_batch_vector_cpython(vec):
    got = _cpython_decode(vec["file"])
    if vec["expect"] == "FormatError":
        assert got == "FormatError"
    else:
        for k, v in vec["expect"].items():
            assert got[k] == v, k
        assert _read(vec["file"]).hex() == vec["hex"]


def test_vectors_decode_identically_under_micropython(micropython):
    got = mp_json(os.path.join(ROOT, "tests", "mp", "decode_vectors.py"), VEC)
    for vec in VECTORS["batches"]:
        res = got[vec["file"]]
        if vec["expect"] == "FormatError":
            assert res == {"error": "FormatError"}, vec["file"]
        else:
            assert res == _cpython_decode(vec["file"]), vec["file"]
    for vec in VECTORS["records"]:
        assert got[vec["file"]] == vec["expect"], vec["file"]


def test_micropython_encodes_the_golden_bytes(micropython, tmp_path):
    """The device's writers (format 1 and 2) produce the committed bytes; the deflated
    vector is host-made (no firmware here compresses) and only decoded."""
    script = tmp_path / "enc.py"
    script.write_text(
        "import json\nfrom edge import batchv2, codec\n"
        f"v = json.load(open({os.path.join(VEC, 'vectors.json')!r}))\n"
        "out = {}\n"
        "for b in v['batches']:\n"
        "    e = b['expect']\n"
        "    if e == 'FormatError' or 'deflate' in b['file']:\n        continue\n"
        "    if b.get('format') == 2:\n"
        "        dev = e['device'] or 'fridge-0001'\n"
        "        w = batchv2.BatchWriter2(dev, 64, b['names'])\n"
        "    else:\n"
        "        w = codec.BatchWriter(e['device'], 4096)\n"
        "    w.start(e['category'] or 'essential', e['boot'], e['flags'])\n"
        "    for s, t, c, x in e['readings']:\n"
        "        w.add(s, t, e['boot'], e['flags'], c, x)\n"
        "    out[b['file']] = ''.join('%02x' % c for c in w.finish())\n"
        "print(json.dumps(out))\n"
    )
    got = mp_json(str(script))
    checked = 0
    for vec in VECTORS["batches"]:
        if vec["file"] in got:
            assert got[vec["file"]] == vec["hex"], vec["file"]
            checked += 1
    assert checked == 8  # 5 of format 1, 3 of format 2


def test_records_cpython():
    for vec in VECTORS["records"]:
        assert scan(_read(vec["file"])) == vec["expect"], vec["file"]


readings = st.lists(
    st.tuples(
        st.integers(1, 0xFFFF),
        st.integers(0, 10**6),
        st.integers(0, 255),
        st.integers(-(2**31), 2**31 - 1),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    readings,
    st.integers(0, 2**16 - 1).flatmap(lambda e: st.integers(e << 32, (e << 32) + 2**32 - 2**22)),
    st.integers(10**12, 2 * 10**12),
)
def test_batch_roundtrip(rs, seq0, ts0):
    """Whole 48-bit seqs survive the trip, in every epoch (FORMAT.md 1)."""
    w = codec.BatchWriter("dev-1", 4096)
    w.start("usage", 3, 0)
    seq, ts, want = seq0, ts0, []
    for ds, dt, ch, val in rs:
        seq += ds
        ts += dt
        assert w.add(seq, ts, 3, 0, ch, val)
        want.append((seq, ts, ch, val))
    data = bytes(w.finish())
    assert bool(data[4] & codec.FLAG_SEQ_EPOCH) == bool(seq0 >> 32)
    b = codec.decode_batch(data)
    assert b["readings"] == want and b["device"] == "dev-1" and b["category"] == "usage"
    assert b["first_seq"] == want[0][0] and b["count"] == len(want)


def test_writer_refuses_what_does_not_fit():
    w = codec.BatchWriter("dev", codec.batch_header_len(b"dev", b"usage") + 2 * codec.ENTRY_LEN)
    w.start("usage", 1, 0)
    assert w.add(10, 1000, 1, 0, 1, 5)
    assert not w.add(10, 1000, 1, 0, 1, 5)  # seq must increase
    assert not w.add(10 + 0x10000, 1000, 1, 0, 1, 5)  # seq delta beyond u16
    assert not w.add(11, 999, 1, 0, 1, 5)  # ts going backwards
    assert not w.add(11, 1000, 2, 0, 1, 5)  # another boot
    assert w.add(11, 1000, 1, 0, 1, 5)
    assert not w.add(12, 1000, 1, 0, 1, 5)  # full
    assert codec.decode_batch(bytes(w.finish()))["count"] == 2


def test_a_batch_never_crosses_a_seq_epoch():
    """FORMAT.md 1 rule 1: the reading after 2^32 - 1 starts a new batch, whose header says
    epoch 1; the decoder gives back the whole seqs, not the wrapped low bits."""
    w = codec.BatchWriter("dev", 4096)
    w.start("usage", 1, 0)
    assert w.add(2**32 - 1, 1000, 1, 0, 1, 5)
    assert not w.add(2**32, 1001, 1, 0, 1, 6)
    first = codec.decode_batch(bytes(w.finish()))
    w.start("usage", 1, 0)
    assert w.add(2**32, 1001, 1, 0, 1, 6)
    second = codec.decode_batch(bytes(w.finish()))
    assert first["readings"] == [(2**32 - 1, 1000, 1, 5)]
    assert second["readings"] == [(2**32, 1001, 1, 6)] and second["first_seq"] == 2**32
