"""Wi-Fi through the ESP32 HAL (edge/net.py, edge/hal/esp32.py) under unix MicroPython, with
fake `machine` / `network` modules at the hardware edge: credentials from config or the
provisioned secrets file, association timeout and backoff, reconnect after a drop, RSSI in the
status, and the sampler keeps running while the radio associates."""

import json

import os

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
