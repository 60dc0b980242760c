"""The allocation-free checks made on a command before it is copied or parsed
(edge/inbound.py, docs/SECURITY.md 2.2), on the host interpreter."""

from __future__ import annotations

import json

from edge.inbound import json_depth, json_shape


def json_strings(data, longest: int) -> int:
    return json_shape(data, 6, longest)[1]


def test_json_strings_counts_keys_and_values_and_stops_at_a_long_one() -> None:
    doc = {"version": 7, "grant": ["usage"], "deny": ["marketing"], "sig": "a" * 64}
    assert json_strings(json.dumps(doc).encode(), 96) == 7  # 4 keys, 3 values
    assert json_strings(json.dumps({"id": "i" * 97}).encode(), 96) == -1
    assert json_strings(json.dumps({"id": "i" * 96}).encode(), 96) == 2
    # escapes are counted as written; a quote inside a string does not end it
    assert json_strings(b'{"a":"x\\"y"}', 4) == 2
    assert json_strings(b'{"a":"x\\"yz"}', 4) == -1
    # a memoryview (the receive buffer, read in place) and str give the same answers
    text = json.dumps({"k" * 40: 1, "id": "i" * 900})
    assert json_strings(memoryview(text.encode()), 96) == json_strings(text, 96) == -1
    assert json_strings(b"[" + b'"a",' * 60 + b'"a"]', 96) == 61


def test_json_depth_reads_a_memoryview_in_place() -> None:
    assert json_depth(memoryview(b"[" * 100), 6) == 7
    assert json_depth(memoryview(b'{"a":[1,{"b":2}]}'), 6) == 3
