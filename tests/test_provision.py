"""`edgectl provision` (issue 7): identity files, a password file and ACL that mosquitto
enforces (own prefix only, anonymous refused), certificates that chain to the CA."""

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from host_tools import cli
from host_tools.backend import broker as broker_mod
from host_tools.backend.provision import mosquitto_hash, provision


def _client(port, user, password):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    got = {"rc": None, "msgs": []}
    ev = threading.Event()

    def on_connect(cl, ud, flags, rc, props):
        got["rc"] = rc.value
        ev.set()

    c.on_connect = on_connect
    c.on_message = lambda cl, ud, m: got["msgs"].append(m.topic)
    c.connect("127.0.0.1", port)
    c.loop_start()
    ev.wait(5)
    return c, got


@pytest.mark.parametrize("use_tool", [True, False], ids=["mosquitto_passwd", "own-pbkdf2"])
def test_broker_enforces_identity_and_prefix(tmp_path, use_tool):
    out = tmp_path / "prov"
    d1 = json.loads(provision("fridge-1", out, use_mosquitto_passwd=use_tool).read_text())
    d2 = json.loads(provision("fridge-2", out, use_mosquitto_passwd=use_tool).read_text())
    ops = json.loads((out / "broker" / "ops.json").read_text())
    passwd = (out / "broker" / "passwd").read_text()
    assert passwd.count("$7$") == 3
    # `user root`: pytest tmp dirs are 0700 and mosquitto drops to its own user (TOOLCHAIN 4).
    conf = (
        "user root\n"
        f"allow_anonymous false\npassword_file {out / 'broker' / 'passwd'}\n"
        f"acl_file {out / 'broker' / 'acl'}\n"
    )
    with broker_mod.start(prefer="mosquitto", conf_extra=conf) as brk:
        watcher, w = _client(brk.port, "ops", ops["password"])
        assert w["rc"] == 0
        watcher.subscribe("edge/#", qos=1)
        dev, g = _client(brk.port, "fridge-1", d1["mqtt"]["password"])
        assert g["rc"] == 0
        dev.publish("edge/fridge-1/t/essential", b"x", qos=1).wait_for_publish(5)
        dev.publish("edge/fridge-2/t/essential", b"forged", qos=1).wait_for_publish(5)
        dev.publish("other/fridge-1", b"x", qos=1).wait_for_publish(5)
        bad, b = _client(brk.port, "fridge-2", d1["mqtt"]["password"])
        anon, a = _client(brk.port, None, None)
        time.sleep(0.5)
        for c in (watcher, dev, bad, anon):
            c.loop_stop()
            c.disconnect()
    assert w["msgs"] == ["edge/fridge-1/t/essential"]  # foreign prefix dropped (TOOLCHAIN 4)
    # CONNACK rc 5 "not authorized"; paho 2 reports it as reason code 135.
    assert b["rc"] in (5, 135) and a["rc"] in (5, 135)
    assert d2["mqtt"]["password"] != d1["mqtt"]["password"]


def test_identity_files_and_certificates(tmp_path, capsys):
    out = tmp_path / "prov"
    assert (
        cli.main(["provision", "kettle-7", "--out", str(out), "--tls", "--board", "esp32-c3"]) == 0
    )
    dev = out / "devices" / "kettle-7"
    cfg = json.loads((dev / "device.json").read_text())
    assert cfg["device_id"] == "kettle-7" and cfg["board"] == "esp32-c3"
    assert cfg["mqtt"]["user"] == "kettle-7" and cfg["mqtt"]["tls"]["ca"] == "/secrets/ca.der"
    # the agent reads the key with config `consent.key_file`: 64 hex digits (32 bytes)
    key_hex = (dev / "secrets" / "consent.key").read_text().strip()
    assert len(bytes.fromhex(key_hex)) == 32
    assert cfg["consent"] == {"key_file": "/secrets/consent.key"} and "consent_key" not in cfg
    keys = json.loads((out / "backend" / "consent_keys.json").read_text())
    assert keys["kettle-7"] == key_hex
    ca = x509.load_der_x509_certificate((dev / "secrets" / "ca.der").read_bytes())
    client = x509.load_der_x509_certificate((dev / "secrets" / "client.der").read_bytes())
    server = x509.load_pem_x509_certificate((out / "broker" / "server.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "user kettle-7\ntopic readwrite edge/kettle-7/#" in (out / "broker" / "acl").read_text()
    # Idempotent: provisioning again keeps the identity; --rotate replaces it.
    before = cfg["mqtt"]["password"]
    cli.main(["provision", "kettle-7", "--out", str(out)])
    assert json.loads((dev / "device.json").read_text())["mqtt"]["password"] == before
    cli.main(["provision", "kettle-7", "--out", str(out), "--rotate"])
    assert json.loads((dev / "device.json").read_text())["mqtt"]["password"] != before
    capsys.readouterr()
    assert cli.main(["provision", "bad/id", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device id" in err


def test_own_hash_format():
    h = mosquitto_hash("secret", salt=b"\x00" * 12)
    parts = h.split("$")
    assert parts[1:3] == ["7", "101"] and len(parts[4]) == 88
