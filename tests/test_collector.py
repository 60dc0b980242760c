"""The durable collector (docs/BACKEND.md): `edgectl collect` as a subprocess against mosquitto
and the real agent; restarts, SIGTERM, SIGKILL, two collectors on one database, broken files.
Every test ends by counting rows in the SQLite file: 0 lost, 0 stored twice."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from host_tools.agent.run import AgentProcess, agent_config
from tests.collector_rig import CollectProcess, batch, db_rows, publisher


def _agent(agents, port: int, device: str, count: int, rate: int, **mqtt) -> AgentProcess:
    cfg = agent_config(
        "unix-sim",
        device_id=device,
        mqtt={"host": "127.0.0.1", "port": port, **mqtt},
        # one essential channel: every reading is stored and must arrive
        channels=[{"id": 1, "name": "cabinet_temp_cC", "category": "essential"}],
        categories={"essential": {"quota": 1572864}},
        batch={"max_readings": 100, "latency_ms": 50},
        sim={"rate_hz": rate, "count": count},
    )
    return agents(cfg)


def _held(db: str, device: str) -> tuple[int, int, int, int]:
    """(rows, distinct seqs, lowest seq, highest seq) stored for a device."""
    return db_rows(
        db,
        "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings WHERE device=?",
        (device,),
    )[0]


def _run_with_chaos(agents, broker, tmp_path, device: str, chaos, count=20_000, rate=2000, **mqtt):
    """Collector(s) and an agent streaming `count` readings; chaos(cols, db, agent, info) runs
    beside them. Returns when every reading is stored or 60 s after the agent ended."""
    db = str(tmp_path / "c.sqlite")
    cols = [CollectProcess(broker.port, db).ready()]
    a = _agent(agents, broker.port, device, count, rate, **mqtt)
    info: dict = {}
    t = threading.Thread(target=chaos, args=(cols, db, a, info), daemon=True)
    t.start()
    try:
        assert a.wait(180) == 0, a.output[-20:]
        t.join(60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (_held(db, device)[0] or 0) < count:
            time.sleep(0.2)
    finally:
        a.stop()
        for c in cols:
            c.term()
    return db, a.final or {}, info, cols


def test_sigkill_mid_stream_in_puback_mode_loses_nothing(agents, broker, tmp_path):
    """The device's default mode: it deletes a batch once the broker PUBACKs it. The collector
    is SIGKILLed twice mid-stream; its persistent session makes the broker keep what arrives
    meanwhile and re-send what it had not acknowledged."""

    def chaos(cols, db, agent, info):
        for pause in (2.5, 2.0):
            time.sleep(pause)
            cols[-1].kill()
            info.setdefault("killed_at_rows", []).append(_held(db, "ck-1")[0])
            time.sleep(1.5)
            cols.append(CollectProcess(broker.port, db).ready())

    db, final, info, cols = _run_with_chaos(agents, broker, tmp_path, "ck-1", chaos)
    rows, distinct, lo, hi = _held(db, "ck-1")
    print(f"SIGKILL x2 at rows {info['killed_at_rows']}: stored {rows}, seqs {lo}..{hi}")
    assert final["appended"] == 20_000 and final["dropped"] == {}
    assert 0 < info["killed_at_rows"][0] < 20_000  # killed mid-stream, not after
    assert rows == distinct == 20_000 and (lo, hi) == (1, 20_000)  # 0 lost, 0 twice


def test_sigterm_and_restart_lose_nothing(agents, broker, tmp_path):
    def chaos(cols, db, agent, info):
        time.sleep(2.5)
        info["rc"] = cols[-1].term()
        info["final"] = cols[-1].final()
        time.sleep(1.0)
        cols.append(CollectProcess(broker.port, db).ready())

    db, final, info, cols = _run_with_chaos(agents, broker, tmp_path, "ck-2", chaos, count=12_000)
    assert info["rc"] == 0 and info["final"]["unique"] > 0
    rows, distinct, lo, hi = _held(db, "ck-2")
    assert rows == distinct == 12_000 and (lo, hi) == (1, 12_000)


def test_two_collectors_on_one_database(agents, broker, tmp_path):
    """A second collector (its own client id) on the same file while the first runs: both
    receive everything; the key stores each reading once."""

    def chaos(cols, db, agent, info):
        time.sleep(1.0)
        cols.append(CollectProcess(broker.port, db, "--client-id", "second").ready())

    db, final, info, cols = _run_with_chaos(agents, broker, tmp_path, "ck-3", chaos, count=8_000)
    rows, distinct, lo, hi = _held(db, "ck-3")
    assert rows == distinct == 8_000 and (lo, hi) == (1, 8_000)
    second = cols[1].final()
    assert second["unique"] + second["duplicates"] > 0  # it did store or see some


def test_one_client_id_twice_on_one_database_is_refused(broker, tmp_path):
    """Two collectors with one client id would take the session from each other in turns
    (MQTT 3.1.1 section 3.1.4): the second is refused, and may start once the first stopped."""
    db = str(tmp_path / "l.sqlite")
    first = CollectProcess(broker.port, db, "--client-id", "same").ready()
    try:
        args = first.args + ["--seconds", "1"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r
        assert "another collector with client id same is running on" in r.stderr
    finally:
        assert first.term() == 0
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_restart_on_the_same_database_stores_redeliveries_once(broker, tmp_path):
    """Before: a restarted collector kept its dedupe state in RAM and stored re-sent readings
    again (17 duplicate rows, `duplicates: 0`)."""
    db = str(tmp_path / "r.sqlite")
    m = publisher(broker.port, "ck-restart-pub")
    try:
        for run in range(2):
            col = CollectProcess(broker.port, db).ready()
            for k in range(5):
                m.publish("edge/ck-r/t/essential", batch("ck-r", "essential", 1 + 100 * k, 100),
                          qos=1).wait_for_publish(5)  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if _held(db, "ck-r")[0] == 500 and (run == 0 or col.lines[-1:] != []):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            assert col.term() == 0
            s = col.final()
            want = (500, 0) if run == 0 else (0, 500)
            assert (s["unique"], s["duplicates"]) == want, (s, col.lines, col.err)
    finally:
        m.loop_stop()
    assert _held(db, "ck-r") == (500, 500, 1, 500)


@pytest.mark.parametrize(
    "content,suffix,msg",
    [
        (b"this is not a database\n" * 100, ".sqlite", "not a usable collector database"),
        (b"{broken", ".docs.json", "is not JSON"),
    ],
    ids=["text-db", "broken-docs"],
)
def test_a_broken_file_is_a_clear_error(broker, tmp_path, content, suffix, msg):
    """Before: the writer thread died, and the command printed `done, 20 unique readings` and
    exited 0 with nothing stored."""
    db = tmp_path / "b.sqlite"
    (tmp_path / ("b" + suffix)).write_bytes(content)
    r = subprocess.run(
        [sys.executable, "-m", "host_tools", "collect", "--port", str(broker.port),
         "--db", str(db), "--seconds", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r
    assert r.stderr.startswith("edgectl: ") and msg in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_database_failure_stops_the_collector_and_acknowledges_nothing(broker, tmp_path):
    """A write that fails (here the table vanished) ends `edgectl collect` with exit 2; what it
    had not committed stays unacknowledged at the broker and is stored after a restart."""
    db = str(tmp_path / "f.sqlite")
    col = CollectProcess(broker.port, db).ready()
    m = publisher(broker.port, "ck-fail-pub")
    try:
        m.publish("edge/ck-f/t/essential", batch("ck-f", "essential", 1, 50), qos=1)
        deadline = time.monotonic() + 10
        while _held(db, "ck-f")[0] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        x = sqlite3.connect(db, timeout=30)
        x.execute("DROP TABLE readings")
        x.commit()
        x.close()
        m.publish("edge/ck-f/t/essential", batch("ck-f", "essential", 51, 50), qos=1)
        assert col.proc.wait(20) == 2
        time.sleep(0.2)
        assert any("database write failed: no such table: readings" in e for e in col.err)
        col = CollectProcess(broker.port, db).ready()  # recreates the table
        deadline = time.monotonic() + 10
        while _held(db, "ck-f")[0] < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert col.term() == 0, col.err
    finally:
        m.loop_stop()
    # the first 50 went with the dropped table; the 50 that failed were redelivered
    assert _held(db, "ck-f") == (50, 50, 51, 100)


def test_bench_collector_runs_both_paths():
    """`edgectl bench collector --json` on a small workload: every path stores every reading
    (the figures themselves are the benchmark's, not this test's)."""
    import json
    import os

    env = {**os.environ, "BENCH_COLLECTOR_READINGS": "20000"}
    r = subprocess.run(
        [sys.executable, "-m", "host_tools", "bench", "collector", "--json"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["readings"] == f["sqlite_stored"] == f["tinydb_stored"] == f["mqtt_sqlite_stored"]
    assert f["sqlite_readings_per_s"] > 0 and f["sqlite_vs_tinydb"] > 0
    # PostgreSQL with 1, 2 and 4 worker processes: every reading in the table each time
    assert f["pg_complete"] is True, f
    assert all(f[f"pg_stored_{n}w"] == f["readings"] for n in (1, 2, 4)), f
    assert all(f[f"pg_readings_per_s_{n}w"] > 0 for n in (1, 2, 4)), f


def test_only_stored_batches_are_acknowledged_to_the_device():
    """The end-to-end ack says "stored": a batch refused for consent, identity or format is
    not acked, so a device in end-to-end mode keeps it (and a late receipt loses nothing)."""
    import json

    from host_tools.backend.collect import Collector
    from host_tools.backend.e2e import sign_receipt, verify_ack
    from host_tools.backend.mqtt_source import QueueSource

    src = QueueSource()
    key = bytes(range(32))
    col = Collector(source=src, e2e_ack=True, device_keys={"ak-1": key})
    try:
        col.feed("edge/ak-1/t/usage", batch("ak-1", "usage", 1, 5))  # no receipt: refused
        col.feed("edge/ak-1/t/essential", batch("other", "essential", 6, 5))  # identity
        col.feed("edge/ak-1/t/essential", b"EB\x01junk")  # format
        assert src.sent == []
        col.feed("edge/ak-1/t/essential", batch("ak-1", "essential", 11, 5))
        r = {"device": "ak-1", "version": 1, "seq": 16, "grants": {"usage": True}}
        col.feed("edge/ak-1/consent/receipt", sign_receipt("ak-1", json.dumps(r).encode(), key))
        col.feed("edge/ak-1/t/usage", batch("ak-1", "usage", 1, 5))  # the device's re-send
    finally:
        col.close()
    acks = [verify_ack(d, p, key) for d, suffix, p in src.sent if suffix == "ack"]
    assert acks == [[(11, 15)], [(1, 5)]]


def test_an_unforeseen_error_costs_one_message_and_is_logged_once():
    """An exception while handling one message (here a sink that fails for one device) is
    counted as `internal` and logged once; the messages around it are stored."""
    from host_tools.backend.collect import Collector
    from host_tools.backend.mqtt_source import QueueSource
    from host_tools.backend.sqlite_sink import SqliteSink

    class Flaky(SqliteSink):
        def insert_readings(self, rows):
            if rows[0][0] == "boom":
                raise RuntimeError("unforeseen")
            return super().insert_readings(rows)

    logged: list[str] = []
    col = Collector(source=QueueSource(), log=logged.append)
    col.sink.close()
    col.sink = col.worker.sink = Flaky(None)
    try:
        col.feed("edge/ok-1/t/essential", batch("ok-1", "essential", 1, 5))
        for first in (1, 6):
            col.feed("edge/boom/t/essential", batch("boom", "essential", first, 5))
        col.feed("edge/ok-1/t/essential", batch("ok-1", "essential", 6, 5))
        s = col.stats()
    finally:
        col.close()
    assert s["unique"] == 10 and s["refused_by_reason"] == {"internal": 2}, s
    assert len(logged) == 1 and "RuntimeError: unforeseen" in logged[0]
