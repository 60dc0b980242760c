"""The cluster tier (docs/BACKEND.md 7): a real three-node NATS JetStream cluster (nats-server)
with its MQTT listeners as the devices' front door, stateless `edgectl cluster worker`
processes on one durable consumer, and a real PostgreSQL. Started with `edgectl cluster up`,
attacked by SIGKILLing workers, NATS nodes and the database mid-stream; every test ends by
counting rows in PostgreSQL: each device's seqs 1..last stored exactly once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest

from host_tools.backend import cluster
from host_tools.backend.broker import free_port, pid_alive
from host_tools.backend.pg_sink import PgSink
from host_tools.backend.simdevice import SimDevices, batch

ACK_WAIT = 2.0  # s before a dead worker's messages go to another (the default is 10)


def _edgectl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools", *args], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tier():
    """`edgectl cluster up` (3 nodes, PostgreSQL, 2 workers); `down` at the end, which must
    leave none of the PIDs it reported running and remove the work directory."""
    base = tempfile.mkdtemp(prefix="edge-test-cluster-")
    work = os.path.join(base, "tier")
    try:
        r = _edgectl("cluster", "up", "--workdir", work, "--ack-wait", str(ACK_WAIT), "--json")
        assert r.returncode == 0, r.stderr
        info = json.loads(r.stdout.strip().splitlines()[-1])
        rig = cluster.Rig.load(work)
        try:
            PgSink(rig.dsn).close()  # the tables, if no worker has made them yet
            yield rig
        finally:
            rig.save()  # the PIDs of what the tests restarted
            pg_pid = rig.pg.pid if rig.pg else 0
            pids = info["pids"]["nats"] + [n.pid for n in rig.nats.nodes] + [pg_pid]
            pids += rig.workers
            r = _edgectl("cluster", "down", "--workdir", work)
            assert r.returncode == 0, r.stderr
            assert not [p for p in pids if p and pid_alive(p)]
            assert not os.path.exists(work)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _stored(rig: cluster.Rig, devices: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """device -> (rows, distinct seqs, min seq, max seq) in PostgreSQL."""
    with psycopg.connect(rig.dsn) as db:
        rows = db.execute(
            "SELECT device, count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings "
            "WHERE device = ANY(%s) GROUP BY device",
            (devices,),
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _assert_exactly_once(rig: cluster.Rig, sim: SimDevices) -> int:
    want = sim.sent_readings()
    got = _stored(rig, sim.devices)
    bad = {d: (got.get(d), n) for d, n in want.items() if got.get(d) != (n, n, 1, n)}
    assert not bad, f"device: (rows, distinct, min, max) stored vs last seq sent: {bad}"
    return sum(want.values())


def _stream(sim: SimDevices, rounds: int, chaos: dict, pause: float = 0.05) -> None:
    """Publish `rounds` batches per device; chaos[r]() runs before round r."""
    for r in range(rounds):
        if r in chaos:
            chaos[r]()
        sim.publish(1)
        time.sleep(pause)


def _devices(tag: str, n: int) -> list[str]:
    return [f"{tag}-{i:03d}" for i in range(n)]


def test_devices_on_two_nodes_stored_once_and_acked(tier):
    """Batches through two different nodes' MQTT listeners, some published twice (a device
    re-send): every reading stored once and acknowledged end to end."""
    a = SimDevices(tier.nats.mqtt[:1], _devices("flow-a", 10), auth=tier.device_auth).start()
    b = SimDevices(tier.nats.mqtt[1:2], _devices("flow-b", 10), auth=tier.device_auth).start()
    try:
        for sim in (a, b):
            sim.publish(10)
        for d in a.devices[:5]:  # the same bytes again, as a device re-sends after a reconnect
            a.client.publish(f"edge/{d}/t/essential", batch(d, "essential", 1, 50), qos=1)
        assert a.wait_acked(60) and b.wait_acked(60), (a.pending(), b.pending())
        assert _assert_exactly_once(tier, a) == _assert_exactly_once(tier, b) == 5000
    finally:
        a.stop()
        b.stop()


def test_worker_sigkill_midstream_loses_nothing(tier):
    """SIGKILL one worker mid-stream and start it again later, then SIGKILL the other:
    JetStream hands what they had not acknowledged to the survivor after ack_wait, and the key
    (device, seq) absorbs what a killed worker had committed but not acknowledged."""
    sim = SimDevices(tier.nats.mqtt, _devices("wk", 20), auth=tier.device_auth).start()
    base = tier.worker_stats()[0].get("unique", 0)
    stored_before_kill: list[int] = []

    def kill_first_when_busy() -> None:
        # JetStream may hand everything to the other worker for a while: kill worker 1 once
        # it has stored part of this stream (its stats file is rewritten every second)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stored = tier.worker_stats()[0].get("unique", 0) - base
            if stored > 0:
                break
            sim.publish(1)
            time.sleep(0.2)
        stored_before_kill.append(stored)
        tier.kill_worker(0)

    try:
        _stream(
            sim,
            30,
            {
                8: kill_first_when_busy,
                16: lambda: tier.start_worker(0),
                22: lambda: tier.kill_worker(1),
            },
        )
        assert sim.wait_acked(60), sim.pending()
        total = _assert_exactly_once(tier, sim)
        assert total >= 30_000 and total % 1000 == 0, total
        assert stored_before_kill[0] > 0, "worker 1 stored nothing of this stream before its kill"
    finally:
        sim.stop()
        if not tier.workers[1]:
            tier.start_worker(1)


@pytest.mark.slow
def test_node_sigkill_devices_fail_over(tier):
    """SIGKILL the NATS node the devices are connected to mid-stream: they move to another
    node (mqtt.brokers order), resend what no end-to-end ack confirmed, and nothing is lost or
    stored twice; the node comes back and the cluster takes data through it again."""
    sim = SimDevices(tier.nats.mqtt, _devices("nk", 20), auth=tier.device_auth).start()
    try:
        _stream(sim, 20, {6: lambda: tier.nats.kill(0)})
        assert sim.wait_acked(90), sim.pending()
        assert _assert_exactly_once(tier, sim) == 20_000
        assert sim.failover_times and max(sim.failover_times) < 30, sim.failover_times
    finally:
        sim.stop()
        if not tier.nats.node_alive(0):
            tier.nats.start_node(0)
    back = SimDevices(tier.nats.mqtt[:1], _devices("nk-back", 5), auth=tier.device_auth).start()
    try:
        back.publish(4)
        assert back.wait_acked(60), back.pending()
        _assert_exactly_once(tier, back)
    finally:
        back.stop()


@pytest.mark.slow
def test_database_sigkill_midstream_loses_nothing(tier):
    """SIGKILL PostgreSQL mid-stream and start it again: the workers' open transactions die
    with it, nothing of them was acknowledged, and the workers reconnect and go on."""
    sim = SimDevices(tier.nats.mqtt, _devices("db", 20), auth=tier.device_auth).start()
    try:
        pg = tier.pg
        assert pg is not None
        _stream(sim, 20, {6: pg.kill, 9: pg.restart})
        assert sim.wait_acked(120), sim.pending()
        assert _assert_exactly_once(tier, sim) == 20_000
    finally:
        sim.stop()


def test_stream_leader_sigkill_loses_nothing(tier):
    """Default-run variant of the node kill: SIGKILL the node that leads the stream (devices
    and workers are elsewhere or move), mid-stream; JetStream elects another leader; what no
    end-to-end ack confirmed in the meantime the devices re-send; nothing lost, nothing twice.
    The node comes back at the end."""
    leader = tier.nats.stream_leader()
    assert leader >= 0
    brokers = [b for i, b in enumerate(tier.nats.mqtt) if i != leader]
    sim = SimDevices(brokers, _devices("sl", 10), auth=tier.device_auth).start()
    try:
        _stream(sim, 12, {3: lambda: tier.nats.kill(leader)})
        assert sim.wait_acked(60), sim.pending()
        assert _assert_exactly_once(tier, sim) == 6000
    finally:
        sim.stop()
        if not tier.nats.node_alive(leader):
            tier.nats.start_node(leader)


def test_cluster_commands_refuse_bad_input(tmp_path):
    """One line and exit 2, never a traceback."""
    r = _edgectl("cluster", "down", "--workdir", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stderr.startswith("edgectl: no cluster in"), r.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "cluster.json").write_text("{")
    r = _edgectl("cluster", "down", "--workdir", str(tmp_path / "bad"))
    assert r.returncode == 2 and "not a cluster state file" in r.stderr, r.stderr
    r = _edgectl("cluster", "worker", "--nats", "", "--pg", "postgresql://x@127.0.0.1:1/e")
    assert r.returncode == 2 and r.stderr.startswith("edgectl: --nats needs"), r.stderr
    worker = ("cluster", "worker", "--nats", "nats://127.0.0.1:1", "--pg", "postgresql://x@h:1/e")
    loose = tmp_path / "pw"
    loose.write_text("secret\n")
    loose.chmod(0o644)
    r = _edgectl(*worker, "--nats-user", "worker", "--nats-password-file", str(loose))
    assert r.returncode == 2 and "readable by others (mode 644)" in r.stderr, r.stderr
    r = _edgectl(*worker, "--nats-ca", str(loose))
    assert r.returncode == 2 and "not a CA certificate file" in r.stderr, r.stderr
    r = _edgectl("fleet", "--devices", "10", "--chaos", "node-kil")
    assert r.returncode == 2 and r.stderr.startswith("edgectl: unknown chaos 'node-kil'"), r.stderr
    r = _edgectl("fleet", "--devices", "0")
    assert r.returncode == 2 and "needs --devices or --real" in r.stderr, r.stderr


@pytest.mark.slow
def test_fleet_with_node_and_worker_kills_loses_nothing():
    """`edgectl fleet` (its own cluster): 300 simulated devices and 2 real agents, a node and a
    worker SIGKILLed mid-run: 0 lost, 0 duplicate rows, every real agent complete."""
    r = _edgectl(
        "fleet", "--devices", "300", "--real", "2", "--chaos", "node-kill,worker-kill",
        "--json", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["lost"] == 0 and f["duplicate_rows"] == 0 and f["unacked_batches"] == 0, f
    assert f["rows"] == f["readings_sent"] == 300 * 20 * 50 + 2 * 20 * 50, f
    assert f["real_agents_complete"] == 2 and not f["real_agents_failed"], f
    assert [e["event"] for e in f["events"]][:2] == ["node 1 SIGKILL", "worker 1 SIGKILL"], f


def test_pg_sink_keeps_the_sqlite_sinks_rules(tier):
    """The same worker over PgSink: a re-sent batch is counted as duplicates, a reused seq
    with other content goes to seq_conflicts, default deny before a receipt, and a revocation
    erases the category's rows with a ledger row, all in PostgreSQL."""
    from host_tools.backend.ingest import Delivery, Worker, WorkerConfig
    from host_tools.backend.mqtt_source import QueueSource
    from host_tools.backend.pg_sink import PgDocs

    sink = PgSink(tier.dsn)
    src = QueueSource()
    w = Worker(src, sink, PgDocs(sink), WorkerConfig(e2e_ack=True))

    def feed(topic: str, payload: bytes) -> None:
        w.process([Delivery(topic, payload)])

    try:
        feed("edge/pg-1/t/essential", batch("pg-1", "essential", 1, 50))
        feed("edge/pg-1/t/essential", batch("pg-1", "essential", 1, 50))  # re-send
        feed("edge/pg-1/t/usage", batch("pg-1", "usage", 51, 10))  # no receipt: refused
        receipt = {
            "device": "pg-1",
            "version": 1,
            "seq": 60,
            "grants": {"essential": True, "usage": True},
        }
        feed("edge/pg-1/consent/receipt", json.dumps(receipt).encode())
        feed("edge/pg-1/t/usage", batch("pg-1", "usage", 51, 10))
        forged = batch("pg-1", "essential", 61, 5)
        feed("edge/pg-1/t/essential", forged)
        conflicting = bytearray(batch("pg-1", "essential", 61, 5))
        conflicting[-1] ^= 1  # the last reading's value differs: same seq, other content
        feed("edge/pg-1/t/essential", bytes(conflicting))
        held = _stored(tier, ["pg-1"])["pg-1"]
        assert held == (65, 65, 1, 65), (held, w.by_reason, w.errors)
        receipt = {
            "device": "pg-1",
            "version": 2,
            "seq": 70,
            "grants": {"essential": True, "usage": False},
        }
        feed("edge/pg-1/consent/receipt", json.dumps(receipt).encode())
        feed("edge/pg-1/consent/receipt", json.dumps(receipt).encode())  # redelivered
    finally:
        sink.close()
    c = w.counts
    assert (c["unique"], c["duplicates"], c["refused"], c["conflicts"]) == (65, 54, 10, 1), c
    with psycopg.connect(tier.dsn) as db:
        left = db.execute(
            "SELECT category, count(*) FROM readings WHERE device='pg-1' GROUP BY category"
        ).fetchall()
        ledger = db.execute(
            "SELECT version, event, category, readings, action FROM consent_ledger "
            "WHERE device='pg-1' ORDER BY id"
        ).fetchall()
        conflicts = db.execute("SELECT count(*) FROM seq_conflicts WHERE device='pg-1'").fetchone()
    assert left == [("essential", 55)]
    assert ledger == [
        (1, "grant", "essential", 0, "none"),
        (1, "grant", "usage", 0, "none"),
        (2, "deny", "usage", 10, "erased"),
    ]
    assert conflicts == (1,)


