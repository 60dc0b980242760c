"""Broker chaos (docs/MQTT.md 3): mosquitto SIGKILLed and restarted while the agent forwards.

A PUBACK only proves the broker had a batch; a broker killed before it delivered the batch to
the collector loses it. The agent runs with `mqtt.e2e_ack` so it keeps every batch until the
collector acknowledges it end to end, and re-sends after a reconnect (docs/MQTT.md 4).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import AckingCollector

DEVICE = "chaos-0001"


def _config(port: int, count: int, rate: int) -> dict:
    return agent_config(
        "unix-sim",
        device_id=DEVICE,
        mqtt={"host": "127.0.0.1", "port": port, "e2e_ack": True, "e2e_timeout_ms": 2000},
        # one essential channel: every reading is stored and must arrive
        channels=[{"id": 1, "name": "cabinet_temp_cC", "category": "essential"}],
        # the backlog may use the whole store: an eviction would be a (counted) loss
        categories={"essential": {"quota": 1572864}},
        batch={"max_readings": 250, "latency_ms": 50},
        sim={"rate_hz": rate, "count": count},
    )


def _run(agents, count: int, rate: int, chaos, timeout: float = 240) -> tuple[dict, dict, dict]:
    with broker_mod.start(prefer="mosquitto") as b:
        col = AckingCollector(b.host, b.port, keep_readings=False).start()
        a = agents(_config(b.port, count, rate))
        info: dict = {}
        t = threading.Thread(target=chaos, args=(b, col, a, info), daemon=True)
        t.start()
        try:
            a.wait(timeout)
            t.join(30)
            col.wait_for(lambda c: c.stats()["unique"] >= count, 20)
        finally:
            a.stop()
            col.stop()
        return col.stats(), a.final or {}, info


@pytest.mark.parametrize(
    "count,kills",
    [(50_000, 20), pytest.param(100_000, 50, marks=pytest.mark.slow)],
    ids=["20-kills", "50-kills"],
)
def test_broker_kills_lose_nothing(agents, count, kills):
    rng = random.Random(7)

    def chaos(b, col, agent, info):
        info["kills"] = 0
        while info["kills"] < kills and agent.proc.poll() is None:
            time.sleep(rng.uniform(0.3, 0.8))  # the kills well inside the run (~20 or ~50 s)
            b.restart()  # SIGKILL, then a new mosquitto on the same port
            info["kills"] += 1

    stats, final, info = _run(agents, count, 2000, chaos)
    print(f"chaos: {info['kills']} kills, {stats}")
    assert info["kills"] == kills
    assert stats["unique"] == count, stats  # every reading arrived
    assert stats["gaps"] == {DEVICE: 0}, stats  # 0 lost
    assert stats["rejected"] == 0
    # duplicates were seen and removed (re-sends after kills), and counted
    assert stats["readings"] == stats["unique"] + stats["duplicates"]
    print("agent:", final)
    assert final["dropped"] == {}, final
    assert final["acked"] == count and final["mqtt"]["resends"] >= kills // 2, final


def test_resume_within_5s_after_10s_outage(agents):
    def chaos(b, col, agent, info):
        time.sleep(2)
        b.kill()
        time.sleep(10)
        before = col.stats()["batches"]
        b.restart()
        t0 = time.monotonic()
        while col.stats()["batches"] == before and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        info["resume_s"] = time.monotonic() - t0

    stats, final, info = _run(agents, 30_000, 2000, chaos)
    assert stats["unique"] == 30_000 and stats["gaps"] == {DEVICE: 0}, stats
    print(f"resume after a 10 s outage: {info['resume_s']:.2f} s")
    assert info["resume_s"] <= 5.0, info


@pytest.mark.slow
def test_200_broker_kills_lose_nothing(agents):
    rng = random.Random(11)

    def chaos(b, col, agent, info):
        info["kills"] = 0
        while agent.proc.poll() is None and info["kills"] < 200:
            time.sleep(rng.uniform(0.05, 0.8))
            b.restart()
            info["kills"] += 1

    stats, final, info = _run(agents, 300_000, 4000, chaos, timeout=600)
    assert stats["unique"] == 300_000 and stats["gaps"] == {DEVICE: 0}, stats
