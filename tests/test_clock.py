"""Clock (docs/FORMAT.md 4): readings taken before the first NTP sync carry
(boot, ticks) with FLAG_CLOCK_UNSYNCED and leave the device as wall-clock ms once time is
known; readings of a past boot stay flagged and the collector keeps them boot-relative."""

from __future__ import annotations

import json
import time

import pytest

from edge import codec
from edge.clock import Clock, Stamper, from_config
from host_tools.agent.run import AgentProcess, agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector

UNSYNCED = codec.FLAG_CLOCK_UNSYNCED


class FakeHal:
    """The HAL's clock surface: NTP answers from `ok_at` ticks on, wall = 1e12 + ticks."""

    def __init__(self, ok_at: int) -> None:
        self.now = 0
        self.ok_at = ok_at

    def ntp_sync(self, host):
        return self.now >= self.ok_at

    def wall_ms(self):
        return 10**12 + self.now if self.now >= self.ok_at else None


def test_ntp_retries_with_backoff_then_maps_ticks_to_wall():
    hal = FakeHal(ok_at=7000)
    c = Clock(hal)
    tries = []
    for t in range(0, 20000, 100):
        hal.now = t
        if c.tick(t) or (c.attempts and (not tries or tries[-1] != c.attempts)):
            tries.append(c.attempts)
    assert c.synced() and c.failures == 3  # attempts at 0, 2000, 6000 fail; 14000 syncs
    assert c.sync_ticks == 14000 and c.to_wall(13000) == 10**12 + 13000
    assert c.to_wall((1 << 30) - 5) == c.sync_wall - 14005  # a stamp just before a tick wrap


def _writer():
    w = codec.BatchWriter("dev", 2048)
    w.start("essential", 7, 0)
    return w


def test_stamper_converts_only_unsynced_stamps_of_the_current_boot():
    hal = FakeHal(ok_at=0)
    c = Clock(hal)
    w = _writer()
    s = Stamper(c, w, boot=7)
    assert s.add(1, 500, 7, UNSYNCED, 1, 10)  # not synced yet: unchanged
    assert w.flags == UNSYNCED and w.base_ts == 500
    hal.now = 1000
    assert c.tick(1000)
    w = _writer()
    s.writer = w
    assert s.add(2, 600, 7, UNSYNCED, 1, 11) and s.add(3, 10**12 + 1001, 7, 0, 1, 12)
    batch = codec.decode_batch(bytes(w.finish()))
    assert batch["flags"] == 0 and s.converted == 1
    assert [r[1] for r in batch["readings"]] == [10**12 + 600, 10**12 + 1001]
    w = _writer()
    s.writer = w
    assert s.add(4, 900, 6, UNSYNCED, 1, 13)  # a past boot: its ticks cannot be mapped
    assert w.flags == UNSYNCED and w.boot == 6 and w.base_ts == 900
    assert not s.add(5, 10**12 + 1002, 7, 0, 1, 14)  # flags change: a new batch
    assert s.converted == 1


@pytest.mark.parametrize(
    "clock,msg",
    [
        ("x", "'clock' must be an object"),
        ({"synced_at_ms": -1}, "'clock.synced_at_ms'"),
        ({"synced_at_ms": 10}, "simulated clock"),  # FakeHal has no simulate_ntp
        ({"ntp_host": ""}, "'clock.ntp_host'"),
    ],
)
def test_clock_config_errors_name_the_key(clock, msg):
    with pytest.raises(ValueError, match=msg):
        from_config({"clock": clock}, FakeHal(0))


def test_collector_maps_boot_relative_stamps_with_the_status_clock():
    col = Collector("127.0.0.1", 1)
    try:
        col.status["d"] = {
            "clock": {"synced": True, "boot": 3, "sync_ticks": 100, "sync_wall_ms": 10**12}
        }
        assert col.wall_ms("d", 3, 50) == 10**12 - 50
        assert col.wall_ms("d", 3, (1 << 30) - 10) == 10**12 - 110  # ticks wrapped
        assert col.wall_ms("d", 2, 50) is None  # another boot
    finally:
        col.close()


