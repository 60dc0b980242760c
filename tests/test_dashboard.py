"""`edgectl dashboard` without a browser: the query layer over a database the real collector
code wrote, the JSON API and the event stream over HTTP, the collector's counters, and every bad
argument as one line `edgectl: ...` with exit 2 (docs/DASHBOARD.md). The page itself is tested
in Chromium by tests/test_dashboard_browser.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from host_tools import cli
from host_tools.view.server import Server
from host_tools.view.follow import SeqWindow, unseen
from host_tools.view.query import SqliteView
from tests.dashboard_rig import batch, collector, fill

EDGECTL = [sys.executable, "-m", "host_tools"]


@pytest.fixture()
def db(tmp_path):
    path = str(tmp_path / "c.sqlite")
    info = fill(path)
    return path, info


def _get(url: str, host: str | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_view_reads_what_the_collector_stored(db):
    path, info = db
    v = SqliteView(path)
    try:
        fleet = v.fleet()
        assert [d["device"] for d in fleet] == ["fridge-7"]
        f = fleet[0]
        assert f["state"] == "online" and f["store_depth"] == 0 and f["drops"] == 5
        assert (f["lost"], f["withheld"]) == (1, 4)  # quota 1; consent 4
        assert f["last_seq"] == info["last_seq"] and f["consent_version"] == 2
        # the revocation erased usage (channel 2); essential and diagnostics are all there
        rows = v.readings_tail("fridge-7", 1000)
        assert {r[4] for r in rows} == {1, 3}
        assert len(rows) == 2 * info["n"]
        ch = v.channels("fridge-7")
        assert ch.describe(1) == {"channel": 1, "name": "cabinet_temp", "unit": "°C",
                                  "decimals": 2, "category": "essential"}  # fmt: skip
        assert ch.value(1, 2150) == 21.5 and ch.value(3, 1200) == 120.0
        ledger = v.ledger("fridge-7")
        deny = [e for e in ledger if e["event"] == "deny" and e["category"] == "usage"]
        assert deny == [dict(deny[0], version=2, readings=info["n"], action="erased")]
        hist = v.status_history("fridge-7", 10)
        # at most one history row per device per second (docs/BACKEND.md 3): the first status
        assert [h["status"]["store_depth"] for h in hist] == [10]
        # the collector's counters, saved in `meta` as collector:CLIENT_ID
        (c,) = v.collectors()
        assert c["client_id"] == "test-collector"
        assert c["stats"]["unique"] == 3 * info["n"] and c["stats"]["batches"] == 3
    finally:
        v.close()


def test_view_is_read_only(db):
    path, _ = db
    v = SqliteView(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            v.db.execute("DELETE FROM readings")
    finally:
        v.close()


def test_iter_readings_pages_through_every_device_in_key_order(tmp_path):
    path = str(tmp_path / "many.sqlite")
    col = collector(path)
    want = []
    for dev in ("a-1", "b-2", "c-3"):
        col.feed(f"edge/{dev}/meta", json.dumps({"format": 1, "form": "short",
                 "channels": [[1, "V", 1]]}).encode())  # fmt: skip
        rows = [(s, 1_700_000_000_000 + s, 1, s) for s in range(1, 251)]
        for i in range(0, 250, 50):
            col.feed(f"edge/{dev}/t/essential", batch(dev, "essential", rows[i : i + 50]))
        want += [(dev, s) for s in range(1, 251)]
    col.stop()
    v = SqliteView(path)
    try:
        got = [(r[0], r[1]) for r in v.iter_readings(None, batch=7)]
        assert got == want
        assert [r[1] for r in v.iter_readings("b-2", batch=64)] == list(range(1, 251))
        assert v.devices() == ["a-1", "b-2", "c-3"]
        assert v.channels("a-1").describe(1)["unit"] == "V"
    finally:
        v.close()


def test_boot_relative_readings_use_the_status_clock(tmp_path):
    path = str(tmp_path / "boot.sqlite")
    col = collector(path)
    clock = {"synced": True, "boot": 3, "sync_ticks": 10_000, "sync_wall_ms": 1_700_000_000_000}
    col.feed("edge/d/status", json.dumps({"state": "online", "clock": clock}).encode())
    col.feed("edge/d/t/essential", batch("d", "essential", [(1, 12_000, 1, 5)], boot=3))
    col.feed("edge/d/t/essential", batch("d", "essential", [(2, 12_000, 1, 6)], boot=2))
    col.stop()
    v = SqliteView(path)
    try:
        ch = v.channels("d")
        rows = v.readings_tail("d", 10)
        assert [ch.wall_ms(r[1], r[2]) for r in rows] == [1_700_000_002_000, None]
    finally:
        v.close()


def test_api_and_event_stream(db):
    path, info = db
    srv = Server(SqliteView(path), "127.0.0.1", 0).start()
    try:
        code, body, headers = _get(srv.url + "api/fleet")
        assert code == 200 and json.loads(body)["devices"][0]["device"] == "fridge-7"
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        doc = json.loads(_get(srv.url + "api/device/fridge-7")[1])
        assert [c["name"] for c in doc["channels"]] == ["cabinet_temp", "door_opens", "power"]
        assert doc["receipt"]["version"] == 2 and doc["erasures"] >= 1
        # pages of readings: the newest `limit`, then everything after a seq
        r = json.loads(_get(srv.url + "api/device/fridge-7/readings?limit=5")[1])
        assert r["last_seq"] == info["last_seq"] and r["more"] is True
        assert sum(len(s["y"]) for s in r["channels"].values()) == 5
        r = json.loads(_get(srv.url + f"api/device/fridge-7/readings?after={info['n']}")[1])
        assert sorted(r["channels"]) == ["3"] and len(r["channels"]["3"]["y"]) == info["n"]
        assert r["channels"]["3"]["y"][:2] == [120.0, 120.1]
        # plotly.js comes from the installed package
        code, body, _ = _get(srv.url + "static/plotly.min.js")
        assert code == 200 and len(body) > 1_000_000 and b"plotly" in body[:2000].lower()
        # hostile or wrong requests
        assert _get(srv.url + "api/device/..%2F..%2Fetc")[0] == 404
        assert _get(srv.url + "api/device/nobody")[0] == 404
        assert _get(srv.url + "api/device/fridge-7/readings?after=x")[0] == 400
        assert _get(srv.url + "static/../dashboard.py")[0] == 404
        # read-only: any other method is refused before a handler runs
        for method in ("POST", "PUT", "DELETE"):
            req = urllib.request.Request(srv.url + "api/fleet", data=b"{}", method=method)
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 405
        # DNS rebinding: a page on another name that resolves to 127.0.0.1 gets nothing
        assert _get(srv.url + "api/fleet", host=f"evil.example:{srv.port}")[0] == 421
        assert _get(srv.url + "api/fleet", host=f"localhost:{srv.port}")[0] == 200
        # the event stream: a snapshot at once, then what a collector commits, while open
        with _Events(srv, "fridge-7") as ev:
            first = ev.until(lambda got: {"fleet", "device", "readings"} <= set(got))
            assert first["readings"][0]["reset"] is True
            col = collector(path, client_id="second")
            try:
                seq = info["last_seq"] + 1
                rows = [(seq, info["t0"] + 10**6, 1, 2200)]
                col.feed("edge/fridge-7/t/essential", batch("fridge-7", "essential", rows))
            finally:
                col.stop()
            later = ev.until(lambda got: "readings" in got)
            assert later["readings"][0]["reset"] is False
            assert later["readings"][0]["channels"] == {
                "1": {"seq": [seq], "x": [rows[0][1]], "y": [22.0]}
            }
            # the document file breaks under the open page: one `problem` event, not a hang
            with open(path[: -len(".sqlite")] + ".docs.json", "w") as f:
                f.write("{not json")
            bad = ev.until(lambda got: "problem" in got)
            assert "not JSON" in bad["problem"][0]["error"]
    finally:
        srv.stop()


class _Events:
    """The SSE stream of a device page, read over a plain socket (HTTP/1.0: not chunked)."""

    def __init__(self, srv: Server, device: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
        self.sock.sendall(
            f"GET /api/events?device={device} HTTP/1.0\r\n"
            f"Host: 127.0.0.1:{srv.port}\r\n\r\n".encode()
        )
        self.buf = b""

    def __enter__(self) -> _Events:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def until(self, done, timeout: float = 20) -> dict[str, list]:
        """Events from now on, by name, until done(events) holds."""
        got: dict[str, list] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\n\n" in self.buf:
                block, self.buf = self.buf.split(b"\n\n", 1)
                fields = dict(
                    ln.split(": ", 1) for ln in block.decode().splitlines() if ": " in ln
                )
                if "event" in fields:
                    got.setdefault(fields["event"], []).append(json.loads(fields["data"]))
                if done(got):
                    return got
            self.buf += self.sock.recv(65536)
        raise AssertionError(f"the stream did not send what was awaited; got {sorted(got)}")


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        EDGECTL + list(args), capture_output=True, text=True, timeout=timeout, cwd=os.getcwd()
    )


def _run_here(*args: str) -> subprocess.CompletedProcess:
    """`edgectl ARGS` in this process, for arguments refused before anything is served."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgectl: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_bad_arguments_are_one_line_errors(tmp_path, db):
    path, _ = db
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(str(other)).execute("CREATE TABLE x (a)").connection.commit()
    _one_line_error(_run_here("dashboard", "--db", str(tmp_path / "none.sqlite")), "no such")
    _one_line_error(_run_here("dashboard", "--db", str(junk)), "not a usable collector database")
    _one_line_error(_run_here("dashboard", "--db", str(other)), "not a collector database")
    _one_line_error(_run_here("dashboard", "--db", str(tmp_path)), "directory")
    _one_line_error(_run_here("dashboard", "--db", path, "--port", "70000"), "--port")
    _one_line_error(_run_here("dashboard", "--db", path, "--host", "somewhere"), "--host")
    _one_line_error(_run_here("dashboard", "--db", path, "--host", "0.0.0.0"), "--allow-remote")
    docs = tmp_path / "c.docs.json"
    good = docs.read_text()
    docs.write_text("{not json")
    _one_line_error(_run("dashboard", "--db", path, "--port", "0"), "not JSON")
    docs.write_text(good)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        _one_line_error(_run("dashboard", "--db", path, "--port", str(port)), "in use", str(port))
        demo_db = str(tmp_path / "demo.sqlite")
        busy_demo = _run_here("demo", "--seconds", "3", "--db", demo_db, "--dashboard", str(port))
        _one_line_error(busy_demo, "in use", "--dashboard")
    _one_line_error(_run_here("demo", "--db", path), "exists")
    _one_line_error(_run_here("demo", "--dashboard", "99999"), "--dashboard")


