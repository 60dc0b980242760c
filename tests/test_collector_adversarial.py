"""Attacks on the collector over a real mosquitto (docs/SECURITY.md, docs/BACKEND.md 5): each
publishes what a hostile or broken client can publish on its own topics, then checks that the
real collector stored nothing false, lost nothing true and kept running in bounded memory.

Figures before the fix are in docs/BACKEND.md 5; each test fails on the collector that took
identity from the payload, kept every error and every seq in RAM and allowed by default.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.backend.e2e import sign_receipt
from tests.collector_rig import CollectProcess, batch, json_batch, publisher, rss_kb

pytestmark = pytest.mark.adversarial

KEYS = {"dev-k": bytes(range(32))}


@pytest.fixture(scope="module")
def broker():
    """A broker of this module's own: no retained message of another test reaches it."""
    with broker_mod.start(prefer="mosquitto") as b:
        yield b


def _send(broker, col: Collector, unique: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish in order (QoS 1, one client), then wait until `unique` readings are stored."""
    m = publisher(broker.port, "adv-send")
    try:
        for topic, payload in messages:
            m.publish(topic, payload, qos=1).wait_for_publish(5)
        assert col.wait_for(lambda c: c.stats()["unique"] == unique, 10), col.stats()
        time.sleep(0.3)  # anything refused after the last stored one is counted too
    finally:
        m.loop_stop()


def _receipt(device: str, version: int, grants: dict, seq: int) -> bytes:
    return json.dumps(
        {"device": device, "version": version, "grants": grants, "seq": seq}
    ).encode()


def test_payload_cannot_claim_another_device_or_category(broker):
    """mallory publishes on its own topic a payload that says `victim`: before the fix 2,000
    forged readings were stored as victim's and victim's 2,000 real ones were dropped as
    duplicates."""
    with Collector(broker.host, broker.port) as col:
        m = publisher(broker.port, "adv-mallory")
        v = publisher(broker.port, "adv-victim")
        try:
            for k in range(20):
                forged = batch("adv-victim", "essential", 1 + 100 * k, 100, value=-1000)
                m.publish("edge/adv-mallory/t/essential", forged, qos=1).wait_for_publish(5)
            # the right device, a category the topic does not name
            wrong_cat = batch("adv-mallory", "essential", 1, 10)
            m.publish("edge/adv-mallory/t/usage", wrong_cat, qos=1).wait_for_publish(5)
            for k in range(20):
                real = batch("adv-victim", "essential", 1 + 100 * k, 100, value=1000)
                v.publish("edge/adv-victim/t/essential", real, qos=1).wait_for_publish(5)
            assert col.wait_for(lambda c: c.stats()["unique"] >= 2000, 20), col.stats()
            time.sleep(0.3)
        finally:
            m.loop_stop()
            v.loop_stop()
        rows = col.sink.rows("SELECT device, min(value), count(*) FROM readings GROUP BY device")
        s = col.stats()
    assert rows == [("adv-victim", 1000, 2000)], rows  # only the real ones, all of them
    assert s["refused_by_reason"]["identity_device"] == 20
    assert s["refused_by_reason"]["identity_category"] == 1
    assert s["duplicates"] == 0


@pytest.mark.parametrize(
    "topic,payload,reason",
    [
        ("edge/adv-d1/status", b"[" * 100_000 + b"]" * 100_000, "oversize"),
        ("edge/adv-d1/status", b"[" * 5000 + b"]" * 5000, "json_depth"),
        ("edge/adv-d1/consent/receipt", b'{"a":' * 2000 + b"1" + b"}" * 2000, "json_depth"),
        ("edge/adv-d1/t/essential", json_batch("adv-d1", "essential", b"[[1]]"), "format"),
        ("edge/adv-d1/t/essential", json_batch("adv-d1", "essential", b'[["x", 1, 2, 3]]'),
         "format"),
        ("edge/adv-d1/t/essential", json_batch("adv-d1", "essential", b"[" * 5000),
         "format_json_depth"),
        ("edge/adv-d1/reply/ping", b"\xff\xfe not json", "bad_json"),
    ],
    ids=["huge-json-status", "deep-json-status", "deep-json-receipt", "short-json-row",
         "str-in-json-row", "deep-json-batch", "binary-reply"],
)  # fmt: skip
def test_hostile_json_does_not_stop_the_collector(broker, topic, payload, reason):
    """Before the fix, deep JSON on a status topic and a malformed JSON batch raised in
    paho's network thread, which died: nothing after them was received (0 of 50)."""
    with Collector(broker.host, broker.port) as col:
        m = publisher(broker.port, "adv-json")
        try:
            m.publish(topic, payload, qos=1).wait_for_publish(5)
            good = batch("adv-d2", "essential", 1, 50)
            m.publish("edge/adv-d2/t/essential", good, qos=1).wait_for_publish(5)
            assert col.wait_for(lambda c: c.stats()["unique"] == 50, 10), col.stats()
        finally:
            m.loop_stop()
        assert col.source.alive() and col.alive()
        s = col.stats()
    assert s["refused_by_reason"] == {reason: 1}, s
    assert s["callback_errors"] == 0


def _flood_growth_kb(broker, tmp_path, send) -> tuple[int, int, dict]:
    """RSS growth of `edgectl collect` over the first and over the second half of a flood
    (send(m, half)), and its final stats. The first half also pays for what any run
    allocates once (SQLite's page cache, paho's buffers); memory that grows per message shows
    in the second."""
    col = CollectProcess(broker.port, str(tmp_path / "flood.sqlite")).ready()
    try:
        time.sleep(1.0)
        r0 = rss_kb(col.pid)
        m = publisher(broker.port, "adv-flood")
        try:
            send(m, 0)
            time.sleep(2.0)
            r1 = rss_kb(col.pid)
            send(m, 1)
        finally:
            m.loop_stop()
        time.sleep(2.0)
        r2 = rss_kb(col.pid)
    finally:
        assert col.term() == 0, col.err
    return r1 - r0, r2 - r1, col.final()


def test_one_byte_payload_flood_keeps_memory_flat(broker, tmp_path):
    """2,000 one-byte payloads on topics with a 50 KB device name: before the fix the error
    log kept every message whole, +105 MB RSS."""

    def send(m, half):
        for i in range(1000):
            m.publish("edge/" + "x" * 50_000 + f"{half}-{i}/t/essential", b"\x00", qos=1)
        m.publish("edge/adv-fl/t/essential", batch("adv-fl", "essential", 1 + half, 1), qos=1)

    first, second, s = _flood_growth_kb(broker, tmp_path, send)
    print(f"one-byte flood: RSS +{first} KB, then +{second} KB; {s['refused_by_reason']}")
    assert s["unique"] == 2
    assert s["refused_by_reason"] == {"topic_too_long": 2000}
    assert first + second < 8 * 1024 and second < 2048, (first, second)


def test_sparse_forged_seqs_cost_no_memory_per_reading(broker, tmp_path):
    """60,000 readings 65,535 seqs apart: before the fix the seq set and the in-RAM TinyDB cost
    +42 MB (700 B per reading); now the key is in SQLite and RAM does not grow per seq."""

    def send(m, half):
        for k in range(300 * half, 300 * half + 300):
            b = batch("adv-sp", "essential", 1 + k * 100 * 65535, 100, step=65535)
            m.publish("edge/adv-sp/t/essential", b, qos=1)

    first, second, s = _flood_growth_kb(broker, tmp_path, send)
    print(f"sparse seqs: RSS +{first} KB, then +{second} KB for {s['unique']} readings")
    assert s["unique"] == 60_000
    assert second < 2048, (first, second)  # < 70 B per reading of the second 30,000


def test_forged_far_future_seq_cannot_suppress_the_real_reading(broker):
    """Someone with a device's own login publishes seq 5,000 ahead of it. Before the fix the
    real reading with that seq was dropped as a duplicate, unseen; now both are kept, the
    second in seq_conflicts, and counted."""
    with Collector(broker.host, broker.port) as col:
        m = publisher(broker.port, "adv-future")
        try:
            fake = batch("adv-ff", "essential", 5000, 3, value=-7)
            m.publish("edge/adv-ff/t/essential", fake, qos=1).wait_for_publish(5)
            for k in range(50):  # the real device: seqs 1..5000, values 100..
                real = batch("adv-ff", "essential", 1 + 100 * k, 100, value=100 + 100 * k)
                m.publish("edge/adv-ff/t/essential", real, qos=1).wait_for_publish(5)
            assert col.wait_for(lambda c: c.stats()["conflicts"] >= 1, 10), col.stats()
        finally:
            m.loop_stop()
        s = col.stats()
        conflict = col.sink.rows("SELECT seq, value FROM seq_conflicts")
    assert s["unique"] == 4999 + 3 and s["conflicts"] == 1 and s["duplicates"] == 0, s
    assert conflict == [(5000, 100 + 4999)]  # the real reading is held, flagged


def test_consent_check_is_default_deny(broker):
    """Before the fix a category the receipt does not list was stored (10 of 10), and so was
    a revoked category's reading with a seq below the receipt's that arrived after it."""
    with Collector(broker.host, broker.port) as col:
        grants = {"essential": True, "usage": False}
        _send(broker, col, 10, [
            ("edge/adv-c/t/usage", batch("adv-c", "usage", 1, 10)),
            ("edge/adv-c/consent/receipt", _receipt("adv-c", 2, grants, 100)),
            ("edge/adv-c/t/marketing", batch("adv-c", "marketing", 200, 10)),
            ("edge/adv-c/t/usage", batch("adv-c", "usage", 50, 10)),
            ("edge/adv-c/t/essential", batch("adv-c", "essential", 300, 10)),
        ])  # fmt: skip
        s = col.stats()
    assert s["refused_by_category"] == {"usage": 20, "marketing": 10}, s
    assert s["by_category"] == {"essential": 10}


def test_receipts_must_be_signed_by_the_device(broker, tmp_path):
    """With device keys, an unsigned or badly signed receipt changes nothing: a forged grant
    does not open a category."""
    with Collector(broker.host, broker.port, device_keys=KEYS) as col:
        key = KEYS["dev-k"]
        good = sign_receipt("dev-k", _receipt("dev-k", 1, {"essential": True}, 1), key)
        forged = _receipt("dev-k", 2, {"essential": True, "usage": True}, 1)
        tampered = good.replace(b'"version": 1', b'"version": 3').replace(
            b'"essential": true', b'"essential": true, "usage": true'
        )
        other = sign_receipt("dev-x", _receipt("dev-x", 1, {"usage": True}, 1), key)
        _send(broker, col, 3, [
            ("edge/dev-k/consent/receipt", good),
            ("edge/dev-k/consent/receipt", forged),
            ("edge/dev-k/consent/receipt", tampered),
            ("edge/dev-x/consent/receipt", other),  # not a known device
            ("edge/dev-k/t/usage", batch("dev-k", "usage", 5, 10)),
            ("edge/dev-k/t/essential", batch("dev-k", "essential", 20, 3)),
        ])  # fmt: skip
        s = col.stats()
        assert col.receipts["dev-k"]["version"] == 1
    r = s["refused_by_reason"]
    assert r["receipt_unsigned"] == 1 and r["receipt_bad_signature"] == 1, r
    assert r["unknown_device"] == 1 and s["refused_by_category"] == {"usage": 10}, s


def test_error_log_is_bounded(broker):
    with Collector(broker.host, broker.port) as col:
        m = publisher(broker.port, "adv-errors")
        try:
            for i in range(3000):
                m.publish(f"edge/adv-e{i % 7}/t/essential", b"EB" + os.urandom(30), qos=1)
            assert col.wait_for(lambda c: c.stats()["rejected"] == 3000, 20), col.stats()
        finally:
            m.loop_stop()
        assert len(col.errors) == 100 and max(len(e) for e in col.errors) <= 200
