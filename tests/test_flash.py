"""`edgectl flash`: dry-run per board file, sha256 pinning and the error paths (docs/DEPLOY.md 1).
No hardware: the port-facing paths are shown with a missing port and with a pty that
answers nothing (esptool's connect fails fast there)."""

import json
import os
import pty
import shlex

import pytest
from pathlib import Path

from host_tools import cli
from host_tools.board import partitions
from host_tools.board.flash import parse_offset
from host_tools.paths import board_file as load_board, boards_dir

BOARDS_DIR = Path(boards_dir())

ESP_BOARDS = sorted(
    p.stem for p in BOARDS_DIR.glob("*.json") if load_board(p.stem)["chip"].startswith("esp")
)


def run(argv, capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["host_tools.board.flash"])
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_esp_board_is_covered():
    assert {"esp32-generic", "esp32-s3", "esp32-c3"} <= set(ESP_BOARDS)


@pytest.mark.parametrize("name", ESP_BOARDS)
def test_dry_run_matches_board_file(name, capsys, monkeypatch):
    board = json.loads((BOARDS_DIR / f"{name}.json").read_text())
    rc, out, _ = run(
        ["flash", "--board", name, "--port", "/dev/ttyUSB9", "--dry-run"], capsys, monkeypatch
    )
    assert rc == 0
    argv = shlex.split(out.strip().splitlines()[-1])
    assert argv[:2] == ["esptool", "--chip"] and argv[2] == board["chip"]
    assert argv[argv.index("--port") + 1] == "/dev/ttyUSB9"
    assert argv[argv.index("--flash-size") + 1] == f"{board['flash_size'] >> 20}MB"
    assert "write-flash" in argv and "--erase-all" not in argv
    assert int(argv[-2], 16) == parse_offset(board["flash_offset"])
    assert argv[-1] == board["firmware"]["file"]


def test_known_offsets():
    # MicroPython download pages: esp32 at 0x1000, esp32-s3 / esp32-c3 at 0x0.
    assert parse_offset(load_board("esp32-generic")["flash_offset"]) == 0x1000
    assert parse_offset(load_board("esp32-s3")["flash_offset"]) == 0
    assert parse_offset(load_board("esp32-c3")["flash_offset"]) == 0


def stock_firmware(path, board="esp32-generic"):
    """A stand-in for a micropython.org combined image: the app header byte, padding and
    MicroPython's own partition table at flash offset 0x8000 (its partitions-4MiB.csv, or
    -8MiB for 8 MiB boards)."""
    b = load_board(board)
    vfs = b["flash_size"] - 0x200000
    table = partitions.build_table(
        [
            partitions.Partition("nvs", 1, 0x02, 0x9000, 0x6000),
            partitions.Partition("phy_init", 1, 0x01, 0xF000, 0x1000),
            partitions.Partition("factory", 0, 0x00, 0x10000, 0x1F0000),
            partitions.Partition("vfs", 1, 0x81, 0x200000, vfs),
        ]
    )
    at = partitions.TABLE_OFFSET - parse_offset(b["flash_offset"])
    path.write_bytes(b"\xe9" + bytes(at - 1) + table + bytes(8192))
    return path


def _pinned_board(tmp_path, sha):
    fw = stock_firmware(tmp_path / "fw.bin")
    board = dict(load_board("esp32-generic"), name="pinned")
    board["firmware"] = {"file": "fw.bin", "sha256": sha}
    path = tmp_path / "pinned.json"
    path.write_text(json.dumps(board))
    return path, fw


def test_sha256_pinned_match_and_mismatch(tmp_path, capsys, monkeypatch):
    import hashlib

    path, fw = _pinned_board(tmp_path, None)
    good = hashlib.sha256(fw.read_bytes()).hexdigest()
    path, fw = _pinned_board(tmp_path, good)
    argv = [
        "flash",
        "--board",
        str(path),
        "--port",
        "/dev/x",
        "--firmware",
        str(fw),
        "--erase",
        "--dry-run",
    ]
    rc, out, _ = run(argv, capsys, monkeypatch)
    assert rc == 0 and "matches the board file" in out and "--erase-all" in out
    path, fw = _pinned_board(tmp_path, "0" * 64)
    argv[2] = str(path)
    rc, out, err = run(argv, capsys, monkeypatch)
    assert rc == 2 and err.count("\n") == 1 and "does not match" in err


