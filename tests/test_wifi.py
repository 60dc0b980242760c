"""Wi-Fi through the ESP32 HAL (edge/net.py, edge/hal/esp32.py) under unix MicroPython, with
fake `machine` / `network` modules at the hardware edge: credentials from config or the
provisioned secrets file, association timeout and backoff, reconnect after a drop, RSSI in the
status, and the sampler keeps running while the radio associates."""

import json

import os

from edge import codec
from tests.conftest import ROOT, run_mp


def test_station_connects_backs_off_and_reconnects(micropython, tmp_path):
    r = run_mp(os.path.join(ROOT, "tests", "mp", "wifi_driver.py"), str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["from_config"] == ["home", "x", "d1", 600]
    assert out["from_secrets"] == ["lab", "pw1", "d1", 20000]
    assert out["none"] is None
    assert "bad.json is not valid JSON" in out["bad"]
    # the AP ignored the first association: it timed out (600 ms), backed off, then joined
    assert out["wlan_log"][:3] == ["active True", "connect home x", "active True"]
    assert out["logs"][0].startswith("wifi: no association with home (attempt 1), retry in")
    assert out["logs"][1] == "wifi: connected to home, rssi -61"
    assert out["status_up"] == {
        "connected": True,
        "rssi": -61,
        "connects": 1,
        "drops": 0,
        "failures": 0,
    }
    assert out["hostnames"] == ["d1"]
    # the link dropped: seen, counted, re-associated
    assert out["after_drop_down"] and "wifi: link lost" in out["logs"]
    assert out["status_again"]["connects"] == 2 and out["status_again"]["drops"] == 1
    # never blocking: the 10 ms sampler ran through association, timeout and backoff
    assert out["sampler_ticks"] >= out["elapsed_ms"] // 10 // 3, out
    assert out["sampler_max_gap_ms"] < 150, out  # a blocking association would stall it 600 ms


def test_agent_starts_the_station_and_reports_it(micropython, tmp_path, broker):
    """The composition root on an ESP32 (its HAL over the fake radio, a real broker): the
    station associates after one ignored attempt, the MQTT link waits for it instead of
    failing CONNECTs, the sampler samples meanwhile, the status carries `wifi` and the HAL's
    free heap, and the watchdog is fed throughout."""
    import subprocess

    from host_tools.paths import edge_root, micropython_path, mp_env

    cfg = {
        "device_id": "hp-wifi",
        "board": "esp32-generic",
        "wifi": {"ssid": "home", "password": "pw", "timeout_ms": 1000},
        "mqtt": {"host": "127.0.0.1", "port": broker.port},
        "sim": {"enabled": True, "rate_hz": 20, "seconds": 6},
        "status_ms": 1000,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    status = []
    import paho.mqtt.client as mqtt

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="wifi-test-watcher")
    # compact snapshots in the full names (docs/HEALTH.md 1)
    sub.on_message = lambda c, u, m: status.append(codec.decode_status(json.loads(m.payload)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("edge/hp-wifi/status", 1)
    sub.loop_start()
    env = mp_env()
    env["MICROPYPATH"] = ".frozen:" + edge_root() + ":" + os.path.join(ROOT, "tests", "mp")
    driver = os.path.join(ROOT, "tests", "mp", "agent_esp32.py")
    try:
        r = subprocess.run(
            [micropython_path(), "-X", "heapsize=1M", driver, "config.json", "1"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    logs = [x[5:] for x in lines if x.startswith("@log ")]
    up = logs.index("wifi: connected to home, rssi -61")
    assert logs[up - 1].startswith("wifi: no association with home (attempt 1), retry in")
    # no CONNECT was tried over a network that was not there
    assert not any(x.startswith("mqtt:") for x in logs), logs
    final = json.loads([x for x in lines if x.startswith("@final ")][0][7:])
    assert final["mqtt"]["connect_failures"] == 0 and final["acked"] > 0, final
    # the sampler ran while the station associated (1 s timeout, then a backoff)
    stats = [
        json.loads(x[7:])
        for x in lines[: lines.index("@log " + logs[up])]
        if x.startswith("@stats ")
    ]
    assert stats and stats[-1]["sampled"] > 0, lines[:20]
    # the status: the station's section and the HAL's free heap
    online = [s for s in status if s.get("state") == "online"]
    assert online, status
    # the first session (its birth status) came after the association, not before it
    assert all(s["wifi"]["connected"] for s in online), [s["wifi"] for s in online]
    assert online[-1]["wifi"]["connected"] is True and online[-1]["wifi"]["rssi"] == -61
    assert online[-1]["wifi"]["connects"] == 1 and online[-1]["wifi"]["failures"] == 0
    assert isinstance(online[-1]["heap_free"], int) and online[-1]["heap_free"] > 0
    wdt = json.loads([x for x in lines if x.startswith("@wdt ")][0][5:])
    assert wdt["timeout"] == 8000 and wdt["feeds"] >= 2 and wdt["max_gap_ms"] < 8000, wdt
