"""`edgectl bench collector`: sustained readings/s through the collector's one worker code path
(decode, identity and consent checks, SQLite write, commit, device acks, source acks) into a
durable SQLite file, against the TinyDB write path it replaced, in the same run
(docs/BACKEND.md 6).

- `sqlite_readings_per_s`: pre-built batches (100 readings each, 20 devices) handed to the
  worker by an in-process source as fast as it takes them; the clock stops when the last
  source ack is given, i.e. everything is committed with `synchronous=FULL`.
- `tinydb_readings_per_s`: the same batches decoded and de-duplicated in RAM and written with
  TinyDB `insert_multiple` + `CachingMiddleware` flush per group of the same size (the old
  collector's writer with its flush at the same durability point).
- `mqtt_sqlite_readings_per_s`: the same worker behind the real MQTT source: a paho publisher
  sends the batches (QoS 1) through mosquitto; the clock stops when every reading is stored.
- `pg_readings_per_s_1w/2w/4w`: the same batches through the same worker into PostgreSQL with
  1, 2 and 4 worker processes (host_tools/bench/collector_pg.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.backend.docstore import DocStore
from host_tools.backend.ingest import Delivery, Worker, WorkerConfig
from host_tools.backend.mqtt_source import QueueSource
from host_tools.backend.sqlite_sink import SqliteSink, db_file_size
from host_tools.bench import collector_pg

DEVICES = 20
PER_BATCH = 100


def _count(payload: bytes) -> int:
    return int.from_bytes(payload[11:13], "little")  # FORMAT.md 3.1: count u16 at 11


def _batches(n_readings: int) -> list[tuple[str, bytes]]:
    from edge import codec

    out = []
    per_dev = n_readings // DEVICES
    for d in range(DEVICES):
        dev = f"bench-{d:04d}"
        for first in range(1, per_dev + 1, PER_BATCH):
            w = codec.BatchWriter(dev, 64 + PER_BATCH * codec.ENTRY_LEN)
            w.start("essential", 1, 0)
            for i in range(min(PER_BATCH, per_dev + 1 - first)):
                w.add(first + i, 1_700_000_000_000 + 100 * (first + i), 1, 0, 1, 400 + i)
            out.append((f"edge/{dev}/t/essential", bytes(w.finish())))
    # interleave devices as a fleet would arrive
    out.sort(key=lambda x: (x[1][7:11], x[0]))
    return out


def bench_sqlite(batches: list[tuple[str, bytes]], workdir: str) -> dict:
    db = os.path.join(workdir, "bench.sqlite")
    sink = SqliteSink(db, "FULL")
    docs = DocStore(os.path.join(workdir, "bench.docs.json"))
    source = QueueSource(expect=len(batches))
    worker = Worker(source, sink, docs, WorkerConfig(e2e_ack=True))
    worker.start()
    t0 = time.perf_counter()
    for i, (topic, payload) in enumerate(batches):
        worker.deliver(Delivery(topic, payload, i))
    source.all_acked.wait(600)
    dt = time.perf_counter() - t0
    worker.stop()
    stored = sink.rows("SELECT count(*) FROM readings")[0][0]
    sink.rows("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db_file_size(db)
    sink.close()
    docs.close()
    return {"seconds": dt, "stored": stored, "db_bytes": size, "acks": len(source.sent)}


def bench_tinydb(batches: list[tuple[str, bytes]], workdir: str) -> dict:
    from tinydb import TinyDB
    from tinydb.middlewares import CachingMiddleware
    from tinydb.storages import JSONStorage

    from edge import codec
    from host_tools.backend.ingest import GROUP_READINGS

    path = os.path.join(workdir, "bench.json")
    db = TinyDB(path, storage=CachingMiddleware(JSONStorage))
    table = db.table("readings")
    seen: dict[str, set[int]] = {}
    group = GROUP_READINGS // PER_BATCH  # the worker's group when messages queue up
    t0 = time.perf_counter()
    last = 0.0
    for g in range(0, len(batches), group):
        tg = time.perf_counter()
        rows = []
        for _topic, payload in batches[g : g + group]:
            b = codec.decode_batch(payload)
            s = seen.setdefault(b["device"], set())
            for seq, ts, ch, val in b["readings"]:
                if seq not in s:
                    s.add(seq)
                    rows.append(
                        {"device": b["device"], "seq": seq, "ts": ts,
                         "category": b["category"], "channel": ch, "value": val, "boot": None}
                    )  # fmt: skip
        table.insert_multiple(rows)
        db.storage.flush()  # type: ignore[attr-defined]  # CachingMiddleware: the durability point
        last = len(rows) / (time.perf_counter() - tg)
    dt = time.perf_counter() - t0
    stored = len(table)
    db.close()
    return {"seconds": dt, "stored": stored, "db_bytes": os.path.getsize(path), "last": last}


def bench_mqtt(batches: list[tuple[str, bytes]], workdir: str) -> dict:
    import paho.mqtt.client as mqtt

    want = sum(_count(p) for _, p in batches)
    with broker_mod.start(prefer="mosquitto") as b:
        col = Collector(
            b.host, b.port, db_path=os.path.join(workdir, "mqtt.sqlite"), keep_readings=False
        ).start()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        pub.max_inflight_messages_set(100)
        pub.max_queued_messages_set(0)
        pub.connect(b.host, b.port)
        pub.loop_start()
        try:
            t0 = time.perf_counter()
            for topic, payload in batches:
                pub.publish(topic, payload, qos=1)
            ok = col.wait_for(lambda c: c.counts["unique"] >= want, 600)
            dt = time.perf_counter() - t0
        finally:
            pub.loop_stop()
            pub.disconnect()
            col.stop()
    return {"seconds": dt, "stored": col.counts["unique"], "complete": ok}


def bench_collector(args) -> dict:
    n = int(os.environ.get("BENCH_COLLECTOR_READINGS", "400000"))
    batches = _batches(n)
    readings = sum(_count(p) for _, p in batches)
    work = tempfile.mkdtemp(prefix="edge-bench-collector-")
    try:
        sq = bench_sqlite(batches, work)
        td = bench_tinydb(batches, work)
        mq = bench_mqtt(batches, work)
        pg = collector_pg.bench(batches, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sqlite_rate = readings / sq["seconds"]
    tiny_rate = readings / td["seconds"]
    return {
        "readings": readings,
        "sqlite_readings_per_s": round(sqlite_rate),
        "sqlite_stored": sq["stored"],
        "sqlite_bytes_per_reading": round(sq["db_bytes"] / readings, 1),
        "sqlite_synchronous": "FULL",
        "e2e_acks_sent": sq["acks"],
        "tinydb_readings_per_s": round(tiny_rate),
        "tinydb_last_group_readings_per_s": round(td["last"]),
        "tinydb_stored": td["stored"],
        "tinydb_bytes_per_reading": round(td["db_bytes"] / readings, 1),
        "sqlite_vs_tinydb": round(sqlite_rate / tiny_rate, 2),
        "mqtt_sqlite_readings_per_s": round(mq["stored"] / mq["seconds"]),
        "mqtt_sqlite_stored": mq["stored"],
        "goal_sqlite_readings_per_s": 50_000,
        **pg,
        # the SQLite figure is the baseline of the PostgreSQL ones (same batches, same worker)
        "pg_1w_vs_sqlite": round(pg["pg_readings_per_s_1w"] / sqlite_rate, 2),
    }
