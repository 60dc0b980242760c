"""The device config schema (edge/schema.py): `edgectl check` rejects broken configs naming the
key, accepts every config the repository ships, agrees with the agent at boot, and
docs/CONFIG.md is what the schema generates."""

import copy
import glob
import json
import os
import re

import pytest

from edge import schema
from host_tools import cli
from host_tools.board import check as check_mod
from tests.conftest import ROOT, run_mp

HEATPUMP = {
    "device_id": "heatpump-0007",
    "board": "esp32-generic",
    "channels": [
        {"id": 1, "name": "flow_temp_dC", "category": "essential"},
        {"id": 2, "name": "return_temp_dC", "category": "essential"},
        {"id": 3, "name": "compressor_hz", "category": "diagnostics", "deadband": 1},
        {"id": 4, "name": "room_temp_cC", "category": "usage"},
        {"id": 5, "name": "room_rh_cP", "category": "usage"},
    ],
    "inputs": [
        {
            "type": "modbus",
            "uart": "appliance",
            "slave": 1,
            "interval_ms": 2000,
            "reads": [{"fn": 3, "addr": 0, "count": 3, "map": {"0": 1, "1": 2, "2": 3}}],
        },
        {"type": "sht3x", "channels": {"temp": 4, "rh": 5}, "interval_ms": 5000},
    ],
}


