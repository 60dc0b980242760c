"""Consent on the device (docs/CONSENT.md): signatures, rejected updates, persistence across
power cuts, data minimisation, the collector's defence in depth and `edgectl consent`, under unix
MicroPython and against a real mosquitto where a device is involved."""

from __future__ import annotations

import hmac
import json
import os
import tempfile
import time

import pytest

from edge import codec
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from edge.wire import consent_signed_bytes as signed_bytes
from host_tools.cli import main as cli_main
from tests.consent_rig import DEVICE, KEY, Rig
from tests.store_mp import mp_last_json


def mp_case(case: str, *args: str) -> dict:
    """Run one case of tests/mp/consent_unit.py in a fresh directory; returns its JSON."""
    root = tempfile.mkdtemp(prefix="consent-unit-")
    return mp_last_json("consent_unit.py", case, root, *args, heap="1M", timeout=60, cwd=root)


def test_hmac_and_signed_bytes_match_cpython():
    got = mp_case("hmac")
    for klen, digest in got["hmac"]:
        key = bytes((i * 7 + 1) & 0xFF for i in range(klen))
        assert digest == hmac.new(key, b"edge consent " * 3, "sha256").hexdigest(), klen
    # the documented canonical form (docs/CONSENT.md 4), sorted lists, same on both sides
    assert got["signed"] == "edge-consent/1\nunit-1\n7\ndiagnostics,usage\nmarketing\n1234"
    doc = {"version": 7, "grant": ["usage", "diagnostics"], "deny": ["marketing"], "ts": 1234}
    assert signed_bytes("unit-1", doc).decode() == got["signed"]  # CPython == MicroPython


def test_first_boot_allows_only_essential():
    got = mp_case("first_boot")
    assert got["version"] == 0
    assert [c for c, on in got["grants"].items() if on] == ["essential"]
    # an unreadable state file falls back to the safe default, never to "allow"
    assert [c for c, on in got["corrupt_grants"].items() if on] == ["essential"]


def test_stale_malformed_unsigned_updates_change_nothing():
    got = mp_case("rejects")
    assert [c for c, on in got["boot_grants"].items() if on] == ["essential"]
    errors = got["errors"]
    assert None not in errors, errors
    assert errors[0].startswith("stale version 5 ignored") and errors[1].startswith(
        "stale version 3"
    )
    assert "unsigned update" in errors[2]
    assert errors[3] == "bad signature" and errors[-1] == "bad signature"
    assert "'version'" in errors[6] and "'grant' must be a list" in errors[9]
    assert "unknown category 'heartbeat'" in errors[10]
    assert "'essential' cannot be denied" in errors[11]
    assert "named twice" in errors[12] and "unknown key 'colour'" in errors[13]
    assert got["unchanged"], "a rejected update rewrote the state file"
    assert got["version"] == got["reloaded_version"] == 5
    assert got["grants"] == got["reloaded_grants"]
    assert got["reloaded_grants"]["usage"] and not got["reloaded_grants"]["marketing"]
    assert got["source"] == "mqtt" and got["ts"] == 1000


@pytest.mark.parametrize("where, version", [("rename", 1), ("write", 1), ("none", 2)])
def test_consent_state_survives_power_cut(where, version):
    """Cut between the temp write and the rename, in the middle of the temp write, or after
    the rename: after the reboot the state is wholly the old or wholly the new version."""
    got = mp_case("cut", where)
    assert got["cut"] == (where != "none")
    assert got["version"] == version
    assert got["grants"]["usage"] == (version == 1) and got["grants"]["location"]


def _mp_script(name: str, *args: str) -> dict:
    return mp_last_json(name, *args, heap="4M", timeout=120)


def test_consent_power_cut_at_every_flash_operation():
    """The store's emulated NOR flash (edge/hal/unix/flashdev.py): a cut at every program/erase of a
    consent workload; after each reboot the state is the old or the new version, whole, no
    denied category has readings left to send, and the boot receipt says what is enforced."""
    res = _mp_script("consent_powercut.py")
    assert res["cuts"] == res["ops"] >= 100
    assert len(res["cut_steps_by_version"]) >= 5  # cuts landed inside every consent change
    assert res["violations"] == 0, res["errors"]


