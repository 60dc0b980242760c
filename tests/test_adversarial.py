"""The adversarial suite (docs/SECURITY.md 5): each attack class on the device's inbound path,
run against the real agent over a real mosquitto, asserting the protection. Every test prints
its figures (`ADV name: ...`), which the before/after table of docs/SECURITY.md quotes."""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from edge import codec
from host_tools.backend import broker as broker_mod
from tests import mqtt_harness
from tests.adversarial_rig import (
    DEVICE,
    Attacker,
    Observer,
    code_heap,
    device_config,
    start_agent,
)
from tests.mqtt_harness import FakeBroker

pytestmark = [
    pytest.mark.adversarial,
    pytest.mark.skipif(not broker_mod.mosquitto_path(), reason="needs mosquitto"),
]
REVOKE_S = 5.0  # every revocation applied and receipted within 5 s of arriving
PROPERTY_HEADROOM = int(os.environ.get("EDGE_ADV_HEADROOM_KIB", "48")) * 1024


class Scene:
    """Broker, observer, attacker and agent of one test; the agent's boot receipt seen."""

    def __init__(self, heap: str = "512K", retained=(), **over) -> None:
        self.broker = broker_mod.start(prefer="mosquitto")
        self.attacker = Attacker(self.broker.port)
        for sub, payload in retained:  # waiting for the device when it subscribes
            self.attacker.send(sub, payload, retain=True)
        self.obs = Observer(self.broker.port)
        self.agent = start_agent(self.broker.port, heap=heap, **over)
        self.version = 0
        assert self.obs.receipt(0, 30), "no boot receipt:\n" + "\n".join(self.agent.output[-20:])
        self.sessions = self._sessions()

    def _sessions(self) -> int:
        """MQTT sessions so far, from the agent's stats line (once a second)."""
        deadline = time.monotonic() + 5
        while "reconnects" not in self.agent.stats and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.agent.stats.get("reconnects", -1)

    def new_sessions(self) -> int:
        """Sessions since the boot receipt, after the next stats line."""
        time.sleep(2.2)
        return self._sessions() - self.sessions

    def revoke(self, grant=(), deny=("usage",)) -> float | None:
        """The next consent version; seconds from its PUBACK to its receipt, or None."""
        self.version += 1
        t = self.attacker.consent(self.version, grant, deny)
        r = self.obs.receipt(self.version, REVOKE_S + 5)
        return None if r is None else r[0] - t

    def stats(self) -> dict:
        return dict(self.agent.stats)

    def tail(self) -> str:
        """The agent's last lines without the stats, for a failure message."""
        lines = [x for x in self.agent.output if not x.startswith("@stats")]
        status = self.status()
        heap = {k: status.get(k) for k in ("heap_free", "uptime_ms", "errors")}
        return "\n".join(lines[-25:]) + f"\nheap: {heap}\nstats: " + json.dumps(self.stats())

    def status(self) -> dict:
        """The device's status as the backend sees it: compact snapshots (short keys) and the
        change messages between them, expanded and merged (edge.codec.decode_status)."""
        status: dict = {}
        with self.obs.lock:
            msgs = list(self.obs.msgs)
        for _t, t, p in msgs:
            if t.endswith("/status") and p:
                try:
                    status = codec.decode_status(json.loads(p), status)
                except ValueError:
                    continue
        return status

    def alive(self) -> bool:
        return self.agent.proc is not None and self.agent.proc.poll() is None

    def close(self) -> None:
        self.agent.cleanup()
        self.attacker.close()
        self.obs.close()
        self.broker.stop()