def _set(doc, path, value):
    """Set (or with value DELETE remove) the key at a dotted path with [i] indices."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = doc
    for p in parts[:-1]:
        node = node[int(p[1:-1])] if p.startswith("[") else node[p]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    elif value is DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


DELETE = object()

# (what is broken, path to change, new value, key the message must name)
BROKEN = [
    ("misspelled top-level key", "inputz", [], "inputz"),
    ("misspelled mqtt key", "mqtt", {"prot": 1883}, "mqtt.prot"),
    ("misspelled store key", "store", {"flush_nn": 3}, "store.flush_nn"),
    ("misspelled channel key", "channels[2].deadbnad", 3, "channels[2].deadbnad"),
    ("misspelled input key", "inputs[0].intervall_ms", 5, "inputs[0].intervall_ms"),
    ("misspelled read key", "inputs[0].reads[0].cnt", 2, "inputs[0].reads[0].cnt"),
    ("misspelled target key", "inputs[0].reads[0].map.0", {"ch": 1, "mull": 2}, "map.0.mull"),
    ("misspelled sensor channel", "inputs[1].channels.tmp", 4, "inputs[1].channels.tmp"),
    ("misspelled category key", "categories", {"essential": {"qouta": 5}}, "qouta"),
    ("misspelled wifi key", "wifi", {"sid": "home"}, "wifi.sid"),
    ("key of another input type", "inputs[1].slave", 1, "inputs[1].slave"),
    ("port as a string", "mqtt", {"port": "1883"}, "mqtt.port"),
    ("port out of range", "mqtt", {"port": 70000}, "mqtt.port"),
    ("window zero", "mqtt", {"window": 0}, "mqtt.window"),
    ("flag as number", "store", {"flush_n": True}, "store.flush_n"),
    ("negative flush", "store", {"flush_ms": -1}, "store.flush_ms"),
    ("wildcard in prefix", "mqtt", {"prefix": "a/#"}, "mqtt.prefix"),
    ("slash in device id", "device_id", "a/b", "device_id"),
    ("modbus slave 300", "inputs[0].slave", 300, "inputs[0].slave"),
    ("modbus fn 5", "inputs[0].reads[0].fn", 5, "inputs[0].reads[0].fn"),
    ("modbus count 200", "inputs[0].reads[0].count", 200, "inputs[0].reads[0].count"),
    ("register outside read", "inputs[0].reads[0].map.7", 2, "inputs[0].reads[0].map.7"),
    ("register not a number", "inputs[0].reads[0].map.x", 2, "inputs[0].reads[0].map.x"),
    ("undeclared channel", "inputs[1].channels.rh", 99, "inputs[1].channels.rh"),
    ("missing slave", "inputs[0].slave", DELETE, "inputs[0].slave"),
    ("unknown input type", "inputs[1].type", "bme280", "inputs[1].type"),
    ("sht3x address", "inputs[1].addr", 70, "inputs[1].addr"),
    ("unknown UART name", "inputs[0].uart", "appliancee", "inputs[0].uart"),
    (
        "unknown pin name",
        "inputs[1]",
        {"type": "pulse", "pin": "pulsee", "channels": {"count": 4}},
        "inputs[1].pin",
    ),
    ("unknown board", "board", "esp32-nope", "board"),
    ("undeclared category", "channels[0].category", "secret", "channels[0].category"),
    ("duplicate channel id", "channels[1].id", 1, "channels[1].id"),
    ("channel id 256", "channels[0].id", 256, "channels[0].id"),
    ("bad evict policy", "categories", {"essential": {"evict": "random"}}, "essential.evict"),
    ("no essential category", "categories", {"essential": "x"}, "categories.essential"),
    ("watchdog too short", "watchdog_ms", 500, "watchdog_ms"),
    ("consent key not hex", "consent", {"key": "zz" * 16}, "consent.key"),
    ("tls without ca", "mqtt", {"tls": {"cert": "/secrets/c.der"}}, "mqtt.tls.ca"),
    ("batch too big", "batch", {"max_readings": 5000}, "batch.max_readings"),
    ("inputs not a list", "inputs", {"type": "line"}, "inputs"),
    (
        "tuya DP id 0",
        "inputs[1]",
        {"type": "tuya", "uart": "appliance", "dps": {"0": 1}},
        "inputs[1].dps.0",
    ),
    (
        "line key too long",
        "inputs[1]",
        {"type": "line", "uart": "appliance", "keys": {"K" * 70: 1}},
        "inputs[1].keys",
    ),
    (
        "board override UART typo",
        "board_overrides",
        {"uarts": {"appliance": {"bau": 1}}},
        "board_overrides.uarts.appliance.bau",
    ),
]


@pytest.mark.parametrize("what, path, value, key", BROKEN, ids=[b[0] for b in BROKEN])
def test_check_rejects_broken_config_naming_the_key(what, path, value, key, tmp_path, capsys):
    doc = _set(copy.deepcopy(HEATPUMP), path, value)
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(doc))
    assert cli.main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgectl: "), err
    assert key in err and "config key" in err, err


def test_at_least_thirty_broken_configs():
    assert len(BROKEN) >= 30


def test_the_worked_heat_pump_config_passes(tmp_path, capsys):
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(HEATPUMP))
    assert cli.main(["check", str(cfg), "--board", "esp32-generic"]) == 0
    assert "ok (board esp32-generic, 2 inputs, 5 channels)" in capsys.readouterr().out


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    doc = copy.deepcopy(HEATPUMP)
    doc["mqtt"] = {"prot": 1, "window": 0}
    doc["channels"][0]["naem"] = "x"
    doc["inputs"][0]["slave"] = 300
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(doc))
    assert cli.main(["check", str(cfg)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert any("'mqtt.prot' is unknown; did you mean 'mqtt.port'?" in x for x in lines)
    assert any("channels[0].naem' is unknown; did you mean 'channels[0].name'" in x for x in lines)


def test_board_names_resolve_against_the_named_board(tmp_path, capsys):
    """`meter` is a UART of esp32-generic but not of esp32-c3."""
    doc = copy.deepcopy(HEATPUMP)
    doc["inputs"][0]["uart"] = "meter"
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(doc))
    assert cli.main(["check", str(cfg)]) == 0
    doc["board"] = "esp32-c3"
    cfg.write_text(json.dumps(doc))
    assert cli.main(["check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "'inputs[0].uart': board 'esp32-c3' has no uarts named 'meter'" in err
    assert "(it has: appliance)" in err


def test_check_refuses_a_config_for_another_board(tmp_path, capsys):
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(HEATPUMP))
    assert cli.main(["check", str(cfg), "--board", "esp32-s3"]) == 2
    assert "is 'esp32-generic', but the board is 'esp32-s3'" in capsys.readouterr().err


def test_not_json_names_the_position(tmp_path, capsys):
    cfg = tmp_path / "dev.json"
    cfg.write_text('{"device_id": "x",\n "mqtt": {port: 1}}')
    assert cli.main(["check", str(cfg)]) == 2
    assert "is not valid JSON: Expecting property name" in capsys.readouterr().err


TOP_KEYS = {r[0] for r in schema.rows() if "." not in r[0] and "[" not in r[0]}


def _shipped_configs():
    """Every device config the repository ships: samples/*.json and the JSON blocks of the docs
    that are device configs (every key a top-level config key)."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "samples", "*.json"))):
        out.append((os.path.relpath(path, ROOT), json.load(open(path))))
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [
        os.path.join(ROOT, "README.md"),
        os.path.join(ROOT, "boards", "README.md"),
    ]:
        blocks = re.findall(r"```json\n(.*?)```", open(path).read(), re.S)
        for i, text in enumerate(blocks):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = json.loads("{" + text + "}")  # a fragment: `"key": value`
            if isinstance(doc, dict) and doc and set(doc) <= TOP_KEYS:
                out.append((f"{os.path.relpath(path, ROOT)}#{i}", doc))
    return out


SHIPPED = _shipped_configs()


def test_docs_and_samples_have_configs():
    names = [n for n, _ in SHIPPED]
    assert any(n.startswith("samples/") for n in names)
    assert any(n.startswith("docs/INPUTS.md") for n in names)


@pytest.mark.parametrize("name, doc", SHIPPED, ids=[n for n, _ in SHIPPED])
def test_every_shipped_config_passes(name, doc):
    assert check_mod.problems(copy.deepcopy(doc)) == []


def test_config_reference_page_is_current():
    """docs/CONFIG.md is generated; regenerate with `edgectl check --reference`."""
    with open(os.path.join(ROOT, "docs", "CONFIG.md")) as f:
        assert f.read() == check_mod.reference(), (
            "stale: edgectl check --reference > docs/CONFIG.md"
        )


def test_every_key_has_a_meaning_and_a_known_type():
    for path, types, default, _rng, _cond, meaning in schema.rows():
        assert meaning, path
        assert set(types) <= set(schema._WHAT), path
        if default not in ("-", "!", "*"):
            json.loads(default)


def test_defaults_pass_their_own_check():
    cfg = schema.defaults()
    assert schema.check(copy.deepcopy(cfg)) == []
    assert cfg["mqtt"]["port"] == 1883 and cfg["inputs"] == [] and len(cfg["channels"]) == 6


BOOT = """
import sys, json
from edge import config
try:
    config.load(open(sys.argv[1]).read())
    print("OK")
except config.ConfigError as e:
    print("ERR " + json.dumps(str(e).split(chr(10))))
print("SCHEMA_RESIDENT", "edge.schema" in sys.modules)
"""


@pytest.mark.parametrize("case", [0, 3, 11, 18, 21, 27, 31, 36])
def test_agent_at_boot_reports_what_check_reports(case, tmp_path, micropython):
    """Same schema file, same problems: the host check and the agent under MicroPython."""
    _what, path, value, _key = BROKEN[case]
    doc = _set(copy.deepcopy(HEATPUMP), path, value)
    host = check_mod.problems(copy.deepcopy(doc))
    cfg = tmp_path / "dev.json"
    cfg.write_text(json.dumps(doc))
    script = tmp_path / "boot.py"
    script.write_text(BOOT)
    r = run_mp(str(script), str(cfg))
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ERR "), r.stdout + r.stderr
    assert json.loads(lines[0][4:]) == host
    assert lines[1] == "SCHEMA_RESIDENT False"  # the table is not kept on the heap
