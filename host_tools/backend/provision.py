"""`edgectl provision DEVICE`: a device identity and the broker side that admits it.

Layout under `--out` (default `provision/`); every file holding a secret is 0600 in a 0700
directory (docs/SECURITY.md 3):

    ca/ca.key, ca/ca.crt                 the project CA (PEM, made once, reused)
    broker/mosquitto.conf                the broker: a device listener where the device configs
                                         point (client id bound to the login, client certificate
                                         required with --tls) and a backend listener for the
                                         operator and the collector
    broker/passwd-devices, acl-devices   device logins (PBKDF2-SHA512, never on a command line)
                                         and what each may publish and read
    broker/passwd-backend, acl-backend   the `ops` and `collector` logins and their rights
    broker/server.crt, server.key, ca.crt   TLS for the broker (PEM; serverAuth only)
    broker/ops.json, collector.json      credentials files for `--credentials` (docs/MQTT.md 7)
    backend/consent_keys.json            device id -> consent signing key (hex), for `consent`
    backend/device_keys.json             device id -> backend key (hex): end-to-end acks and
                                         signed receipts (docs/MQTT.md 8)
    devices/ID/device.json               the device config the agent uses
    devices/ID/secrets/                  what `edgectl deploy` copies to /secrets: ca.der,
                                         client.der, client.key.der (DER: the board's TLS has
                                         no PEM parser; clientAuth only), consent.key and
                                         backend.key (hex text, the format the agent reads)

Provisioning an existing device keeps its identity (idempotent) unless `--rotate`.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import secrets
from pathlib import Path

from edge import wire
from host_tools.errors import ToolError
from host_tools import argtypes

PBKDF2_ITERATIONS = 10000  # mosquitto's $7$ format reads the count from the hash
OPS_USER = "ops"
COLLECTOR_USER = "collector"
# logins a device may never take: the backend's, and names an operator would expect to be theirs
RESERVED = frozenset({OPS_USER, COLLECTOR_USER, "admin", "root", "mosquitto", "backend"})
KEY_BYTES = 32
# Messages the broker queues per client with a persistent session while it is away (mosquitto's
# default is 1,000). The collector's queue must hold every batch the fleet sends during its
# longest outage: the broker has PUBACKed them, so the devices have freed them (docs/BACKEND.md 2).
# 1,000,000 is about 2.8 hours of 1,000 devices sending a batch every 10 s.
MAX_QUEUED = 1_000_000


def mosquitto_hash(
    password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS
) -> str:
    """A mosquitto 2.x password-file hash: `$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>`.
    Computed here, so a password never appears on a command line (`mosquitto_passwd -b`
    would show it to every local user in the process list)."""
    salt = salt or secrets.token_bytes(12)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def write_secret(path: Path | str, data: bytes | str) -> None:
    """Create or replace a file readable by its owner only: the mode is set before a byte of
    the secret is written (no window in which it is world-readable)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _broker_owned(path: Path) -> None:
    """mosquitto started as root drops to the `mosquitto` user before it reads its password
    files and TLS key: give that user (and only it) the file, when we are root and it exists."""
    if os.geteuid() != 0:
        return
    try:
        import pwd

        pw = pwd.getpwnam("mosquitto")
    except (ImportError, KeyError):
        return
    os.chown(path, pw.pw_uid, pw.pw_gid)


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """`user:hash` lines for every user (0600, owned by the broker's user)."""
    write_secret(path, "".join(f"{u}:{mosquitto_hash(pw)}\n" for u, pw in sorted(users.items())))
    _broker_owned(path)


def acl_devices(prefix: str) -> str:
    """What a device may do, by its login (%u, which the broker also makes its client id):
    publish its telemetry, status, channel metadata, replies and receipts; read its commands
    and its acks. Nothing of another device, no acks, no commands (docs/SECURITY.md 2)."""
    own = f"{prefix}/%u/"
    return "\n".join(
        [
            "# Generated by `edgectl provision`: the device listener (docs/SECURITY.md 2).",
            f"pattern write {own}{wire.T_TELEMETRY}/+",
            f"pattern write {own}{wire.T_STATUS}",
            f"pattern write {own}{wire.T_META}",
            f"pattern write {own}{wire.T_REPLY}/#",  # reply/config/get has two levels
            f"pattern write {own}{wire.T_RECEIPT}",
            f"pattern read {own}{wire.T_CMD}/#",
            f"pattern read {own}{wire.T_ACK}",
            f"pattern read {own}{wire.T_OTA}/#",  # update chunks (docs/OTA.md 7)
            "",
        ]
    )


