"""`edgectl deploy` against the virtual board with the real mpremote (docs/DEPLOY.md 5): the
deployed agent runs on the board and its readings reach mosquitto; an unchanged re-deploy copies
nothing; a deploy cut off mid-copy is detected and repaired; version traps are refused."""

import hashlib
import json
import os

import pytest

from host_tools import cli
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.board import deploy as dp
from host_tools.board.vboard import log_image
from host_tools.errors import ToolError

try:  # tests/ may or may not be a package
    from tests.test_vboard import VBoard
except ImportError:
    from test_vboard import VBoard


@pytest.fixture
def vboard(tmp_path):
    vb = VBoard(tmp_path).start()
    yield vb
    vb.stop()


def device_json(tmp_path, mqtt_port=1883, **extra):
    cfg = {
        "device_id": "vb-0001",
        "board": "unix-sim",
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
        "sim": {"enabled": True},  # the unix board's simulated fridge: no inputs configured
        **extra,
    }
    path = tmp_path / "vb-0001.json"
    path.write_text(json.dumps(cfg))
    return path


def board_files(vb):
    out = vb.mpremote(
        "exec", dp._mp_script("deploy_scan.py", ROOTS=list(dp.ROOTS), TOP=list(dp.TOP_FILES))
    )
    return json.loads(out.strip().splitlines()[-1])["files"]


def test_deploy_run_agent_readings_arrive_then_noop(vboard, tmp_path, capsys):
    with broker_mod.start(prefer="mosquitto") as brk, Collector(brk.host, brk.port) as col:
        dev = device_json(
            tmp_path,
            brk.port,
            sim={"enabled": True, "rate_hz": 200, "count": 0, "seconds": 0, "seed": 3},
        )
        argv = ["deploy", "--board", "unix-sim", "--port", str(vboard.link), "--device", str(dev)]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert "self-test: pass" in out and "copy /lib/edge/main.mpy" in out
        files = board_files(vboard)
        assert not any(p.endswith(".py") and p.startswith("/lib/") for p in files)
        # The manifest lists exactly what is on the board, with matching hashes.
        manifest = json.loads(vboard.mpremote("cat", ":.deploy.json"))
        assert manifest["files"] == {p: h for p, h in files.items() if p != dp.MANIFEST}

        # Unchanged re-deploy: nothing copied, nothing removed.
        rep = dp.deploy("unix-sim", str(vboard.link), dev)
        assert rep.copied == [] and rep.removed == [] and rep.selftest["ok"], rep

        # Power-cycle: /main.py starts the agent from the littlefs image; readings arrive.
        vboard.stop()
        vboard.start()
        ok = col.wait_for(lambda c: c.stats()["unique"] >= 50, timeout=30)
        st = col.stats()
        assert ok, (st, vboard.proc.stdout)
        assert st["gaps"].get("vb-0001") == 0  # readings from this device, no sequence gaps
        # the readings went to the board's raw log partition, not to littlefs (boards/README.md)
        assert b"ELOG" in log_image(vboard.image).read_bytes()


