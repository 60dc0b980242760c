"""The dashboard, export and plot over the cluster tier's PostgreSQL (`--pg DSN`): the same
messages fed through the collector's worker into a real PostgreSQL (PgSink, the cluster tier's
sink) and into SQLite must read back the same, and the session cannot write
(docs/DASHBOARD.md 2)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import urllib.request

import pytest

from host_tools import cli
from host_tools.backend.ingest import Delivery, Worker, WorkerConfig
from host_tools.errors import ToolError
from host_tools.view.pg_view import PgView
from host_tools.view.query import SqliteView
from host_tools.view.server import Server
from tests.dashboard_rig import _NoSource, fill

postgres = pytest.importorskip("host_tools.backend.postgres")


class _PgFeeder:
    """The collector's worker writing into PostgreSQL, fed in-process."""

    def __init__(self, dsn: str) -> None:
        from host_tools.backend.pg_sink import PgDocs, PgSink

        self.sink = PgSink(dsn)
        self.worker = Worker(_NoSource(), self.sink, PgDocs(self.sink), WorkerConfig())

    def feed(self, topic: str, payload: bytes) -> None:
        self.worker.process([Delivery(topic, payload)])

    def stop(self) -> None:
        self.sink.close()


@pytest.fixture(scope="module")
def pg():
    if not os.path.isdir("/usr/lib/postgresql"):
        if os.environ.get("CI"):
            pytest.fail("postgresql is missing (.ci/run installs it)")
        pytest.skip("postgresql is not installed")
    work = tempfile.mkdtemp(prefix="edge-dash-pg-")
    server = postgres.start(work)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def both(pg, tmp_path_factory):
    """(SqliteView, PgView) over the same messages."""
    db = str(tmp_path_factory.mktemp("pgdash") / "c.sqlite")
    fill(db)
    fill(db, col=_PgFeeder(pg.dsn))
    lite, pgv = SqliteView(db), PgView(pg.dsn)
    yield lite, pgv
    lite.close()
    pgv.close()


def test_postgres_reads_the_same_as_sqlite(both, pg):
    lite, pgv = both
    assert pgv.devices() == lite.devices() == ["fridge-7"]

    def fleet(v):
        return [{k: x for k, x in d.items() if k != "last_seen_ms"} for d in v.fleet()]

    assert fleet(pgv) == fleet(lite)
    assert pgv.fleet()[0]["drops"] == 5 and pgv.fleet()[0]["consent_version"] == 2
    # every column but received_ms (the time each store took the row)
    got = [r[:7] for r in pgv.iter_readings(None, batch=7)]
    assert got == [r[:7] for r in lite.iter_readings(None)] and len(got) == 60
    assert [r[:6] for r in pgv.readings_tail("fridge-7", 10)] == [
        r[:6] for r in lite.readings_tail("fridge-7", 10)
    ]
    assert [r[:6] for r in pgv.readings_after("fridge-7", 25, 10)] == [
        r[:6] for r in lite.readings_after("fridge-7", 25, 10)
    ]
    assert pgv.channels("fridge-7").describe(1) == lite.channels("fridge-7").describe(1)

    def ledger(v):
        return [{k: x for k, x in e.items() if k != "at_ms"} for e in v.ledger("fridge-7")]

    assert ledger(pgv) == ledger(lite)
    d_pg, d_lite = pgv.device("fridge-7"), lite.device("fridge-7")
    assert d_pg["receipt"] == d_lite["receipt"] and d_pg["meta"] == d_lite["meta"]
    assert d_pg["status"]["store_depth"] == d_lite["status"]["store_depth"] == 0
    # the session is read-only
    with pytest.raises(ToolError, match="read-only"):
        pgv._q("DELETE FROM readings WHERE seq > ?", (0,))
    # a commit elsewhere moves the token the live page watches
    before = pgv.change_token()
    feeder = _PgFeeder(pg.dsn)
    feeder.feed("edge/fridge-7/status", json.dumps({"state": "offline"}).encode())
    feeder.stop()
    assert pgv.change_token() != before
    assert pgv.fleet()[0]["state"] == "offline"


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_export_and_dashboard_over_postgres(both, pg, tmp_path):
    lite, _ = both
    code, csv_pg, err = _cli("export", "--pg", pg.dsn, "--channel", "power")
    assert code == 0, err
    code, csv_lite, err = _cli("export", "--db", lite.path, "--channel", "power")
    assert csv_pg == csv_lite and csv_pg.count("\n") == 31
    code, _, err = _cli("plot", "--pg", pg.dsn, "--out", str(tmp_path / "pg.png"))
    assert code == 0 and "2 panels" in err, err
    srv = Server(PgView(pg.dsn), "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(srv.url + "api/device/fridge-7", timeout=10) as r:
            doc = json.loads(r.read())
        assert [c["name"] for c in doc["channels"]] == ["cabinet_temp", "door_opens", "power"]
        assert doc["receipt"]["version"] == 2
    finally:
        srv.stop()
    code, _, err = _cli("export", "--pg", pg.dsn, "--db", lite.path)
    assert code == 2 and err.startswith("edgectl: --db and --pg"), err
    bad = pg.dsn_for("postgres")  # a database without the collector's tables
    code, _, err = _cli("export", "--pg", bad)
    assert code == 2 and "not a collector database" in err, err
