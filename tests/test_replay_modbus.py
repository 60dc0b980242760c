"""Modbus replay: captures made by the project's meter simulator (host_tools/captures/appliances/
meter.py) with a bad CRC, a timeout, noise and a busy answer in the middle, recorded from the
master's port, as a passive sniff and as replies only, replayed into the real agent (`edgectl
replay --agent`): every good reply's readings come out once, with the right registers and values
and at the recorded times; the exchange parser resynchronises after a bad frame; a config that
asks for registers the capture never recorded says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host_tools.captures import modbus_capture, simulate
from host_tools.captures.appliances import Faults, meter, modbus_request, modbus_response
from tests.test_capture import edgectl

POLLS = 12
INTERVAL_MS = 1000
FAULTS = "bad_crc@3,timeout@6,garbage@9,busy@13,truncate@16"
WALL0 = 946684800000  # the simulator's `started`: 2000-01-01T00:00:00Z


def replay(tmp_path: Path, record: str, config: dict | None = None) -> tuple[dict, list]:
    cap = tmp_path / f"meter-{record}.ecap"
    simulate.simulate("meter", str(cap), POLLS, INTERVAL_MS / 1000, 1, FAULTS, record)
    cfg = tmp_path / "device.json"
    cfg.write_text(json.dumps(config or meter.device_config(INTERVAL_MS)))
    out = tmp_path / f"out-{record}.json"
    proc = edgectl(
        "replay", str(cap), "--agent", "unix-sim", "--config", str(cfg), "--json",
        "--collector-out", str(out), timeout=300,
    )  # fmt: skip
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return summary, json.loads(out.read_text())["readings"]


@pytest.mark.parametrize("record", ["master", "sniff", "replies"])
def test_every_good_reply_is_replayed_with_its_registers_values_and_time(tmp_path, record):
    session = meter.poll_session(POLLS, INTERVAL_MS, Faults.parse(FAULTS, 1))
    good = [x for x in session.exchanges if x.good]
    assert len(good) == 2 * POLLS  # every poll's reads succeeded in the end (after retries)
    assert len(session.exchanges) > len(good)  # and some exchanges were faulty
    summary, readings = replay(tmp_path, record)
    got = [(r[3], r[4]) for r in sorted(readings)]  # (channel, value) in seq order
    assert got == session.expected()
    # each reading is stamped at the virtual time its reply arrived: the recorded reply time,
    # give or take the gaps the agent's master keeps (its t3.5 and timeout timers fired on the
    # virtual clock, not a second later). A reply-only capture cannot show where the master
    # waited out a timeout, so there the reply after one comes up to a timeout early.
    stamps = [r[1] - WALL0 for r in sorted(readings)]
    want = [x.reply_us // 1000 for x in good for _ in meter.readings(x.poll, x.read)]
    slack = 50 if record != "replies" else 300 + 50
    assert max(abs(a - b) for a, b in zip(stamps, want, strict=True)) <= slack, (stamps, want)
    mb = summary["modbus"]
    assert mb["bad_frames"] >= 2 and mb["served"]["unmatched"] == 0
    assert summary["readings"] == len(got) and not summary["why"]
    ledger = summary["inputs"]["inputs[0]"]["bytes"]
    assert ledger["pending"] == 0 and ledger["rejected"] > 0  # the bad frames were counted
    assert ledger["fed"] == ledger["decoded"] + ledger["rejected"] + ledger["garbage"]
    # health's `inputs` during the replay: the agent's last status carried the same counters
    assert (
        summary["health_inputs"]["inputs[0]"]["accepted"]
        == summary["inputs"]["inputs[0]"]["accepted"]
    )


def test_a_config_for_other_registers_says_why_there_are_no_readings(tmp_path):
    cfg = meter.device_config(INTERVAL_MS)
    cfg["inputs"][0]["reads"] = [{"fn": 3, "addr": 500, "count": 1, "map": {"500": 1}}]
    summary, readings = replay(tmp_path, "sniff", cfg)
    assert readings == [] and summary["readings"] == 0
    why = " ".join(summary["why"])
    assert "no recorded exchange" in why and "addr 500" in why and "addr 100 count 2" in why


def test_parser_resynchronises_after_a_bad_crc_and_keeps_noise_with_its_reply():
    req = modbus_request(1, 3, 0, 2)
    good = modbus_response(1, 3, [7, 8])
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    noise = b"\xff\x00"
    items = [
        (0, req),
        (10_000, bad + modbus_request(1, 3, 0, 2)),  # the retry follows the bad frame at once
        (20_000, noise + good),
        (1_000_000, req),  # no answer: timeout
        (2_000_000, req),
        (2_010_000, modbus_response(1, 3, [9, 10])),
    ]
    p = modbus_capture.parse(items, 4000)
    kinds = [(x.kind, x.reply) for x in p.exchanges]
    assert kinds == [
        ("bad", bad),
        ("ok", noise + good),
        ("timeout", None),
        ("ok", modbus_response(1, 3, [9, 10])),
    ]
    assert p.requests == 4 and p.responses == 2 and p.bad_frames == 1 and p.garbage_bytes == 2
    assert [x.latency_ms for x in p.exchanges] == [10, 10, 0, 10]


def test_parser_cuts_a_bad_frame_at_a_silent_gap():
    """A truncated reply followed (after silence) by a good one: two frames, not one."""
    good = modbus_response(1, 4, [1, 2, 3])
    items = [(0, good[:5]), (50_000, good)]
    p = modbus_capture.parse(items, 4000)
    assert [x.kind for x in p.exchanges] == ["bad", "ok"]
    assert p.exchanges[1].count == 3 and p.exchanges[1].addr is None  # reply-only key
