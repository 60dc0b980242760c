"""A NATS JetStream cluster on loopback: the cluster tier's front door and log
(docs/BACKEND.md 7).

Each node is one `nats-server` process (Debian's package) with JetStream (MQTT needs it, and
it needs a `server_name`), a cluster route to every other node, an MQTT listener for the
devices and a monitoring port. Devices connect to any node's MQTT listener; their QoS 1
publishes become NATS messages on `edge.D.t.C` (MQTT `/` is NATS `.`), which the stream
`EDGE` (three replicas, file storage) keeps until the workers' durable consumer acknowledges
them. MQTT sessions are JetStream streams of the server too, replicated on the nodes, so a
device that loses its node resumes its session on another one.

Nodes are started and stopped by PID; ports are free loopback ports picked at start; data
lives under the work directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field

from host_tools.backend.cluster_creds import Creds, nats_conf, tls_context
from host_tools.backend.provision import write_secret
from host_tools.backend.broker import HOST, free_port, pid_alive, wait_listening, wait_pid_gone
from host_tools.errors import ToolError

STREAM = "EDGE"
CONSUMER = "collectors"
# what the stream keeps: the device -> backend topics of docs/MQTT.md 2 (never acks or commands)
SUBJECT_KINDS = ("*.t.*", "*.consent.receipt", "*.status", "*.meta", "*.reply.*")


def nats_server_path() -> str:
    for cand in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise ToolError("nats-server is not installed (apt-get install nats-server)")


@dataclass
class Node:
    name: str
    client_port: int
    cluster_port: int
    mqtt_port: int
    http_port: int
    pid: int = 0

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"


@dataclass
class Cluster:
    workdir: str
    nodes: list[Node]
    prefix: str = "edge"
    creds: str | None = None  # the secrets directory (cluster_creds.Creds), None: no auth
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def auth(self, role: str = "worker") -> dict:
        """nats.connect() keywords of a role's credentials ({} when the cluster has none)."""
        if self.creds is None:
            return {}
        c = Creds(self.creds)
        user, password = c.nats(role)
        return {"user": user, "password": password, "tls": tls_context(c.ca_file)}

    @property
    def device_auth(self) -> tuple[str, str] | None:
        """The MQTT user name and password devices log in with (None: anonymous)."""
        return Creds(self.creds).nats("device") if self.creds else None

    @property
    def mqtt(self) -> list[tuple[str, int]]:
        return [(HOST, n.mqtt_port) for n in self.nodes]

    def node_alive(self, i: int) -> bool:
        n = self.nodes[i]
        p = self._procs.get(n.name)
        if p is not None:
            return p.poll() is None
        return pid_alive(n.pid)

    def kill(self, i: int) -> None:
        """SIGKILL node i, as a crash would."""
        n = self.nodes[i]
        p = self._procs.get(n.name)
        if p is not None:
            if p.poll() is None:
                p.kill()
            p.wait(10)
        elif pid_alive(n.pid):
            os.kill(n.pid, signal.SIGKILL)
            wait_pid_gone(n.pid, 10)

    def start_node(self, i: int) -> None:
        """(Re)start node i on its ports with its data (after kill())."""
        n = self.nodes[i]
        conf = _write_conf(self, n)
        log = open(os.path.join(self.workdir, f"{n.name}.log"), "ab")
        p = subprocess.Popen(
            [nats_server_path(), "-c", conf],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs[n.name] = p
        n.pid = p.pid
        for port in (n.client_port, n.mqtt_port):
            if not wait_listening(port, 30, p):
                tail = _tail(log.name)
                self.stop()
                raise ToolError(f"nats-server {n.name} did not listen on {HOST}:{port}: {tail}")

    def stop(self) -> None:
        """SIGTERM every node (lame duck: clients move on), SIGKILL what does not exit."""
        for n in self.nodes:
            p = self._procs.get(n.name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
            elif p is None and pid_alive(n.pid):
                os.kill(n.pid, signal.SIGTERM)
        for n in self.nodes:
            p = self._procs.get(n.name)
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            elif not wait_pid_gone(n.pid, 10):
                os.kill(n.pid, signal.SIGKILL)
                wait_pid_gone(n.pid, 5)

    def stream_leader(self) -> int:
        """The index of the node that leads the stream EDGE right now (-1: none)."""
        import asyncio

        import nats

        async def ask() -> str:
            nc = await nats.connect(
                servers=self.urls, connect_timeout=2, name=admin_name(), **self.auth()
            )
            try:
                info = await nc.jetstream(timeout=5).stream_info(STREAM)
                return (info.cluster.leader if info.cluster else None) or ""
            finally:
                await nc.close()

        name = asyncio.run(ask())
        return next((i for i, n in enumerate(self.nodes) if n.name == name), -1)

    def state(self) -> dict:
        return {
            "workdir": self.workdir,
            "prefix": self.prefix,
            "creds": self.creds,
            "nodes": [asdict(n) for n in self.nodes],
        }

    @classmethod
    def from_state(cls, d: dict) -> Cluster:
        return cls(d["workdir"], [Node(**n) for n in d["nodes"]], d["prefix"], d.get("creds"))


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read()[-400:].decode(errors="replace").strip() or "no output"
    except OSError:
        return "no log"


def _write_conf(c: Cluster, n: Node) -> str:
    store = os.path.join(c.workdir, n.name, "jetstream")
    replicas = min(3, len(c.nodes))
    os.makedirs(store, exist_ok=True)
    users, route_auth, cred = "", "", ""
    if c.creds is not None:
        users, route_auth = nats_conf(Creds(c.creds))
        route_user, route_pw = Creds(c.creds).nats("route")
        cred = f"{route_user}:{route_pw}@"
    routes = ", ".join(
        f"nats-route://{cred}{HOST}:{o.cluster_port}" for o in c.nodes if o.name != n.name
    )
    text = (
        f"server_name: {n.name}\n"
        f"listen: {HOST}:{n.client_port}\n"
        f"http: {HOST}:{n.http_port}\n"
        f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, max_file_store: 2GB }}\n'
        f"cluster {{ name: edge, listen: {HOST}:{n.cluster_port}, {route_auth}\n"
        f"  routes: [{routes}] }}\n"
        # MQTT 3.1.1 for the devices; its sessions and retained messages live in JetStream
        # every MQTT stream and consumer (sessions, retained messages, QoS 1 queues) on
        # three replicas: with fewer, a killed node takes sessions' quorum with it and the
        # devices' CONNECTs on the other nodes time out
        f"mqtt {{ listen: {HOST}:{n.mqtt_port}, ack_wait: 30s, max_ack_pending: 1000, "
        f"stream_replicas: {replicas}, consumer_replicas: {replicas} }}\n"
        f"{users}"
    )
    path = os.path.join(c.workdir, f"{n.name}.conf")
    write_secret(path, text)  # it holds the passwords
    return path