def test_missing_port_one_line_hint(tmp_path, capsys, monkeypatch):
    fw = stock_firmware(tmp_path / "fw.bin", "esp32-s3")
    argv = [
        "flash",
        "--board",
        "esp32-s3",
        "--port",
        str(tmp_path / "ttyUSB0"),
        "--firmware",
        str(fw),
    ]
    rc, _, err = run(argv, capsys, monkeypatch)
    assert rc == 2 and err.count("\n") == 1
    assert "not found" in err and "cable" in err and "driver" in err


def test_board_without_firmware_is_refused(capsys, monkeypatch):
    rc, _, err = run(
        ["flash", "--board", "unix-sim", "--port", "/dev/null", "--dry-run"], capsys, monkeypatch
    )
    assert rc == 2 and "has no firmware to flash" in err


def test_missing_firmware_and_unknown_board(capsys, monkeypatch):
    rc, _, err = run(["flash", "--board", "esp32-c3", "--port", "/dev/null"], capsys, monkeypatch)
    assert rc == 2 and "firmware file" in err and err.count("\n") == 1
    rc, _, err = run(["flash", "--board", "nope", "--port", "/dev/null"], capsys, monkeypatch)
    assert rc == 2 and "unknown board 'nope'" in err


def test_silent_port_gives_hint(tmp_path, capsys, monkeypatch):
    # A pty nobody answers on: esptool cannot sync; we turn that into one line + hint.
    m, s = pty.openpty()
    fw = stock_firmware(tmp_path / "fw.bin")
    monkeypatch.setenv("ESPTOOL_CONNECT_ATTEMPTS", "1")
    try:
        argv = [
            "flash",
            "--board",
            "esp32-generic",
            "--port",
            os.ttyname(s),
            "--firmware",
            str(fw),
        ]
        rc, _, err = run(argv, capsys, monkeypatch)
    finally:
        os.close(m)
        os.close(s)
    # esptool may log its own warnings first; our error is exactly one `edgectl:` line, last.
    lines = err.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("edgectl: esptool:") and "cable" in lines[-1]
    assert sum(line.startswith("edgectl:") for line in lines) == 1


@pytest.mark.parametrize("name", ESP_BOARDS)
def test_flash_writes_the_board_partition_table(name, tmp_path, capsys, monkeypatch):
    """The image flashed carries the board's table: littlefs cut to fs_size, the raw log
    partition added (boards/README.md), the firmware's other partitions as they were."""
    board = load_board(name)
    fw = stock_firmware(tmp_path / "fw.bin", name)
    argv = ["flash", "--board", name, "--port", "/dev/x", "--firmware", str(fw), "--dry-run"]
    rc, out, _ = run(argv, capsys, monkeypatch)
    assert rc == 0 and "partition table: " in out
    image = shlex.split(out.strip().splitlines()[-1])[-1]
    data = open(image, "rb").read()
    at = partitions.TABLE_OFFSET - parse_offset(board["flash_offset"])
    parts = {p.label: p for p in partitions.parse_table(data[at : at + partitions.TABLE_MAX])}
    log = board["log_partition"]
    assert (parts["vfs"].offset, parts["vfs"].size) == (board["fs_offset"], board["fs_size"])
    assert parts[log["label"]].offset == log["offset"] and parts[log["label"]].size == log["size"]
    assert parts[log["label"]].type == 1 and parts["factory"].size == 0x1F0000
    assert len(data) == fw.stat().st_size and data[:at] == fw.read_bytes()[:at]
    # --keep-partitions flashes the image as it is
    rc, out, _ = run(argv + ["--keep-partitions"], capsys, monkeypatch)
    assert rc == 0 and shlex.split(out.strip().splitlines()[-1])[-1] == str(fw)


def test_image_without_a_partition_table_is_refused(tmp_path, capsys, monkeypatch):
    fw = tmp_path / "app.bin"
    fw.write_bytes(b"\xe9" + bytes(100))  # an app image alone, no bootloader or table
    argv = ["flash", "--board", "esp32-generic", "--port", "/dev/x", "--firmware", str(fw)]
    rc, _, err = run(argv + ["--dry-run"], capsys, monkeypatch)
    assert rc == 2 and err.count("\n") == 1 and "no partition table" in err
    assert "--keep-partitions" in err
    bad = bytearray(stock_firmware(tmp_path / "fw.bin").read_bytes())
    bad[0x7000 + 40] ^= 1  # an entry changed: its MD5 no longer matches
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    argv[-1] = str(tmp_path / "bad.bin")
    rc, _, err = run(argv + ["--dry-run"], capsys, monkeypatch)
    assert rc == 2 and "MD5" in err
