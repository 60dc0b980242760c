"""`edgectl fleet`: a fleet against the cluster tier, with chaos (docs/BACKEND.md 8).

Starts the cluster tier on loopback (`cluster.up`: three NATS nodes, PostgreSQL, workers),
then runs M simulated devices (`simdevice.SimDevices`, many devices per MQTT connection, the
agent's batch format with end-to-end acks and a broker list) and N real agents (the `edge/`
code under unix MicroPython with `mqtt.brokers`, checked reading by reading). Connections start
on the nodes in turn. Chaos, a third of the way in: `node-kill` SIGKILLs node 1 (started again
at two thirds), `worker-kill` SIGKILLs worker 1 (started again at two thirds), `db-kill`
SIGKILLs PostgreSQL and starts it two rounds later. At the end it counts PostgreSQL's rows per
device against what each device sent and reports lost readings, duplicate rows, re-sends, how
the simulated connections' reconnects spread, the real agents' failover times, the stored
readings per second, and the CPU seconds each tier used (the busiest is named).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time

from host_tools.backend import cluster
from host_tools.backend.simdevice import SimDevices, rotated
from host_tools.errors import ToolError

CHAOS = ("node-kill", "worker-kill", "db-kill")


def real_agent_config(device: str, brokers: list[tuple[str, int]], count: int, rate: int) -> dict:
    """A unix-sim agent config for the cluster tier: the broker list, end-to-end acks, one
    essential channel (every reading must arrive), `count` readings at `rate` per second."""
    from host_tools.agent.run import agent_config

    return agent_config(
        "unix-sim",
        device_id=device,
        mqtt={
            "brokers": [{"host": h, "port": p} for h, p in brokers],
            "e2e_ack": True,
            "e2e_timeout_ms": 3000,
        },
        channels=[{"id": 1, "name": "cabinet_temp_cC", "category": "essential"}],
        categories={"essential": {"quota": 1572864}},
        batch={"max_readings": 50, "latency_ms": 50},
        sim={"rate_hz": rate, "count": count},
    )


def _cpu_s(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _tier_cpu(rig: cluster.Rig) -> dict[str, float]:
    pg = rig.pg.pid if rig.pg else 0
    return {
        "nats": sum(_cpu_s(n.pid) for n in rig.nats.nodes),
        "workers": sum(_cpu_s(p) for p in rig.workers if p),
        "postgres": _cpu_s(pg) + sum(_cpu_s(c) for c in _children(pg)),
        "devices": _cpu_s(os.getpid()),
    }


def _spread(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    return {
        "n": len(xs),
        "min_s": round(xs[0], 2),
        "median_s": round(xs[len(xs) // 2], 2),
        "max_s": round(xs[-1], 2),
    }


def run_fleet(
    devices: int,
    real: int = 0,
    per_connection: int = 50,
    batches: int = 20,
    per_batch: int = 50,
    chaos: tuple[str, ...] = (),
    workers: int = 2,
    interval: float = 0.5,
    log=lambda msg: None,
) -> dict:
    from host_tools.agent.run import AgentProcess
    from host_tools.backend.pg_sink import PgSink

    bad = [c for c in chaos if c not in CHAOS]
    if bad:
        raise ToolError(f"unknown chaos {bad[0]!r}; choose from: {', '.join(CHAOS)}")
    if devices < 0 or real < 0 or devices + real == 0:
        raise ToolError("a fleet needs --devices or --real above 0")
    work = tempfile.mkdtemp(prefix="edge-fleet-")
    rig = cluster.up(os.path.join(work, "tier"), workers=workers)
    sims: list[SimDevices] = []
    agents: list[AgentProcess] = []
    try:
        PgSink(rig.dsn).close()  # the tables, before anyone counts rows
        nodes = rig.nats.mqtt

        names = [f"fleet-{i:05d}" for i in range(devices)]
        for g in range(0, devices, per_connection):
            sims.append(
                SimDevices(rotated(nodes, g // per_connection), names[g : g + per_connection],
                           per_batch=per_batch).start()
            )  # fmt: skip
        rate = max(1, int(per_batch / interval))
        for i in range(real):
            cfg = real_agent_config(
                f"fleet-real-{i:03d}", rotated(nodes, i), batches * per_batch, rate
            )
            agents.append(AgentProcess(cfg).start())
        log(f"fleet: {devices} simulated devices on {len(sims)} connections, {real} agents")
        # the chaos is meant for a flowing fleet: every real agent in a session first
        ready = time.monotonic() + 60
        while time.monotonic() < ready and not all(
            (a.stats.get("mqtt") or {}).get("broker") for a in agents
        ):
            time.sleep(0.1)
        events: list[dict] = []
        agent_failover: dict[int, float] = {}
        t0 = time.monotonic()
        cpu0 = _tier_cpu(rig)

        def act(what: str, fn) -> None:
            fn()
            events.append({"at_s": round(time.monotonic() - t0, 2), "event": what})
            log(f"fleet: {what}")

        third = max(1, batches // 3)
        moves: dict[int, list] = {}
        if "node-kill" in chaos:

            def kill_node() -> None:
                rig.nats.kill(0)
                killed = time.monotonic()
                threading.Thread(
                    target=_watch_failover, args=(agents, nodes[0], killed, agent_failover),
                    daemon=True,
                ).start()  # fmt: skip

            moves.setdefault(third, []).append(("node 1 SIGKILL", kill_node))
            moves.setdefault(2 * third, []).append(
                ("node 1 started", lambda: rig.nats.start_node(0))
            )
        if "worker-kill" in chaos:
            moves.setdefault(third, []).append(("worker 1 SIGKILL", lambda: rig.kill_worker(0)))
            moves.setdefault(2 * third, []).append(
                ("worker 1 started", lambda: rig.start_worker(0))
            )
        if "db-kill" in chaos and rig.pg is not None:
            pg = rig.pg
            moves.setdefault(third, []).append(("PostgreSQL SIGKILL", pg.kill))
            moves.setdefault(third + 2, []).append(("PostgreSQL started", pg.restart))
        for r in range(batches):
            for what, fn in moves.get(r, ()):
                act(what, fn)
            for s in sims:
                s.publish(1)
            time.sleep(interval)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(s.pending() for s in sims):
            time.sleep(0.1)
        failed: list[str] = []
        for a in agents:
            try:
                a.wait(max(1.0, deadline - time.monotonic()))
            except ToolError as e:  # counted, and its readings are still checked
                failed.append(f"{a.config['device_id']}: {str(e).splitlines()[0]}")
        want = {d: n for s in sims for d, n in s.sent_readings().items()}
        for a in agents:
            want[a.config["device_id"]] = (a.final or a.stats or {}).get("appended", 0)
        stored = _count(rig.dsn, want, deadline)
        seconds = time.monotonic() - t0
        cpu1 = _tier_cpu(rig)
        cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
        rows = sum(v[0] for v in stored.values())
        distinct = sum(v[1] for v in stored.values())
        lost = sum(max(0, n - stored.get(d, (0, 0))[1]) for d, n in want.items())
        return {
            "devices": devices,
            "real_agents": real,
            "connections": len(sims),
            "nodes": len(nodes),
            "workers": workers,
            "chaos": list(chaos),
            "events": events,
            "readings_sent": sum(want.values()),
            "rows": rows,
            "lost": lost,
            "duplicate_rows": rows - distinct,
            "unacked_batches": sum(s.pending() for s in sims),
            "resent_batches": sum(s.stats["resent"] for s in sims),
            "reconnect_spread": _spread([t for s in sims for t in s.failover_times]),
            "real_agent_failover": _spread(list(agent_failover.values())),
            "real_agents_complete": sum(
                1 for a in agents if (a.final or {}).get("appended") == batches * per_batch
            ),
            "real_agents_failed": failed,
            "seconds": round(seconds, 1),
            "stored_readings_per_s": round(rows / seconds),
            "cpu_s": cpu,
            "busiest": max(cpu, key=lambda k: cpu[k]),
        }
    finally:
        for s in sims:
            s.stop()
        for a in agents:
            a.cleanup()
        rig.stop()
        shutil.rmtree(work, ignore_errors=True)


def _watch_failover(agents, node0: tuple[str, int], killed: float, out: dict) -> None:
    """Seconds from the kill until each agent that was on node 1 reports another broker."""
    was = "%s:%d" % node0
    on = {i for i, a in enumerate(agents) if (a.stats.get("mqtt") or {}).get("broker") == was}
    while on and time.monotonic() < killed + 120:
        for i in list(on):
            b = (agents[i].stats.get("mqtt") or {}).get("broker")
            if b and b != was:
                out[i] = time.monotonic() - killed
                on.discard(i)
        time.sleep(0.05)


def _count(dsn: str, want: dict[str, int], deadline: float) -> dict[str, tuple[int, int]]:
    """device -> (rows, distinct seqs) once every device has what it sent, or at deadline."""
    import psycopg

    while True:
        with psycopg.connect(dsn) as db:
            got = {
                r[0]: (r[1], r[2])
                for r in db.execute(
                    "SELECT device, count(*), count(DISTINCT seq) FROM readings "
                    "WHERE device = ANY(%s) GROUP BY device",
                    (list(want),),
                )
            }
        if all(got.get(d, (0, 0))[1] >= n for d, n in want.items()):
            return got
        if time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def cmd_fleet(args) -> int:
    chaos = tuple(c for c in (args.chaos or "").split(",") if c)
    out = run_fleet(
        args.devices,
        args.real,
        args.per_connection,
        args.batches,
        chaos=chaos,
        workers=args.workers,
        log=(lambda msg: None) if args.json else print,
    )
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:<22} {v}")
    return 0 if out["lost"] == 0 and out["duplicate_rows"] == 0 else 1


def register(sub) -> None:
    p = sub.add_parser(
        "fleet", help="simulated devices and real agents against the cluster tier, with chaos"
    )
    p.add_argument("--devices", type=int, default=200, help="simulated devices (default 200)")
    p.add_argument("--real", type=int, default=0, help="real agents (unix MicroPython)")
    p.add_argument("--per-connection", type=int, default=50, metavar="N",
                   help="simulated devices per MQTT connection (default 50)")  # fmt: skip
    p.add_argument(
        "--batches", type=int, default=20, help="rounds: a batch of 50 per device every 0.5 s"
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--chaos", default="", help="comma-separated: " + ", ".join(CHAOS))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fleet)