def acl_backend(prefix: str) -> str:
    """The collector reads everything and is the only login that publishes acks; `ops` sends
    commands and reads what answers them."""
    return "\n".join(
        [
            "# Generated by `edgectl provision`: the backend listener (docs/SECURITY.md 2).",
            f"user {COLLECTOR_USER}",
            f"topic read {prefix}/#",
            f"topic write {prefix}/+/{wire.T_ACK}",
            "",
            f"user {OPS_USER}",
            f"topic readwrite {prefix}/+/{wire.T_CMD}/#",
            f"topic readwrite {prefix}/+/{wire.T_OTA}/#",  # retained update chunks (edgectl update)
            f"topic read {prefix}/+/{wire.T_REPLY}/#",
            f"topic read {prefix}/+/{wire.T_RECEIPT}",
            f"topic read {prefix}/+/{wire.T_STATUS}",
            "",
        ]
    )


# --- certificates (cryptography; installed with esptool) ------------------------------------


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-telemetry"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _cert(subject: str, key, issuer_name, issuer_key, days: int, role: str, sans=()):
    """role: "ca", "server" or "client". A leaf carries exactly one extended key usage, so a
    device's certificate is refused as a broker's and the broker's as a device's (RFC 5280
    4.2.1.12; OpenSSL and Mbed TLS check it in the handshake)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca = role == "ca"
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        eku = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if role == "server"
            else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())


def ensure_ca(out: Path):
    """Load the CA from out/ca, or make one (EC P-256, 10 years)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key_p, crt_p = out / "ca" / "ca.key", out / "ca" / "ca.crt"
    if key_p.exists() and crt_p.exists():
        os.chmod(key_p, 0o600)  # one written by an older provision was 0644
        key = serialization.load_pem_private_key(key_p.read_bytes(), None)
        return key, x509.load_pem_x509_certificate(crt_p.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("edge-telemetry CA", key, None, key, 3650, "ca")
    key_p.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key_p.parent, 0o700)
    write_secret(key_p, _pem_key(key))
    crt_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(out: Path, host: str, ca_key, ca_cert) -> None:
    """broker/server.{crt,key}: CN=host, SAN DNS:localhost, IP:127.0.0.1 and host; serverAuth."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if ip != ipaddress.ip_address("127.0.0.1"):
            sans.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(host, key, ca_cert.subject, ca_key, 825, "server", sans=sans)
    d = out / "broker"
    (d / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_secret(d / "server.key", _pem_key(key))
    _broker_owned(d / "server.key")
    (d / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))


def make_client_cert(secrets_dir: Path, device: str, ca_key, ca_cert) -> None:
    """secrets/client.der, client.key.der (PKCS#8 DER, 0600) and ca.der; clientAuth only."""
    from cryptography.hazmat.primitives import serialization as s
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(device, key, ca_cert.subject, ca_key, 3650, "client")
    (secrets_dir / "client.der").write_bytes(cert.public_bytes(s.Encoding.DER))
    write_secret(
        secrets_dir / "client.key.der",
        key.private_bytes(s.Encoding.DER, s.PrivateFormat.PKCS8, s.NoEncryption()),
    )
    (secrets_dir / "ca.der").write_bytes(ca_cert.public_bytes(s.Encoding.DER))


def _hex_key(path: Path, fresh: bool) -> str:
    """The hex text of a key file, made when missing (or `fresh`). A raw 32-byte file from an
    older provision is converted, so the device keeps its key."""
    if not fresh and path.exists():
        raw = path.read_bytes()
        try:
            text = raw.decode("ascii").strip()
            bytes.fromhex(text)
        except ValueError:
            text = raw.hex() if len(raw) == KEY_BYTES else ""
        if len(text) >= 2 * 16:
            write_secret(path, text + "\n")
            return text
    text = secrets.token_bytes(KEY_BYTES).hex()
    write_secret(path, text + "\n")
    return text


def _schema_has(path: str) -> bool:
    from edge import schema

    return any(r[0] == path for r in schema.rows())


# --- the API ------------------------------------------------------------------------------


def provision(
    device: str,
    out: Path,
    board: str = "unix-sim",
    host: str = "127.0.0.1",
    port: int = 1883,
    prefix: str = "edge",
    tls: bool = False,
    rotate: bool = False,
    backend_port: int | None = None,
    secrets_path: str = "/secrets",
) -> Path:
    """Create or refresh DEVICE's identity and rebuild the broker's password files, ACLs and
    mosquitto.conf from every provisioned device. Returns the device.json path.
    secrets_path: where the agent finds the secrets directory (a board: /secrets)."""
    if not wire.name_ok(device):
        raise ToolError(f"device id {device!r} must be 1-64 letters, digits, '_' or '-'")
    if device.lower() in RESERVED:
        raise ToolError(
            f"device id {device!r} is reserved for an operator or backend login; pick another"
        )
    if not wire.name_ok(prefix):
        raise ToolError(f"prefix {prefix!r} must be letters, digits, '_' or '-'")
    if not 1 <= port <= 65535:
        raise ToolError(f"port {port} must be 1..65535")
    backend_port = backend_port or (port + 1 if port < 65535 else port - 1)
    if backend_port == port or not 1 <= backend_port <= 65535:
        raise ToolError(f"backend port {backend_port} must differ from the device port {port}")
    out.mkdir(parents=True, exist_ok=True)
    conf_p = out / "broker" / "mosquitto.conf"
    if conf_p.exists() and "require_certificate true" in conf_p.read_text():
        tls = True  # the broker requires TLS once one device was provisioned with it
    ddir = out / "devices" / device
    sdir = ddir / "secrets"
    cfg_p = ddir / "device.json"
    fresh = rotate or not cfg_p.exists()
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    ca_key, ca_cert = ensure_ca(out)
    (out / "broker").mkdir(parents=True, exist_ok=True)
    if not (out / "broker" / "server.crt").exists():
        make_server_cert(out, host, ca_key, ca_cert)
    if fresh or not (sdir / "client.key.der").exists():
        make_client_cert(sdir, device, ca_key, ca_cert)
    # keys the user added (channels, inputs, ...) survive a re-run; the identity is ours
    cfg: dict = {}
    if cfg_p.exists():
        try:
            cfg = json.loads(cfg_p.read_text())
            password = None if fresh else cfg["mqtt"]["password"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ToolError(f"{cfg_p}: cannot read the existing device config ({e})") from e
    else:
        password = None
    password = password or secrets.token_urlsafe(18)
    _hex_key(sdir / "consent.key", fresh)
    _hex_key(sdir / "backend.key", fresh)
    os.chmod(sdir / "client.key.der", 0o600)
    mqtt = {
        "host": host,
        "port": port,
        "prefix": prefix,
        "user": device,
        "password": password,
        "tls": None,
    }
    if tls:
        mqtt["tls"] = {
            "ca": f"{secrets_path}/ca.der",
            "cert": f"{secrets_path}/client.der",
            "key": f"{secrets_path}/client.key.der",
            "server_hostname": host,
        }
    cfg.pop("consent_key", None)  # an older provision's name, which the agent ignored
    old_mqtt: dict = cfg["mqtt"] if isinstance(cfg.get("mqtt"), dict) else {}
    cfg.update(device_id=device, board=board, mqtt=dict(old_mqtt, **mqtt))
    # signed updates required: the agent reads this key (edge/consent.py consent_key)
    cfg["consent"] = dict(cfg.get("consent") or {}, key_file=f"{secrets_path}/consent.key")
    if _schema_has("backend.key_file"):  # authenticated acks and receipts (docs/MQTT.md 8)
        cfg["backend"] = dict(cfg.get("backend") or {}, key_file=f"{secrets_path}/backend.key")
        cfg["mqtt"]["e2e_ack"] = True
    write_secret(cfg_p, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _rebuild_broker(out, prefix, host, port, backend_port, tls)
    return cfg_p


def _credentials(path: Path, user: str) -> str:
    if path.exists():
        return json.loads(path.read_text())["password"]
    pw = secrets.token_urlsafe(18)
    write_secret(path, json.dumps({"user": user, "password": pw}) + "\n")
    return pw


def broker_conf(
    b: Path, host: str, port: int, backend_port: int, tls: bool, extra: str = ""
) -> str:
    """mosquitto.conf for the provisioned broker: the device listener exactly where the device
    configs point, and the backend listener. `extra` goes first (e.g. `user root` in tests)."""
    r = b.resolve()
    tls_lines = f"cafile {r / 'ca.crt'}\ncertfile {r / 'server.crt'}\nkeyfile {r / 'server.key'}\n"
    dev = (
        f"# devices: each login is its own client id (a device cannot take over another's\n"
        f"# session, MQTT 3.1.1 3.1.4), and may only use its own topics\n"
        f"listener {port} {host}\n"
        "allow_anonymous false\n"
        f"password_file {r / 'passwd-devices'}\n"
        f"acl_file {r / 'acl-devices'}\n"
        "use_username_as_clientid true\n"
    )
    if tls:
        dev += tls_lines + "require_certificate true\ntls_version tlsv1.2\n"
    else:
        dev += "# plain TCP: passwords and readings cross the network in clear (provision --tls)\n"
    backend = (
        "# the operator (`ops`) and the collector: not open to device logins\n"
        f"listener {backend_port} {host}\n"
        "allow_anonymous false\n"
        f"password_file {r / 'passwd-backend'}\n"
        f"acl_file {r / 'acl-backend'}\n"
    )
    if tls:
        backend += tls_lines + "tls_version tlsv1.2\n"
    return (
        "# Generated by `edgectl provision` (docs/SECURITY.md 2); start it with\n"
        "# `edgectl broker --config` or `mosquitto -c` on this file.\n"
        f"{extra}per_listener_settings true\nset_tcp_nodelay true\n"
        "# a collector away keeps its backlog (mosquitto drops beyond 1,000 by default)\n"
        f"max_queued_messages {MAX_QUEUED}\n\n{dev}\n{backend}"
    )


def _rebuild_broker(
    out: Path, prefix: str, host: str, port: int, backend_port: int, tls: bool
) -> None:
    """Password files, ACLs, backend key lists and mosquitto.conf from every device dir."""
    b = out / "broker"
    os.chmod(b, 0o755)
    backend_users = {
        OPS_USER: _credentials(b / "ops.json", OPS_USER),
        COLLECTOR_USER: _credentials(b / "collector.json", COLLECTOR_USER),
    }
    devices: dict[str, str] = {}
    consent_keys: dict[str, str] = {}
    device_keys: dict[str, str] = {}
    for cfg_p in sorted((out / "devices").glob("*/device.json")):
        try:
            cfg = json.loads(cfg_p.read_text())
            dev = cfg["device_id"]
            devices[dev] = cfg["mqtt"]["password"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ToolError(f"{cfg_p}: not a device config written by provision ({e})") from e
        consent_keys[dev] = _hex_key(cfg_p.parent / "secrets" / "consent.key", False)
        device_keys[dev] = _hex_key(cfg_p.parent / "secrets" / "backend.key", False)
    write_password_file(b / "passwd-devices", devices)
    write_password_file(b / "passwd-backend", backend_users)
    (b / "acl-devices").write_text(acl_devices(prefix))
    (b / "acl-backend").write_text(acl_backend(prefix))
    for old in ("passwd", "acl"):  # an older provision's single files: not used any more
        if (b / old).exists():
            (b / old).unlink()
    (b / "mosquitto.conf").write_text(broker_conf(b, host, port, backend_port, tls))
    (out / "backend").mkdir(exist_ok=True)
    os.chmod(out / "backend", 0o700)
    write_secret(
        out / "backend" / "consent_keys.json", json.dumps(consent_keys, indent=2, sort_keys=True)
    )
    write_secret(
        out / "backend" / "device_keys.json", json.dumps(device_keys, indent=2, sort_keys=True)
    )


def cmd_provision(args: argparse.Namespace) -> int:
    """CLI handler for `edgectl provision`."""
    out = Path(args.out)
    p = provision(
        args.device,
        out,
        args.board,
        args.host,
        args.port,
        args.prefix,
        args.tls,
        args.rotate,
        args.backend_port,
        args.secrets_path,
    )
    print(f"device config: {p}")
    print(f"secrets for the board: {p.parent / 'secrets'} (deploy copies them to /secrets)")
    print(
        f"broker: {out / 'broker' / 'mosquitto.conf'}: devices on {args.host}:{args.port}, "
        f"ops and collector on port {conf_backend_port(out)}"
    )
    if not args.tls:
        print("warning: plain TCP: passwords and readings cross the network in clear (--tls)")
    return 0


def conf_backend_port(out: Path) -> int:
    """The backend listener's port, read back from the generated mosquitto.conf."""
    text = (out / "broker" / "mosquitto.conf").read_text()
    ports = re.findall(r"^listener (\d+) ", text, re.M)
    return int(ports[1])


def register(sub: argparse._SubParsersAction) -> None:
    """Add `edgectl provision`."""
    p = sub.add_parser("provision", help="create a device identity and the broker's access rules")
    p.add_argument(
        "device", type=argtypes.device_id, help="device id (letters, digits, '_' or '-')"
    )
    p.add_argument(
        "--out",
        default="provision",
        type=argtypes.directory,
        help="provisioning directory (default provision/)",
    )
    p.add_argument(
        "--board",
        type=argtypes.board,
        default="unix-sim",
        help="board name written into the device config",
    )
    p.add_argument("--host", default="127.0.0.1", help="broker host the device connects to")
    p.add_argument("--port", type=argtypes.tcp_port, default=1883, help="the devices' broker port")
    p.add_argument(
        "--backend-port",
        type=argtypes.tcp_port,
        default=None,
        help="port of the operators' and the collector's listener (default: --port + 1)",
    )
    p.add_argument(
        "--prefix", type=argtypes.name, default="edge", help="topic prefix (docs/MQTT.md 1)"
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="TLS on both listeners; devices must present their client certificate",
    )
    p.add_argument("--rotate", action="store_true", help="new password, keys and cert for DEVICE")
    p.add_argument(
        "--secrets-path",
        default="/secrets",
        help="where the agent finds its secrets directory (default /secrets, as deploy copies "
        "them; a host run gives the absolute path of devices/ID/secrets)",
    )
    p.set_defaults(func=cmd_provision)
