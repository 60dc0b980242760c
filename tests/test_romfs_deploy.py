"""`edgectl deploy --romfs` against the virtual board with the real mpremote: the compiled agent
goes into the board's ROM partition (`mpremote romfs deploy`, the vboard's `vfs.rom_ioctl` over
IMAGE.rom) and the self-test imports it from /rom/lib; an unchanged image is not rewritten; a
plain deploy afterwards runs the copied agent, not the one left in ROM."""

import json

import pytest

from host_tools import cli
from host_tools.board import deploy as dp
from host_tools.board.romfs import HEADER, board_rom
from host_tools.board.vboard import rom_image
from host_tools.errors import ToolError

try:  # tests/ may or may not be a package
    from tests.test_deploy import board_files, device_json, vboard  # noqa: F401
except ImportError:
    from test_deploy import board_files, device_json, vboard  # noqa: F401


def test_romfs_deploy_runs_in_place_and_is_not_rewritten(vboard, tmp_path, capsys):
    dev = device_json(tmp_path)
    argv = ["deploy", "--board", "unix-sim", "--port", str(vboard.link), "--device", str(dev)]
    assert cli.main(argv + ["--offline", "--romfs"]) == 0
    out = capsys.readouterr().out
    assert "the agent runs in place from /rom/lib/edge/__init__.mpy" in out, out
    assert "imports: pass: edge.main.run from /rom/lib/edge/main.mpy" in out, out
    assert rom_image(vboard.image).read_bytes()[:3] == HEADER
    files = board_files(vboard)
    assert not any(p.startswith("/lib/edge/") for p in files), sorted(files)
    manifest = json.loads(vboard.mpremote("cat", "/.deploy.json").strip().splitlines()[-1])
    assert len(manifest["romfs"]) == 64

    again = dp.deploy("unix-sim", str(vboard.link), dev, network=False, romfs=True, log=print)
    assert again.romfs_bytes == 0 and again.copied == [], again  # the image was already there
    assert again.romfs == manifest["romfs"]


@pytest.mark.slow  # two full deploys, about 15 s
def test_plain_deploy_after_romfs_runs_the_copied_agent(vboard, tmp_path):
    dev = device_json(tmp_path)
    dp.deploy("unix-sim", str(vboard.link), dev, network=False, romfs=True, log=print)
    # a plain deploy copies the agent to /lib: that one must boot and be what the self-test
    # checks, though the old image is still mounted at /rom (before: /rom/lib came first)
    plain = dp.deploy("unix-sim", str(vboard.link), dev, network=False, log=print)
    imports = [c for c in plain.selftest["checks"] if c[0] == "imports"][0]
    assert imports[2] == "edge.main.run from /lib/edge/main.mpy", imports


def test_board_without_rom_partition_or_room_is_refused():
    with pytest.raises(ToolError, match="no ROM partition"):
        board_rom(lambda code: "none\n", HEADER + b"x")
    with pytest.raises(
        ToolError, match="ROMFS image is 1000 bytes, the board's ROM partition 512"
    ):
        board_rom(lambda code: "512 00\n", HEADER + bytes(997))


def test_romfs_and_frozen_exclude_each_other(tmp_path):
    with pytest.raises(ToolError, match="exclude each other"):
        dp.deploy("unix-sim", "/nonexistent", device_json(tmp_path), frozen=True, romfs=True)
