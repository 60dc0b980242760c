"""The update path on the virtual board (littlefs root on an emulated flash image, the real
mpremote deploy, the deployed /main.py with the boot selector): the agent deployed as release N is
updated over MQTT to N+1, confirms it, and boots N+1 again after a power cycle."""

from __future__ import annotations

import json
import time

from host_tools.backend.connect import ConnectOptions
from host_tools.board import deploy as dp
from host_tools.ota import update as up
from tests.ota_rig import make_key, real_bundle, status
from tests.test_vboard import VBoard


def wait_status(port, device, pred, timeout=60.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = status(port, device, 2)
            if pred(last):
                return last
        except Exception:  # no retained status yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"status never matched: {last}")


def test_vboard_agent_updated_over_mqtt_and_confirmed(tmp_path, broker, micropython):
    keys = tmp_path / "keys"
    keys.mkdir()
    make_key(keys)
    secrets = tmp_path / "dev" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "release.pub").write_bytes((keys / "release.pub").read_bytes())
    dev = tmp_path / "dev" / "vb-ota.json"
    dev.write_text(
        json.dumps(
            {
                "device_id": "vb-ota",
                "board": "unix-sim",
                "mqtt": {"host": "127.0.0.1", "port": broker.port},
                "sim": {"enabled": True, "rate_hz": 30},
                "ota": {"key": "/secrets/release.pub", "settle_ms": 1000},
                # the 2 MiB flash holds two agent slots beside the store (docs/OTA.md 7)
                "store": {"total_bytes": 1048576},
            }
        )
    )
    bundle = real_bundle(keys, "1.1.0", keys / "release.json", "v110.bundle")
    vb = VBoard(tmp_path).start()
    try:
        rep = dp.deploy("unix-sim", str(vb.link), dev, log=lambda m: None)
        assert rep.selftest.get("ok"), rep.selftest
        vb.stop()
        vb.start()  # power up: /main.py selects slot a (/lib) and starts the agent
        s = wait_status(broker.port, "vb-ota", lambda s: s.get("ota", {}).get("slot") == "a")
        assert s["ota"]["version"] is None  # the deployed agent
        o = up.update_device(ConnectOptions(port=broker.port), "vb-ota", bundle, timeout=120)
        assert o.state == "confirmed", o
        s = wait_status(broker.port, "vb-ota", lambda s: s["ota"]["slot"] == "b")
        assert s["ota"]["version"] == "1.1.0" and s["reset_cause"] == "soft"
        vb.stop()
        vb.start()  # a power cycle boots the confirmed slot b again
        s = wait_status(
            broker.port, "vb-ota", lambda s: s["ota"]["slot"] == "b" and s["uptime_ms"] < 20000
        )
        assert s["ota"]["version"] == "1.1.0" and "trial" not in s["ota"]
    finally:
        vb.stop()
