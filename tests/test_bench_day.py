"""`edgectl bench day` (host_tools/bench/day.py, docs/MQTT.md 9): a short virtual run of the real
agent and the baseline, bytes counted on the wire; and the MQTT packet counter it relies on."""

from __future__ import annotations

import random

from host_tools.bench import day, day_profiles
from tests import mqtt_harness


def _publish(topic: str, payload: bytes, qos: int = 1, pid: int = 1) -> bytes:
    return mqtt_harness.publish(topic, payload, qos=qos, pid=pid if qos else 0)


def test_mqtt_counter_splits_streams_cut_anywhere():
    up = (
        _publish("edge/d/t/usage", b"x" * 300)
        + _publish("edge/d/status", b"{}", 0)
        + mqtt_harness.packet(mqtt_harness.PINGREQ)
        + _publish("edge/d/consent/receipt", b"{}")
    )
    down = mqtt_harness.puback(1) * 2 + mqtt_harness.pingresp()
    rng = random.Random(3)
    for _ in range(50):
        c = day.MqttCounter()
        for key, data in (("bytes_up", up), ("bytes_down", down)):
            p = 0
            while p < len(data):
                k = rng.randint(1, 40)
                c.feed(1, key, data[p : p + k])
                p += k
        assert c.packets == {
            "telemetry": 1,
            "status": 1,
            "pingreq": 1,
            "receipt": 1,
            "puback": 2,
            "pingresp": 1,
        }
        assert c.up == len(up) and c.down == len(down)
        assert sum(c.bytes.values()) == len(up) + len(down)
        assert c.bytes["telemetry"] == 3 + 2 + 14 + 2 + 300  # fixed header, topic, pid, payload


def test_a_short_heat_pump_run(micropython, broker):
    """A quarter of a virtual hour: every reading reached the collector, each category was sent within
    its budget, the status and batches cost a fraction of one JSON publish per reading and of
    the agent's earlier settings in the same run, and the virtual clock ran far ahead of the
    real one."""
    r = day.run_profile("heatpump", 0.25, broker)
    print("bench day heatpump 0.25 h:", r)
    assert r["readings"] > 750  # about 1.1 readings/s
    # every stored reading was delivered (a forwarder that kept dying delivered a seventh)
    assert r["readings"] == r["readings_stored"]
    assert r["within_budget"], r["latency_ms"]
    for cat, f in r["latency_ms"].items():
        assert f["p95_ms"] <= f["budget_ms"] == day_profiles.LATENCY_MS, cat
        assert f["p50_ms"] >= 5000, cat  # they waited: batching, not one publish per reading
    assert r["real_seconds"] < 0.25 * 3600 / 10  # at least ten times faster than real time
    kinds = r["messages_per_day_by_kind"]
    assert kinds["telemetry"] < r["readings_per_day"] / 8
    # the baseline sent every reading as its own PUBLISH and paid for it
    base = r["baseline"]
    assert base["messages_per_day_by_kind"]["telemetry"] == r["readings_per_day"]
    assert base["bytes_per_reading_mqtt"] > 60
    assert r["ratio_bytes"] > 5 and r["ratio_messages"] > 5
    assert r["bytes_per_reading_all_in"] > r["bytes_per_reading_mqtt"]  # TLS estimate added
    assert r["radio_on_s_per_day"] < base["radio_on_s_per_day"]
    assert r["format1_fallbacks"] == 0
    # the earlier settings in the same run: the full status every 5 s was most of the bytes
    old = r["before"]
    assert abs(old["readings"] - r["readings"]) < r["readings"] // 50  # the same appliance
    assert old["status_share_of_bytes"] > 0.5 > r["status_share_of_bytes"]
    assert r["ratio_bytes_vs_before"] > 5 and r["ratio_messages_vs_before"] > 5
    assert r["fleet_status_messages_per_s"] * 10 < old["fleet_status_messages_per_s"]
