"""`edgectl provision`: identity files with private modes, a device config the agent reads
(signed consent required), and the generated mosquitto.conf enforcing logins, client ids bound
to logins, per-device ACLs, acks from the collector only, and EKU-separated certificates."""

import json
import os
import stat
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from host_tools import cli
from host_tools.backend import broker as broker_mod
from host_tools.backend.provision import mosquitto_hash, provision

pytestmark = pytest.mark.skipif(not broker_mod.mosquitto_path(), reason="needs mosquitto")


class _Client:
    """A paho 3.1.1 client that records its CONNACK, disconnects and messages."""

    def __init__(self, port, user, password, client_id="", subscribe=None):
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if user:
            self.c.username_pw_set(user, password)
        self.rc = None
        self.msgs = []
        self.disconnects = 0
        self.ev = threading.Event()
        self.c.on_connect = self._on_connect
        # with a subscription, ready once the broker has it (SUBACK): what is published
        # after that reaches it even on a loaded machine
        self.c.on_subscribe = lambda *a: self.ev.set()
        self.c.on_disconnect = lambda *a: setattr(self, "disconnects", self.disconnects + 1)
        self.c.on_message = lambda cl, ud, m: self.msgs.append((m.topic, m.payload))
        self.subscribe = subscribe
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.ev.wait(5)

    def _on_connect(self, cl, ud, flags, rc, props):
        self.rc = rc.value
        if self.subscribe and not rc.is_failure:
            cl.subscribe(self.subscribe, qos=1)
        else:
            self.ev.set()

    def pub(self, topic, payload=b"x"):
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _provisioned(tmp_path, *devices, tls=False):
    out = tmp_path / "prov"
    port = broker_mod.free_port()
    backend = broker_mod.free_port()
    cfgs = {}
    for d in devices:
        p = provision(d, out, port=port, backend_port=backend, tls=tls)
        cfgs[d] = json.loads(p.read_text())
    return out, port, backend, cfgs


def test_broker_enforces_logins_client_ids_and_acls(tmp_path):
    out, port, backend, cfgs = _provisioned(tmp_path, "fridge-1", "fridge-2")
    ops = json.loads((out / "broker" / "ops.json").read_text())
    col = json.loads((out / "broker" / "collector.json").read_text())
    pw1, pw2 = cfgs["fridge-1"]["mqtt"]["password"], cfgs["fridge-2"]["mqtt"]["password"]
    # `user root`: pytest's tmp dirs are 0700, and mosquitto drops to its own user
    conf = str(out / "broker" / "mosquitto.conf")
    with broker_mod.start_config(conf, extra="user root\n") as brk:
        assert brk.extra["ports"] == [port, backend]
        watch = _Client(backend, "collector", col["password"], subscribe="edge/#")
        assert watch.rc == 0
        d1 = _Client(port, "fridge-1", pw1, client_id="fridge-1")
        assert d1.rc == 0
        d1.pub("edge/fridge-1/t/essential", b"own")
        d1.pub("edge/fridge-1/consent/receipt", b"receipt")
        d1.pub("edge/fridge-1/meta", b"meta")  # the channel metadata after every connect
        for forged in (
            "edge/fridge-2/t/essential",  # another device's telemetry
            "edge/fridge-2/consent/receipt",  # another device's receipt
            "edge/fridge-2/cmd/consent",  # a command for another device
            "edge/fridge-1/ack",  # an ack, even its own
            "edge/fridge-2/ack",
            "other/fridge-1",
        ):
            d1.pub(forged, b"forged")
        # the second device picks the first one's client id: the broker uses its login
        # instead, so the first one keeps its session (MQTT 3.1.1 3.1.4 would kick it)
        d2 = _Client(port, "fridge-2", pw2, client_id="fridge-1")
        assert d2.rc == 0
        opsc = _Client(backend, "ops", ops["password"])
        opsc.pub("edge/fridge-1/ack", b"ops-ack")  # only the collector may ack
        opsc.pub("edge/fridge-1/cmd/ping", b"{}")
        watch.pub("edge/fridge-2/ack", b"collector-ack")
        refused = [
            _Client(port, "fridge-2", pw1),  # another device's password
            _Client(port, None, None),  # anonymous
            _Client(backend, "fridge-1", pw1),  # a device on the backend listener
            _Client(port, "ops", ops["password"]),  # the operator on the device listener
        ]
        time.sleep(0.5)
        kicked = d1.disconnects
        for c in [watch, d1, d2, opsc, *refused]:
            c.close()
    got = [(t, p) for t, p in watch.msgs]
    assert got == [
        ("edge/fridge-1/t/essential", b"own"),
        ("edge/fridge-1/consent/receipt", b"receipt"),
        ("edge/fridge-1/meta", b"meta"),
        ("edge/fridge-1/cmd/ping", b"{}"),
        ("edge/fridge-2/ack", b"collector-ack"),
    ], got
    assert kicked == 0  # not kicked by fridge-2 claiming its client id
    # CONNACK rc 5 "not authorized"; paho 2 reports it as reason code 135
    assert all(c.rc in (5, 135) for c in refused), [c.rc for c in refused]


