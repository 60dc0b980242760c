"""The shared connection helper (host_tools/backend/connect.py) against a real mosquitto with a
password file, an ACL and a TLS listener: logins, refusals, refused publishes, client ids."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from host_tools.backend import broker as broker_mod
from host_tools.backend import connect as conn_mod
from host_tools.backend.connect import ConnectOptions
from host_tools.backend.provision import (
    ensure_ca,
    make_server_cert,
    write_password_file,
)
from host_tools.errors import ToolError

USERS = {"ops": "ops-pw", "dev-1": "dev-pw"}


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """mosquitto with logins and an ACL on a plain port and a TLS port."""
    d = tmp_path_factory.mktemp("sec")
    write_password_file(d / "passwd", USERS)
    (d / "acl").write_text(
        "user ops\ntopic read edge/#\ntopic write edge/+/cmd/#\n\n"
        "user dev-1\ntopic readwrite edge/dev-1/#\n"
    )
    ca_key, ca_cert = ensure_ca(d)
    (d / "broker").mkdir()
    make_server_cert(d, "127.0.0.1", ca_key, ca_cert)
    tls_port = broker_mod.free_port()
    conf = (
        "user root\nallow_anonymous false\n"
        f"password_file {d / 'passwd'}\nacl_file {d / 'acl'}\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {d / 'broker' / 'ca.crt'}\ncertfile {d / 'broker' / 'server.crt'}\n"
        f"keyfile {d / 'broker' / 'server.key'}\n"
    )
    (d / "ops.json").write_text(json.dumps({"user": "ops", "password": USERS["ops"]}))
    with broker_mod.start(prefer="mosquitto", conf_extra=conf) as b:
        assert broker_mod.wait_listening(tls_port, 10)
        yield {"broker": b, "dir": d, "tls_port": tls_port}


def _edgectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools", *args], capture_output=True, text=True, timeout=60
    )


def test_a_refused_login_is_one_clear_line(secured):
    b = secured["broker"]
    r = _edgectl(
        "consent", "dev-1", "--grant", "usage", "--port", str(b.port),
        "--user", "ops", "--password", "wrong", "--timeout", "1",
    )  # fmt: skip
    assert r.returncode == 2, r
    assert r.stderr.startswith("edgectl: the broker at 127.0.0.1:")
    assert "refused the login" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # anonymous: the same, not "no CONNACK"
    r = _edgectl("consent", "dev-1", "--grant", "usage", "--port", str(b.port))
    assert r.returncode == 2 and "refused the login" in r.stderr, r.stderr


def test_a_refused_publish_is_a_failure_not_a_wait(secured):
    """dev-1 may not publish commands to itself (the ACL gives it edge/dev-1/# only... and
    not another device's): the consent update is refused by the broker, and the tool says so
    at once instead of 'no receipt, the update is retained'."""
    b = secured["broker"]
    r = _edgectl(
        "consent", "dev-2", "--grant", "usage", "--port", str(b.port),
        "--user", "dev-1", "--password", USERS["dev-1"], "--timeout", "5",
    )  # fmt: skip
    assert r.returncode == 2, r
    assert "refused the publish to edge/dev-2/cmd/consent" in r.stderr, r.stderr
    assert "Not authorized" in r.stderr


def test_credentials_file_and_unique_client_ids(secured):
    b = secured["broker"]
    user, pw = conn_mod.load_credentials(str(secured["dir"] / "ops.json"))
    opts = ConnectOptions(port=b.port, user=user, password=pw)
    c1 = conn_mod.connect(opts, "test")
    c2 = conn_mod.connect(opts, "test")
    try:
        assert c1.client._client_id != c2.client._client_id
        # both stay connected: neither kicked the other off (same id would, MQTT-3.1.4-2)
        assert c1.connected.wait(2) and c2.connected.wait(2)
        assert c1.mqtt5 and c1.publish_checked("edge/dev-1/cmd/ping", b"{}") is True
    finally:
        c1.close()
        c2.close()


@pytest.mark.parametrize(
    "content,msg",
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"user": "ops"}', "needs string fields"),
    ],
)
def test_bad_credentials_files(tmp_path, content, msg):
    p = tmp_path / "c.json"
    p.write_text(content)
    with pytest.raises(ToolError, match=msg):
        conn_mod.load_credentials(str(p))
    with pytest.raises(ToolError, match="cannot read"):
        conn_mod.load_credentials(str(tmp_path / "missing.json"))


def test_tls_with_the_ca_and_without(secured):
    b, d = secured["broker"], secured["dir"]
    opts = ConnectOptions(
        port=secured["tls_port"], user="ops", password=USERS["ops"],
        tls_ca=str(d / "broker" / "ca.crt"),
    )  # fmt: skip
    c = conn_mod.connect(opts, "tls")
    c.close()
    # a CA that did not sign the broker's certificate: refused, one line
    other = d / "other"
    other.mkdir()
    _, other_ca = ensure_ca(other)
    bad = ConnectOptions(
        port=secured["tls_port"], user="ops", password=USERS["ops"],
        tls_ca=str(other / "ca" / "ca.crt"),
    )  # fmt: skip
    with pytest.raises(ToolError, match="cannot connect to the broker at .*certificate"):
        conn_mod.connect(bad, "tls")
    # plain MQTT to the TLS port: no CONNACK, with a hint
    with pytest.raises(ToolError, match="no CONNACK|cannot connect"):
        conn_mod.connect(
            ConnectOptions(port=secured["tls_port"], user="ops", password="x"), "p", timeout=2
        )
    assert b.proc.poll() is None


def test_fallback_to_3_1_1_on_a_broker_without_mqtt5():
    with broker_mod.start(prefer="amqtt") as b:
        c = conn_mod.connect(ConnectOptions(port=b.port), "fallback")
        try:
            assert not c.mqtt5
            assert c.publish_checked("edge/x/cmd/ping", b"{}") is None  # PUBACK, no verdict
        finally:
            c.close()


def test_cli_option_checks(tmp_path):
    r = _edgectl("consent", "d", "--grant", "usage", "--password", "x")
    assert r.returncode == 2 and "--password needs --user" in r.stderr
    cert = tmp_path / "a.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    r = _edgectl("consent", "d", "--grant", "usage", "--tls-cert", str(cert))
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr
    r = _edgectl("consent", "d", "--grant", "usage", "--tls-ca", "/nonexistent.pem")
    assert r.returncode == 2 and "argument --tls-ca: cannot read /nonexistent.pem" in r.stderr
    assert "No such file" in r.stderr
