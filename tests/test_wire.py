"""Golden vectors for the second shared contract module (edge/wire.py: names, ticks, consent
bytes and state, segment header, replay feed), evaluated by CPython and by unix MicroPython."""

import json
import os

import pytest

from tests.conftest import ROOT, mp_json
from tests.mp.wire_vectors import run

VEC = os.path.join(ROOT, "tests", "vectors", "wire.json")
with open(VEC) as f:
    CASES = json.load(f)["cases"]
CPYTHON = run(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_wire_vector_cpython(case):
    assert CPYTHON[case["id"]] == case["expect"]


def test_wire_vectors_under_micropython(micropython):
    got = mp_json(os.path.join(ROOT, "tests", "mp", "wire_vectors.py"), VEC)
    bad = [c["id"] for c in CASES if got[c["id"]] != c["expect"]]
    assert not bad, {i: got[i] for i in bad}
    # the device's own time.ticks_diff agrees with the shared arithmetic (cases without a wrap:
    # the unix port wraps at 2^62, not at an ESP32's 2^30)
    for c in CASES:
        if c.get("native"):
            assert got["native " + c["id"]] == c["expect"], c["id"]


def test_host_tools_use_the_shared_rules():
    """The host copies are gone: provisioning's id rule, the consent signer, the replay feed
    writer and the segment dump use edge/wire.py (a re-implementation would drift)."""
    from edge import wire
    from host_tools.agent import replay
    from host_tools.backend import consent, provision
    from host_tools.errors import ToolError

    doc = {"version": 2, "grant": ["usage"], "ts": 9}
    assert consent.sign("d-1", doc, b"k" * 16)["sig"] == wire.consent_sig(b"k" * 16, "d-1", doc)
    for bad in ("d\u00e9v-1", "dev-1\n"):  # accepted by the old regex and isalpha() copies
        with pytest.raises(ToolError, match="device id"):
            provision.provision(bad, out=None)  # type: ignore[arg-type]
    assert replay.consent_state({"categories": {"essential": {}}}, "all")["format"] == 1


def test_host_config_check_refuses_the_ids_the_device_refuses():
    """`edgectl check` ran the schema's name rule with CPython's str.isalpha(), which accepts
    'é': the host passed a device id the agent then refused at boot."""
    from edge import schema

    problems = schema.check({"device_id": "d\u00e9v-1"})
    assert problems and "'device_id'" in problems[0], problems
