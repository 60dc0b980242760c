"""Power cuts at every flash operation of an update (chunks into slot b while the store keeps
committing, stage, trial boot, confirm) and of a config change (write, stage, boot, confirm):
the board always boots a verified slot and a valid config, falls back to the confirmed pair
when a trial does not confirm, loses no committed reading, and a cut download resumes and
finishes (tests/mp/ota_powercut.py)."""

from __future__ import annotations

import json

import pytest

from tests.ota_rig import make_key, synthetic_bundle
from tests.store_mp import mp_last_json


def mp_target() -> int:
    from host_tools.ota.release import target_mpy

    return target_mpy({"chip": "unix", "name": "unix-sim"})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("ota-cut")
    key = make_key(d)
    mpy = mp_target()
    (d / "v1.bundle").write_bytes(synthetic_bundle(key, "1.0.0", 3, 1500, mpy))
    (d / "v2.bundle").write_bytes(synthetic_bundle(key, "1.1.0", 6, 2500, mpy))
    return d


def test_every_cut_point_of_an_update_and_a_config_change(bundles, micropython):
    info = mp_last_json("ota_powercut.py", "count", str(bundles), heap="8M")
    assert info["ops"] >= 400 and info["erases"] > 0
    res = mp_last_json("ota_powercut.py", "every", "0", str(info["ops"]), str(bundles), heap="8M")
    assert res["cuts"] == info["ops"]
    assert res["violations"] == 0, res["errors"]
    assert res["resumed_downloads"] > 100  # cuts inside the download resumed and finished


def test_harness_catches_a_trial_staged_before_its_slot_is_complete(bundles, micropython):
    res = mp_last_json("ota_powercut.py", "every", "0", "300", str(bundles), "broken", heap="8M")
    assert res["violations"] > 0
    assert any("not bootable" in e for e in res["errors"]), json.dumps(res["errors"][:3])


@pytest.mark.slow
def test_every_cut_point_of_an_update_of_the_real_agent(tmp_path, micropython, monkeypatch):
    """The same with two real agent bundles (about 155 KB each) on a 2 MiB flash."""
    from tests.ota_rig import real_bundle

    make_key(tmp_path)
    key = tmp_path / "release.json"
    real_bundle(tmp_path, "1.0.0", key, "v1.bundle")
    real_bundle(tmp_path, "1.1.0", key, "v2.bundle")
    monkeypatch.setenv("OTA_CUT_BLOCKS", "512")
    info = mp_last_json("ota_powercut.py", "count", str(tmp_path), heap="16M")
    res = mp_last_json(
        "ota_powercut.py", "every", "0", str(info["ops"]), str(tmp_path), heap="16M", timeout=7200
    )
    assert res["cuts"] == info["ops"] and res["violations"] == 0, res["errors"]