def test_power_cut_harness_catches_an_unfinished_purge():
    res = _mp_script("consent_powercut.py", "broken")
    assert res["violations"] > 0
    assert all("still has unsent readings" in e for e in res["errors"])


def test_boot_finishes_an_interrupted_revocation():
    port = broker_mod.free_port()  # nothing listens: the device is offline
    got = mp_case("boot_purge", str(port))
    assert got["version"] == 2
    assert got["unsent"] is False
    assert got["receipt"]["purged"] == {"usage": 30} and got["receipt"]["via"] == "boot"
    assert got["receipt"]["grants"]["usage"] is False
    assert got["outbox"] == ["edge/unit-1/consent/receipt"]


def test_minimisation_rules():
    got = mp_case("minimise")
    assert got["rules"] == [4, 5, 6]
    assert got["door"] == [1700000100000, 30]  # time to the minute, value to a step of 10
    assert got["defrost"] == [1700000123456, 0]  # value dropped
    assert got["pseudo_stable"] and got["pseudo_differs"] and not got["pseudo_is_id"]
    assert got["pseudo_rotated"], "the pseudonym key must change with the consent version"
    errs = got["errors"]
    assert None not in errs, errs
    assert "categories.usage.minimise[0].op" in errs[0] and ".step" in errs[1]
    assert "only 'value'" in errs[2] and ".channels" in errs[3]


def _batch(category: str, first_seq: int, n: int) -> bytes:
    w = codec.BatchWriter("dev-1", 4096)
    w.start(category, 1, 0)
    for i in range(n):
        w.add(first_seq + i, 1000 + i, 1, 0, 5, i)
    return bytes(w.finish())


def test_collector_refuses_what_the_latest_receipt_does_not_grant():
    """Default deny (docs/CONSENT.md 8): before any receipt only `essential`; after one, what
    it grants, whatever the seq; a revocation erases what was stored of the category."""
    col = Collector("127.0.0.1", 1)  # never started: messages are fed directly
    try:
        col.feed("edge/dev-1/t/usage", _batch("usage", 1, 5))  # no receipt yet: refused
        col.feed("edge/dev-1/t/essential", _batch("essential", 6, 2))
        grant = {"device": "dev-1", "version": 1, "seq": 8,
                 "grants": {"essential": True, "usage": True}}  # fmt: skip
        col.feed("edge/dev-1/consent/receipt", json.dumps(grant).encode())
        col.feed("edge/dev-1/t/usage", _batch("usage", 8, 4))
        s = col.stats()
        assert s["unique"] == 6 and s["refused"] == 5, s
        revoke = {"device": "dev-1", "version": 2, "seq": 12,
                  "grants": {"essential": True, "usage": False}}  # fmt: skip
        col.feed("edge/dev-1/consent/receipt", json.dumps(revoke).encode())
        # below the receipt's seq but arriving after it: refused (it was not sent before)
        col.feed("edge/dev-1/t/usage", _batch("usage", 9, 2))
        col.feed("edge/dev-1/t/usage", _batch("usage", 12, 3))
        # a category no receipt lists: refused
        col.feed("edge/dev-1/t/marketing", _batch("marketing", 15, 1))
        s = col.stats()
        assert s["refused"] == 5 + 2 + 3 + 1, s
        assert s["refused_by_category"] == {"usage": 10, "marketing": 1}
        held = col.sink.rows("SELECT category, count(*) FROM readings GROUP BY category")
        assert held == [("essential", 2)]  # the 4 usage readings were erased by the revocation
        ledger = col.sink.rows(
            "SELECT version, event, category, readings, action FROM consent_ledger ORDER BY id"
        )
        assert ledger == [
            (1, "grant", "essential", 0, "none"),
            (1, "grant", "usage", 0, "none"),
            (2, "deny", "usage", 4, "erased"),
        ]
        # an older receipt cannot bring a grant back
        col.feed("edge/dev-1/consent/receipt", json.dumps(grant).encode())
        assert col.receipts["dev-1"]["version"] == 2
        assert col.stats()["refused_by_reason"]["receipt_stale"] == 1
    finally:
        col.close()


