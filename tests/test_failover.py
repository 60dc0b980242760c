"""The agent's broker list (docs/MQTT.md 10): `mqtt.brokers` in order, the next one after a
failed attempt, the broker in use reported in the status. The real agent under unix
MicroPython against mosquitto; the cluster tier's node kill is in tests/test_cluster.py."""

from __future__ import annotations

from host_tools.agent.run import agent_config
from host_tools.backend.broker import free_port
from host_tools.backend.collect import Collector


def test_agent_moves_past_a_dead_broker_and_reports_the_one_it_uses(agents, broker):
    """The first broker of the list refuses connections: the agent goes on to the second,
    delivers every reading there, and says so in its status."""
    dead = free_port()  # nothing listens there
    col = Collector(broker.host, broker.port).start()
    try:
        cfg = agent_config(
            "unix-sim",
            device_id="fo-1",
            mqtt={
                "brokers": [
                    {"host": "127.0.0.1", "port": dead},
                    {"host": "localhost", "port": broker.port},
                ],
            },
            sim={"count": 300, "rate_hz": 3000},
        )
        final = agents.run(cfg, 120).final
        col.wait_for(lambda c: c.stats()["unique"] >= final["appended"], 15)
        stats = col.stats()
    finally:
        col.stop()
    m = final["mqtt"]
    assert m["broker"] == f"localhost:{broker.port}", m
    assert m["connect_failures"] >= 1 and "127.0.0.1:%d" % dead in m["last_error"], m
    assert final["appended"] == 100 and stats["unique"] == 100, (final, stats)


def test_a_misspelled_broker_entry_is_a_config_error():
    from edge import schema

    cfg = agent_config("unix-sim", mqtt={"brokers": [{"hots": "a", "port": 1883}]})
    problems = schema.check(cfg)
    assert any("mqtt.brokers[0]" in p and "host" in p for p in problems), problems
