"""Property test (docs/CONSENT.md): hypothesis generates sequences of readings and consent changes
and runs them against ONE long-running real agent (unix MicroPython, mosquitto, the real
collector).

After every scenario it checks:
  1. after a revocation's receipt, no reading of that category with a later seq reaches the
     collector (later: above every seq of it the collector had before the receipt), until a
     later receipt grants the category again, and none from a seq the receipt says it denies;
  2. purged counts match: for each category, readings stored under consent in the scenario =
     readings the collector received + readings the receipts say were purged;
  3. stale, malformed, unsigned and badly signed updates are rejected and change nothing;
  4. the collector refused nothing (its defence in depth never had to act).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.consent_rig import CATS, DEVICE, KEY, Rig

SCENARIOS = int(os.environ.get("CONSENT_SCENARIOS", "200"))

_subset = st.lists(st.sampled_from(CATS), unique=True, max_size=3)
step = st.one_of(
    st.tuples(st.just("emit"), st.sampled_from(["essential"] + CATS), st.integers(1, 40)),
    st.tuples(st.just("commit")),
    st.tuples(st.just("pause"), st.sampled_from([0, 3, 15])),
    st.tuples(st.just("consent"), st.sampled_from(["mqtt", "local"]), _subset, _subset),
    # grant, emit, then revoke while the readings are buffered / committed / being sent
    st.tuples(
        st.just("race"),
        st.sampled_from(CATS),
        st.integers(1, 60),
        st.sampled_from(["buffered", "committed", "inflight"]),
        st.sampled_from(["mqtt", "local"]),
    ),
    st.tuples(
        st.just("bad"),
        st.sampled_from(
            ["stale", "json", "shape", "unknown", "essential", "unsigned", "badsig", "tampered"]
        ),
        st.sampled_from(["mqtt", "local"]),
    ),
)
scenario = st.lists(step, min_size=1, max_size=14)


class Model:
    """What the device should enforce; carried across scenarios like the agent itself."""

    def __init__(self) -> None:
        self.version = 0
        self.granted = dict.fromkeys(CATS, False)
        self.granted["essential"] = True
        self.examples = 0
        self.revocations = 0
        self.purged = 0  # readings purged over all scenarios


def _bad_payload(kind: str, m: Model, rig: Rig) -> str:
    """An update the device must reject; kind "stale" is well formed and signed."""
    v = m.version + 1
    if kind == "stale":
        # an equal or older version (on odd versions the equal one)
        return rig.update(m.version if m.version % 2 else m.version - 1, ["usage"], [], KEY)
    if kind == "json":
        return '{"version": ' + str(v)
    if kind == "shape":
        return json.dumps({"version": str(v), "grant": "usage"})
    if kind == "unknown":
        return rig.update(v, ["heartbeat"], [], KEY)
    if kind == "essential":
        return rig.update(v, [], ["essential"], KEY)
    if kind == "unsigned":
        return rig.update(v, ["usage"], ["marketing"], None)
    if kind == "badsig":
        return rig.update(v, ["usage"], [], bytes(32))
    doc = json.loads(rig.update(v, [], ["usage"], KEY))
    doc["deny"], doc["grant"] = [], ["usage", "marketing"]  # signed one thing, says another
    return json.dumps(doc)


def _expand(steps: list) -> list:
    out = []
    for s in steps:
        if s[0] != "race":
            out.append(s)
            continue
        _, cat, n, stage, via = s
        out += [("consent", via, [cat], []), ("emit", cat, n)]
        if stage != "buffered":
            out.append(("commit",))
        if stage == "inflight":
            out.append(("pause", 3))
        out.append(("consent", via, [], [cat]))
    return out


def _run(rig: Rig, m: Model, steps: list) -> None:
    start = rig.sync()
    stored = dict.fromkeys(["essential"] + CATS, 0)
    purged = dict.fromkeys(CATS, 0)
    for s in _expand(steps):
        kind = s[0]
        if kind == "emit":
            rig.emit(s[1], s[2])
            if m.granted[s[1]]:
                stored[s[1]] += s[2]
        elif kind == "commit":
            rig.send("w")
        elif kind == "pause":
            if s[1]:
                rig.send("w")
                time.sleep(s[1] / 1000)  # let the forwarder put batches in flight
        elif kind == "consent":
            _, via, grant, deny = s
            deny = [c for c in deny if c not in grant]
            m.version += 1
            payload = rig.update(m.version, grant, deny, KEY)
            reply = rig.consent_local(payload) if via == "local" else rig.consent_mqtt(payload)
            assert reply.get("ok"), reply
            r = rig.wait_receipt(m.version)
            for c in grant:
                m.granted[c] = True
            for c in deny:
                m.granted[c] = False
            assert r["grants"] == m.granted, (r, m.granted)
            assert reply["purged"] == r["purged"]
            for c, n in r["purged"].items():
                purged[c] += n
                m.purged += n
            m.revocations += len(r["purged"])
        else:
            _, bad, via = s
            if bad == "stale" and m.version == 0:
                bad = "json"  # nothing is older than the first version
            payload = _bad_payload(bad, m, rig)
            before = rig.col.receipts.get(DEVICE)
            reply = (
                rig.consent_local(payload)
                if via == "local"
                else rig.consent_mqtt(payload, retain=False)
            )
            assert reply.get("ok") is False and reply.get("error"), reply
            assert bool(reply.get("stale")) == (bad == "stale"), reply
            assert rig.col.receipts.get(DEVICE) is before  # no new receipt: nothing changed
    rig.sync()
    with rig.col.lock:
        got = [r for r in rig.col.readings if r[1] >= start]
    for cat in ["essential"] + CATS:
        received = sum(1 for r in got if r[3] == cat)
        assert stored[cat] == received + purged.get(cat, 0), (
            cat,
            stored[cat],
            received,
            purged.get(cat, 0),
            steps,
        )
    ping = [r for _, n, r in rig.col.replies if n == "ping"][-1]
    assert ping["consent_version"] == m.version
    check_order(rig)
    m.examples += 1


def check_order(rig: Rig) -> None:
    """Property 1 on the collector's arrival order (readings and receipts interleaved)."""
    with rig.col.lock:
        readings = list(rig.col.readings)
        log = list(rig.col.receipt_log)
        refused = rig.col.counts["refused"]
    assert refused == 0, rig.col.stats()
    denied: dict[str, tuple[int, int]] = {}  # cat -> (max seq seen before the receipt, its seq)
    top: dict[str, int] = {}
    li = 0
    for i, r in enumerate(readings + [None]):
        while li < len(log) and log[li][0] <= i:
            rc = log[li][2]
            li += 1
            for cat, on in rc.get("grants", {}).items():
                if on:
                    denied.pop(cat, None)
                elif cat not in denied:
                    denied[cat] = (top.get(cat, 0), rc.get("seq", 0))
        if r is None:
            break
        _, seq, _, cat, _, _ = r
        if cat in denied:
            before, first_denied = denied[cat]
            assert seq <= before, f"{cat} seq {seq} arrived after the receipt denying it"
            assert seq < first_denied, f"{cat} seq {seq} is at/after the denial point"
        top[cat] = max(top.get(cat, 0), seq)


@pytest.fixture(scope="module")
def rig():
    r = Rig()
    r.start_agent()
    r.wait_receipt(0)
    yield r
    r.close()


# No shrinking: the agent is shared across scenarios, so a failure is reported as generated.
@settings(
    max_examples=SCENARIOS,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=scenario)
def _property(rig, model, steps):
    _run(rig, model, steps)


def test_revocation_property(rig):
    """>= 200 generated scenarios against one running agent (CONSENT_SCENARIOS overrides)."""
    model = Model()
    _property(rig, model)
    assert model.examples >= SCENARIOS
    s = rig.col.stats()
    print(
        f"consent property: {model.examples} scenarios, consent v{model.version}, "
        f"{s['unique']} readings received, {model.revocations} revocations, "
        f"{model.purged} readings purged, refused {s['refused']}"
    )
