"""A loopback PostgreSQL server for the cluster tier's tests, benchmarks and demos
(docs/BACKEND.md 7).

Debian's `postgresql` package (version 15) puts `initdb` and `postgres` under
/usr/lib/postgresql/N/bin. Both refuse to run as root, so when this tool runs as root the data
directory is handed to the `postgres` system user and the server runs as that user. The server
listens on 127.0.0.1 only, on a free port, with its Unix socket inside the data directory.
Every login needs a password (scram-sha-256, no `trust`): the superuser `postgres` and the
role `edge` that owns the database `edge` each have a random one in a 0600 libpq password file
(host_tools/backend/cluster_creds.py), and `dsn` names that file. TLS is not set up. It is
stopped by PID (SIGINT: PostgreSQL's fast shutdown).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

from host_tools.backend.broker import HOST, free_port, pid_alive, wait_listening
from host_tools.backend.cluster_creds import PG_USER, Creds
from host_tools.backend.provision import write_secret
from host_tools.errors import ToolError

DBNAME = "edge"


def bin_dir() -> str:
    """The newest installed server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if not found:
        raise ToolError("PostgreSQL is not installed (apt-get install postgresql)")
    return os.path.dirname(found[-1])


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


def _run_as() -> str | None:
    """The user the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise ToolError(
            "running as root needs the `postgres` system user (Debian's package)"
        ) from e
    return "postgres"


def _as_user(user: str | None) -> dict:
    """Popen arguments that run a child as `user` with that user's group only (a child left
    in root's group would be judged by the group bits of root's directories)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _chown_tree(path: str, user: str) -> None:
    pw = pwd.getpwnam(user)
    for root, _dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def _let_traverse(path: str) -> None:
    """The server user must reach its data directory: add the search bit (not the read bit)
    for others to ancestors that lack it (a mkdtemp directory is 0700)."""
    while path and path != "/":
        mode = os.stat(path).st_mode
        if not mode & 0o001:
            os.chmod(path, (mode & 0o7777) | 0o001)
        path = os.path.dirname(path)


@dataclass
class Postgres:
    datadir: str
    port: int
    proc: subprocess.Popen | None = None
    pid: int = 0
    creds: str = ""  # the secrets directory

    @property
    def dsn(self) -> str:
        """The role `edge` on the database `edge`, password from its file."""
        return self.dsn_for(DBNAME)

    def dsn_for(self, db: str, admin: bool = False) -> str:
        return Creds(self.creds).dsn(HOST, self.port, db, admin)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return pid_alive(self.pid)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (chaos runs); start() brings it back."""
        _signal(self, signal.SIGKILL)
        _wait_gone(self, 10)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, the server exits."""
        _signal(self, signal.SIGINT)
        if not _wait_gone(self, 30):
            _signal(self, signal.SIGKILL)
            _wait_gone(self, 10)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the server again on its port and data (after kill() or a crash). A killed
        postmaster's backends exit when they notice, and until the last one has, the new
        postmaster refuses the shared memory they hold: try again until then."""
        self.kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                _spawn(self)
                return
            except ToolError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _signal(pg: Postgres, sig: int) -> None:
    if pg.proc is not None:
        if pg.proc.poll() is None:
            pg.proc.send_signal(sig)
    elif pid_alive(pg.pid):
        os.kill(pg.pid, sig)


def _wait_gone(pg: Postgres, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg.proc is not None:
            if pg.proc.poll() is not None:
                return True
        elif not pid_alive(pg.pid):
            return True
        time.sleep(0.05)
    return False


def _spawn(pg: Postgres) -> None:
    user = _run_as()
    log = open(os.path.join(os.path.dirname(pg.datadir), "postgres.log"), "ab")
    start = log.tell()
    if user is not None:
        os.chown(log.name, pwd.getpwnam(user).pw_uid, -1)
    cmd = [
        os.path.join(bin_dir(), "postgres"),
        "-D", pg.datadir,
        "-p", str(pg.port),
        "-c", f"listen_addresses={HOST}",
        "-c", f"unix_socket_directories={pg.datadir}",
        "-c", "max_connections=200",
    ]  # fmt: skip
    pg.proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        **_as_user(user),
        start_new_session=True,  # a Ctrl-C of the tool does not reach the server
    )
    pg.pid = pg.proc.pid
    log.close()  # the server has its own descriptor
    if not wait_listening(pg.port, 60, pg.proc):
        tail = _log_tail(log.name, start)
        pg.stop()
        raise ToolError(f"PostgreSQL did not start on {HOST}:{pg.port}: {tail}")
    _wait_ready(pg)


def _log_tail(path: str, start: int = 0) -> str:
    """The end of what the server logged since `start` (this run only)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read()[-300:].decode(errors="replace").strip() or "no output"
    except OSError:
        return "no log"


def _wait_ready(pg: Postgres, timeout: float = 60.0) -> None:
    """Listening is not accepting: wait until a login succeeds (recovery after a kill)."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(pg.dsn_for("postgres", admin=True), connect_timeout=2):
                return
        except psycopg.OperationalError as e:
            last = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            time.sleep(0.1)
    raise ToolError(f"PostgreSQL on {HOST}:{pg.port} accepts no login: {last}")


def start(workdir: str, port: int | None = None, creds: str | None = None) -> Postgres:
    """initdb (first time) under workdir/pgdata with a random superuser password, then run
    the server on a free loopback port and create the role and database `edge`. The password
    files go to `creds` (default workdir/secrets)."""
    import psycopg
    from psycopg import sql

    os.makedirs(workdir, exist_ok=True)
    datadir = os.path.join(workdir, "pgdata")
    user = _run_as()
    pg = Postgres(datadir, port or free_port(), creds=creds or os.path.join(workdir, "secrets"))
    fresh = not os.path.exists(os.path.join(datadir, "PG_VERSION"))
    if fresh:
        os.makedirs(datadir, exist_ok=True)
        if user is not None:
            _chown_tree(workdir, user)
            _let_traverse(os.path.dirname(os.path.abspath(workdir)))
    keys = Creds.make(pg.creds)
    keys.write_pgpass(HOST, pg.port)
    if fresh:
        pwfile = os.path.join(workdir, "initdb.pw")  # read by initdb (the server's user)
        write_secret(pwfile, keys.pg_password(admin=True) + "\n")
        if user is not None:
            os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
        try:
            out = _initdb(datadir, pwfile, user)
        finally:
            os.remove(pwfile)
        if out.returncode != 0:
            lines = [ln for ln in (out.stderr or out.stdout).splitlines() if "error" in ln]
            why = " / ".join(lines[:3]) or f"exit {out.returncode}"
            raise ToolError(f"initdb failed in {datadir}: {why}")
    _spawn(pg)
    with psycopg.connect(pg.dsn_for("postgres", admin=True), autocommit=True) as c:
        role = sql.Identifier(PG_USER)
        pw = sql.Literal(keys.pg_password())
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname=%s", (PG_USER,)).fetchone():
            c.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, pw))
        else:
            c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, pw))
        if not c.execute("SELECT 1 FROM pg_database WHERE datname=%s", (DBNAME,)).fetchone():
            c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DBNAME), role))
    return pg


def _initdb(datadir: str, pwfile: str, user: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            os.path.join(bin_dir(), "initdb"),
            "-D",
            datadir,
            "-U",
            "postgres",
            "--auth=scram-sha-256",  # local socket and TCP: a password, never trust
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-instructions",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        **_as_user(user),
    )


def remove(workdir: str) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
