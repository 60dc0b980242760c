"""The cluster tier's credentials (docs/BACKEND.md 7): one random password per role, each in its
own file readable by its owner only (0600) under `WORKDIR/secrets` (0700).

| file | who uses it |
|---|---|
| `nats-worker.password` | workers and tools on the NATS client port (user `worker`, NATS protocol only) |
| `nats-device.password` | devices on the MQTT listeners (user `device`, MQTT only) |
| `nats-route.password` | the nodes' cluster routes to each other (user `route`) |
| `pg.pgpass` | the PostgreSQL role `edge` (owner of the database `edge`), a libpq password file |
| `pg-admin.pgpass` | the PostgreSQL superuser `postgres`, a libpq password file |

Passwords never appear on a command line: NATS tools take `--nats-password-file`, and a
PostgreSQL DSN names its password file (`?passfile=...`, which libpq reads), so `ps` shows
neither.
"""

from __future__ import annotations

import os
import secrets
import stat
from urllib.parse import quote

from host_tools.errors import ToolError

WORKER_USER = "worker"
DEVICE_USER = "device"
ROUTE_USER = "route"
PG_USER = "edge"
PG_ADMIN = "postgres"
NATS_ROLES = {"worker": WORKER_USER, "device": DEVICE_USER, "route": ROUTE_USER}


def write_private(path: str, text: str) -> None:
    """Create `path` 0600 (never world-readable, not even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


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
        """A new random password per role (kept if the directory already has them)."""
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        c = cls(path)
        for role in NATS_ROLES:
            if not os.path.exists(c.nats_file(role)):
                write_private(c.nats_file(role), secrets.token_urlsafe(24) + "\n")
        return c

    def write_pgpass(self, host: str, port: int) -> None:
        """The two libpq password files for a server on host:port (hostname:port:database:
        username:password, the format libpq reads)."""
        for admin in (False, True):
            path = self.pgpass(admin)
            pw = self.pg_password(admin) if os.path.exists(path) else secrets.token_urlsafe(24)
            user = PG_ADMIN if admin else PG_USER
            write_private(path, f"{host}:{port}:*:{user}:{pw}\n")


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
    return users, f'authorization {{ user: "{route}", password: "{rpw}" }}'
