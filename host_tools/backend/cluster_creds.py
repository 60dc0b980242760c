"""The cluster tier's credentials (docs/BACKEND.md 7): one random password per role, each in its
own file readable by its owner only (0600) under `WORKDIR/secrets` (0700).

| file | who uses it |
|---|---|
| `nats-worker.password` | workers and tools on the NATS client port (user `worker`, NATS protocol only) |
| `nats-device.password` | devices on the MQTT listeners (user `device`, MQTT only) |
| `nats-route.password` | the nodes' cluster routes to each other (user `route`) |
| `pg.pgpass` | the PostgreSQL role `edge` (owner of the database `edge`), a libpq password file |
| `pg-admin.pgpass` | the PostgreSQL superuser `postgres`, a libpq password file |
| `tls/ca/ca.crt`, `tls/broker/server.{crt,key}` | the NATS client port's TLS: a CA made here and the nodes' certificate (127.0.0.1) |

Passwords never appear on a command line: NATS tools take `--nats-password-file`, and a
PostgreSQL DSN names its password file (`?passfile=...`, which libpq reads), so `ps` shows
neither.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import ssl
from pathlib import Path
from urllib.parse import quote

from host_tools.backend.provision import ensure_ca, make_server_cert, write_secret
from host_tools.errors import ToolError

WORKER_USER = "worker"
DEVICE_USER = "device"
ROUTE_USER = "route"
PG_USER = "edge"
PG_ADMIN = "postgres"
NATS_ROLES = {"worker": WORKER_USER, "device": DEVICE_USER, "route": ROUTE_USER}


def read_secret(path: str) -> str:
    """The one-line secret in `path`; refused when others may read the file."""
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as e:
        raise ToolError(f"{path}: cannot read the password file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ToolError(f"{path}: not a password file (not UTF-8 text)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ToolError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
    if not text or "\n" in text:
        raise ToolError(f"{path}: not a password file (one line expected)")
    return text


class Creds:
    """The secrets directory of one cluster."""

    def __init__(self, path: str) -> None:
        self.dir = os.path.abspath(path)

    def nats_file(self, role: str) -> str:
        return os.path.join(self.dir, f"nats-{role}.password")

    def nats(self, role: str) -> tuple[str, str]:
        """(user, password) of a NATS role: worker, device or route."""
        return NATS_ROLES[role], read_secret(self.nats_file(role))

    @property
    def ca_file(self) -> str:
        return os.path.join(self.dir, "tls", "ca", "ca.crt")

    def server_cert(self) -> tuple[str, str]:
        d = os.path.join(self.dir, "tls", "broker")
        return os.path.join(d, "server.crt"), os.path.join(d, "server.key")

    def pgpass(self, admin: bool = False) -> str:
        return os.path.join(self.dir, "pg-admin.pgpass" if admin else "pg.pgpass")

    def pg_password(self, admin: bool = False) -> str:
        line = read_secret(self.pgpass(admin))
        return line.split(":", 4)[4]

    def dsn(self, host: str, port: int, db: str, admin: bool = False) -> str:
        """A libpq URI whose password comes from the role's password file (the path is
        percent-encoded, so the URI's last `/` still separates the database name)."""
        user = PG_ADMIN if admin else PG_USER
        return f"postgresql://{user}@{host}:{port}/{db}?passfile={quote(self.pgpass(admin), '')}"

    @classmethod
    def make(cls, path: str) -> Creds:
        """A new random password per role and the TLS CA and server certificate (what the
        directory already has is kept)."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        c = cls(path)
        for role in NATS_ROLES:
            if not os.path.exists(c.nats_file(role)):
                write_secret(c.nats_file(role), secrets.token_urlsafe(24) + "\n")
        if not os.path.exists(c.server_cert()[0]):
            tls = Path(c.dir, "tls")
            ca_key, ca_cert = ensure_ca(tls)
            (tls / "broker").mkdir(mode=0o700, exist_ok=True)
            make_server_cert(tls, "127.0.0.1", ca_key, ca_cert)
            # nats-server reads its key as the user that starts it: keep the key ours alone
            os.chown(c.server_cert()[1], os.geteuid(), os.getegid())
            os.chmod(tls, 0o700)
        return c

    def write_pgpass(self, host: str, port: int) -> None:
        """The two libpq password files for a server on host:port (hostname:port:database:
        username:password, the format libpq reads)."""
        for admin in (False, True):
            path = self.pgpass(admin)
            pw = self.pg_password(admin) if os.path.exists(path) else secrets.token_urlsafe(24)
            user = PG_ADMIN if admin else PG_USER
            write_secret(path, f"{host}:{port}:*:{user}:{pw}\n")


def tls_context(ca_file: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_file` and checks the server's name (TLS 1.2+)."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ToolError(f"{ca_file}: not a CA certificate file: {e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # nats-py's protocol answers True to a TLS peer's EOF, which asyncio logs as a warning on
    # every clean close: not an error, and not worth a line on the tool's stderr
    logging.getLogger("asyncio").addFilter(_quiet_ssl_eof)
    return ctx


def _quiet_ssl_eof(record: logging.LogRecord) -> bool:
    return "eof_received()" not in record.getMessage()


def nats_conf(c: Creds) -> tuple[str, str]:
    """The nats-server `authorization` block (clients: the worker user on the NATS protocol
    only, the device user on MQTT only) and the cluster block's route `authorization`."""
    worker, wpw = c.nats("worker")
    device, dpw = c.nats("device")
    route, rpw = c.nats("route")
    users = (
        "authorization { users = [\n"
        f'  {{user: "{worker}", password: "{wpw}", allowed_connection_types: ["STANDARD"]}}\n'
        f'  {{user: "{device}", password: "{dpw}", allowed_connection_types: ["MQTT"]}}\n'
        "] }\n"
    )
    crt, key = c.server_cert()
    # the client port (workers, tools) speaks TLS only; the MQTT listeners stay plain
    users += f'tls {{ cert_file: "{crt}", key_file: "{key}", timeout: 5 }}\n'
    return users, f'authorization {{ user: "{route}", password: "{rpw}" }}'
