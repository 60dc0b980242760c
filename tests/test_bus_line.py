"""Line protocols (edge/bus/line.py, edge/bus/line_text.py): `KEY=VALUE;` pairs, `key value`
words, positional fields, CSV with a header, JSON lines and regular expressions with named
groups, each mapped to channels from config alone; splits at every byte, garbage, bit flips, the
byte ledger, config errors. The 100,000-case fuzz is in test_bus_fuzz.py."""

import re

import pytest

from edge.bus import line_text
from edge.bus.line import LineParser

KEYS = {
    "T1": 1,
    "P": 3,
    "DOOR": {"ch": 5, "enum": {"OPEN": 1, "SHUT": 0}},
    "E": {"ch": 7, "mul": 3600, "div": 1000},
}
DECIMALS = {1: 2}
MSG = b"T1=4.256;P=-12;DOOR=OPEN;E=2500\r\n"
EXPECT = [(1, 425), (3, -12), (5, 1), (7, 9000)]


def run(p, data):
    out = []
    n = p.feed(data, len(data), lambda c, v: out.append((c, v)))
    assert n == len(out)
    return out


def kv(keys=KEYS, decimals=DECIMALS, **kw):
    return LineParser(dict(keys=keys, **kw), decimals)


def ledger_adds_up(p):
    b = p.ledger.stats()
    assert b["fed"] == b["decoded"] + b["unhandled"] + b["rejected"] + b["garbage"] + b["pending"]
    return b


def test_well_formed_pairs_map_to_fixed_point_channels():
    p = kv()
    assert run(p, MSG) == EXPECT
    b = ledger_adds_up(p)
    assert b["decoded"] == len(MSG) - 1 and b["garbage"] == 1  # the LF of CR LF


def test_split_at_every_byte_gives_the_same_readings():
    for i in range(len(MSG) + 1):
        p = kv()
        assert run(p, MSG[:i]) + run(p, MSG[i:]) == EXPECT, i


def test_values_decimals_sign_and_truncation():
    p = kv({"A": 1, "B": 2})
    assert run(p, b"A=+1;A=-0.5;A=3.14159;B=7.9;A=.5\n") == [
        (1, 100),
        (1, -50),
        (1, 314),
        (2, 7),
        (1, 50),
    ]


def test_fahrenheit_with_scale_and_offset_into_a_celsius_channel():
    p = kv({"TF": {"ch": 1, "scale": 5 / 9, "offset": -160 / 9}})
    assert run(p, b"TF=72.5\nTF=-40\n") == [(1, 2250), (1, -4000)]


def test_garbage_is_rejected_with_reasons_and_parsing_resumes():
    p = kv()
    data = b"\x00\xff;=;T1=abc;NOPE=1;P=;DOOR=AJAR;T1=123456789012;" + b"K" * 40 + b"=1\nP=5\n"
    assert run(p, data) == [(3, 5)]
    e = p.errors
    # "\x00\xff" is a pair without "=": no value
    assert e["empty_key"] == 1 and e["bad_value"] == 1 and e["no_value"] == 2
    assert e["unknown_key"] == 2 and e["unknown_label"] == 1 and e["value_range"] == 1
    b = ledger_adds_up(p)
    assert b["pending"] == 0 and b["decoded"] == len(b"P=5\n")
    assert b["unhandled"] == len(b"NOPE=1;") + 42  # pairs of keys nobody configured


def test_over_long_line_is_rejected_whole_and_the_next_parses():
    p = kv(max_line=16)
    assert run(p, b"P=1;" + b"X" * 40 + b"\nP=2\n") == [(3, 2)]
    b = ledger_adds_up(p)
    assert p.errors["too_long"] == 1 and b["rejected"] == 45 and b["decoded"] == 4


