"""The agent's broker list (docs/MQTT.md 10): `mqtt.brokers` in order, the next one after a
failed attempt, the broker in use reported in the status. The real agent under unix
MicroPython against mosquitto; the cluster tier's node kill is in tests/test_cluster.py."""

from __future__ import annotations

import os

from host_tools.agent.run import agent_config
from host_tools.backend.broker import free_port
from host_tools.backend.collect import Collector
from tests.conftest import ROOT, mp_json


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


def _fleet(outage_ms: int, cap: int | None = None) -> dict:
    args = ["10000", str(outage_ms)] + ([str(cap)] if cap else [])
    return mp_json(os.path.join(ROOT, "tests", "mp", "backoff_fleet.py"), *args)


def test_a_fleet_redials_spread_over_30_s_after_a_long_outage_and_fast_after_a_short_one(
    micropython,
):
    """docs/MQTT.md 3: with the default cap, 10,000 devices that lost the broker for 5 minutes
    come back spread over (nearly) 30 s, not in a 4 s storm; after a 10 s outage every device
    is back within 4 s of the broker's return (the young outage's cap)."""
    long = _fleet(300_000)
    assert long["cap_ms"] == 30_000
    assert long["last_ms"] - long["first_ms"] >= 29_000, long
    assert long["last_ms"] <= 30_000, long
    short = _fleet(10_000)
    assert short["last_ms"] <= 4_000, short
    # the old fixed 4 s cap: a long outage's fleet arrived within 4 s (what this replaces)
    old = _fleet(300_000, 4_000)
    assert old["last_ms"] - old["first_ms"] <= 4_000, old