def test_the_command_serves_until_sigterm(db):
    path, _ = db
    p = subprocess.Popen(
        EDGECTL + ["dashboard", "--db", path, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), line
        url = line.split()[1]
        assert _get(url)[0] == 200 and b"dashboard.js" in _get(url)[1]
        p.terminate()
        assert p.wait(15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_seq_window_sends_late_rows_once_and_lets_old_holes_go():
    stored: dict[int, tuple] = {}

    def put(*seqs: int) -> None:
        for s in seqs:
            stored[s] = (s, s * 10, None, "c", 1, s, 0)

    def read_after(after: int, limit: int) -> list[tuple]:
        return [stored[s] for s in sorted(stored) if s > after][:limit]

    now = [0.0]
    w = SeqWindow(hold_seqs=100, hold_s=60, clock=lambda: now[0])
    put(1, 2, 3)
    w.start(read_after(-1, 10))
    assert (w.floor, w.top) == (3, 3)
    put(7, 8)  # 4-6 are another category's, still on their way
    assert [r[0] for r in unseen(w, read_after, 10)[0]] == [7, 8]
    assert (w.floor, w.top) == (3, 8)
    put(5, 6)
    assert [r[0] for r in unseen(w, read_after, 10)[0]] == [5, 6]
    assert unseen(w, read_after, 10) == ([], False)  # nothing twice
    assert w.floor == 3  # 4 may still come
    # paging: more rows than one step, each sent once, in order
    put(*range(9, 40))
    got = []
    while True:
        rows, more = unseen(w, read_after, 10)
        got += [r[0] for r in rows]
        if not more:
            break
    assert got == list(range(9, 40))
    # 4 never comes (purged on the device): after hold_s the floor moves past it
    now[0] = 61.0
    assert unseen(w, read_after, 10) == ([], False)
    now[0] = 62.0
    unseen(w, read_after, 10)
    assert w.floor == 39 and w.sent == set()
    # a page opened before the device sent anything: the floor follows from seq 1 on
    fresh = SeqWindow(clock=lambda: now[0])
    fresh.start([])
    stored.clear()
    put(1, 2, 3)
    assert [r[0] for r in unseen(fresh, read_after, 10)[0]] == [1, 2, 3]
    assert (fresh.floor, fresh.sent) == (3, set())
    put(*range(4, 41))
    # a hole far below the top stops counting after hold_seqs
    put(*range(41, 300))
    unseen(w, read_after, 1000)
    assert w.floor >= 299 - 100
