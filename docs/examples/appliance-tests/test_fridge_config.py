"""Tests of one appliance config (fridge.agent.json beside this file) the way a CI engineer
writes them in their own repository: only the fixtures of the edge-telemetry pytest plugin
(docs/TESTING.md) and `host_tools.testing`; no internal modules, no path set-up. Run with
`pytest` in this directory once edge-telemetry is installed."""

import json
from pathlib import Path

from host_tools.testing import assert_readings

CONFIG = Path(__file__).with_name("fridge.agent.json")


def test_a_replayed_capture_gives_named_readings_in_range(capture_replay, simulator):
    capture = simulator.capture("fridge", duration=30)
    out = capture_replay(capture, CONFIG)
    fridge = [r for r in out.readings if r.name == "fridge_temp"]
    assert_readings(fridge, at_least=10, between=(-5, 15), unit="°C")
    assert {r.name for r in out.readings} >= {"fridge_temp", "freezer_temp", "door_open"}


def test_denied_usage_consent_keeps_the_door_to_itself(capture_replay, simulator):
    capture = simulator.capture("fridge", duration=10)
    out = capture_replay(capture, CONFIG, grant="essential,diagnostics")
    assert out.readings and "door_open" not in {r.name for r in out.readings}
    assert {r.category for r in out.readings} == {"essential", "diagnostics"}


def test_the_live_agent_reports_through_the_broker(agents, collector, simulator):
    link = simulator.serve("line", interval=0.2)
    cfg = json.loads(CONFIG.read_text())
    cfg["inputs"][0]["uart"] = {"path": link}
    agents(agents.config(cfg))
    got = collector.wait_for_readings(3, device=cfg["device_id"], channel="fridge_temp")
    assert_readings(got, between=(-5, 15), unit="°C")
