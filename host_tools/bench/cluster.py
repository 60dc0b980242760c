"""`edgectl bench cluster`: readings/s through the cluster tier against the embedded tier in
the same run (docs/BACKEND.md 7).

The same load on both: 100 simulated devices (`simdevice.SimDevices`, 25 per MQTT connection)
each send `BENCH_CLUSTER_BATCHES` (default 40) batches of 50 readings as fast as their QoS 1
windows allow, in end-to-end mode; the clock runs from the first publish until every batch is
acknowledged end to end, that is stored and committed.

- `embedded_readings_per_s`: mosquitto and one `edgectl collect` worker into SQLite (the
  baseline);
- `cluster_readings_per_s_1w`, `_2w`: the devices on the three NATS nodes' MQTT listeners in
  turn, 1 and then 2 worker processes into PostgreSQL;
- `cluster_1w_vs_embedded`, `cluster_2w_vs_embedded`: the ratios; `*_complete`: every reading
  was counted in the database afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from host_tools.backend.simdevice import SimDevices, rotated

DEVICES = 100
PER_CONNECTION = 25
PER_BATCH = 50


def _drive(
    brokers: list[tuple[str, int]], tag: str, batches: int, auth: tuple[str, str] | None = None
) -> tuple[float, list[str]]:
    """Seconds until every batch of every device is acknowledged end to end; device names."""
    sims = []
    for g in range(0, DEVICES, PER_CONNECTION):
        names = [f"{tag}-{i:04d}" for i in range(g, g + PER_CONNECTION)]
        order = rotated(brokers, g // PER_CONNECTION)
        sims.append(
            SimDevices(order, names, per_batch=PER_BATCH, resend_s=30.0, auth=auth).start()
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s.client.is_connected() for s in sims):
            time.sleep(0.05)
        t0 = time.perf_counter()
        for s in sims:
            s.publish(batches)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and any(s.pending() for s in sims):
            time.sleep(0.01)
        return time.perf_counter() - t0, [d for s in sims for d in s.devices]
    finally:
        for s in sims:
            s.stop()


def bench_embedded(batches: int, workdir: str) -> dict:
    from host_tools.backend import broker as broker_mod
    from host_tools.backend.collect import Collector

    with broker_mod.start(prefer="mosquitto") as b:
        db = os.path.join(workdir, "embedded.sqlite")
        col = Collector(b.host, b.port, db_path=db, keep_readings=False, e2e_ack=True).start()
        try:
            seconds, _ = _drive([(b.host, b.port)], "emb", batches)
        finally:
            col.stop()
        stored = col.stats()["unique"]
    return {"seconds": seconds, "stored": stored}


def bench_cluster_tier(batches: int, workdir: str) -> dict:
    import psycopg

    from host_tools.backend import cluster
    from host_tools.backend.pg_sink import PgSink

    rig = cluster.up(os.path.join(workdir, "tier"), workers=0)
    out: dict = {}
    try:
        PgSink(rig.dsn).close()
        for n in (1, 2):
            while len([p for p in rig.workers if p]) < n:
                rig.start_worker(len([p for p in rig.workers if p]))
            seconds, devices = _drive(rig.nats.mqtt, f"cl{n}w", batches, rig.device_auth)
            with psycopg.connect(rig.dsn) as db:
                row = db.execute(
                    "SELECT count(*) FROM readings WHERE device = ANY(%s)", (devices,)
                ).fetchone()
            out[n] = {"seconds": seconds, "stored": row[0] if row else 0}
    finally:
        rig.stop()
    return out


def bench_cluster(args) -> dict:
    batches = int(os.environ.get("BENCH_CLUSTER_BATCHES", "40"))
    readings = DEVICES * batches * PER_BATCH
    work = tempfile.mkdtemp(prefix="edge-bench-cluster-")
    try:
        emb = bench_embedded(batches, work)
        cl = bench_cluster_tier(batches, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emb_rate = readings / emb["seconds"]
    out: dict = {
        "readings": readings,
        "devices": DEVICES,
        "embedded_readings_per_s": round(emb_rate),
        "embedded_complete": emb["stored"] == readings,
    }
    for n, r in cl.items():
        rate = readings / r["seconds"]
        out[f"cluster_readings_per_s_{n}w"] = round(rate)
        out[f"cluster_{n}w_vs_embedded"] = round(rate / emb_rate, 2)
        out[f"cluster_{n}w_complete"] = r["stored"] == readings
    return out