def test_identity_files_modes_keys_and_certificates(tmp_path, capsys):
    out = tmp_path / "prov"
    assert (
        cli.main(["provision", "kettle-7", "--out", str(out), "--tls", "--board", "esp32-c3"]) == 0
    )
    dev = out / "devices" / "kettle-7"
    cfg = json.loads((dev / "device.json").read_text())
    assert cfg["device_id"] == "kettle-7" and cfg["board"] == "esp32-c3"
    assert cfg["mqtt"]["user"] == "kettle-7" and cfg["mqtt"]["tls"]["ca"] == "/secrets/ca.der"
    # the consent key in the format and place the agent reads (edge/consent.py consent_key)
    assert cfg["consent"] == {"key_file": "/secrets/consent.key"}
    key_hex = (dev / "secrets" / "consent.key").read_text().strip()
    assert len(bytes.fromhex(key_hex)) == 32
    keys = json.loads((out / "backend" / "consent_keys.json").read_text())
    assert keys["kettle-7"] == key_hex
    # nothing secret is readable by anyone but its owner
    for p in (
        out / "ca" / "ca.key",
        out / "broker" / "server.key",
        out / "broker" / "passwd-devices",
        out / "broker" / "passwd-backend",
        out / "broker" / "ops.json",
        out / "broker" / "collector.json",
        out / "backend" / "consent_keys.json",
        out / "backend" / "device_keys.json",
        dev / "device.json",
        dev / "secrets" / "consent.key",
        dev / "secrets" / "backend.key",
        dev / "secrets" / "client.key.der",
    ):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    assert "kettle-7:" not in (out / "broker" / "mosquitto.conf").read_text()
    # certificates chain to the CA and are told apart by extended key usage
    ca = x509.load_der_x509_certificate((dev / "secrets" / "ca.der").read_bytes())
    client = x509.load_der_x509_certificate((dev / "secrets" / "client.der").read_bytes())
    server = x509.load_pem_x509_certificate((out / "broker" / "server.crt").read_bytes())
    client.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    eku = lambda c: list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
    assert eku(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert eku(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    conf = (out / "broker" / "mosquitto.conf").read_text()
    assert "listener 1883 127.0.0.1" in conf and "require_certificate true" in conf
    assert "use_username_as_clientid true" in conf
    # Idempotent: provisioning again keeps the identity and what the user added; --rotate
    # replaces the identity.
    before = cfg["mqtt"]["password"]
    cfg["channels"] = [{"id": 1, "name": "t", "category": "essential"}]
    (dev / "device.json").write_text(json.dumps(cfg))
    cli.main(["provision", "kettle-7", "--out", str(out)])
    again = json.loads((dev / "device.json").read_text())
    assert again["mqtt"]["password"] == before and again["channels"] == cfg["channels"]
    assert (dev / "secrets" / "consent.key").read_text().strip() == key_hex
    cli.main(["provision", "kettle-7", "--out", str(out), "--rotate"])
    assert json.loads((dev / "device.json").read_text())["mqtt"]["password"] != before
    assert (dev / "secrets" / "consent.key").read_text().strip() != key_hex
    capsys.readouterr()
    for bad, why in (("bad/id", "device id"), ("ops", "reserved"), ("collector", "reserved")):
        assert cli.main(["provision", bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err, err


def test_an_older_raw_consent_key_is_kept_as_hex(tmp_path):
    """A device provisioned before keys were hex keeps its key: re-provisioning converts it."""
    out = tmp_path / "prov"
    provision("old-1", out)
    raw = bytes(range(200, 232))
    (out / "devices" / "old-1" / "secrets" / "consent.key").write_bytes(raw)
    provision("old-1", out)
    assert (out / "devices" / "old-1" / "secrets" / "consent.key").read_text().strip() == raw.hex()


def test_own_hash_format():
    h = mosquitto_hash("secret", salt=b"\x00" * 12)
    parts = h.split("$")
    assert parts[1:3] == ["7", "10000"] and len(parts[4]) == 88


def test_broker_keeps_a_collector_backlog_beyond_mosquittos_default(tmp_path):
    """The collector's persistent session must keep what arrives while it is away: the
    broker has PUBACKed it, so the device has freed it. mosquitto's default
    max_queued_messages (1,000) dropped the rest of a backlog; the generated config sets
    provision.MAX_QUEUED."""
    out, port, backend, cfgs = _provisioned(tmp_path, "fridge-1")
    col = json.loads((out / "broker" / "collector.json").read_text())
    backlog = 1500
    conf = str(out / "broker" / "mosquitto.conf")
    with broker_mod.start_config(conf, extra="user root\n"):

        def collector():
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id="collector-backlog",
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
            c.username_pw_set("collector", col["password"])
            got = []
            c.on_message = lambda cl, ud, m: got.append(m.payload)
            c.connect("127.0.0.1", backend)
            c.subscribe("edge/+/t/#", qos=1)[0]
            c.loop_start()
            return c, got

        c, _ = collector()
        time.sleep(0.5)
        c.loop_stop()
        c.disconnect()  # away, its session kept
        dev = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="fridge-1", protocol=mqtt.MQTTv311
        )
        dev.username_pw_set("fridge-1", cfgs["fridge-1"]["mqtt"]["password"])
        dev.connect("127.0.0.1", port)
        dev.loop_start()
        for i in range(backlog):
            dev.publish("edge/fridge-1/t/essential", b"%d" % i, qos=1).wait_for_publish(5)
        dev.loop_stop()
        dev.disconnect()
        c, got = collector()  # back: the broker delivers the session's queue
        deadline = time.monotonic() + 20
        last = -1
        while time.monotonic() < deadline and len(got) != last:
            last = len(got)
            time.sleep(1)
        c.loop_stop()
        c.disconnect()
    print(f"queued for the collector while away: {backlog}, delivered on return: {len(got)}")
    assert sorted(int(p) for p in got) == list(range(backlog))
