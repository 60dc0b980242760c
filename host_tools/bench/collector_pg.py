"""The PostgreSQL figures of `edgectl bench collector` (docs/BACKEND.md 6 and 7).

`pg_readings_per_s_{1,2,4}w`: the same pre-built batches as the SQLite figure, split by device
over 1, 2 and 4 worker processes, each running the collector's worker (decode, checks, write,
commit, device acks, source acks) into one PostgreSQL database through its own `PgSink`. The
clock runs from the moment every worker is connected and ready until the last source ack of
the slowest one; the table is emptied between runs. PostgreSQL runs with its defaults
(`fsync` and `synchronous_commit` on): a commit is on disk before anything is acknowledged.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

WORKER_COUNTS = (1, 2, 4)


def _child(dsn: str, batches: list[tuple[str, bytes]], ready, go, out) -> None:
    from host_tools.backend.ingest import Delivery, Worker, WorkerConfig
    from host_tools.backend.mqtt_source import QueueSource
    from host_tools.backend.pg_sink import PgDocs, PgSink

    sink = PgSink(dsn)
    source = QueueSource(expect=len(batches))
    worker = Worker(source, sink, PgDocs(sink), WorkerConfig(e2e_ack=True))
    worker.start()
    ready.release()
    go.wait()
    for i, (topic, payload) in enumerate(batches):
        worker.deliver(Delivery(topic, payload, i))
    source.all_acked.wait(600)
    end = time.time()
    worker.stop()
    sink.close()
    out.put((end, worker.counts["unique"], worker.failed))


def run(dsn: str, batches: list[tuple[str, bytes]], workers: int) -> dict:
    """Rows/s into PostgreSQL with `workers` processes (devices split between them)."""
    import psycopg

    from host_tools.backend.pg_sink import PgSink

    PgSink(dsn).close()  # the schema, before the workers race for it
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("TRUNCATE readings")
    parts: list[list[tuple[str, bytes]]] = [[] for _ in range(workers)]
    devices = sorted({t for t, _ in batches})
    home = {t: i % workers for i, t in enumerate(devices)}
    for topic, payload in batches:
        parts[home[topic]].append((topic, payload))
    ctx = mp.get_context("spawn")  # no fork of a process with threads
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(dsn, part, ready, go, out)) for part in parts]
    for p in procs:
        p.start()
    for _ in procs:
        if not ready.acquire(timeout=120):
            for p in procs:
                p.kill()
            raise RuntimeError("a PostgreSQL bench worker did not start")
    t0 = time.time()
    go.set()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(30)
    end = max(r[0] for r in results)
    failed = [r[2] for r in results if r[2]]
    stored = sum(r[1] for r in results)
    with psycopg.connect(dsn) as db:
        rows = (db.execute("SELECT count(*) FROM readings").fetchone() or (0,))[0]
    return {
        "seconds": end - t0,
        "stored": stored,
        "rows": rows,
        "failed": failed[0] if failed else None,
    }


def bench(batches: list[tuple[str, bytes]], workdir: str) -> dict:
    """Start a loopback PostgreSQL in workdir, run 1, 2 and 4 workers, stop it."""
    from host_tools.backend import postgres

    readings = sum(int.from_bytes(p[11:13], "little") for _, p in batches)
    pg = postgres.start(os.path.join(workdir, "pg"))
    try:
        out: dict = {}
        for n in WORKER_COUNTS:
            r = run(pg.dsn, batches, n)
            out[f"pg_readings_per_s_{n}w"] = round(r["rows"] / r["seconds"])
            out[f"pg_stored_{n}w"] = r["rows"]
            if r["failed"]:
                out[f"pg_failed_{n}w"] = r["failed"]
        out["pg_complete"] = all(out[f"pg_stored_{n}w"] == readings for n in WORKER_COUNTS)
        return out
    finally:
        pg.stop()
