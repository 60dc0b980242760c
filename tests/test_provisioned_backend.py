"""A provisioned device and the backend tools on the broker `edgectl provision` generates (TLS,
per-device logins and ACLs, a backend listener): `edgectl collect` logs in with the collector's
credentials file and the device keys, the agent's end-to-end acks are signed, its receipts are
verified, and `edgectl consent` with the ops credentials opens a category (docs/BACKEND.md,
docs/MQTT.md 7 and 8)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.provision import provision
from tests.collector_rig import CollectProcess, db_rows

DEV = "pv-0001"


def test_provisioned_device_collector_and_consent_over_tls(agents, tmp_path):
    out = tmp_path / "prov"
    port, backend = broker_mod.free_port(), broker_mod.free_port()
    sdir = out / "devices" / DEV / "secrets"
    cfg_p = provision(DEV, out, port=port, backend_port=backend, tls=True, secrets_path=str(sdir))
    dev = json.loads(cfg_p.read_text())
    assert dev["mqtt"]["e2e_ack"] is True and dev["backend"]["key_file"].endswith("backend.key")
    b_dir = out / "broker"
    tls = ["--tls-ca", str(b_dir / "ca.crt")]
    db = str(tmp_path / "c.sqlite")
    conf = str(b_dir / "mosquitto.conf")
    with broker_mod.start_config(conf, extra="user root\n"):
        col = CollectProcess(
            backend, db, "--credentials", str(b_dir / "collector.json"), *tls,
            "--device-keys", str(out / "backend" / "device_keys.json"),
        ).ready()  # fmt: skip
        cfg = agent_config(
            "unix-sim",
            dev,
            channels=[
                {"id": 1, "name": "cabinet_temp_cC", "category": "essential"},
                {"id": 5, "name": "door", "category": "usage"},
            ],
            sim={"rate_hz": 200, "seconds": 8},
        )
        agent = agents(cfg)
        try:
            time.sleep(3)
            r = subprocess.run(
                [sys.executable, "-m", "host_tools", "consent", DEV, "--grant", "usage",
                 "--key", str(sdir / "consent.key"), "--port", str(backend),
                 "--credentials", str(b_dir / "ops.json"), *tls, "--json"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["grants"]["usage"] is True
            assert agent.wait(60) == 0, agent.output[-10:]
            final = agent.final or {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if db_rows(db, "SELECT count(*) FROM readings")[0][0] >= final["appended"]:
                    break
                time.sleep(0.2)
        finally:
            agent.stop()
            assert col.term() == 0, col.err
    s = col.final()
    held = dict(db_rows(db, "SELECT category, count(*) FROM readings GROUP BY 1"))
    assert sum(held.values()) == final["appended"] and held.get("usage", 0) > 0, (held, final)
    assert final["acked"] == final["appended"]  # freed by the collector's signed acks only
    assert final["mqtt"]["bad_acks"] == 0 and s["acks_sent"] > 0
    assert s["refused"] == 0 and "receipt_unsigned" not in s["refused_by_reason"], s
    ledger = db_rows(db, "SELECT version, event, category FROM consent_ledger ORDER BY id")
    assert (1, "grant", "usage") in ledger
