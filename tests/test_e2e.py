"""A reading travels end to end: agent (unix MicroPython) -> mosquitto -> collector."""

import json

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector


def _run(agents, broker, device, count, rate=5000, **extra):
    col = Collector(broker.host, broker.port).start()
    try:
        cfg = agent_config(
            "unix-sim",
            device_id=device,
            mqtt={"port": broker.port},
            sim={"count": count, "rate_hz": rate},
            **extra,
        )
        final = agents.run(cfg, 120).final
        col.wait_for(lambda c: c.stats()["unique"] >= final["appended"], 15)
        return final, col.stats(), list(col.readings)
    finally:
        col.stop()


def test_every_reading_arrives_exactly_once(agents, broker):
    final, stats, readings = _run(agents, broker, "e2e-1", 3000)
    cfg = agent_config("unix-sim")
    essential = {c["id"] for c in cfg.get("channels", [])} or None
    assert final["sampled"] == 3000
    # default consent: only `essential` is stored; every other reading is dropped at the gate
    assert final["appended"] + final["dropped_by_consent"] == 3000
    assert final["appended"] == 1000  # 2 of the 6 simulated channels are essential
    assert stats["unique"] == final["appended"] and stats["rejected"] == 0
    seqs = sorted(r[1] for r in readings)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gaps, no repeats
    assert {r[3] for r in readings} == {"essential"}
    assert essential is None or {r[4] for r in readings} <= essential


def test_readings_are_decoded_to_the_simulated_values(agents, broker):
    final, stats, readings = _run(agents, broker, "e2e-2", 60)
    # the simulator's first reading is channel 1 with value 200 + LCG noise in [-100, 100)
    first = min(readings, key=lambda r: r[1])
    assert first[4] == 1 and 100 <= first[5] < 300
    assert stats["by_category"] == {"essential": 20}


def test_consent_grant_lets_a_category_through(agents, broker):
    col = Collector(broker.host, broker.port).start()
    try:
        topic = "edge/e2e-3/cmd/consent"
        col.client.publish(
            topic, json.dumps({"version": 1, "grant": ["usage"]}), qos=1, retain=True
        ).wait_for_publish(5)
        cfg = agent_config(
            "unix-sim",
            device_id="e2e-3",
            mqtt={"port": broker.port},
            sim={"seconds": 3, "rate_hz": 600},
        )
        try:
            final = agents.run(cfg, 60).final
        finally:
            col.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        col.wait_for(lambda c: c.stats()["unique"] >= final["appended"], 15)
        s = col.stats()
        assert s["by_category"].get("usage", 0) > 0
        assert s["unique"] == final["appended"]
        assert final["consent_version"] == 1
        assert col.receipts["e2e-3"]["grants"]["usage"] is True
    finally:
        col.stop()


def test_amqtt_fallback_broker_carries_a_batch(agents):
    """The embedded broker a machine without mosquitto gets still runs the data path."""
    with broker_mod.start(prefer="amqtt") as b:
        final, stats, _ = _run(agents, b, "e2e-amqtt", 300)
        assert stats["unique"] == final["appended"] == 100


def test_collector_rejects_a_malformed_batch(broker):
    col = Collector(broker.host, broker.port).start()
    try:
        col.client.publish("edge/bad-dev/t/usage", b"EB\x01garbage", qos=1).wait_for_publish(5)
        assert col.wait_for(lambda c: c.stats()["rejected"] == 1, 5)
        assert "batch too short" in col.errors[0] or "bad" in col.errors[0]
    finally:
        col.stop()
