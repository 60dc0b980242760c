"""Over-the-air updates end to end: the real agent under unix MicroPython, booted like a board
(deploy's main.py, slot a in lib/, edgectl run --slots), mosquitto, and the host tools
(`edgectl update` / `config` API). docs/OTA.md sections 4-9."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import pytest

from host_tools.agent.run import agent_config
from host_tools.backend.connect import ConnectOptions
from host_tools.backend.proxy import FaultProxy
from host_tools.cli import main as edgectl
from host_tools.ota import update as up
from tests.ota_rig import (
    HANG_MAIN,
    Telemetry,
    crash_bundle,
    make_key,
    real_bundle,
    status,
    widening_bundle,
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota-e2e")
    make_key(d)
    other = d / "other"
    other.mkdir()
    make_key(other)
    key = d / "release.json"
    return {
        "dir": d,
        "pub": (d / "release.pub").read_bytes(),
        "v110": real_bundle(d, "1.1.0", key, "v110.bundle"),
        "v110min": real_bundle(d, "1.1.0", key, "v110min.bundle", min_version="1.1.0"),
        "v105": real_bundle(d, "1.0.5", key, "v105.bundle"),
        "v120crash": crash_bundle(d, "1.2.0", key),
        "v120wider": widening_bundle(d, "1.2.0", key),
        "foreign": real_bundle(d, "1.3.0", other / "release.json", "foreign.bundle"),
        # key rotation: signed with the device's key, names the other key as the next one
        "v120rot": real_bundle(
            d, "1.2.0", key, "v120rot.bundle", next_key=(other / "release.pub").read_bytes()
        ),
        "v130old": real_bundle(d, "1.3.0", key, "v130old.bundle"),
        "other_pub": (other / "release.pub").read_bytes(),
    }


def start_agent(agents, rig, tmp_path, broker, device, port=None, **over):
    cfg = agent_config(
        "unix-sim",
        device_id=device,
        mqtt={"port": port or broker.port, **over.pop("mqtt", {})},
        sim={"rate_hz": 30},
        ota={"trial_ms": 30000, "settle_ms": 1500, **over.pop("ota", {})},
        **over,
    )
    a = agents(
        cfg, root=True, workdir=str(tmp_path / "board"), secrets={"release.pub": rig["pub"]}
    )
    wait_status(broker, device, lambda s: s.get("state") == "online" and "ota" in s)
    return a


def wait_status(broker, device, pred, timeout=30.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = status(broker.port, device, 2)
            if pred(last):
                return last
        except Exception:  # no retained status yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"status never matched: {last}")


def opts(broker):
    return ConnectOptions(port=broker.port)


def test_update_confirms_then_a_crashing_release_rolls_back(agents, rig, tmp_path, broker):
    dev = "ota-a"
    tele = Telemetry(broker.port, dev)
    agent = start_agent(agents, rig, tmp_path, broker, dev)
    try:
        states = []
        o = up.update_device(
            opts(broker), dev, rig["v110"], timeout=90, progress=lambda o, s, st: states.append(st)
        )
        assert o.state == "confirmed", o
        assert "downloading" in states and "installed" in states
        s = wait_status(broker, dev, lambda s: s["ota"]["slot"] == "b")
        assert s["ota"]["version"] == "1.1.0" and "trial" not in s["ota"]
        assert agent.boots == 2  # one reset into the trial
        # nothing buffered is lost across the switch: every reading the first boot stored
        # (seqs 1..appended) and every one since is delivered. The only gap allowed is the
        # unused rest of the seq block the first boot had reserved (a reboot starts the next
        # block of 1024, docs/FORMAT.md 2.4).
        first = json.loads(next(ln for ln in agent.output if ln.startswith("@final "))[7:])
        stored = first["appended"]
        hi = max(tele.seqs)
        want = set(range(1, stored + 1)) | set(range(1025, hi + 1))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not want <= tele.seqs:
            time.sleep(0.2)
        assert stored > 0 and hi > 1024 and want <= tele.seqs, sorted(want - tele.seqs)[:5]

        o = up.update_device(opts(broker), dev, rig["v120crash"], timeout=120)
        assert o.state == "rolled_back", o
        assert "crash: RuntimeError: this release crashes at start" in o.error
        s = wait_status(broker, dev, lambda s: "rolled_back" in s["ota"].get("last", ""))
        assert s["ota"]["slot"] == "b" and s["ota"]["version"] == "1.1.0"
        # what the crashing release stored before it died is delivered by the rolled-back one
        attempt = [ln for ln in agent.output if ln.startswith("@crash-attempt")]
        assert attempt, agent.output[-20:]
        first, nxt = map(int, attempt[0].split()[1:])
        assert nxt > first
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(range(first, nxt)) <= tele.seqs:
            time.sleep(0.2)
        assert set(range(first, nxt)) <= tele.seqs
    finally:
        tele.close()


def send_raw(broker, dev, data, **cmd):
    """Publish `data` as a bundle and send cmd/update with fields overridden; the outcome."""
    r = up.Replies(opts(broker), "edge", [dev], "update")
    try:
        sha = hashlib.sha256(data).hexdigest()
        base = up.chunk_base("edge", dev, sha)
        up.publish_chunks(r.conn, base, data, 1024)
        doc = {"id": "raw", "version": "9.0.0", "size": len(data), "sha256": sha, "topic": base}
        doc.update(cmd)
        r.conn.publish_checked(f"edge/{dev}/cmd/update", json.dumps(doc))
        while True:
            reply = r.next(dev, "raw", 90)
            assert reply is not None, "no reply"
            if not reply.get("ok") or reply.get("state") in up.FINAL + ("installed",):
                return reply
    finally:
        r.close()


def test_refusals_say_why(agents, rig, tmp_path, broker, capsys):
    dev = "ota-b"
    agent = start_agent(agents, rig, tmp_path, broker, dev)
    try:
        # the command line's rollout: a wave that fails stops it, the rest are skipped
        argv = ["update", "--devices", f"{dev},ota-ghost", str(rig["foreign"])]
        argv += ["--wave", "1", "--max-failure-rate", "0", "--port", str(broker.port)]
        assert edgectl(argv) == 1
        out = capsys.readouterr().out
        assert "wave 1: 0 ok, 1 failed" in out and "stopping the rollout" in out, out
        assert f"{dev}: refused (1.3.0): bad signature" in out and "ota-ghost: skipped" in out
        _refusals(rig, broker, dev)
    except BaseException:
        print("\n".join(ln[:300] for ln in agent.output if not ln.startswith("@stats")))
        raise


def _refusals(rig, broker, dev):
    if True:
        good = rig["v110"].read_bytes()
        r = send_raw(broker, dev, good, sha256="ab" * 32, version="1.1.0")
        assert not r["ok"] and r["error"].startswith("wrong hash"), r

        cut = good[:-4000]
        r = send_raw(broker, dev, cut, version="1.1.0")
        assert not r["ok"] and r["error"].startswith("truncated bundle"), r

        bad = dict(size=len(good), sha256=hashlib.sha256(good).hexdigest(), topic="other/x")
        r = send_raw(broker, dev, good, **bad)
        assert not r["ok"] and "'topic' must be a topic under edge/" in r["error"], r

        o = up.update_device(opts(broker), dev, rig["v110min"], timeout=90)
        assert o.state == "confirmed", o
        wait_status(broker, dev, lambda s: s["ota"].get("floor") == "1.1.0")
        o = up.update_device(opts(broker), dev, rig["v110"], timeout=60)
        assert o.state == "refused" and "not newer than the running 1.1.0" in o.error, o
        for down in (False, True):  # `downgrade: true` never goes below the minimum
            o = up.update_device(opts(broker), dev, rig["v105"], downgrade=down, timeout=60)
            assert o.state == "refused", o
            assert o.error.startswith("downgrade: 1.0.5 is below the minimum 1.1.0"), o
        s = wait_status(broker, dev, lambda s: True)
        assert s["ota"]["version"] == "1.1.0" and s["ota"]["slot"] == "b"

        # key rotation: a release signed with the trusted key hands trust to the next key once
        # it is confirmed; from then on the old key's signature is refused, the new one's taken
        o = up.update_device(opts(broker), dev, rig["v120rot"], timeout=90)
        assert o.state == "confirmed", o
        new_id = hashlib.sha256(rig["other_pub"]).hexdigest()[:16]
        wait_status(broker, dev, lambda s: s["ota"].get("key") == new_id)
        o = up.update_device(opts(broker), dev, rig["v130old"], timeout=60)
        assert o.state == "refused" and o.error.startswith("bad signature"), o
        o = up.update_device(opts(broker), dev, rig["foreign"], timeout=90)
        assert o.state == "confirmed", o
        s = wait_status(broker, dev, lambda s: s["ota"]["version"] == "1.3.0")
        assert s["ota"]["slot"] == "b" and s["ota"]["key"] == new_id


def test_download_resumes_after_a_power_cut(agents, rig, tmp_path, broker):
    dev = "ota-d"
    # a slow link (20 KB/s) so the cut lands inside the download
    with FaultProxy(broker.port, rtt_ms=20, bandwidth_bps=20000) as proxy:
        agent = start_agent(agents, rig, tmp_path, broker, dev, port=proxy.port)
        seen: list[tuple[int, str]] = []
        cut = threading.Event()
        at = []

        def progress(offset, size, state):
            seen.append((offset, state))
            if state == "downloading" and offset > 0 and not cut.is_set():
                cut.set()
                agent.proc.kill()  # power cut: no clean shutdown, no reset request
                at.append(len(seen))

        result = {}
        t = threading.Thread(
            target=lambda: result.update(
                o=up.update_device(opts(broker), dev, rig["v110"], timeout=120, progress=progress)
            )
        )
        t.start()
        assert cut.wait(60)
        agent.done.wait(10)
        start_agent(agents, rig, tmp_path, broker, dev, port=proxy.port)  # the next boot
        t.join(150)
        o = result["o"]
        assert o.state == "confirmed", o
        # after the restart the device resumes where the bytes on flash stop, not at 0
        after = [off for off, st in seen[at[0] :] if st == "downloading"]
        assert after and after[0] > 0, seen


def test_remote_config_trial_confirm_rollback_and_what_is_refused(
    agents, rig, tmp_path, broker, capsys
):
    dev = "ota-c"
    start_agent(
        agents, rig, tmp_path, broker, dev, mqtt={"user": "ota-c", "password": "s3cret-pass"}
    )
    seen_payloads: list[str] = []
    port = ["--port", str(broker.port)]
    assert edgectl(["config", dev, "--set", "status_ms=7000", *port]) == 0
    out = capsys.readouterr().out
    m = re.search(r"^ota-c: confirmed, config hash ([0-9a-f]{16}) in ", out, re.M)
    assert m, out
    h = m.group(1)
    assert edgectl(["config", dev, "--get", "status_ms", "mqtt", *port]) == 0
    out = capsys.readouterr().out
    assert '"status_ms": 7000' in out and f"config hash {h}" in out and "s3cret" not in out
    seen_payloads.append(out)
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    g = up.config_device(opts(broker), dev, None, keys=["status_ms", "mqtt"])
    cfg = g.replies[-1]["config"]
    assert cfg["status_ms"] == 7000 and cfg["mqtt"]["password"] == "***"
    assert g.config_hash == h
    seen_payloads += [json.dumps(r) for r in g.replies]

    for change, why in [
        ({"mqtt": {"host": "evil.example"}}, "config key 'mqtt.host' cannot be changed"),
        ({"ota": {"key": "/tmp/x"}}, "config key 'ota' cannot be changed"),
        ({"store": {"flush_n": 0}}, "config key 'store.flush_n'"),
        ({"statu_ms": 5}, "statu_ms"),  # misspelled: the schema names the key
        # another broker (the failover list) would take the telemetry; another collector key
        # would let its holder forge end-to-end acks (deleting buffered readings) and receipts
        ({"mqtt": {"brokers": [{"host": "evil.example"}]}}, "'mqtt.brokers' cannot be changed"),
        ({"mqtt": {"e2e_ack": False}}, "'mqtt.e2e_ack' cannot be changed"),
        ({"backend": {"key": "00" * 16}}, "config key 'backend' cannot be changed"),
        ({"store": {"backend": "segments"}}, "'store.backend' cannot be changed"),
    ]:
        o = up.config_device(opts(broker), dev, change)
        seen_payloads += [json.dumps(r) for r in o.replies]
        assert o.state == "refused" and why in o.error, (change, o)

    # consent: widen a granted category, or essential, and the change is refused
    r = up.Replies(opts(broker), "edge", [dev], "consent")
    r.conn.publish_checked(
        f"edge/{dev}/cmd/consent", json.dumps({"version": 1, "grant": ["usage"], "id": "g"})
    )
    assert r.next(dev, "g", 20)["ok"]
    r.close()
    chans = g.replies[-1]["config"].get("channels")
    if chans is None:
        g = up.config_device(opts(broker), dev, None, keys=["channels"])
        chans = g.replies[-1]["config"]["channels"]
    for cat, why in [
        ("usage", "widening: the change collects more under 'usage'"),
        ("essential", "would be collected as 'essential'"),
    ]:
        more = chans + [{"id": 42, "name": "new_sensor", "category": cat}]
        o = up.config_device(opts(broker), dev, {"channels": more})
        assert o.state == "refused" and why in o.error, o
    more = chans + [{"id": 42, "name": "new_sensor", "category": "location"}]  # not granted
    o = up.config_device(opts(broker), dev, {"channels": more})
    assert o.state == "confirmed", o

    # valid for the schema, but the trial forwards nothing in time: it rolls back
    slow = {"batch": {"latency_ms": 600000, "max_readings": 1000}}
    o = up.config_device(opts(broker), dev, slow, timeout=120)
    assert o.state == "rolled_back", o
    assert "self-check failed" in o.error and "no reading acknowledged" in o.error, o
    g = up.config_device(opts(broker), dev, None, keys=["status_ms", "batch"])
    assert g.replies[-1]["config"]["status_ms"] == 7000
    assert g.replies[-1]["config"]["batch"]["latency_ms"] != 600000
    seen_payloads += [json.dumps(r) for r in g.replies]
    assert not any("s3cret-pass" in p for p in seen_payloads)


def test_reboot_command(agents, rig, tmp_path, broker):
    dev = "ota-r"
    agent = start_agent(agents, rig, tmp_path, broker, dev)
    r = up.Replies(opts(broker), "edge", [dev], "reboot")
    r.conn.publish_checked(f"edge/{dev}/cmd/reboot", json.dumps({"id": "r1", "delay_ms": 200}))
    reply = r.next(dev, "r1", 20)
    r.close()
    assert reply == {"ok": True, "state": "rebooting", "in_ms": 200, "id": "r1"}
    s = wait_status(broker, dev, lambda s: s.get("reset_cause") == "soft", 30)
    assert s["state"] == "online" and agent.boots == 2


def test_deployed_agent_runs_in_code_plus_48k_and_refuses_an_update_it_cannot_hold(
    agents, rig, tmp_path, broker
):
    """The steady state of an agent booted through /main.py and the selector fits the same
    code + 48 KiB heap as the plain agent (tests/test_forward.py); an update that would not fit
    is refused with the reason and the agent goes on forwarding (docs/OTA.md 10)."""
    import os
    import subprocess

    from host_tools.agent.board_root import make_root
    from host_tools.bench import forward as fwdbench
    from host_tools.paths import micropython_path

    root = tmp_path / "board"
    make_root(root, agent_config("unix-sim", device_id="ota-h"))
    probe = os.path.join(os.path.dirname(fwdbench.SCRIPT), "agent_code.py")
    out = subprocess.run(
        [micropython_path(), "-X", "heapsize=1M", probe],
        env=dict(os.environ, MICROPYPATH=".frozen:" + str(root / "lib")),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    code = int(out.split()[-1])
    cfg = agent_config(  # a snapshot a second: the test reads `acked` from the retained status
        "unix-sim",
        device_id="ota-h",
        mqtt={"port": broker.port},
        sim={"rate_hz": 100},
        status_ms=1000,
    )
    agent = agents(
        cfg,
        heap=str(code + 48 * 1024),
        root=True,
        workdir=str(root),
        secrets={"release.pub": rig["pub"]},
    )
    try:
        wait_status(broker, "ota-h", lambda s: s.get("state") == "online" and s["acked"] > 0)
    except AssertionError:
        print("\n".join(ln[:300] for ln in agent.output if not ln.startswith("@stats")))
        raise
    o = up.update_device(opts(broker), "ota-h", rig["v110"], timeout=60)
    assert o.state == "refused", o
    assert "out of memory" in o.error or "not enough free heap" in o.error, o
    acked = status(broker.port, "ota-h")["acked"]
    try:
        wait_status(broker, "ota-h", lambda s: s["acked"] > acked)  # still forwarding
    except AssertionError:
        print("\n".join(ln[:300] for ln in agent.output if not ln.startswith("@stats")))
        raise
    assert agent.proc.poll() is None and agent.boots == 1


def test_an_update_never_widens_consent(agents, rig, tmp_path, broker):
    """A signed release whose embedded default channels add one to a category the owner granted
    runs as a trial, finds that it would collect more than was granted, and rolls back before
    it samples anything (docs/OTA.md 5)."""
    dev = "ota-w"
    start_agent(agents, rig, tmp_path, broker, dev)
    r = up.Replies(opts(broker), "edge", [dev], "consent")
    r.conn.publish_checked(
        f"edge/{dev}/cmd/consent", json.dumps({"version": 1, "grant": ["usage"], "id": "g"})
    )
    assert r.next(dev, "g", 20)["ok"]
    r.close()
    o = up.update_device(opts(broker), dev, rig["v120wider"], timeout=120)
    assert o.state == "rolled_back", o
    assert "widening" in o.error and "'usage'" in o.error, o
    s = wait_status(broker, dev, lambda s: "rolled_back" in s["ota"].get("last", ""))
    assert s["ota"]["slot"] == "a"


@pytest.mark.slow
def test_a_release_that_hangs_is_reset_by_the_watchdog_and_rolled_back(
    agents, rig, tmp_path, broker
):
    """A trial whose agent blocks its event loop stops feeding the watchdog; the watchdog
    resets the board, and the boot selector rolls back to the confirmed agent (docs/OTA.md 4)."""
    hang = crash_bundle(rig["dir"], "1.4.0", rig["dir"] / "release.json", HANG_MAIN, "hang")
    dev = "ota-wd"
    agent = start_agent(agents, rig, tmp_path, broker, dev, watchdog_ms=2000)
    o = up.update_device(opts(broker), dev, hang, timeout=120)
    assert o.state == "rolled_back", (o, agent.output[-30:])
    assert "reset before confirmation" in o.error, o
    assert any(ln.startswith("@log watchdog: expired") for ln in agent.output)
    s = wait_status(broker, dev, lambda s: "rolled_back" in s["ota"].get("last", ""))
    assert s["ota"]["slot"] == "a" and s["reset_cause"] == "watchdog", s
