"""The appliance keys in the config schema (edge/schema.py): channel units and decimals, value
mapping (scale, offset, binary layouts, lists of targets), line formats and Tuya variants are
accepted when right and rejected naming the key when wrong, and the agent builds what the
schema accepts (edge.inputs)."""

import copy

import pytest

from edge import inputs, schema


class Hal:
    """The hardware edge: UARTs that never receive."""

    def uart(self, spec):
        return self

    def write(self, b):
        return len(b)

    def readinto(self, buf):
        return 0

    def wall_ms(self):
        return None


GOOD = {
    "device_id": "washer-0042",
    "board": "unix-sim",
    "channels": [
        {"id": 1, "name": "water_temp", "category": "essential", "unit": "°C", "decimals": 2},
        {"id": 2, "name": "power", "category": "essential", "unit": "W", "decimals": 1},
        {"id": 3, "name": "flags", "category": "essential"},
        {"id": 4, "name": "bat", "category": "essential", "unit": "%"},
    ],
    "inputs": [
        {
            "type": "tuya",
            "uart": {"path": "/dev/null"},
            "protocol": "low_power",
            "tz_offset_min": 60,
            "dps": {
                "1": {"ch": 1, "scale": 0.1},
                "9": [
                    {"ch": 3, "slice": {"offset": 0, "type": "u16", "bit": 3}},
                    {"ch": 4, "raw": {"offset": 2, "size": 1}},
                ],
            },
        },
        {
            "type": "modbus",
            "uart": {"path": "/dev/null"},
            "slave": 1,
            "reads": [
                {
                    "fn": 4,
                    "addr": 0,
                    "count": 6,
                    "map": {
                        "0": {"ch": 2, "type": "f32", "swap": "word"},
                        "2": [{"ch": 3, "bits": [0, 4]}, {"ch": 4, "bit": 15}],
                        "3": {"ch": 1, "type": "i16", "scale": 0.0555556, "offset": -17.77778},
                    },
                }
            ],
        },
        {
            "type": "line",
            "uart": {"path": "/dev/null"},
            "format": "regex",
            "pattern": r"T=(?P<t>-?[0-9.]+)",
            "groups": {"t": 1},
        },
        {
            "type": "line",
            "uart": {"path": "/dev/null"},
            "format": "csv",
            "sep": ";",
            "columns": {"bat": 4},
            "prefix": "log:",
        },
    ],
}


def test_good_config_passes_the_schema_and_builds():
    cfg = copy.deepcopy(GOOD)
    assert schema.check(cfg) == []
    srcs = inputs.build(cfg, Hal())
    assert len(srcs) == 4


@pytest.mark.parametrize(
    "path, value, key",
    [
        (("channels", 0, "decimals"), 7, "channels[0].decimals"),
        (("channels", 0, "unit"), "", "channels[0].unit"),
        (("inputs", 0, "protocol"), "battery", "inputs[0].protocol"),
        (("inputs", 0, "tz_offset_min"), 5000, "inputs[0].tz_offset_min"),
        (("inputs", 0, "dps", "1", "scale"), "0.1", "inputs[0].dps.1.scale"),
        (("inputs", 0, "dps", "9", 0, "slice", "type"), "u12", "inputs[0].dps.9[0].slice.type"),
        (("inputs", 0, "dps", "9", 1, "ch"), 99, "inputs[0].dps.9[1]"),
        (("inputs", 1, "reads", 0, "map", "0", "swap"), "nibble", "inputs[1].reads[0].map.0.swap"),
        (("inputs", 1, "reads", 0, "map", "0", "type"), "f16", "inputs[1].reads[0].map.0.type"),
        (("inputs", 1, "reads", 0, "count"), 1, "inputs[1].reads[0].map.0"),  # f32 needs 2
        (("inputs", 2, "format"), "xml", "inputs[2].format"),
        (("inputs", 2, "sep"), ";;", "inputs[2].sep"),
        (
            ("inputs", 3, "columns", "bat"),
            {"ch": 4, "offset": "x"},
            "inputs[3].columns.bat.offset",
        ),
    ],
)
def test_schema_names_the_bad_key(path, value, key):
    cfg = copy.deepcopy(GOOD)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    problems = schema.check(cfg)
    assert any("'%s" % key in p for p in problems), problems
