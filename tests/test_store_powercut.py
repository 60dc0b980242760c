"""Power-cut harness (issue 3): cut at every flash operation of a reference workload
(appends, commits, acks, segment deletion, quota and total-bytes eviction), reboot over the
surviving bytes, check the invariants. The cut loop runs inside one MicroPython process."""

import pytest

from tests.store_mp import mp_last_json


def test_reference_workload_exercises_every_store_path(micropython):
    info = mp_last_json("powercut.py", "count", "1")
    w = info["workload"]
    assert info["ops"] >= 500  # at least 500 cut points
    assert w["acks"] > 0 and w["commits"] > 0 and w["deleted_segments"] > 0
    assert w["dropped"].get("quota:diagnostics", 0) > 0  # per-category quota eviction
    assert w["dropped"].get("full:essential", 0) > 0  # total-bytes eviction
    assert w["overwrites"] == 0  # littlefs never programs a byte twice without an erase


def test_every_cut_point_of_the_reference_workload(micropython):
    info = mp_last_json("powercut.py", "count", "1")
    res = mp_last_json("powercut.py", "every", "0", str(info["ops"]), "1")
    assert res["cuts"] == info["ops"] >= 500
    assert res["torn"] > 0
    assert res["violations"] == 0, res["errors"]


def test_harness_catches_a_commit_that_is_not_durable(micropython):
    res = mp_last_json("powercut.py", "every", "0", "200", "1", "broken")
    assert res["violations"] > 0 and res["errors"]


@pytest.mark.slow
def test_random_power_cuts(micropython, request):
    if not request.config.getoption("--slow", default=False):
        pytest.skip("slow: run with --slow")
    res = mp_last_json("powercut.py", "random", "20240", "1500", timeout=900)
    assert res["cuts"] == 1500
    assert res["violations"] == 0, res["errors"]