def test_every_bit_flip_is_harmless_and_the_next_line_parses():
    for i in range(len(MSG) * 8):
        bad = bytearray(MSG)
        bad[i // 8] ^= 1 << (i % 8)
        p = kv()
        out = run(p, bytes(bad) + b"\nP=42\n")
        assert out[-1] == (3, 42), (i, out)
        assert len(out) <= len(EXPECT) + 1
        assert ledger_adds_up(p)["pending"] == 0


def test_key_value_words_after_a_prefix():
    """A robot-vacuum battery log: `bat: key value key value ...`, other lines ignored."""
    p = LineParser(
        {
            "assign": " ",
            "prefix": "bat:",
            "keys": {
                "volt": 1,
                "cur": 2,
                "temp": 3,
                "soc": 4,
                "state": {"ch": 5, "enum": {"chg": 1}},
            },
        },
        {1: 2, 2: 3},
    )
    log = b"wheel: l 12 r 14\nbat: volt 16.21 cur -0.512 temp 31 soc 87 state chg cyc 212\n"
    assert run(p, log) == [(1, 1621), (2, -512), (3, 31), (4, 87), (5, 1)]
    assert p.errors["unknown_key"] == 1  # cyc
    b = ledger_adds_up(p)
    assert b["unhandled"] == len(b"wheel: l 12 r 14\n") and b["pending"] == 0


def test_positional_fields():
    p = LineParser(
        {"format": "fields", "fields": {"1": 1, "3": {"ch": 2, "enum": {"ON": 1}}}}, {1: 1}
    )
    assert run(p, b"12:00:01  21.5 x ON\n12:00:02 bad\n") == [(1, 215), (2, 1)]
    assert p.errors["bad_value"] == 1 and p.errors["missing_field"] == 1


def test_csv_with_a_header_learned_from_the_stream():
    p = LineParser({"format": "csv", "columns": {"temp_c": 1, "rh": 2}}, {1: 1})
    log = b'1,20.0,40\ntime,temp_c,rh,fan\n1,21.5,45,1\n2, 22.0 ,"46",0\n3,x\n'
    assert run(p, log) == [(1, 215), (2, 45), (1, 220), (2, 46)]
    assert p.errors["no_header"] == 1  # data before the header
    assert p.errors["bad_value"] == 1 and p.errors["missing_field"] == 1


def test_csv_with_a_fixed_header():
    p = LineParser({"format": "csv", "sep": ";", "header": ["a", "b"], "columns": {"b": 1}})
    assert run(p, b"1;2\n3;4\n") == [(1, 2), (1, 4)]


def test_json_lines():
    p = LineParser(
        {
            "format": "json",
            "keys": {"t": 1, "bat.soc": 2, "on": 3, "mode": {"ch": 4, "enum": {"eco": 2}}},
        },
        {1: 1},
    )
    log = b'{"t": 21.55, "bat": {"soc": 87}, "on": true, "mode": "eco"}\n{"t": \n[1]\n{"x": 1}\n'
    assert run(p, log) == [(2, 87), (4, 2), (3, 1), (1, 216)]  # in key order
    assert p.errors["bad_json"] == 2
    b = ledger_adds_up(p)
    assert b["unhandled"] == len(b'{"x": 1}\n')


def test_deeply_nested_json_is_rejected_not_raised():
    p = LineParser({"format": "json", "keys": {"t": 1}, "max_line": 2048})
    deep = b"[" * 2000 + b"\n" + b'{"t": 5}\n'
    assert run(p, deep) == [(1, 5)] and p.errors["bad_json"] == 1


def test_regex_with_named_groups():
    p = LineParser(
        {
            "format": "regex",
            "pattern": r"T=(?P<t>-?[0-9.]+)C \[(x|y)\] H=(?P<h>[0-9]+)",
            "groups": {"t": 1, "h": 2, "2": {"ch": 3, "enum": {"x": 0, "y": 1}}},
        },
        {1: 1},
    )
    assert run(p, b"12:00 T=-3.5C [y] H=40%\nnothing here\n") == [(1, -35), (3, 1), (2, 40)]
    assert p.errors["no_match"] == 1


def test_named_groups_are_rewritten_for_micropython_re():
    plain, names = line_text.translate(r"(?P<a>\d+)[(]\((?:x)(b)(?P<c>[^)]*)", "p")
    assert plain == r"(\d+)[(]\((?:x)(b)([^)]*)"
    assert names == ["a", None, "c"]


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"keys": {"": 1}}, "line.keys."),
        ({"keys": {"A": {"ch": 300}}}, "line.keys.A.ch"),
        ({"keys": {"A": {"ch": 1, "div": 0}}}, "line.keys.A.div"),
        ({"keys": {"A": {"ch": 1, "bogus": 1}}}, "line.keys.A.bogus"),
        ({"keys": {"A": {"ch": 1, "enum": {"X": "y"}}}}, "line.keys.A.enum.X"),
        ({"format": "xml", "keys": {"A": 1}}, "line.format"),
        ({"sep": ";;", "keys": {"A": 1}}, "line.sep"),
        ({"format": "fields", "fields": {"x": 1}}, "line.fields.x"),
        ({"format": "csv", "columns": {"a": 1}, "header": "a,b"}, "line.header"),
        ({"format": "regex", "pattern": "(", "groups": {"1": 1}}, "line.pattern"),
        ({"format": "regex", "pattern": "(?P<a>x)", "groups": {"b": 1}}, "line.groups.b"),
        ({"format": "json"}, "line.keys"),
        ({"keys": {"A": 1}, "max_line": 5}, "line.max_line"),
    ],
)
def test_bad_config_names_the_key(spec, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        LineParser(spec)
