"""Latency budgets and urgent channels with the real agent against mosquitto (docs/MQTT.md 9.1):
a category holds its readings for its budget, an urgent channel's reading goes at once with
what its category holds, and the end of a run sends everything."""

from __future__ import annotations

import time

from host_tools.agent.run import agent_config
from host_tools.backend.collect import Collector

# the embedded default channels (docs/CONFIG.md), essential: 1 and 2
CHANNELS = [
    {"id": 1, "name": "cabinet_temp_cC", "category": "essential"},
    {"id": 2, "name": "freezer_temp_cC", "category": "essential"},
    {"id": 3, "name": "compressor_power_W", "category": "diagnostics"},
    {"id": 4, "name": "defrost_cycles", "category": "diagnostics"},
    {"id": 5, "name": "door_opens", "category": "usage"},
    {"id": 6, "name": "ice_maker_uses", "category": "usage"},
]
RUN_S = 8  # the simulated fridge samples this long, six readings a second (two essential)


def _cfg(port: int, device: str, urgent: bool) -> dict:
    channels = [dict(c, urgent=True) if urgent and c["id"] == 2 else c for c in CHANNELS]
    return agent_config(
        "unix-sim",
        device_id=device,
        mqtt={"port": port},
        sim={"rate_hz": 6, "seconds": RUN_S},
        batch={"latency_ms": 60000},  # longer than the run: only urgency or the end sends
        channels=channels,
    )


def test_urgent_channel_goes_at_once_and_the_budget_holds_the_rest(agents, broker):
    col = Collector(broker.host, broker.port, keep_readings=True).start()
    try:
        held = agents(_cfg(broker.port, "budget-held", False))
        urgent = agents(_cfg(broker.port, "budget-urgent", True))

        def count(device: str) -> int:
            return sum(1 for r in list(col.readings) if r[0] == device)

        # the urgent device's readings arrive while both agents still sample; the other's wait
        deadline = time.monotonic() + 60
        while count("budget-urgent") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        early_urgent, early_held = count("budget-urgent"), count("budget-held")
        assert held.proc is not None and urgent.proc is not None
        still_sampling = held.proc.poll() is None and urgent.proc.poll() is None
        assert early_urgent >= 3, "no urgent reading arrived"
        assert still_sampling, "the first urgent readings arrived only when the run ended"
        assert early_held == 0  # inside its 60 s budget: nothing sent yet
        # the urgent readings carried channel 1's with them (what the category held)
        assert {r[4] for r in list(col.readings) if r[0] == "budget-urgent"} == {1, 2}

        # the end of the run sends everything of both, once
        for a in (held, urgent):
            a.wait(60)
        for a in (held, urgent):
            want = a.final["appended"]
            dev = a.config["device_id"]
            assert want >= RUN_S  # about two essential readings a second
            assert col.wait_for(lambda c, d=dev, n=want: count(d) >= n, 15), dev
            assert count(dev) == want
    finally:
        col.stop()