@pytest.fixture
def scene():
    made: list[Scene] = []

    def make(**kw) -> Scene:
        made.append(Scene(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _inbound(s: Scene) -> dict:
    return s.stats().get("inbound") or {}


def _report(name: str, **figures) -> None:
    print(f"ADV {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def test_a_echoed_strings_cannot_make_a_reply_that_kills_the_command_task(scene):
    """(a) A reply that repeats a 1,500-character id, unknown key or command name was too
    large for the packet buffer: ValueError in the command task, which died, so no later
    revocation was ever applied. Now echoed strings are cut to 32 characters."""
    s = scene()
    assert s.revoke(grant=("usage",), deny=()) is not None
    for n in (1500, 900):  # over the packet buffer before; over / under the 1 KB limit now
        s.attacker.send("cmd/ping", json.dumps({"id": "i" * n}))
        s.attacker.send("cmd/consent", json.dumps({"version": 99, "k" * n: 1}))
        s.attacker.send("cmd/consent", json.dumps({"version": 99, "grant": ["c" * n]}))
    s.attacker.send("cmd/" + "n" * 900, b"{}")
    latency = s.revoke()
    # consent goes first (its own slot): the ping's reply follows, later on a loaded machine
    s.obs.wait(
        lambda m: (
            len(s.obs.replies("consent")) >= 5 and any("id" in r for r in s.obs.replies("ping"))
        ),
        10,
    )
    ids = [r["id"] for r in s.obs.replies("ping") if "id" in r]
    errs = [r.get("error", "") for r in s.obs.replies("consent")]
    _report("a", revocation_s=latency, ping_ids=[len(i) for i in ids], alive=s.alive())
    assert latency is not None and latency <= REVOKE_S
    assert ids == ["i" * 32]  # the 900-character id, cut; the 1,500-byte one refused unread
    assert max(len(e) for e in errs) < 120, errs  # echoed names and keys are cut too
    assert s.alive() and not _inbound(s).get("task_restarts")


def test_b_a_message_larger_than_the_buffer_is_skipped_not_a_protocol_error(scene):
    """(b) One 5,000-byte QoS 1 command (over the 2,048-byte receive buffer) was a protocol
    error: the connection closed, the broker re-sent it after each reconnect (60 in 20 s),
    nothing acknowledged, the revocation never applied. Now it is read past, PUBACKed,
    counted and answered."""
    s = scene()
    s.attacker.send("cmd/ping", json.dumps({"id": 7, "pad": "p" * 5000}))
    latency = s.revoke()
    new = s.new_sessions()
    st = s.stats()
    err = [r for r in s.obs.replies("ping") if "larger" in r.get("error", "")]
    _report("b", revocation_s=latency, new_sessions=new, skipped_replies=len(err))
    assert latency is not None and latency <= REVOKE_S
    assert new == 0 and st["mqtt"]["rx_rejected"] == 0
    assert _inbound(s).get("skipped") == 1 and len(err) == 1


def test_c_retained_commands_straddling_the_buffer_end_keep_the_link(scene):
    """(c) Three retained 900-byte commands arrive back to back at subscription and straddle
    the receive buffer's end: the parser compared the packet's end offset with the buffer
    size and rejected them as oversize (1,361 reconnects in 18 s). Now: one session."""
    pad = "q" * 850
    retained = [(f"cmd/{n}", json.dumps({"id": n, "pad": pad})) for n in ("ping", "x1", "x2")]
    s = scene(retained=retained)
    latency = s.revoke()
    new = s.new_sessions()
    st = s.stats()
    _report("c", revocation_s=latency, new_sessions=new, sessions=st.get("reconnects"))
    assert latency is not None and latency <= REVOKE_S
    assert new == 0 and st.get("reconnects") == 1 and st["mqtt"]["rx_rejected"] == 0
    assert len(s.obs.replies("ping")) >= 1 and len(s.obs.replies("x1")) >= 1


def _tight_heap(micropython, tmp_path, monkeypatch, headroom: int = 48 * 1024) -> str:
    """code footprint (precompiled, as a device carries it) + 48 KiB, the documented heap."""
    from tests.test_forward import _mpy_tree

    tree = _mpy_tree(micropython, str(tmp_path / "lib"))
    monkeypatch.setattr("host_tools.paths.edge_root", lambda: tree)
    return str(code_heap(micropython, tree) + headroom)


def test_d_nested_json_at_the_documented_heap(scene, micropython, tmp_path, monkeypatch):
    """(d) At code + 48 KiB a 100-byte nested-JSON command raised MemoryError in the command
    task (and a ~1 KB one in the read loop). Now the nesting is counted before json.loads."""
    s = scene(heap=_tight_heap(micropython, tmp_path, monkeypatch))
    for _ in range(5):
        s.attacker.send("cmd/ping", b"[" * 100)
        s.attacker.send("cmd/ping", b'{"a":' * 150 + b"1" + b"}" * 150)  # 901 bytes
        s.attacker.send("cmd/consent", b"[" * 1000)
    latency = s.revoke()

    def nested() -> list:
        return [r for r in s.obs.replies("ping") if "nested" in r.get("error", "")]

    s.obs.wait(lambda m: len(nested()) >= 10, 5)  # consent went first: the pings follow
    deep = nested()
    _report("d", revocation_s=latency, refused_nested=len(deep), alive=s.alive())
    assert latency is not None and latency <= REVOKE_S, s.tail()
    assert len(deep) == 10 and s.alive()
    assert not _inbound(s).get("task_restarts") and not _inbound(s).get("read_errors")


def test_e_a_flood_of_commands_never_drops_a_revocation(scene):
    """(e) 30 pings before a revocation filled the queue of 8: the revocation, already
    PUBACKed, was dropped (2 runs of 3). Now consent has its own queue and goes first, and a
    full queue holds the broker back (no PUBACK) instead of dropping anything."""
    s = scene()
    latencies = []
    sent = 0
    for _ in range(3):
        for i in range(30):
            s.attacker.send("cmd/ping", json.dumps({"id": sent + i}), wait=False)
        sent += 30
        latencies.append(s.revoke(grant=(), deny=("usage",) if s.version % 2 == 0 else ()))
    got = s.obs.wait(lambda m: len(s.obs.replies("ping")) >= sent, 20)
    n = len(s.obs.replies("ping"))
    _report("e", revocation_s=latencies, ping_replies=f"{n}/{sent}")
    assert all(x is not None and x <= REVOKE_S for x in latencies), latencies
    assert got is not None and n == sent  # nothing dropped: the broker waited instead


def test_f_an_unsigned_update_cannot_park_the_version_at_the_ceiling(scene):
    """(f) One unsigned update with version 2147483646 made every later revocation stale.
    Now an unsigned update may raise the version by at most 1000."""
    s = scene()
    s.attacker.consent(2147483646, grant=("usage", "diagnostics"))
    latency = s.revoke()  # version 1: still newer than what the device enforces
    errs = [r for r in s.obs.replies("consent") if "at most 1000" in r.get("error", "")]
    _report("f", revocation_s=latency, step_refusals=len(errs))
    assert latency is not None and latency <= REVOKE_S and len(errs) == 1


def _stalling_broker(messages: int, topic: str) -> tuple[FakeBroker, dict]:
    """A broker that accepts the device, then sends QoS 1 PUBLISHes on `topic` and never reads
    a byte after the CONNECT (its receive buffer is 4 KiB, so the device's PUBACKs back up at
    once). Returns the broker and its counters: `sent`, `done` once it stops, `ended`: how."""
    fake = FakeBroker(timeout=3, rcvbuf=4096)
    state: dict = {"sent": 0, "done": threading.Event()}

    def script(conn, _n: int) -> None:
        conn.read()  # CONNECT; nothing is read after it
        conn.send(mqtt_harness.connack())
        try:
            while state["sent"] < messages:
                conn.send(
                    mqtt_harness.publish(topic, b"{}", qos=1, pid=state["sent"] % 0xFFFF + 1)
                )
                state["sent"] += 1
        except TimeoutError:
            state["ended"] = "stalled"  # the device stopped reading, the connection kept
        except OSError as e:
            state["ended"] = f"dropped ({e.__class__.__name__})"  # the device closed it
        state["done"].set()
        time.sleep(5)

    return fake.serve(script, 1), state


# About 830,000 PUBLISHes before the kernel's buffers fill and the limit is reached (50-120 s):
# behind --slow. The default run keeps the backpressure of the PUBACK order test below.
@pytest.mark.slow
@pytest.mark.parametrize("topic", ["cmd/ping", "x/unsubscribed"])
def test_a_broker_that_stops_reading_cannot_exhaust_the_heap(
    agents, micropython, tmp_path, monkeypatch, topic
):
    """Every inbound QoS 1 PUBLISH queues a PUBACK in the stream's output buffer, which grew
    without bound while the broker did not read: MemoryError at the documented heap. Commands
    (`cmd/ping`) are held by the command queue's backpressure anyway; a PUBLISH on a topic the
    device takes without queuing (`x/unsubscribed`: a hostile broker sends what it likes) only
    by the read loop, which now stops reading once 512 bytes wait to go out."""
    heap = _tight_heap(micropython, tmp_path, monkeypatch)
    fake, state = _stalling_broker(2_000_000, f"edge/{DEVICE}/{topic}")
    agent = agents(device_config(fake.port, seconds=600), heap=heap)  # outlives the flood
    with fake:
        state["done"].wait(240)
        time.sleep(2)
        alive = agent.proc.poll() is None
        out = "\n".join(agent.output[-30:])
        inbound = agent.stats.get("inbound", {})
        _report(
            f"puback_backlog[{topic}]",
            publishes_taken=state["sent"],
            connection=state.get("ended"),
            read_errors=inbound.get("read_errors", 0),
            alive=alive,
        )
        # the device stopped taking them (backpressure) and kept the connection: before, the
        # growing PUBACK backlog ran out of heap in the read loop, which dropped the connection
        assert state.get("ended") == "stalled", state
        assert inbound.get("read_errors", 0) == 0, inbound
        assert alive and "MemoryError" not in out, out


def _hostile(rng, s: Scene, n: int) -> None:
    """n random hostile messages: oversized, nested, malformed, echo-sized, flooding, some
    retained, some QoS 0."""
    for _ in range(n):
        kind = rng.randrange(7)
        name = rng.choice(["ping", "ping", "consent", "x" + str(rng.randrange(5))])
        qos = rng.choice([1, 1, 0])
        retain = rng.randrange(8) == 0 and name != "consent"
        if kind == 0:  # larger than the receive buffer
            p = json.dumps({"pad": "p" * rng.randrange(2100, 7000)})
        elif kind == 1:  # nested
            d = rng.randrange(7, 400)
            p = rng.choice(["[" * d + "]" * d, '{"a":' * d + "1" + "}" * d, "[" * d])
        elif kind == 2:  # malformed
            p = rng.choice(
                [
                    b"\xff\xfe\x00garbage",
                    b"not json",
                    b"[1, 2, 3]",
                    b'"a string"',
                    json.dumps({"version": "x", "grant": 5}).encode(),
                    json.dumps({"version": -1, "deny": ["essential"]}).encode(),
                    json.dumps({"version": 1, "grant": ["nope"], "sig": 7}).encode(),
                    b"",
                ]
            )
        elif kind == 3:  # echo-sized strings just under the payload limit
            p = json.dumps({"id": "i" * rng.randrange(200, 1000), "k" * 40: 1})
        elif kind == 4:  # a bad command name
            name = rng.choice(["n" * rng.randrange(25, 300), "a.b", "bad name", "x/y"])
            p = b"{}"
        elif kind == 5:  # flooding
            for i in range(rng.randrange(10, 40)):
                s.attacker.send("cmd/ping", json.dumps({"id": i}), qos=qos, wait=False)
            continue
        else:  # straddling: packets of ~900 bytes back to back
            p = json.dumps({"pad": "q" * rng.randrange(800, 1000)})
        s.attacker.send("cmd/" + name, p, qos=qos, retain=retain, wait=False)


def _violations(obs: Observer) -> list:
    """Readings published of a category that the receipt in force when they were taken (the
    last receipt whose seq is not above theirs) denies."""
    receipts = []
    with obs.lock:
        msgs = list(obs.msgs)
    for _t, topic, p in msgs:
        if topic.endswith("/consent/receipt") and p:
            r = json.loads(p)
            receipts.append((r["seq"], r["version"], r["grants"]))
    receipts.sort()
    bad = []
    for _t, cat, seq in obs.readings():
        now = [r for r in receipts if r[0] <= seq]
        if now and not now[-1][2].get(cat, False):
            bad.append((cat, seq, now[-1][1]))
    return bad


def test_property_random_hostile_traffic_never_stops_a_revocation(
    scene, micropython, tmp_path, monkeypatch, request
):
    """At code + 48 KiB: scenarios of random oversized, nested, malformed, retained and
    flooding commands, each followed by a consent change (grant or revocation). Every one is
    applied and receipted within 5 s, no task dies, inbound data never drops the connection,
    and no reading of a category is published under a receipt that denies it."""
    import random

    n = 1000 if request.config.getoption("--slow") else 200
    rng = random.Random(12)
    pad = "q" * 850
    retained = [(f"cmd/r{k}", json.dumps({"id": k, "pad": pad})) for k in range(3)]
    retained.append(("cmd/big", "b" * 5000))
    retained.append(("cmd/deep", "[" * 500))
    s = scene(
        heap=_tight_heap(micropython, tmp_path, monkeypatch, PROPERTY_HEADROOM),
        retained=retained,
        seconds=3600,
        rate_hz=50,
    )
    granted = {"usage": False, "diagnostics": False}
    worst = 0.0
    for i in range(n):
        _hostile(rng, s, rng.randrange(0, 6))
        cat = rng.choice(sorted(granted))
        granted[cat] = not granted[cat]
        change = ((cat,), ()) if granted[cat] else ((), (cat,))
        latency = s.revoke(*change)
        if latency is None or latency > REVOKE_S:
            pytest.fail(f"scenario {i}: revocation took {latency} s\n{s.tail()}")
        worst = max(worst, latency)
    new = s.new_sessions()
    st = s.stats()
    inbound = st.get("inbound") or {}
    bad = _violations(s.obs)
    _report(
        "property",
        scenarios=n,
        worst_revocation_s=round(worst, 3),
        new_sessions=new,
        refused=inbound.get("refused"),
        skipped=inbound.get("skipped"),
        waits=inbound.get("waits"),
        readings=len(s.obs.readings()),
        violations=len(bad),
        bad_stats_lines=s.agent.bad_lines,
    )
    assert new == 0 and st["mqtt"]["rx_rejected"] == 0, s.tail()
    assert not inbound.get("task_restarts") and not inbound.get("read_errors"), s.tail()
    assert s.alive() and not bad, bad[:5]
    # the refusals reach the backend in the status: the compact snapshot's errors
    # (docs/HEALTH.md 1.1) count the refused commands
    s.obs.wait(lambda m: False, 6)  # one more status period (5 s)
    last = s.status()
    assert last.get("errors", {}).get("commands_rejected", 0) > 0, last


def test_pubacks_keep_the_order_of_their_publishes_under_backpressure(agents):
    """MQTT 3.1.1 4.6: a client sends PUBACKs in the order the PUBLISHes arrived. The device
    withholds a PUBACK while its command queue is full (backpressure) and acknowledges an
    oversized PUBLISH as it reads past it, a consent update goes to its own slot, and a
    topic it does not take is acknowledged at once: none of these may overtake another. A
    broker script sends 300 QoS 1 PUBLISHes of every kind in one burst and records the
    PUBACKs."""
    rng = random.Random(46)
    kinds = {
        "ping": lambda i: ("cmd/ping", json.dumps({"id": i}).encode()),
        "oversized": lambda i: ("cmd/ping", b'{"pad":"' + b"x" * 3000 + b'"}'),
        "consent": lambda i: ("cmd/consent", json.dumps({"version": i, "grant": []}).encode()),
        "foreign": lambda i: ("x/elsewhere", b"{}"),
        "bad_name": lambda i: ("cmd/" + "n" * 80, b"{}"),
        "nested": lambda i: ("cmd/ping", b"[" * 200),
    }
    sent = [rng.choice(list(kinds)) for _ in range(300)]
    acks: list[int] = []
    done = threading.Event()

    def script(conn, _n: int) -> None:
        conn.read()  # CONNECT
        conn.send(mqtt_harness.connack())
        burst = b"".join(
            mqtt_harness.publish(f"edge/{DEVICE}/{t}", p, qos=1, pid=i)
            for i, (t, p) in ((i, kinds[k](i)) for i, k in enumerate(sent, 1))
        )
        threading.Thread(target=conn.send, args=(burst,), daemon=True).start()
        while len(acks) < len(sent):
            pkt = conn.read()
            if pkt is None:
                break  # the device closed the connection (or the timeout passed)
            if pkt.kind == mqtt_harness.PUBACK:
                acks.append(pkt.pid)
            elif pkt.kind == mqtt_harness.SUBSCRIBE & 0xF0:
                conn.send(mqtt_harness.suback(pkt.pid, 1))
            elif pkt.kind == mqtt_harness.PUBLISH and pkt.first & 0x06:
                conn.send(mqtt_harness.puback(pkt.pid))  # the device's own QoS 1 messages
            elif pkt.kind == 0xC0:  # PINGREQ
                conn.send(mqtt_harness.pingresp())
        done.set()

    fake = FakeBroker(timeout=60).serve(script, 1)
    agent = agents(device_config(fake.port, seconds=120), heap="512K")
    with fake:
        done.wait(90)
        deadline = time.monotonic() + 10  # the next stats line carries the waits
        while time.monotonic() < deadline and "waits" not in agent.stats.get("inbound", {}):
            time.sleep(0.2)
        inbound = agent.stats.get("inbound", {})
        counts = {k: sent.count(k) for k in kinds}
        in_order = acks == sorted(acks)
        _report(
            "puback_order",
            publishes=len(sent),
            pubacks=len(acks),
            in_order=in_order,
            waits=inbound.get("waits", 0),
            skipped=inbound.get("skipped", 0),
            **counts,
        )
        assert inbound.get("waits", 0) > 0, inbound  # the queue was full: PUBACKs withheld
        assert acks == list(range(1, len(sent) + 1)), acks[:40]
        assert agent.proc.poll() is None
