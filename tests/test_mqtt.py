"""MQTT client: inbound fuzz, malformed packets from a fake broker (tests/mqtt_harness.py),
dead-link detection, bad password backoff, ACL."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from host_tools.backend import broker as broker_mod
from host_tools.backend.proxy import FaultProxy
from tests import mqtt_harness as mq
from tests.conftest import ROOT, mp_json

MP = os.path.join(ROOT, "tests", "mp")
CLIENT = os.path.join(MP, "mqtt_client.py")


def test_parser_fuzz_100k_in_process(micropython):
    r = mp_json(os.path.join(MP, "fuzz_mqtt.py"), "100000", "4", timeout=120)
    assert r["cases"] == 100000
    assert r["crashes"] == 0, r.get("last_crash")
    assert r["bad_return"] == 0
    # every mutation family is seen and rejected with a counted reason
    assert r["rejected"] > 40000
    assert all(v > 0 for v in r["reasons"].values()), r["reasons"]
    assert r["rejected"] == sum(r["reasons"].values())
    assert r["accepted"] > 0 and r["incomplete"] > 0


@pytest.mark.parametrize("mode", ["fit", "oversized"])
def test_packets_across_the_buffer_end_at_every_offset(micropython, mode):
    """Valid packets cut by the 2048-byte receive buffer's end at each of its 2048 offsets
    come out whole and in order (the straddle check compares a packet's length with the
    buffer, not its end offset: before, 2044 of 2047 cases were rejected as oversize);
    `oversized` adds a PUBLISH of 3-7 KB, skipped as it streams in with its packet id
    (before: a protocol error, the connection dropped, in every case)."""
    r = mp_json(os.path.join(MP, "fuzz_straddle.py"), "1", *([mode] if mode == "fit" else []))
    assert r["cases"] == 2047
    assert r["rejected"] == 0 and r["mismatch"] == 0, r["first_bad"]
    assert r["skipped"] == (2047 if mode == "oversized" else 0)


def _bad_packets() -> list[bytes]:
    return [
        b"\x40\x03\x00\x01\x00",  # PUBACK with 3 bytes
        b"\x42\x02\x00\x01",  # PUBACK with reserved flags
        b"\x34\x05\x00\x01a\x00\x01",  # PUBLISH QoS 2
        b"\x36\x05\x00\x01a\x00\x01",  # PUBLISH QoS 3
        b"\x30\x02\x00\x09",  # topic overruns the packet
        b"\x30\x04\x00\x01#x",  # wildcard in a PUBLISH topic
        b"\x32\x03\x00\x01a",  # QoS 1 without a packet id
        b"\x30\xff\xff\xff\xff\x7f",  # 5-byte remaining length
        b"\x90\xff\xff\x7f" + b"x" * 64,  # oversized SUBACK (2 MB claimed)
        mq.connack(),  # a second CONNACK
        b"\x10\x00",  # CONNECT from the server
        b"\x00\x00",  # reserved type 0
        b"\xf0\x00",  # reserved type 15
        b"\x90\x03\x00\x01\x05",  # SUBACK reserved return code
        b"\xd0\x01\x00",  # PINGRESP with a body
        b"\x38\x05\x00\x01a\x00\x00",  # DUP set on QoS 0
    ]


def test_malformed_packets_over_a_socket_drop_and_reconnect(micropython):
    """A fake broker answers each CONNECT with a CONNACK and one malformed packet; the client
    must reject it, close the connection itself and connect again."""
    pkts = _bad_packets()
    closed_by_client = []

    def script(conn: mq.Conn, n: int) -> None:
        conn.expect(mq.connect("fuzz-dev", keepalive=5, clean=True))
        conn.send(mq.connack(), pkts[n])
        closed_by_client.append(conn.closed_by_peer())

    with mq.FakeBroker(timeout=5) as fake:
        fake.serve(script, connections=len(pkts))
        r = mp_json(CLIENT, "reconnect", "127.0.0.1", str(fake.port), str(len(pkts)), timeout=60)
        fake.join()
    assert r["connects"] == len(pkts)  # re-established after every rejection
    assert r["rx_rejected"] == len(pkts)  # each one counted
    assert closed_by_client == [True] * len(pkts)  # the client dropped the connection itself
    assert sum(r["reasons"]) == len(pkts)


def test_blackholed_link_detected_within_1_5x_keepalive(micropython, broker):
    ka = 2
    with FaultProxy(broker.port) as px:
        env_cmd = [micropython, CLIENT, "blackhole", "127.0.0.1", str(px.port), str(ka)]
        from host_tools.paths import mp_env

        env = mp_env()
        env["MICROPYPATH"] += ":" + MP
        p = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 10
        while px.stats["connections"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        px.set_blackhole(True)
        t0 = time.monotonic()
        out, _ = p.communicate(timeout=30)
        dt = time.monotonic() - t0
    r = json.loads(out.strip().splitlines()[-1])
    assert r["dead"] == 1, r
    assert r["pings"] >= 1  # it asked before it gave up
    assert dt <= 1.5 * ka + 0.5, dt  # 1.5x keepalive after the last byte, plus a 100 ms tick


@pytest.fixture(scope="module")
def auth_broker():
    """mosquitto with a password file and a per-device ACL (docs/MQTT.md 4). The files live in
    a world-readable directory: mosquitto drops root for its own user before reading them."""
    import pathlib
    import shutil
    import tempfile

    d = pathlib.Path(tempfile.mkdtemp(prefix="edge-acl-"))
    os.chmod(d, 0o755)
    pw = d / "passwd"
    pw.write_text("")
    for user, password in (("dev1", "pw1"), ("dev2", "pw2"), ("ops", "opspw")):
        subprocess.run(
            ["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True
        )
    acl = d / "acl"
    acl.write_text(
        "user ops\ntopic read edge/#\ntopic write edge/+/cmd/#\ntopic write edge/+/ack\n\n"
        "pattern write edge/%u/#\npattern read edge/%u/cmd/#\npattern read edge/%u/ack\n"
    )
    for f in (pw, acl):
        os.chmod(f, 0o644)
    b = broker_mod.start(
        prefer="mosquitto",
        conf_extra=(f"allow_anonymous false\npassword_file {pw}\nacl_file {acl}\n"),
    )
    yield b
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


def _sub_ops(port: int, topic: str, got: list):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.username_pw_set("ops", "opspw")
    ready = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topic, 1), ready.set())
    c.on_message = lambda cl, u, m: got.append(m.topic)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(5)
    time.sleep(0.3)
    return c


def test_acl_device_publishes_only_under_its_own_prefix(micropython, auth_broker):
    got: list[str] = []
    sub = _sub_ops(auth_broker.port, "edge/#", got)
    try:
        p = str(auth_broker.port)
        own = mp_json(CLIENT, "pub", "127.0.0.1", p, "dev1", "pw1", "edge/dev1/t/essential")
        other = mp_json(CLIENT, "pub", "127.0.0.1", p, "dev2", "pw2", "edge/dev1/t/essential")
        outside = mp_json(CLIENT, "pub", "127.0.0.1", p, "dev2", "pw2", "fleet/all")
        time.sleep(0.5)
    finally:
        sub.loop_stop()
        sub.disconnect()
    # mosquitto PUBACKs a denied publish and drops it silently
    assert own["pubacks"] == other["pubacks"] == outside["pubacks"] == 1
    assert got == ["edge/dev1/t/essential"], got


def test_bad_password_clear_error_and_backoff(micropython, auth_broker):
    r = mp_json(
        CLIENT, "auth", "127.0.0.1", str(auth_broker.port), "dev1", "wrong", "6", timeout=60
    )
    assert r["connects"] == 0
    assert r["auth_failures"] >= 1
    # no hot loop: a refused login backs off at least half the 4 s cap between attempts
    assert r["connect_failures"] <= 4, r
    assert any("not authorised" in m and "mqtt.password" in m for m in r["logs"]), r["logs"]
