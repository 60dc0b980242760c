"""Erasure and audit on the backend (docs/BACKEND.md 4): a revocation receipt from the real
agent erases what the collector stored of the category and the ledger counts it;
`edgectl subject export|erase` over a collector database."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from host_tools.backend.collect import Collector, docs_path
from host_tools.backend.e2e import sign_receipt
from tests.collector_rig import batch, db_rows
from tests.consent_rig import KEY, Rig


def test_revocation_receipt_erases_stored_readings_of_the_category(micropython):
    rig = Rig(key=KEY)
    try:
        rig.start_agent()
        rig.wait_receipt(0)
        rig.consent_mqtt(rig.update(1, ["usage", "diagnostics"], [], KEY))
        rig.wait_receipt(1)
        rig.emit("usage", 30)
        rig.emit("diagnostics", 10)
        rig.emit("essential", 5)
        rig.sync()
        held = dict(rig.col.sink.rows("SELECT category, count(*) FROM readings GROUP BY 1"))
        assert held["usage"] == 30 and held["diagnostics"] == 10, held
        rig.consent_mqtt(rig.update(2, [], ["usage"], KEY))
        r = rig.wait_receipt(2)
        rig.sync()
        held = dict(rig.col.sink.rows("SELECT category, count(*) FROM readings GROUP BY 1"))
        ledger = rig.col.sink.rows(
            "SELECT version, event, category, seq, readings, action FROM consent_ledger "
            "WHERE event='deny' AND version=2"
        )
    finally:
        rig.close()
    assert "usage" not in held and held["diagnostics"] == 10, held
    assert ledger == [(2, "deny", "usage", r["seq"], 30, "erased")]


def test_keep_mode_reports_instead_of_deleting():
    col = Collector("127.0.0.1", 1, on_revoke="keep")
    try:
        grant = {"device": "d", "version": 1, "seq": 1, "grants": {"usage": True}}
        col.feed("edge/d/consent/receipt", json.dumps(grant).encode())
        col.feed("edge/d/t/usage", batch("d", "usage", 1, 7))
        deny = {"device": "d", "version": 2, "seq": 8, "grants": {"usage": False}}
        col.feed("edge/d/consent/receipt", json.dumps(deny).encode())
        col.feed("edge/d/consent/receipt", json.dumps(deny).encode())  # redelivered: once
        assert col.sink.rows("SELECT count(*) FROM readings") == [(7,)]
        rows = col.sink.rows("SELECT event, readings, action FROM consent_ledger ORDER BY id")
        assert rows == [("grant", 0, "none"), ("deny", 7, "kept")]
    finally:
        col.close()


def _fill(db: str) -> None:
    """A collector database with two devices' readings, statuses and consent events."""
    col = Collector(db_path=db, source=_NullSource())
    try:
        for dev in ("subj-1", "subj-2"):
            grant = {"device": dev, "version": 1, "seq": 1, "grants": {"usage": True}}
            col.feed(f"edge/{dev}/consent/receipt", json.dumps(grant).encode())
            col.feed(f"edge/{dev}/t/usage", batch(dev, "usage", 1, 20))
            col.feed(f"edge/{dev}/t/usage", batch(dev, "usage", 21, 5))
            col.feed(f"edge/{dev}/status", json.dumps({"state": "online", "device": dev}).encode())
    finally:
        col.close()


class _NullSource:
    def start(self, deliver) -> None:
        pass

    def ack(self, token) -> None:
        pass

    def send(self, device, suffix, payload) -> None:
        pass

    def stop(self) -> None:
        pass


def _edgectl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "host_tools", *args], capture_output=True, text=True, timeout=60
    )


def check_export(stdout: str, out, device: str) -> None:
    """The receipt and file of an export of `device` (25 readings, 1 status, a grant)."""
    receipt = json.loads(stdout)
    doc = json.loads(out.read_text())
    assert receipt["counts"] == {
        "readings": 25, "seq_conflicts": 0, "status_history": 1, "consent_ledger": 1,
    }  # fmt: skip
    assert [x["seq"] for x in doc["readings"]] == list(range(1, 26))
    assert doc["registry"]["status"]["state"] == "online" and doc["receipt"]["version"] == 1
    assert {x["device"] for x in doc["readings"]} == {device}  # nothing of another device
    assert hashlib.sha256(out.read_bytes()).hexdigest() == receipt["sha256"]


def test_subject_export_then_erase(tmp_path):
    db = str(tmp_path / "s.sqlite")
    _fill(db)
    out = tmp_path / "subj-1.json"
    r = _edgectl("subject", "export", "subj-1", "--db", db, "--out", str(out))
    assert r.returncode == 0, r.stderr
    check_export(r.stdout, out, "subj-1")

    r = _edgectl("subject", "erase", "subj-1", "--db", db)
    assert r.returncode == 0, r.stderr
    receipt = json.loads(r.stdout)
    assert receipt["counts"] == {
        "readings": 25, "seq_conflicts": 0, "status_history": 1, "documents": 2,
    }  # fmt: skip
    assert db_rows(db, "SELECT device, count(*) FROM readings GROUP BY 1") == [("subj-2", 25)]
    assert db_rows(db, "SELECT count(*) FROM status_history WHERE device='subj-1'") == [(0,)]
    events = db_rows(db, "SELECT event FROM consent_ledger WHERE device='subj-1' ORDER BY id")
    assert events == [("grant",), ("export",), ("erase",)]  # the audit trail stays
    assert "subj-1" not in (tmp_path / "s.docs.json").read_text()
    assert "subj-2" in open(docs_path(db)).read()
    # --with-ledger: the erasure record is all that stays
    r = _edgectl("subject", "erase", "subj-2", "--db", db, "--with-ledger")
    assert r.returncode == 0, r.stderr
    events = db_rows(db, "SELECT event FROM consent_ledger WHERE device='subj-2'")
    assert events == [("erase",)]


def test_subject_refuses_while_a_collector_runs_and_on_a_missing_db(tmp_path):
    db = str(tmp_path / "s.sqlite")
    _fill(db)
    col = Collector(db_path=db, source=_NullSource(), client_id="running")
    try:
        r = _edgectl("subject", "erase", "subj-1", "--db", db)
        assert r.returncode == 2 and "client id running) is running" in r.stderr, r.stderr
    finally:
        col.close()
    r = _edgectl("subject", "export", "x", "--db", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2 and "no such collector database" in r.stderr


@pytest.mark.parametrize("signed", [True, False])
def test_signed_receipt_helper_round_trip(signed):
    from host_tools.backend.e2e import verify_receipt

    body = json.dumps({"device": "d", "version": 1}).encode()
    payload = sign_receipt("d", body, KEY) if signed else body
    assert verify_receipt("d", payload, KEY) == ("ok" if signed else "unsigned")
    assert verify_receipt("e", payload, KEY) == ("bad_signature" if signed else "unsigned")
