"""TLS to mosquitto (docs/MQTT.md 5): DER CA, CERT_REQUIRED, server_hostname; a good
certificate connects; wrong CA, wrong hostname and expired are refused, never plaintext."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import shutil
import tempfile

import pytest

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.broker import free_port, wait_listening
from tests.conftest import ROOT, mp_json

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

CLIENT = os.path.join(ROOT, "tests", "mp", "mqtt_client.py")
DAY = datetime.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, start, end, ca=False, san=None):
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return obj.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_broker():
    """mosquitto with a good-certificate listener and an expired-certificate listener."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="edge-tls-"))
    os.chmod(d, 0o755)  # mosquitto drops root before it reads the key
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert("edge test CA", ca_key, "edge test CA", ca_key, now - DAY, now + 30 * DAY, ca=True)
    other = _cert("other CA", other_key, "other CA", other_key, now - DAY, now + 30 * DAY, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    good = _cert("localhost", srv_key, "edge test CA", ca_key, now - DAY, now + 30 * DAY, san=san)
    old = _cert("localhost", srv_key, "edge test CA", ca_key, now - 30 * DAY, now - DAY, san=san)
    files = {
        "ca.pem": _pem(ca),
        "srv.key": _pem(srv_key),
        "good.pem": _pem(good),
        "old.pem": _pem(old),
        "ca.der": ca.public_bytes(serialization.Encoding.DER),
        "other.der": other.public_bytes(serialization.Encoding.DER),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
        os.chmod(d / name, 0o644)
    ports = {"good": free_port(), "old": free_port()}
    extra = ""
    for which, port in ports.items():
        extra += (
            f"listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/{which}.pem\n"
            f"keyfile {d}/srv.key\n"
        )
    b = broker_mod.start(prefer="mosquitto", conf_extra=extra)
    for port in ports.values():
        assert wait_listening(port, 10, b.proc)
    yield b, ports, d
    b.stop()
    shutil.rmtree(d, ignore_errors=True)


def _connect(port, ca, hostname):
    return mp_json(CLIENT, "tls", "127.0.0.1", str(port), ca, hostname, timeout=60)


def test_good_certificate_connects(micropython, tls_broker):
    b, ports, d = tls_broker
    r = _connect(ports["good"], str(d / "ca.der"), "localhost")
    assert r["ok"] and r["connects"] == 1, r


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_hostname", "expired", "plaintext_port"])
def test_bad_certificates_refused_never_plaintext(micropython, tls_broker, case):
    b, ports, d = tls_broker
    port, ca, host = ports["good"], str(d / "ca.der"), "localhost"
    if case == "wrong_ca":
        ca = str(d / "other.der")
    elif case == "wrong_hostname":
        host = "broker.example"
    elif case == "expired":
        port = ports["old"]
    else:
        port = b.port  # a plaintext listener: the client must not talk MQTT in the clear
    r = _connect(port, ca, host)
    assert not r["ok"] and r["connects"] == 0, r
    if case != "plaintext_port":
        assert r["error"].startswith("TLS handshake failed"), r
    else:
        assert r["error"], r


def test_agent_forwards_over_tls(agents, tls_broker):
    """The agent's config wiring: mqtt.tls {ca, server_hostname} end to end."""
    b, ports, d = tls_broker
    cfg = agent_config(
        "unix-sim",
        device_id="tls-0001",
        mqtt={
            "host": "127.0.0.1",
            "port": ports["good"],
            "tls": {"ca": str(d / "ca.der"), "server_hostname": "localhost"},
        },
        sim={"rate_hz": 5000, "count": 600},
    )
    a = agents.run(cfg, 60)
    assert a.final and a.final["acked"] == a.final["committed"] > 0, a.final
