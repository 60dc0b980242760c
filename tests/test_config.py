"""Malformed config gives a clear error naming the bad key, on the host and in the agent."""

import json
import os

import pytest

from edge import config
from tests.conftest import run_mp


def test_defaults_are_valid():
    cfg = config.load()
    assert cfg["device_id"] and "essential" in cfg["categories"]
    assert config.category_ids(cfg)[0] == "essential"


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"mqtt": {"port": "1883"}}, "mqtt.port"),
        ({"mqtt": {"port": 70000}}, "mqtt.port"),
        ({"store": {"flush_n": True}}, "store.flush_n"),
        ({"store": {"flush_ms": -1}}, "store.flush_ms"),
        ({"device_id": "a/b"}, "device_id"),
        ({"mqtt": {"prefix": "x/#"}}, "mqtt.prefix"),
        ({"categories": []}, "categories"),
        ({"categories": {"essential": {"evict": "random"}}}, "categories.essential.evict"),
        ({"channels": [{"id": 1, "name": "t", "category": "nope"}]}, "channels[0].category"),
        (
            {
                "channels": [
                    {"id": 1, "name": "t", "category": "essential"},
                    {"id": 1, "name": "u", "category": "essential"},
                ]
            },
            "channels[1].id",
        ),
        ({"batch": {"max_readings": 0}}, "batch.max_readings"),
    ],
)
def test_bad_key_is_named(doc, key):
    with pytest.raises(config.ConfigError) as e:
        config.load(json.dumps(doc))
    assert f"'{key}" in str(e.value)


def test_not_json_is_rejected():
    with pytest.raises(config.ConfigError, match="not valid JSON"):
        config.load("{mqtt: 1")


def test_agent_refuses_bad_config_with_exit_2(micropython, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"mqtt": {"window": 0}, "store": {"path": str(tmp_path / "s")}}))
    main = os.path.join(os.path.dirname(config.__file__), "main.py")
    r = run_mp(main, str(cfg))
    assert r.returncode == 2
    assert "config error" in r.stderr and "'mqtt.window'" in r.stderr
    assert not (tmp_path / "s").exists()  # nothing was created before validation


def test_agent_without_inputs_or_simulator_refuses_to_start(micropython, tmp_path):
    """No `inputs` and no `sim.enabled`: a config error at boot, never simulated readings
    from a board whose inputs are missing."""
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "board": "esp32-generic",
                "store": {"path": str(tmp_path / "s")},
                "mqtt": {"port": 1},
                "sim": {"seconds": 1},
            }
        )
    )
    main = os.path.join(os.path.dirname(config.__file__), "main.py")
    # bounded run: an agent that starts anyway samples for 1 s and stops at the drain timeout
    r = run_mp(main, str(cfg), timeout=90)
    assert r.returncode == 2, r.stdout
    assert "config error" in r.stderr and "'sim.enabled'" in r.stderr and "'inputs'" in r.stderr
    assert not (tmp_path / "s").exists()  # nothing was created before the check
