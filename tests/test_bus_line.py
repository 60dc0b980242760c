"""Line protocol parser (edge/bus/line.py): well-formed input, splits at every byte, garbage,
bit flips and config errors. The 100,000-case fuzz is in test_bus_fuzz.py."""

import pytest

from edge.bus.line import LineParser

KEYS = {
    "T1": {"ch": 1, "scale": 2},
    "P": 3,
    "DOOR": {"ch": 5, "enum": {"OPEN": 1, "SHUT": 0}},
    "E": {"ch": 7, "mul": 3600, "div": 1000},
}
MSG = b"T1=4.256;P=-12;DOOR=OPEN;E=2500\r\n"
EXPECT = [(1, 425), (3, -12), (5, 1), (7, 9000)]


def run(p, data):
    out = []
    n = p.feed(data, len(data), lambda c, v: out.append((c, v)))
    assert n == len(out)
    return out


def test_well_formed_pairs_map_to_fixed_point_channels():
    assert run(LineParser(KEYS), MSG) == EXPECT


def test_split_at_every_byte_gives_the_same_readings():
    for i in range(len(MSG) + 1):
        p = LineParser(KEYS)
        assert run(p, MSG[:i]) + run(p, MSG[i:]) == EXPECT, i


def test_values_scale_sign_and_truncation():
    p = LineParser({"A": {"ch": 1, "scale": 2}, "B": 2})
    assert run(p, b"A=+1;A=-0.5;A=3.14159;B=7.9;A=.5\n") == [
        (1, 100),
        (1, -50),
        (1, 314),
        (2, 7),
        (1, 50),
    ]


def test_garbage_is_rejected_with_reasons_and_parsing_resumes():
    p = LineParser(KEYS)
    data = b"\x00\xff;=;T1=abc;NOPE=1;P=;DOOR=AJAR;T1=123456789012;" + b"K" * 40 + b"=1\nP=5\n"
    assert run(p, data) == [(3, 5)]
    e = p.errors
    assert e["bad_byte"] == 1 and e["empty_key"] == 1 and e["bad_value"] == 1
    assert e["unknown_key"] == 1 and e["no_value"] == 1 and e["unknown_label"] == 1
    assert e["value_range"] == 1 and e["key_too_long"] == 1


def test_every_bit_flip_is_harmless_and_the_next_line_parses():
    for i in range(len(MSG) * 8):
        bad = bytearray(MSG)
        bad[i // 8] ^= 1 << (i % 8)
        p = LineParser(KEYS)
        out = run(p, bytes(bad) + b"\nP=42\n")
        assert out[-1] == (3, 42), (i, out)
        assert len(out) <= len(EXPECT) + 1


@pytest.mark.parametrize(
    "keys, msg",
    [
        ({"": 1}, "keys."),
        ({"A": {"ch": 300}}, "keys.A.ch"),
        ({"A": {"ch": 1, "scale": 9}}, "keys.A.scale"),
        ({"A": {"ch": 1, "div": 0}}, "keys.A.div"),
        ({"A": {"ch": 1, "bogus": 1}}, "keys.A.bogus"),
        ({"A": {"ch": 1, "enum": {"X": "y"}}}, "keys.A.enum.X"),
    ],
)
def test_bad_config_names_the_key(keys, msg):
    with pytest.raises(ValueError, match=msg.replace(".", r"\.")):
        LineParser(keys)
