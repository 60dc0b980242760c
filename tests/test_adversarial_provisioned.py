"""A provisioned device end to end (docs/SECURITY.md 2): `edgectl provision --tls`, mosquitto on
the generated config, the real agent with the provisioned device config (TLS with its client
certificate, signed consent required, end-to-end acks signed with its backend key),
`edgectl consent` and `edgectl collect` with the provisioned operator and collector
credentials, and forged acks from other logins that delete nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest

from host_tools.backend import broker as broker_mod
from host_tools.backend.provision import provision
from tests.adversarial_rig import CHANNELS

pytestmark = [
    pytest.mark.adversarial,
    pytest.mark.skipif(not broker_mod.mosquitto_path(), reason="needs mosquitto"),
]


def _edgectl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _tls_client(port: int, ca: str, user: str, password: str, **tls) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    c.tls_set(ca_certs=ca, **tls)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _pem_pair(secrets, tmp_path) -> dict:
    """A device's DER client certificate and key as PEM files, for paho."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as s

    cert = x509.load_der_x509_certificate((secrets / "client.der").read_bytes())
    key = s.load_der_private_key((secrets / "client.key.der").read_bytes(), None)
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(s.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    )
    return {"certfile": str(tmp_path / "c.pem"), "keyfile": str(tmp_path / "k.pem")}


def test_a_provisioned_device_end_to_end(agents, tmp_path):
    out = tmp_path / "prov"
    port, backend = broker_mod.free_port(), broker_mod.free_port()
    secrets = str(out / "devices" / "fridge-9" / "secrets")
    cfg = json.loads(
        provision(
            "fridge-9", out, port=port, backend_port=backend, tls=True, secrets_path=secrets
        ).read_text()
    )
    other = json.loads(provision("fridge-8", out, port=port, backend_port=backend).read_text())
    assert other["mqtt"]["tls"]  # TLS stays on for the broker once provisioned with it
    pem = _pem_pair(out / "devices" / "fridge-8" / "secrets", tmp_path)
    b = out / "broker"
    ca = str(b / "ca.crt")
    conn = ["--port", str(backend), "--tls-ca", ca]
    cfg["channels"] = CHANNELS
    cfg["sim"] = {"enabled": True, "rate_hz": 40, "seconds": 120}
    cfg["batch"] = {"latency_ms": 50}
    with broker_mod.start_config(str(b / "mosquitto.conf"), extra="user root\n"):
        col = subprocess.Popen(
            [sys.executable, "-m", "host_tools", "collect", "--db", str(tmp_path / "c.sqlite")]
            + ["--credentials", str(b / "collector.json"), "--json", "--seconds", "40"]
            + ["--device-keys", str(out / "backend" / "device_keys.json"), *conn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        agent = agents(cfg, heap="512K")
        try:
            time.sleep(4)
            ops = json.loads((b / "ops.json").read_text())
            # an unsigned grant from the operator: the device requires a signature
            unsigned = _edgectl(
                "consent",
                "fridge-9",
                "--grant",
                "usage",
                "--credentials",
                str(b / "ops.json"),
                *conn,
            )
            # signed with the provisioned key file: applied and receipted
            signed = _edgectl(
                "consent",
                "fridge-9",
                "--grant",
                "usage",
                "--json",
                "--key",
                f"{secrets}/consent.key",
                "--credentials",
                str(b / "ops.json"),
                *conn,
            )
            time.sleep(3)
            acked_before = agent.stats.get("acked", 0)
            # forged acks for everything fridge-9 could have: another device's login (device
            # listener) and the operator's (backend listener) publish them; the ACL drops
            # both and the device would refuse an unsigned one anyway
            forged = bytes.fromhex("00000001ffffffff")
            dev8 = _tls_client(port, ca, "fridge-8", other["mqtt"]["password"], **pem)
            opsc = _tls_client(backend, ca, "ops", ops["password"])
            for c in (dev8, opsc):
                for _ in range(20):
                    c.publish("edge/fridge-9/ack", forged, qos=1)
            time.sleep(3)
            for c in (dev8, opsc):
                c.loop_stop()
                c.disconnect()
            stats = dict(agent.stats)
        finally:
            agent.stop()  # before the broker goes; the fixture removes its files
        cout, cerr = col.communicate(timeout=60)
    print("ADV provisioned:", unsigned.stderr.strip(), "|", stats.get("mqtt", {}).get("e2e_acks"))
    assert unsigned.returncode == 2 and "unsigned update" in unsigned.stderr, unsigned.stderr
    assert signed.returncode == 0, signed.stderr
    receipt = json.loads(signed.stdout)
    assert receipt["grants"]["usage"] is True
    summary = json.loads(cout.strip().splitlines()[-1])
    assert summary["unique"] > 0, (summary, cerr[-500:])
    # no forged ack moved the device's cursor: everything the device counts as delivered
    # (and so may delete) is stored by the collector
    assert stats["mqtt"]["e2e_acks"] >= 1 and stats["acked"] >= acked_before
    assert 0 < stats["acked"] <= summary["unique"], (stats["acked"], summary)
