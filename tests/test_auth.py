"""Authenticated end-to-end acks and signed receipts (docs/MQTT.md 8): the golden vectors of
tests/vectors/auth.json, written by the host side (host_tools/backend/e2e.py), are accepted,
refused and signed identically by the device side (edge/auth.py) under unix MicroPython."""

from __future__ import annotations

import json
import os
import time

import pytest

from host_tools.backend import e2e
from tests.conftest import ROOT, mp_json

VEC = os.path.join(ROOT, "tests", "vectors", "auth.json")
with open(VEC) as f:
    V = json.load(f)
KEY = bytes.fromhex(V["key"])


def test_host_reads_its_own_vectors():
    for a in V["acks"]:
        got = e2e.verify_ack(V["device"], bytes.fromhex(a["hex"]), KEY)
        assert got == [tuple(p) for p in a["pairs"]]
        assert e2e.signed_ack(V["device"], [tuple(p) for p in a["pairs"]], KEY).hex() == a["hex"]
    for a in V["bad_acks"]:
        assert e2e.verify_ack(V["device"], bytes.fromhex(a["hex"]), KEY) is None, a["why"]
    for r in V["receipts"]:
        signed = r["signed"].encode()
        assert e2e.sign_receipt(V["device"], r["body"].encode(), KEY) == signed
        assert e2e.verify_receipt(V["device"], signed, KEY) == "ok"
        assert json.loads(signed)["sig"] == signed[-66:-2].decode()
        assert e2e.verify_receipt("fridge-0002", signed, KEY) == "bad_signature"
        assert e2e.verify_receipt(V["device"], signed.replace(b"true", b"false"), KEY) != "ok"


def test_device_accepts_refuses_and_signs_the_same_bytes(micropython):
    got = mp_json(os.path.join(ROOT, "tests", "mp", "auth_vectors.py"), VEC)
    for a, lasts in zip(V["acks"], got["acks"], strict=True):
        assert lasts == [p[1] & 0xFFFFFFFF for p in a["pairs"]]
    assert got["bad_acks"] == [-1] * len(V["bad_acks"])
    assert got["receipts"] == [r["signed"] for r in V["receipts"]]


# --- the attack: acks forged by another client ------------------------------------------------

FORGED_DEVICE = "auth-forge-1"


def _forger(port: int):
    """A client that acks every batch of the device it sees, as a collector would, without
    storing anything: unauthenticated pairs and a signed ack under a wrong key."""
    import paho.mqtt.client as mqtt

    from edge import codec

    sent = {"acks": 0}

    def on_message(client, userdata, msg):
        try:
            b = codec.decode_batch(msg.payload)
        except codec.FormatError:
            return
        first, last = b["readings"][0][0], b["readings"][-1][0]
        topic = f"edge/{FORGED_DEVICE}/ack"
        client.publish(topic, e2e.ack_payload(first, last), qos=0)
        client.publish(topic, e2e.signed_ack(FORGED_DEVICE, [(first, last)], bytes(32)), qos=0)
        sent["acks"] += 2

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="auth-forger")
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(f"edge/{FORGED_DEVICE}/t/+", qos=1)
    c.loop_start()
    return c, sent


@pytest.mark.adversarial
def test_forged_acks_delete_nothing(agents):
    """Before: a client on an open broker acked every batch it saw, the device freed its store
    and the collector that came later got none of them. With a backend key the device takes
    only acks signed with it."""
    from host_tools.agent.run import agent_config
    from host_tools.backend import broker as broker_mod
    from host_tools.backend.collect import AckingCollector

    count = 3000
    with broker_mod.start(prefer="mosquitto") as b:
        forger, sent = _forger(b.port)
        cfg = agent_config(
            "unix-sim",
            device_id=FORGED_DEVICE,
            mqtt={"host": "127.0.0.1", "port": b.port, "e2e_ack": True, "e2e_timeout_ms": 1000},
            channels=[{"id": 1, "name": "cabinet_temp_cC", "category": "essential"}],
            sim={"rate_hz": 1000, "count": count},
            backend={"key": KEY.hex()},
        )
        agent = agents(cfg)
        time.sleep(5)  # the device sends everything; only the forger answers
        forger.loop_stop()
        forger.disconnect()
        col = AckingCollector(b.host, b.port, device_keys={FORGED_DEVICE: KEY}).start()
        try:
            agent.wait(60)
            col.wait_for(lambda c: c.counts["unique"] >= count, 20)
            stored = col.counts["unique"]
        finally:
            col.stop()
    final = agent.final or {}
    print(f"forged acks: {sent['acks']} sent; collector stored {stored} of {count}; {final}")
    assert sent["acks"] > 20
    assert stored == count, (stored, final)
    assert final["mqtt"]["bad_acks"] >= sent["acks"] // 2, final["mqtt"]