@pytest.fixture(scope="module")
def signed_rig():
    r = Rig(key=KEY)
    r.start_agent()
    r.wait_receipt(0)
    yield r
    r.close()


def test_edgectl_consent_signed_round_trip(signed_rig, tmp_path, capsys):
    rig = signed_rig
    keyfile = tmp_path / "device.key"
    keyfile.write_text(KEY.hex() + "\n")
    base = [
        "consent",
        DEVICE,
        "--host",
        rig.broker.host,
        "--port",
        str(rig.broker.port),
        "--timeout",
        "10",
    ]
    assert (
        cli_main(base + ["--grant", "usage", "--grant", "diagnostics", "--key", str(keyfile)]) == 0
    )
    out = capsys.readouterr().out
    assert f"device {DEVICE} enforces consent v1" in out
    assert "usage        granted" in out and "marketing    denied" in out
    rig.emit("usage", 25)
    assert cli_main(base + ["--deny", "usage", "--key", str(keyfile)]) == 0
    out = capsys.readouterr().out
    assert "consent v2" in out and "usage        denied" in out
    # without the key the device refuses, and says why; nothing changes
    assert cli_main(base + ["--grant", "marketing"]) == 2
    assert "unsigned update" in capsys.readouterr().err
    assert rig.col.receipts[DEVICE]["version"] == 2
    rig.sync()
    ping = [r for _, n, r in rig.col.replies if n == "ping"][-1]
    assert ping["consent_version"] == 2


def test_local_file_hook_and_restart_keep_consent(signed_rig):
    """The appliance UI's hook on unix: DIR/local.cmd in, DIR/local.reply out (config
    `consent.local_dir`). Then a power cut (SIGKILL) and a restart: the same version is
    enforced and re-announced."""
    rig = signed_rig
    store = rig.workdir
    v = rig.col.receipts[DEVICE]["version"] + 1
    req = {"cmd": "consent", "doc": json.loads(rig.update(v, ["location"], [], KEY))}
    with open(os.path.join(store, "local.tmp"), "w") as f:
        json.dump(req, f)
    os.rename(os.path.join(store, "local.tmp"), os.path.join(store, "local.cmd"))
    reply_path = os.path.join(store, "local.reply")
    deadline = time.monotonic() + 10
    while not os.path.exists(reply_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(reply_path) as f:
        reply = json.load(f)
    assert reply["ok"] and reply["version"] == v and reply["grants"]["location"]
    r = rig.wait_receipt(v)
    assert r["source"] == "local"
    rig.stop_agent(kill=True)
    n = len(rig.col.receipt_log)
    rig.start_agent()
    assert rig.col.wait_for(lambda c: len(c.receipt_log) > n, 10)
    again = rig.col.receipt_log[-1][2]
    assert again["version"] == v and again["grants"] == r["grants"]
    # the retained update on the broker is older than what the device enforces: ignored
    assert rig.consent_mqtt(rig.update(v, [], ["location"], KEY))["stale"] is True


def test_version_steps_and_rebase(micropython, tmp_path):
    """docs/CONSENT.md 4: unsigned updates move the version by at most 1000; a rebase is
    accepted signed with a newer ts or from the local UI, and cannot be replayed or added."""
    got = mp_last_json("consent_rebase.py", str(tmp_path))
    assert "at most 1000" in got["unsigned_step"]
    assert got["unsigned_small"] == "ok v1000"
    assert "needs a signed update" in got["unsigned_rebase"]
    assert "at most 1000" not in got["local_far"] and got["local_far"] == "ok v2147483646"
    assert got["local_rebase"] == "ok v5"
    assert got["signed_top"] == "ok v2147483646"
    assert got["signed_rebase"] == "ok v3"
    assert "not newer" in got["rebase_replay"]
    assert got["rebase_forged"] == "bad signature" and got["rebase_added"] == "bad signature"