def test_pg_sink_refuses_what_is_not_a_collector_database(tier):
    from host_tools.errors import ToolError

    with pytest.raises(ToolError, match="cannot connect to PostgreSQL"):
        PgSink(f"postgresql://postgres@127.0.0.1:{free_port()}/edge", connect_timeout=2)
    assert tier.pg is not None
    with psycopg.connect(tier.pg.dsn_for("postgres", admin=True), autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS notours")
        db.execute("CREATE DATABASE notours")
        db.execute("ALTER DATABASE notours OWNER TO edge")
    other = tier.pg.dsn_for("notours")
    with psycopg.connect(other, autocommit=True) as db:
        db.execute("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '99')")
    with pytest.raises(ToolError, match="collector schema 99"):
        PgSink(other)
    # a worker on it stops with that line (it waits only for a server that does not answer)
    r = _edgectl("cluster", "worker", "--nats", ",".join(tier.nats.urls), "--pg", other)
    assert r.returncode == 2 and "collector schema 99" in r.stderr, r.stderr


def _real_agent(agents, tier: cluster.Rig, device: str, count: int, rate: int):
    from host_tools.backend.fleet import real_agent_config

    return agents(real_agent_config(device, tier.nats.mqtt, count, rate, tier.device_auth))


@pytest.mark.slow
def test_real_agent_fails_over_when_its_node_dies(agents, tier):
    """The real agent (unix MicroPython, `mqtt.brokers` = the three nodes, end-to-end acks):
    SIGKILL the node it is connected to mid-stream; it moves to the next node, its status
    says which, and every reading is in PostgreSQL once."""
    a = _real_agent(agents, tier, "ra-1", 6000, 400)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _stored(tier, ["ra-1"]).get("ra-1", (0,))[0] < 800:
            time.sleep(0.1)
        first = (a.stats.get("mqtt") or {}).get("broker")
        assert first == "%s:%d" % tier.nats.mqtt[0], a.stats.get("mqtt")
        tier.nats.kill(0)
        killed = time.monotonic()
        # the agent's @stats line comes every second: this bounds the failover from above
        while time.monotonic() < killed + 60 and a.stats["mqtt"]["broker"] in (first, ""):
            time.sleep(0.05)
        failover = time.monotonic() - killed
        assert a.wait(120) == 0, a.output[-20:]
        final = a.final or {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _stored(tier, ["ra-1"])["ra-1"][0] < 6000:
            time.sleep(0.2)
        assert _stored(tier, ["ra-1"])["ra-1"] == (6000, 6000, 1, 6000)
        m = final["mqtt"]
        assert m["broker"] != first and m["failovers"] >= 1, m
        print(f"real agent: on {m['broker']} {failover:.1f} s after its node was killed")
        assert failover < 30
    finally:
        a.stop()
        if not tier.nats.node_alive(0):
            tier.nats.start_node(0)


@pytest.mark.slow
def test_bench_cluster_runs_both_tiers():
    """`edgectl bench cluster --json` on a small load: both tiers store every reading (the
    figures themselves are the benchmark's, not this test's)."""
    env = {**os.environ, "BENCH_CLUSTER_BATCHES": "4"}
    r = subprocess.run(
        [sys.executable, "-m", "host_tools", "bench", "cluster", "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["embedded_complete"] and f["cluster_1w_complete"] and f["cluster_2w_complete"], f
    assert f["cluster_readings_per_s_1w"] > 0 and f["embedded_readings_per_s"] > 0, f


def test_subject_export_and_erase_on_postgresql(tier, tmp_path):
    """`edgectl subject export|erase DEVICE --pg DSN`: the same receipt and file as over SQLite,
    from the cluster tier's PostgreSQL; erasure leaves the other device and the audit trail."""
    from host_tools.backend.ingest import Delivery, Worker, WorkerConfig
    from host_tools.backend.mqtt_source import QueueSource
    from host_tools.backend.pg_sink import PgDocs
    from tests.test_subject import check_export

    sink = PgSink(tier.dsn)
    w = Worker(QueueSource(), sink, PgDocs(sink), WorkerConfig(e2e_ack=True))
    try:
        for dev in ("subj-pg-1", "subj-pg-2"):
            grant = {"device": dev, "version": 1, "seq": 0, "grants": {"essential": True}}
            w.process([Delivery(f"edge/{dev}/consent/receipt", json.dumps(grant).encode())])
            w.process([Delivery(f"edge/{dev}/t/essential", batch(dev, "essential", 1, 25))])
            w.process([Delivery(f"edge/{dev}/status", b'{"state": "online"}')])
    finally:
        sink.close()
    out = tmp_path / "subj.json"
    r = _edgectl("subject", "export", "subj-pg-1", "--pg", tier.dsn, "--out", str(out))
    assert r.returncode == 0, r.stderr
    check_export(r.stdout, out, "subj-pg-1")

    r = _edgectl("subject", "erase", "subj-pg-1", "--pg", tier.dsn)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"] == {
        "readings": 25, "seq_conflicts": 0, "status_history": 1, "documents": 2,
    }  # fmt: skip
    with psycopg.connect(tier.dsn) as db:
        held = db.execute(
            "SELECT device, count(*) FROM readings WHERE device LIKE 'subj-pg-%' GROUP BY 1"
        ).fetchall()
        events = db.execute(
            "SELECT event FROM consent_ledger WHERE device='subj-pg-1' ORDER BY id"
        ).fetchall()
        docs = db.execute(
            "SELECT (SELECT count(*) FROM devices WHERE device='subj-pg-1'), "
            "(SELECT count(*) FROM receipts WHERE device='subj-pg-1')"
        ).fetchone()
    assert held == [("subj-pg-2", 25)]
    assert events == [("grant",), ("export",), ("erase",)]
    assert docs == (0, 0)
    r = _edgectl("subject", "erase", "x", "--pg", tier.dsn, "--db", str(tmp_path / "a.sqlite"))
    assert r.returncode == 2 and "give one database" in r.stderr, r.stderr


def test_tier_refuses_clients_without_its_credentials(tier):
    """Nothing logs in without the passwords `cluster up` wrote (0600 files): a NATS client
    with no or a wrong password, without TLS or trusting another CA, a device's login on the
    NATS port, a worker's login or none
    on an MQTT listener, and PostgreSQL as `edge` or `postgres` with no password."""
    import asyncio
    import ssl
    import stat

    import nats
    import paho.mqtt.client as mqtt

    from host_tools.backend.cluster_creds import Creds, tls_context

    creds = Creds(tier.nats.creds or "")
    files = [creds.nats_file(r) for r in ("worker", "device", "route")]
    files += [creds.server_cert()[1]]
    files += [creds.pgpass(), creds.pgpass(admin=True)]
    files += [os.path.join(tier.nats.workdir, f"{n.name}.conf") for n in tier.nats.nodes]
    assert {f: stat.S_IMODE(os.stat(f).st_mode) for f in files} == {f: 0o600 for f in files}

    async def nats_login(**auth) -> str:
        try:
            nc = await nats.connect(
                servers=tier.nats.urls[:1], connect_timeout=2, max_reconnect_attempts=0,
                allow_reconnect=False, **auth,
            )  # fmt: skip
        except Exception as e:
            return f"refused: {e}"
        await nc.close()
        return "ok"

    worker, wpw = creds.nats("worker")
    device, dpw = creds.nats("device")
    tls = tls_context(creds.ca_file)
    other_ca = ssl.create_default_context()  # the system's CAs, not the cluster's
    got = {
        "none": asyncio.run(nats_login(tls=tls)),
        "wrong": asyncio.run(nats_login(user=worker, password=wpw + "x", tls=tls)),
        "device": asyncio.run(nats_login(user=device, password=dpw, tls=tls)),
        "no_tls": asyncio.run(nats_login(user=worker, password=wpw)),
        "other_ca": asyncio.run(nats_login(user=worker, password=wpw, tls=other_ca)),
        "worker": asyncio.run(nats_login(user=worker, password=wpw, tls=tls)),
    }
    assert got["worker"] == "ok", got
    assert all("uthorization" in got[k] for k in ("none", "wrong", "device")), got
    assert got["no_tls"].startswith("refused") and "CERTIFICATE_VERIFY" in got["other_ca"], got

    def mqtt_login(auth: tuple[str, str] | None) -> str:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"auth-{os.getpid()}")
        if auth:
            c.username_pw_set(*auth)
        host, port = tier.nats.mqtt[0]
        c.connect(host, port, keepalive=5)
        codes: list[str] = []
        c.on_connect = lambda cl, ud, flags, rc, props: codes.append(str(rc))
        deadline = time.monotonic() + 10
        while not codes and time.monotonic() < deadline:
            c.loop(0.1)
        c.disconnect()
        return codes[0] if codes else "no CONNACK"

    # CONNACK 4 / 5: bad user name or password / not authorized (MQTT 3.1.1 3.2.2.3)
    refused = ("Not authorized", "Bad user name or password")
    assert mqtt_login(None) in refused
    assert mqtt_login((worker, wpw)) in refused
    assert mqtt_login((device, dpw + "x")) in refused
    assert mqtt_login((device, dpw)) == "Success"

    assert tier.pg is not None
    for user in ("edge", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                f"postgresql://{user}@127.0.0.1:{tier.pg.port}/edge", connect_timeout=5
            )
    psql = shutil.which("psql")
    if psql:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        r = subprocess.run(
            [psql, "-w", "-h", "127.0.0.1", "-p", str(tier.pg.port), "-U", "edge", "-d", "edge",
             "-c", "SELECT 1"], capture_output=True, text=True, timeout=30, env=env,
        )  # fmt: skip
        assert r.returncode != 0 and "password" in r.stderr, r.stderr
    with psycopg.connect(tier.dsn) as db:  # the DSN `cluster up` prints: password from its file
        assert db.execute("SELECT current_user").fetchone() == ("edge",)
