"""Board files: every boards/*.json validates against the documented schema (boards/
README.md), and the device config's board_overrides merge as documented."""

import json
import pathlib
import re

import pytest

from edge import board as boards

ROOT = pathlib.Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "boards").glob("*.json"))
REQUIRED = {"esp32-generic", "esp32-s3", "esp32-c3", "unix-sim"}
CHIPS = {"esp32": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc", "unix": "x64"}
KEYS = {
    "name",
    "chip",
    "description",
    "mpy_arch",
    "flash_offset",
    "flash_size",
    "fs_offset",
    "fs_size",
    "log_partition",
    "firmware",
    "pins",
    "uarts",
    "i2c",
    "sensors",
    "watchdog_ms",
    "config",
}
SENSOR_TYPES = {"sht3x", "ds18b20", "adc", "pulse"}


def _is_int(v, lo=0, hi=2**32):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def validate(b, stem):
    """Return a list of problems (empty when the board file is valid)."""
    bad = []
    missing = KEYS - set(b)
    extra = set(b) - KEYS
    if missing:
        bad.append("missing keys %s" % sorted(missing))
    if extra:
        bad.append("undocumented keys %s" % sorted(extra))
    if b.get("name") != stem:
        bad.append("name %r differs from the file name" % b.get("name"))
    chip = b.get("chip")
    if chip not in CHIPS:
        bad.append("chip %r unknown" % chip)
    elif b.get("mpy_arch") != CHIPS[chip]:
        bad.append("mpy_arch %r does not match chip %s" % (b.get("mpy_arch"), chip))
    size = b.get("flash_size")
    if not _is_int(size, 1) or size & (size - 1):
        bad.append("flash_size must be a power of two")
    else:
        if chip == "esp32" and b.get("flash_offset") != 0x1000:
            bad.append("esp32 firmware goes at 0x1000")
        if chip in ("esp32s3", "esp32c3") and b.get("flash_offset") != 0:
            bad.append("%s firmware goes at 0x0" % chip)
        fo, fs = b.get("fs_offset"), b.get("fs_size")
        if not _is_int(fo) or not _is_int(fs, 4096) or fo % 4096 or fs % 4096 or fo + fs > size:
            bad.append("fs_offset/fs_size must be 4 KiB aligned and inside the flash")
        log = b.get("log_partition")
        if not isinstance(log, dict) or set(log) != {"label", "offset", "size"}:
            bad.append("log_partition needs exactly label, offset and size")
        else:
            lo, ls = log["offset"], log["size"]
            if not isinstance(log["label"], str) or not 0 < len(log["label"]) <= 16:
                bad.append("log_partition.label must be 1..16 characters")
            if not _is_int(lo) or not _is_int(ls, 8 * 4096) or lo % 4096 or ls % 4096:
                bad.append("log_partition offset/size must be 4 KiB aligned, >= 32 KiB")
            elif lo + ls > size or (_is_int(fo) and _is_int(fs) and lo < fo + fs and fo < lo + ls):
                bad.append("log_partition must be inside the flash, apart from the filesystem")
    fw = b.get("firmware") or {}
    if set(fw) != {"file", "sha256"}:
        bad.append("firmware needs exactly file and sha256")
    elif chip != "unix":
        if not isinstance(fw["file"], str) or not fw["file"].endswith(".bin"):
            bad.append("firmware.file must name a .bin")
    if fw.get("sha256") is not None and not re.fullmatch(r"[0-9a-f]{64}", str(fw.get("sha256"))):
        bad.append("firmware.sha256 must be 64 lowercase hex digits or null")
    pins = b.get("pins")
    if not isinstance(pins, dict) or not all(_is_int(v, 0, 48) for v in pins.values()):
        bad.append("pins must map names to GPIO numbers 0..48")
    used = {}
    for name, u in (b.get("uarts") or {}).items():
        if not _is_int(u.get("id"), 0, 2) or not _is_int(u.get("baud", 9600), 300, 5000000):
            bad.append("uarts.%s needs id 0..2 and a baud rate" % name)
        if chip == "unix":
            if not isinstance(u.get("path"), str):
                bad.append("uarts.%s needs a path on unix" % name)
        else:
            for k in ("tx", "rx"):
                if not _is_int(u.get(k), 0, 48):
                    bad.append("uarts.%s.%s must be a GPIO" % (name, k))
                elif chip != "unix":
                    if u[k] in used:
                        bad.append("GPIO %d used twice (%s, %s)" % (u[k], used[u[k]], name))
                    used[u[k]] = name
    i2c = b.get("i2c")
    if not isinstance(i2c, dict) or not all(_is_int(i2c.get(k), 0, 48) for k in ("scl", "sda")):
        bad.append("i2c needs scl and sda GPIOs")
    for i, s in enumerate(b.get("sensors") or []):
        if s.get("type") not in SENSOR_TYPES:
            bad.append("sensors[%d].type %r unknown" % (i, s.get("type")))
        if not isinstance(s.get("channels"), dict):
            bad.append("sensors[%d].channels must be an object" % i)
        if isinstance(s.get("pin"), str) and s["pin"] not in (pins or {}):
            bad.append("sensors[%d].pin names no board pin" % i)
    if not _is_int(b.get("watchdog_ms"), 0, 60000):
        bad.append("watchdog_ms must be 0 (off) .. 60000")
    if not isinstance(b.get("config"), dict):
        bad.append("config must be an object (device config defaults)")
    return bad


def test_the_four_boards_exist():
    assert REQUIRED <= {f.stem for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_board_file_is_valid(path):
    assert validate(json.loads(path.read_text()), path.stem) == []


def test_every_key_is_documented_in_the_readme():
    readme = (ROOT / "boards" / "README.md").read_text()
    for k in KEYS:
        assert "`%s`" % k in readme, k


def test_validator_catches_mistakes():
    good = json.loads((ROOT / "boards" / "esp32-generic.json").read_text())
    for change, needle in [
        ({"chip": "esp8266"}, "chip"),
        ({"flash_offset": 0}, "0x1000"),
        ({"flash_size": 3000000}, "power of two"),
        ({"colour": "red"}, "undocumented"),
        ({"log_partition": {"label": "log", "offset": 2097152, "size": 1048576}}, "apart"),
        ({"log_partition": {"label": "log", "offset": 4194304, "size": 1048576}}, "inside"),
        ({"log_partition": {"label": "log", "offset": 3145728}}, "exactly"),
        ({"firmware": {"file": "x.bin", "sha256": "abc"}}, "sha256"),
        (
            {"uarts": {"a": {"id": 1, "tx": 17, "rx": 16}, "b": {"id": 2, "tx": 17, "rx": 5}}},
            "twice",
        ),
    ]:
        assert any(needle in p for p in validate({**good, **change}, "esp32-generic")), change


def test_board_overrides_merge_over_the_board_file():
    b = boards.load(
        {
            "board": "esp32-generic",
            "board_overrides": {"uarts": {"appliance": {"baud": 115200}}, "pins": {"led": 5}},
        }
    )
    assert b["uarts"]["appliance"] == {"id": 2, "tx": 17, "rx": 16, "baud": 115200}
    assert b["uarts"]["meter"]["de"] == 33  # untouched siblings stay
    assert b["pins"]["led"] == 5 and b["pins"]["onewire"] == 4
    assert boards.resolve(b, "uarts", {"name": "meter", "baud": 19200}, "x")["tx"] == 25
    with pytest.raises(ValueError, match="inputs\\[0\\].uart"):
        boards.resolve(b, "uarts", "nope", "inputs[0].uart")
    with pytest.raises(ValueError, match="board"):
        boards.load({"board": "../etc/passwd"})