def start(
    workdir: str,
    nodes: int = 3,
    prefix: str = "edge",
    creds: str | None = None,
    ack_wait: float | None = None,
) -> Cluster:
    """Start `nodes` nats-server processes forming one JetStream cluster, wait until it
    has a meta leader, and create the stream and the durable consumer of the workers."""
    os.makedirs(workdir, exist_ok=True)
    ports: set[int] = set()

    def port() -> int:
        while True:
            p = free_port()
            if p not in ports:
                ports.add(p)
                return p

    c = Cluster(
        workdir,
        [Node(f"n{i + 1}", port(), port(), port(), port()) for i in range(nodes)],
        prefix,
        creds,
    )
    try:
        for i in range(nodes):
            c.start_node(i)
        ensure_stream(
            c.urls, prefix, replicas=min(3, nodes), ack_wait=ack_wait or ACK_WAIT_S,
            auth=c.auth(),
        )  # fmt: skip
    except BaseException:
        c.stop()
        raise
    return c


def admin_name() -> str:
    """A connection name no other process has (the nodes' connection lists show it)."""
    return f"edgectl-admin-{socket.gethostname()}-{os.getpid()}"


def subjects(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in SUBJECT_KINDS]


def ensure_stream(
    urls: list[str],
    prefix: str,
    replicas: int = 3,
    timeout: float = 60.0,
    ack_wait: float = 10.0,
    auth: dict | None = None,
) -> None:
    """Create the stream EDGE and the durable pull consumer `collectors` (idempotent). A fresh
    cluster elects its JetStream meta leader within seconds: retry until then."""
    import asyncio

    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

    async def go() -> None:
        nc = await nats.connect(
            servers=urls,
            connect_timeout=2,
            max_reconnect_attempts=-1,
            name=admin_name(),
            **(auth or {}),
        )
        try:
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    cfg = StreamConfig(
                        name=STREAM,
                        subjects=subjects(prefix),
                        storage=StorageType.FILE,
                        num_replicas=replicas,
                        max_age=7 * 86400.0,  # seconds: a week of backlog if workers stop
                        duplicate_window=0,  # dedupe is the database key, not the log's
                    )
                    try:
                        await js.add_stream(cfg)
                    except nats.js.errors.BadRequestError:
                        await js.update_stream(cfg)
                    await js.add_consumer(
                        STREAM,
                        ConsumerConfig(
                            durable_name=CONSUMER,
                            ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=ack_wait,
                            max_ack_pending=MAX_ACK_PENDING,
                            max_deliver=-1,
                        ),
                    )
                    return
                except Exception as e:
                    if time.monotonic() > deadline:
                        raise ToolError(f"JetStream did not take the stream {STREAM}: {e}") from e
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()

    asyncio.run(go())


ACK_WAIT_S = 10.0  # an unacknowledged message goes to another worker after this long
MAX_ACK_PENDING = 20_000  # messages in flight to all workers together