def _wait_log(agent: AgentProcess, text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(text in line for line in agent.logs):
            return True
        time.sleep(0.05)
    return False


def test_readings_before_the_sync_arrive_as_wall_clock(agents, tmp_path):
    """The broker comes up only after the simulated NTP success: everything sampled before it
    waited in the store with (boot, ticks) and is converted when forwarded."""
    port = broker_mod.free_port()
    dev = "clock-1"
    t0 = time.time() * 1000
    cfg = agent_config(
        "unix-sim",
        device_id=dev,
        mqtt={"port": port},
        sim={"seconds": 3, "rate_hz": 300},
        clock={"synced_at_ms": 1000},
        status_detail="full",  # `clock.converted` is in the full document (docs/HEALTH.md 1)
    )
    a = agents(cfg, workdir=str(tmp_path))
    births: list[dict] = []
    assert _wait_log(a, "clock: synced after 2 attempts", 15), a.output
    with broker_mod.start(port=port) as b, Collector(b.host, b.port) as col:
        col.client.message_callback_add(
            f"edge/{dev}/status",
            lambda c, u, m: births.append(codec.decode_status(json.loads(m.payload))),
        )
        a.wait(60)
        t1 = time.time() * 1000
        final = a.final
        assert col.wait_for(lambda c: c.stats()["unique"] >= final["appended"], 15)
        readings = sorted(col.readings, key=lambda r: r[1])
        boot_rel = dict(col.boot_relative.get(dev, {}))
    assert len(readings) == final["appended"] >= 250
    assert not boot_rel  # nothing left flagged
    ts = [r[2] for r in readings]
    assert t0 - 1000 <= ts[0] <= t0 + 1500 and ts[-1] <= t1
    assert all(b >= a - 5 for a, b in zip(ts, ts[1:], strict=False))  # ticks and wall agree
    first = births[0]
    assert first["clock"]["synced"] and first["store_depth"] > 100
    assert first["oldest_unsent_age_ms"] >= 1000  # waited at least until the sync
    assert births[-1]["clock"]["converted"] >= 100


def test_readings_of_a_past_unsynced_boot_stay_boot_relative(agents, broker, tmp_path):
    dev = "clock-2"
    # boot 1: the clock never syncs and there is no broker; the process is killed
    cfg = agent_config(
        "unix-sim",
        device_id=dev,
        mqtt={"port": broker_mod.free_port()},
        sim={"seconds": 30, "rate_hz": 300},
        clock={"synced_at_ms": 10**9},
    )
    a1 = agents(cfg, workdir=str(tmp_path))
    end = time.monotonic() + 20
    while a1.stats.get("committed", 0) < 150 and time.monotonic() < end:
        time.sleep(0.1)
    assert a1.stats.get("committed", 0) >= 150, a1.output
    a1.stop()  # SIGTERM: no clean shutdown
    with Collector(broker.host, broker.port) as col:
        cfg = agent_config(
            "unix-sim",
            device_id=dev,
            mqtt={"port": broker.port},
            sim={"seconds": 1, "rate_hz": 300},
        )
        agents.run(cfg, 60, workdir=str(tmp_path))
        assert col.wait_for(lambda c: c.status.get(dev, {}).get("state") == "stopped", 10)
        readings = list(col.readings)
        rel = dict(col.boot_relative[dev])
        status = col.status[dev]
    old = [r for r in readings if r[1] in rel]
    new = [r for r in readings if r[1] not in rel]
    assert len(old) >= 150 and set(rel.values()) == {1}
    assert all(0 <= r[2] < 1 << 30 for r in old)  # ticks of boot 1, not Unix time
    assert max(r[1] for r in old) < min(r[1] for r in new)
    assert all(r[2] > 1.6e12 for r in new)  # boot 2 was synced from the start
    assert status["boot"] == 2 and status["reset_cause"] == "hard"  # killed without notice
    assert col.wall_ms(dev, 1, old[0][2]) is None
