"""`edgectl cluster up|down|worker`: the cluster tier on loopback (docs/BACKEND.md 7).

`up` starts a three-node NATS JetStream cluster (the devices' MQTT front door and the log),
a PostgreSQL server and N stateless workers, each a process running the collector's one
worker code path (host_tools/backend/ingest.py) between a `NatsSource` and a `PgSink`. Every
process is started on free loopback ports with its data under the work directory, and its
PID is written to `WORKDIR/cluster.json`; `down` stops them by those PIDs. `worker` is one
worker in the foreground (what `up` starts).

`Rig` holds the same parts by PID for tests, with the chaos moves: kill or restart a node,
a worker or the database.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from host_tools.backend import cluster_creds, nats_cluster, postgres
from host_tools.backend.broker import pid_alive, wait_pid_gone
from host_tools.errors import ToolError

STATE = "cluster.json"


# --- one worker ----------------------------------------------------------------------------------
def run_worker(
    urls: list[str],
    dsn: str,
    prefix: str = "edge",
    name: str = "edgectl-worker",
    e2e_ack: bool = True,
    device_keys: dict[str, bytes] | None = None,
    stop: threading.Event | None = None,
    stats_path: str | None = None,
    log=lambda msg: None,
    auth: tuple[str, str] | None = None,
    tls_ca: str | None = None,
) -> dict:
    """Run one worker until `stop` is set. A database or log failure ends the worker's
    current round (nothing of its last group was acknowledged; what it held is redelivered)
    and a new round starts when the database answers again: the process is stateless."""
    from host_tools.backend.ingest import Worker, WorkerConfig
    from host_tools.backend.nats_source import NatsSource
    from host_tools.backend.pg_sink import PgDocs, PgSink, PgUnavailable

    stop = stop or threading.Event()
    total: dict[str, int] = {}
    rounds = 0
    while not stop.is_set():
        try:
            sink = PgSink(dsn, connect_timeout=2)
        except PgUnavailable as e:  # other errors (not a collector database) end the worker
            log(f"worker {name}: {e}; retrying")
            stop.wait(0.5)
            continue
        rounds += 1
        user, password = auth or (None, None)
        tls = cluster_creds.tls_context(tls_ca) if tls_ca else None
        source = NatsSource(urls, prefix, name=name, user=user, password=password, tls=tls)
        worker = Worker(
            source,
            sink,
            PgDocs(sink),
            WorkerConfig(
                prefix=prefix,
                device_keys=device_keys,
                e2e_ack=e2e_ack,
                max_devices=10_000_000,
                log=log,
            ),
        )
        source.on_refuse = worker.note
        worker.start()
        try:
            source.start(worker.deliver)
        except ToolError as e:
            log(f"worker {name}: {e}; retrying")
            worker.stop()
            sink.close()
            stop.wait(0.5)
            continue
        last = 0.0
        while not stop.is_set() and worker.alive() and source.alive():
            stop.wait(0.2)
            if stats_path and time.monotonic() - last >= 1.0:
                last = time.monotonic()
                _write_stats(stats_path, _merge(total, worker.counts), rounds, source.stats)
        source.pause()
        worker.stop()
        source.stop()
        try:
            sink.close()
        except Exception:
            pass
        total = _merge(total, worker.counts)
        if worker.failed:
            log(f"worker {name}: {worker.failed}; starting again")
            stop.wait(0.5)
    if stats_path:
        _write_stats(stats_path, total, rounds, {})
    return {**total, "rounds": rounds}


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _write_stats(path: str, counts: dict, rounds: int, source: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({**counts, "rounds": rounds, "source": source, "at": time.time()}, f)
    os.replace(tmp, path)


# --- the whole tier ----------------------------------------------------------------------------
@dataclass
class Rig:
    """NATS cluster + PostgreSQL + worker processes, all by PID."""

    workdir: str
    nats: nats_cluster.Cluster
    pg: postgres.Postgres | None
    prefix: str = "edge"
    workers: list[int] = field(default_factory=list)  # PIDs; 0: stopped
    _procs: dict[int, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def device_auth(self) -> tuple[str, str] | None:
        return self.nats.device_auth

    @property
    def dsn(self) -> str:
        if self.pg is None:
            raise ToolError("the cluster runs without PostgreSQL")
        return self.pg.dsn

    def worker_cmd(self, i: int) -> list[str]:
        return [
            sys.executable, "-m", "host_tools.cli", "cluster", "worker",
            "--nats", ",".join(self.nats.urls),
            "--pg", self.dsn,
            "--prefix", self.prefix,
            "--name", f"worker-{i + 1}",
            *self.nats_auth_args(),
            "--stats", os.path.join(self.workdir, f"worker-{i + 1}.json"),
        ]  # fmt: skip

    def nats_auth_args(self) -> list[str]:
        """--nats-user/--nats-password-file for a tool on the NATS port (none without auth)."""
        if self.nats.creds is None:
            return []
        c = cluster_creds.Creds(self.nats.creds)
        return ["--nats-user", cluster_creds.WORKER_USER, "--nats-password-file",
                c.nats_file("worker"), "--nats-ca", c.ca_file]  # fmt: skip

    def start_worker(self, i: int) -> None:
        while len(self.workers) <= i:
            self.workers.append(0)
        log = open(os.path.join(self.workdir, f"worker-{i + 1}.log"), "ab")
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        p = subprocess.Popen(
            self.worker_cmd(i),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        self._procs[p.pid] = p
        self.workers[i] = p.pid

    def kill_worker(self, i: int, sig: int = signal.SIGKILL) -> None:
        pid = self.workers[i]
        p = self._procs.pop(pid, None)
        if p is not None:
            if p.poll() is None:
                p.send_signal(sig)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        elif pid_alive(pid):
            os.kill(pid, sig)
            wait_pid_gone(pid, 30)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.workers[i] = 0

    def worker_stats(self) -> list[dict]:
        out = []
        for i in range(len(self.workers)):
            try:
                with open(os.path.join(self.workdir, f"worker-{i + 1}.json")) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                out.append({})
        return out

    def stop(self, remove: bool = False) -> None:
        for i, pid in enumerate(self.workers):
            if pid:
                self.kill_worker(i, signal.SIGTERM)
        self.nats.stop()
        if self.pg is not None:
            self.pg.stop()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def save(self) -> str:
        path = os.path.join(self.workdir, STATE)
        state = {
            "nats": self.nats.state(),
            "pg": {
                "datadir": self.pg.datadir,
                "port": self.pg.port,
                "pid": self.pg.pid,
                "creds": self.pg.creds,
            }
            if self.pg
            else None,
            "prefix": self.prefix,
            "workers": self.workers,
        }
        with open(path, "w") as f:
            json.dump(state, f, indent=1)
        return path

    @classmethod
    def load(cls, workdir: str) -> Rig:
        path = os.path.join(workdir, STATE)
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError as e:
            raise ToolError(f"no cluster in {workdir} ({STATE} not found)") from e
        except ValueError as e:
            raise ToolError(f"{path} is not a cluster state file: {e}") from e
        pg = (
            postgres.Postgres(
                d["pg"]["datadir"], d["pg"]["port"], pid=d["pg"]["pid"], creds=d["pg"]["creds"]
            )
            if d["pg"]
            else None
        )
        return cls(
            workdir, nats_cluster.Cluster.from_state(d["nats"]), pg, d["prefix"], d["workers"]
        )

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def up(
    workdir: str,
    nodes: int = 3,
    workers: int = 2,
    prefix: str = "edge",
    pg: bool = True,
    ack_wait: float | None = None,
) -> Rig:
    """Start the tier; on any failure stop what was started."""
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, STATE)):
        raise ToolError(f"a cluster is already up in {workdir} (edgectl cluster down first)")
    creds = cluster_creds.Creds.make(os.path.join(workdir, "secrets")).dir
    ncl = nats_cluster.start(
        os.path.join(workdir, "nats"), nodes, prefix, creds=creds, ack_wait=ack_wait
    )
    rig = Rig(workdir, ncl, None, prefix)
    try:
        if pg:
            rig.pg = postgres.start(os.path.join(workdir, "postgres"), creds=creds)
            for i in range(workers):
                rig.start_worker(i)
    except BaseException:
        rig.stop()
        raise
    return rig


# --- the commands --------------------------------------------------------------------------------
def cmd_up(args) -> int:
    rig = up(args.workdir, args.nodes, args.workers, args.prefix, not args.no_pg, args.ack_wait)
    rig.save()
    info = {
        "workdir": os.path.abspath(args.workdir),
        "nats": rig.nats.urls,
        "mqtt": [f"{h}:{p}" for h, p in rig.nats.mqtt],
        "postgres": rig.pg.dsn if rig.pg else None,
        "secrets": rig.nats.creds,
        "pids": {
            "nats": [n.pid for n in rig.nats.nodes],
            "postgres": rig.pg.pid if rig.pg else None,
            "workers": rig.workers,
        },
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"cluster: up in {info['workdir']}")
        print(f"  devices (MQTT): {', '.join(info['mqtt'])}")
        print(f"  NATS: {', '.join(info['nats'])}")
        print(f"  PostgreSQL: {info['postgres']}")
        print(f"  credentials (0600 files): {info['secrets']}")
        print(
            f"  workers: {len(rig.workers)} (pids {rig.workers}); `edgectl cluster down` stops all"
        )
    return 0


def cmd_down(args) -> int:
    rig = Rig.load(args.workdir)
    rig.stop(remove=not args.keep)
    if args.keep:
        os.remove(os.path.join(args.workdir, STATE))
    print(f"cluster: stopped{'' if args.keep else ' and removed'} {args.workdir}")
    return 0


def cmd_worker(args) -> int:
    from host_tools.backend import e2e

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    keys = e2e.load_device_keys(args.device_keys) if args.device_keys else None
    urls = [u for u in args.nats.split(",") if u]
    if not urls:
        raise ToolError("--nats needs at least one nats://HOST:PORT")
    auth = None
    if args.nats_ca:
        cluster_creds.tls_context(args.nats_ca)  # a bad file is this line, not a retry loop
    if args.nats_user or args.nats_password_file:
        if not (args.nats_user and args.nats_password_file):
            raise ToolError("--nats-user and --nats-password-file go together")
        auth = (args.nats_user, cluster_creds.read_secret(args.nats_password_file))
    name = args.name or f"edgectl-worker-{socket.gethostname()}-{os.getpid()}"
    try:
        out = run_worker(
            urls,
            args.pg,
            args.prefix,
            name,
            e2e_ack=args.e2e_ack,
            device_keys=keys,
            stop=stop,
            stats_path=args.stats,
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
            auth=auth,
            tls_ca=args.nats_ca,
        )
    except KeyboardInterrupt:
        return 0
    print(json.dumps(out), flush=True)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "cluster", help="the cluster tier on loopback: NATS JetStream, PostgreSQL, workers"
    )
    cs = p.add_subparsers(dest="cluster_cmd", metavar="ACTION", required=True)
    u = cs.add_parser(
        "up", help="start 3 NATS nodes, PostgreSQL and the workers (in the background)"
    )
    u.add_argument(
        "--workdir",
        default="edge-cluster",
        help="data, logs and cluster.json (default ./edge-cluster)",
    )
    u.add_argument("--nodes", type=int, default=3, choices=range(1, 8), metavar="N")
    u.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    u.add_argument("--prefix", default="edge")
    u.add_argument("--no-pg", action="store_true", help="only the NATS cluster")
    u.add_argument(
        "--ack-wait",
        type=float,
        default=None,
        metavar="S",
        help="seconds before a message no worker acknowledged goes to another (default 10)",
    )
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_up)
    d = cs.add_parser("down", help="stop what `up` started (by PID) and remove the work directory")
    d.add_argument("--workdir", default="edge-cluster")
    d.add_argument("--keep", action="store_true", help="keep the data and logs")
    d.set_defaults(func=cmd_down)
    w = cs.add_parser("worker", help="one stateless worker: NATS JetStream consumer -> PostgreSQL")
    w.add_argument("--nats", required=True, help="comma-separated nats://HOST:PORT of the nodes")
    w.add_argument("--nats-user", help="NATS user name (`cluster up` makes `worker`)")
    w.add_argument(
        "--nats-password-file",
        metavar="FILE",
        help="the NATS user's password, one line, mode 0600 (WORKDIR/secrets/nats-worker.password)",
    )
    w.add_argument(
        "--nats-ca",
        metavar="FILE",
        help="connect with TLS, trusting this CA certificate (WORKDIR/secrets/tls/ca/ca.crt)",
    )
    w.add_argument(
        "--pg",
        required=True,
        help="PostgreSQL DSN; its password from a libpq password file: "
        "postgresql://USER@HOST:PORT/DB?passfile=FILE",
    )
    w.add_argument("--prefix", default="edge")
    w.add_argument(
        "--name", help="NATS connection name (default edgectl-worker-HOST-PID: unique per process)"
    )
    w.add_argument("--stats", help="rewrite this JSON file with the counters every second")
    w.add_argument("--no-e2e-ack", dest="e2e_ack", action="store_false")
    w.add_argument("--device-keys", metavar="FILE", help="as for edgectl collect")
    w.set_defaults(func=cmd_worker)
