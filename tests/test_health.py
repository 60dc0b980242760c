"""Health and watchdog (docs/HEALTH.md): the retained status message reaches the collector,
a hung task and a blocked event loop are detected on unix, and the reset cause is reported
after the restart (watchdog, crash)."""

from __future__ import annotations

import json
import os

import pytest

import edge
from host_tools.agent.run import agent_config
from host_tools.backend.collect import Collector
from tests.conftest import ROOT, run_mp

FAULTY = os.path.join(ROOT, "tests", "mp", "faulty_agent.py")


def _status_history(col: Collector, device: str) -> list[dict]:
    """Every status message of `device`, in arrival order (the collector keeps the last)."""
    seen: list[dict] = []

    def on_status(client, userdata, msg):
        seen.append(json.loads(msg.payload))
        col.source._on_message(client, userdata, msg)  # then the collector as usual

    col.client.message_callback_add(f"edge/{device}/status", on_status)
    return seen


def _restart_status(agents, broker, device: str, workdir: str) -> dict:
    """Run the agent again on the same store; return its last status message."""
    with Collector(broker.host, broker.port) as col:
        col.wait_for(lambda c: False, 0.5)  # the previous run's retained status, if any
        old = col.status.get(device)
        cfg = agent_config(
            "unix-sim",
            device_id=device,
            mqtt={"port": broker.port},
            sim={"seconds": 1, "rate_hz": 50},
        )
        agents.run(cfg, 60, workdir=workdir)
        assert col.wait_for(
            lambda c: (
                c.status.get(device) is not old
                and c.status.get(device, {}).get("state") == "stopped"
            ),
            10,
        )
        return col.status[device]


def _faulty(mode: str, broker, device: str, workdir: str, **extra):
    cfg = agent_config(
        "unix-sim",
        device_id=device,
        mqtt={"port": broker.port},
        sim={"seconds": 30, "rate_hz": 50},
        watchdog_ms=2000,
        **extra,
    )
    cfg["store"] = {"path": os.path.join(workdir, "store")}
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return run_mp(FAULTY, mode, path, heap="512K", timeout=60)


def test_status_message_content_arrives_at_the_collector(agents, broker):
    dev = "health-1"
    # two simulated ADC inputs: one essential channel, one `usage` channel (no consent: dropped)
    inputs = [
        {"type": "adc", "pin": 34, "sim": 30000, "interval_ms": 50, "channels": {"value": 1}},
        {"type": "adc", "pin": 35, "sim": 100, "interval_ms": 50, "channels": {"value": 5}},
    ]
    with Collector(broker.host, broker.port) as col:
        history = _status_history(col, dev)
        cfg = agent_config(
            "unix-sim",
            device_id=dev,
            mqtt={"port": broker.port},
            sim={"seconds": 3},
            inputs=inputs,
            status_ms=500,
            status_detail="full",  # every snapshot the whole document (docs/HEALTH.md 1)
            watchdog_ms=2000,
        )
        agents.run(cfg, 60)
        assert col.wait_for(lambda c: c.status.get(dev, {}).get("state") == "stopped", 10)
        final = col.status[dev]
        states = [h["state"] for h in history]
    # birth message, periodic ones every status_ms while connected, the last one at stop
    assert states[0] == "online" and states[-1] == "stopped"
    assert states.count("online") >= 4, states
    online = [h for h in history if h["state"] == "online"]
    assert online[-1]["uptime_ms"] > online[0]["uptime_ms"]
    assert final["device"] == dev and final["boot"] == 1
    assert final["version"] == edge.__version__  # the one version source (edge/__init__.py)
    assert final["reset_cause"] == "power_on" and final["reset_detail"] is None
    assert 2500 <= final["uptime_ms"] <= 30000
    assert final["heap_free"] > 0 and final["heap_alloc"] > 0
    assert final["reconnects"] == 1
    assert final["flash_writes"] >= 3 and final["flash"]["progs"] > 0
    assert final["store_depth"] == 0  # everything acknowledged before the last status
    assert final["oldest_unsent_age_ms"] is None
    assert final["drops"]["consent"]["usage"] == final["dropped_by_consent"] > 10
    acc = final["inputs"]["inputs[0]"]["accepted"]
    assert acc > 10 and final["inputs"]["inputs[1]"]["accepted"] > 10
    assert final["clock"]["synced"] is True and final["clock"]["boot"] == 1
    assert final["watchdog"]["timeout_ms"] == 2000 and final["watchdog"]["stale"] == 0
    assert final["watchdog"]["tasks"] >= 5 and final["watchdog"]["feeds"] > 0


def test_hung_task_is_detected_and_reported_after_the_restart(agents, broker, tmp_path):
    dev = "health-hang"
    r = _faulty("hung_forwarder", broker, dev, str(tmp_path))
    out = r.stdout
    assert r.returncode != 0, out
    assert "@log watchdog: task forwarder silent for" in out, out
    assert "@log watchdog: expired, no feed for" in out and "(forwarder); resetting" in out, out
    assert (tmp_path / "store.reset").read_text().split() == ["watchdog", "forwarder"]
    st = _restart_status(agents, broker, dev, str(tmp_path))
    assert st["reset_cause"] == "watchdog" and st["reset_detail"] == "forwarder"
    assert st["boot"] == 2


def test_hung_command_task_is_detected(micropython, broker, tmp_path):
    r = _faulty("hung_commands", broker, "health-cmd", str(tmp_path))
    assert r.returncode != 0, r.stdout
    assert "@log watchdog: task commands silent for" in r.stdout, r.stdout
    assert (tmp_path / "store.reset").read_text().split() == ["watchdog", "commands"]


def test_blocked_event_loop_is_detected_by_the_watchdog_thread(micropython, broker, tmp_path):
    r = _faulty("blocked_loop", broker, "health-block", str(tmp_path))
    out = r.stdout
    assert r.returncode != 0, out
    assert "@log fault: blocked_loop" in out
    assert "(event loop blocked); resetting" in out, out
    assert "silent for" not in out  # the supervisor task never ran again
    assert (tmp_path / "store.reset").read_text().split() == ["watchdog", "event_loop_blocked"]


def test_crash_then_restart_reports_crash(agents, broker, tmp_path):
    dev = "health-crash"
    r = _faulty("crash", broker, dev, str(tmp_path))
    assert r.returncode == 1, r.stdout
    assert "RuntimeError: injected" in r.stdout + r.stderr
    st = _restart_status(agents, broker, dev, str(tmp_path))
    assert st["reset_cause"] == "crash" and st["reset_detail"] == "RuntimeError"
    # and a clean stop is followed by a plain power-on
    st = _restart_status(agents, broker, dev, str(tmp_path))
    assert st["reset_cause"] == "power_on" and st["boot"] == 3


@pytest.mark.parametrize("value", [-1, 500, True, "8000"])
def test_bad_watchdog_timeout_is_a_config_error(agents, tmp_path, value):
    cfg = agent_config("unix-sim", watchdog_ms=value, mqtt={"port": 1})
    a = agents(cfg, workdir=str(tmp_path))
    assert a.proc.wait(30) == 2
    assert "config key 'watchdog_ms'" in a.proc.stderr.read()