def test_cut_deploy_is_detected_and_repaired(vboard, tmp_path, monkeypatch, capsys):
    dev = device_json(tmp_path)
    real_write = dp.Board.write
    calls = {"n": 0}

    def cut_write(self, path, data):
        calls["n"] += 1
        if calls["n"] == 3:
            # Half a file, then the cable comes out.
            self.run(
                f"f=open({path + dp.TMP_SUFFIX!r},'wb')\nf.write({data[: len(data) // 2]!r})\nf.close()"
            )
            os.close(self.t.serial.fd)  # the cable comes out: every later read/write fails
        return real_write(self, path, data)

    monkeypatch.setattr(dp.Board, "write", cut_write)
    argv = ["deploy", "--board", "unix-sim", "--port", str(vboard.link), "--device", str(dev)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lost the board" in err
    files = board_files(vboard)
    assert dp.MANIFEST not in files and any(p.endswith(dp.TMP_SUFFIX) for p in files)
    monkeypatch.setattr(dp.Board, "write", real_write)

    rep = dp.deploy("unix-sim", str(vboard.link), dev, log=lambda m: None, network=False)
    assert rep.repaired and rep.selftest["ok"], rep
    files = board_files(vboard)
    want = dp.build_files(dp.compiler_for(2822), dev, dp.board_file("unix-sim"))
    assert {p: hashlib.sha256(v).hexdigest() for p, v in want.items()} == {
        p: h for p, h in files.items() if p != dp.MANIFEST
    }


def test_stale_source_that_would_shadow_is_removed(vboard, tmp_path):
    dev = device_json(tmp_path)
    stale = tmp_path / "codec.py"
    stale.write_text("BROKEN = 1\n")
    vboard.mpremote("mkdir", ":lib", check=False)
    vboard.mpremote("mkdir", ":lib/edge")
    vboard.mpremote("fs", "cp", str(stale), ":lib/edge/codec.py")
    rep = dp.deploy("unix-sim", str(vboard.link), dev, log=lambda m: None, network=False)
    assert "/lib/edge/codec.py" in rep.removed and rep.selftest["ok"]
    assert "codec.mpy" in vboard.mpremote("exec", "import edge.codec;print(edge.codec.__file__)")


def test_incomplete_deploy_main_refuses_to_start(vboard, tmp_path):
    dev = device_json(tmp_path)
    dp.deploy("unix-sim", str(vboard.link), dev, log=lambda m: None, network=False)
    vboard.mpremote("rm", ":.deploy.json")
    out = vboard.mpremote("exec", "exec(open('/main.py').read())")
    assert "incomplete deploy" in out


def test_mpy_format_matching_and_refusal(tmp_path):
    comp = dp.compiler_for(0x2B06, "1.25.0")  # ESP32: v6.3, xtensawin
    assert comp.arch == "xtensawin"
    mpy = dp.compile_module(comp, dp.EDGE_DIR / "codec.py", "edge/codec.py")
    assert mpy[:3] == b"M\x06\x00"  # bytecode only: no arch in the header
    viper = tmp_path / "fast.py"
    viper.write_text("@micropython.viper\ndef f(x: int) -> int:\n    return x + 1\n")
    assert dp.compile_module(comp, viper, "edge/fast.py")[:3] == b"M\x06\x2b"  # arch 10, sub 3
    assert dp.compiler_for(0x0B06).arch == "x64"
    with pytest.raises(ToolError, match=r"\.mpy v3\.0"):
        dp.compiler_for(3, "1.9.4")


def test_cli_errors_are_one_line(tmp_path, capsys):
    dev = device_json(tmp_path)
    assert (
        cli.main(
            [
                "deploy",
                "--board",
                "unix-sim",
                "--port",
                str(tmp_path / "tty"),
                "--device",
                str(dev),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not found" in err and "cable" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ToolError, match="not valid JSON"):
        dp.device_config(bad, dp.board_file("unix-sim"))
    other = device_json(tmp_path, board="esp32-s3")
    with pytest.raises(ToolError, match="is 'esp32-s3', but the board is 'unix-sim'"):
        dp.device_config(other, dp.board_file("unix-sim"))


def test_frozen_manifest_lists_the_tree(tmp_path):
    out = dp.write_frozen_manifest(tmp_path / "manifest.py")
    assert str(dp.EDGE_DIR / "manifest.py") in out.read_text()
    modules = []
    ns = {
        "__file__": str(dp.EDGE_DIR / "manifest.py"),
        "module": lambda rel, base_path, opt: modules.append(rel),
    }
    exec(compile((dp.EDGE_DIR / "manifest.py").read_text(), "manifest.py", "exec"), ns)
    assert "edge/main.py" in modules and "edge/manifest.py" not in modules
    assert sorted(modules) == sorted(
        f"edge/{p.relative_to(dp.EDGE_DIR).as_posix()}"
        for p in dp.source_files(platform="esp32")
        if p.suffix == ".py"
    )


def test_platform_modules_stay_off_the_other_platform():
    esp = {p.relative_to(dp.EDGE_DIR).as_posix() for p in dp.source_files(platform="esp32")}
    unix = {p.relative_to(dp.EDGE_DIR).as_posix() for p in dp.source_files(platform="unix")}
    assert "hal/esp32.py" in esp and "hal/unix/hal.py" not in esp
    assert "hal/unix/flashdev.py" not in esp
    assert "hal/unix/hal.py" in unix and "hal/esp32.py" not in unix
    assert {
        "agent.py",
        "codec.py",
        "store/store.py",
        "mqtt/client.py",
        "hal/__init__.py",
    } <= esp & unix


def test_bench_deploy_cli(capsys):
    assert cli.main(["bench", "deploy", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"full_deploy_s", "noop_deploy_s", "ratio"} <= figures.keys()
    assert figures["files"] > 5 and figures["noop_deploy_s"] > 0


def test_deploy_refuses_a_broken_config_before_opening_the_port(tmp_path, capsys):
    """The schema check runs first: a misspelled key stops the deploy with no port touched
    (the port does not even exist here, and the error is the config's, not the port's)."""
    dev = tmp_path / "device.json"
    dev.write_text(json.dumps({"device_id": "d1", "mqtt": {"prot": 1883}, "inputz": []}))
    argv = ["deploy", "--board", "unix-sim", "--port", str(tmp_path / "tty"), "--device", str(dev)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "config key 'mqtt.prot' is unknown; did you mean 'mqtt.port'?" in err
    assert "config key 'inputz' is unknown; did you mean 'inputs'?" in err
    assert "not found" not in err and err.count("\n") == 1
