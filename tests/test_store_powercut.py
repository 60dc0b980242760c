"""Power-cut harness for both store backends: cut at every flash operation (program or erase)
of a reference workload (appends, commits, acks, block or segment freeing, quota, total-bytes
and partition-full eviction, and for the raw log a purge), and at random points (half of them
cut again during the recovery boot); reboot over the surviving bytes, check the invariants of
tests/mp/powercut.py. The cut loop runs inside one MicroPython process."""

import pytest

from tests.store_mp import mp_last_json

RANDOM_DEFAULT = 300  # random cuts of the raw log in the default run (a shared machine)
RANDOM_SLOW = 4000  # with --slow


def test_reference_workload_exercises_every_segment_store_path(micropython):
    info = mp_last_json("powercut.py", "segments", "count", "1")
    w = info["workload"]
    assert info["ops"] >= 500  # at least 500 cut points
    assert w["acks"] > 0 and w["commits"] > 0 and w["deleted_segments"] > 0
    assert w["dropped"].get("quota:diagnostics", 0) > 0  # per-category quota eviction
    assert w["dropped"].get("full:essential", 0) > 0  # total-bytes eviction
    assert w["overwrites"] == 0  # littlefs never programs a byte twice without an erase


@pytest.mark.parametrize("wseed", ["1", "2"])
def test_reference_workload_exercises_every_raw_log_path(micropython, wseed):
    info = mp_last_json("powercut.py", "rawlog", "count", wseed)
    w = info["workload"]
    assert info["ops"] >= 450
    assert w["acks"] > 0 and w["commits"] > 300 and w["deleted_segments"] > 0
    assert w["erases"] >= 2 * 6  # the 6-block ring goes round at least twice
    assert w["dropped"].get("quota:diagnostics", 0) > 0
    assert w["dropped"].get("purged:diagnostics", 0) > 0
    # odd seeds are bounded by total_bytes, even ones by the partition itself
    key = "full:essential" if wseed == "1" else "nospace:essential"
    assert w["dropped"].get(key, 0) > 0
    assert w["overwrites"] == 0 and w["violations"] == 0  # the NOR rules held


def test_every_cut_point_of_the_segment_store_workload(micropython):
    info = mp_last_json("powercut.py", "segments", "count", "1")
    res = mp_last_json("powercut.py", "segments", "every", "0", str(info["ops"]), "1")
    assert res["cuts"] == info["ops"] >= 500
    assert res["torn"] > 0
    assert res["violations"] == 0, res["errors"]


@pytest.mark.parametrize("wseed", ["1", "2"])
def test_every_cut_point_of_the_raw_log_workload(micropython, wseed):
    info = mp_last_json("powercut.py", "rawlog", "count", wseed)
    res = mp_last_json("powercut.py", "rawlog", "every", "0", str(info["ops"]), wseed)
    assert res["cuts"] == info["ops"]
    assert res["torn"] > 0
    assert res["violations"] == 0, res["errors"]


@pytest.mark.parametrize("backend", ["segments", "rawlog"])
def test_harness_catches_a_commit_that_is_not_durable(micropython, backend):
    res = mp_last_json("powercut.py", backend, "every", "0", "200", "1", "broken")
    assert res["violations"] > 0 and res["errors"]


def _random(backend, n, timeout):
    res = mp_last_json(
        "powercut.py", backend, "random", "20240", str(n), heap="16M", timeout=timeout
    )
    assert res["cuts"] == n and res["recovery_cuts"] == n // 2
    assert res["violations"] == 0, res["errors"]
    return res


def test_random_power_cuts_raw_log(micropython):
    print("raw log random cuts:", _random("rawlog", RANDOM_DEFAULT, 600))


@pytest.mark.slow
def test_random_power_cuts_slow(micropython):
    for backend in ("segments", "rawlog"):
        print(backend, "random cuts:", _random(backend, RANDOM_SLOW, 2400))
