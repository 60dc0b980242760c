"""edgectl: one error type printed as `edgectl: message`, exit 2; the demo's JSON summary."""

import json
import subprocess
import sys

EDGECTL = [sys.executable, "-m", "host_tools"]


def _run(*args, timeout=120):
    return subprocess.run([*EDGECTL, *args], capture_output=True, text=True, timeout=timeout)


def test_version_is_the_agents():
    import edge

    r = _run("--version")
    assert r.returncode == 0 and r.stdout.startswith(f"edgectl {edge.__version__} "), r


def test_tool_error_is_one_line_exit_2():
    r = _run("run", "--board", "no-such-board")
    assert r.returncode == 2
    assert r.stderr.startswith("edgectl: unknown board 'no-such-board'")
    assert "Traceback" not in r.stderr


def test_bad_config_file_is_reported(tmp_path):
    p = tmp_path / "dev.json"
    p.write_text("{not json")
    r = _run("run", "--config", str(p))
    assert r.returncode == 2 and r.stderr.startswith("edgectl: config ")
    assert "is not valid JSON: " in r.stderr and "line 1 column 2" in r.stderr


def test_unknown_benchmark_lists_the_known_ones():
    r = _run("bench", "nope")
    assert r.returncode == 2 and "unknown benchmark 'nope'" in r.stderr


def test_broker_with_a_busy_port_fails_clearly(broker):
    r = _run("broker", "--port", str(broker.port), timeout=60)
    assert r.returncode == 2 and "already in use" in r.stderr


def test_demo_json_summary(micropython):
    r = _run("demo", "--seconds", "5", "--json", timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "sampled",
        "stored",
        "forwarded",
        "received_unique",
        "duplicates",
        "dropped_by_consent",
        "lost",
        "seconds",
    ):
        assert key in s
    assert s["lost"] == 0 and s["received_unique"] == s["stored"] > 0
    assert s["dropped_by_consent"] > 0  # essential-only at first: the gate is visible
    assert s["consent_version"] == 2 and s["receipt"]["grants"]["usage"] is False
    assert s["seconds"] <= 30


def test_a_bug_is_a_traceback_and_a_request_to_report_it(monkeypatch, capsys):
    """Only a real bug shows a traceback, and then says so (docs/CLI.md section 1): exit 70."""
    from host_tools import cli
    from host_tools.board import check

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(check, "cmd_check", broken)
    assert cli.main(["check", "--reference"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert err.strip().splitlines()[-1].startswith("edgectl: internal error: this is a bug")


def _usb(device: str, vid: int | None):
    from serial.tools.list_ports_common import ListPortInfo

    p = ListPortInfo(device, skip_link_detection=True)
    p.vid = vid
    return p


def test_the_only_attached_board_is_found_and_several_are_named():
    """flash/deploy/logs without --port (docs/CLI.md section 4): pyserial's port list with
    exactly one ESP32 USB bridge gives it; none or several are one-line errors naming them."""
    import pytest

    from host_tools.board.ports import pick_board_port
    from host_tools.errors import ToolError

    ttys0 = _usb("/dev/ttyS0", None)  # a built-in UART: not a USB board
    cp210x = _usb("/dev/ttyUSB0", 0x10C4)
    assert pick_board_port([ttys0, cp210x]) == "/dev/ttyUSB0"
    # a USB serial adapter of another vendor is taken when it is the only USB port
    assert pick_board_port([ttys0, _usb("/dev/ttyACM3", 0x2341)]) == "/dev/ttyACM3"
    # but an ESP32 bridge wins over it
    assert pick_board_port([_usb("/dev/ttyACM3", 0x2341), cp210x]) == "/dev/ttyUSB0"
    with pytest.raises(ToolError, match="no board found on USB"):
        pick_board_port([ttys0])
    with pytest.raises(ToolError, match=r"2 boards attached \(/dev/ttyUSB0 \(CP210x\), "):
        pick_board_port([cp210x, _usb("/dev/ttyACM0", 0x303A)])


def test_completion_scripts_complete_commands_and_options(tmp_path):
    """`edgectl completion bash` (shtab) sourced into a real bash completes commands,
    options and file arguments."""
    import shutil

    script = tmp_path / "edgectl.bash"
    r = _run("completion", "bash")
    assert r.returncode == 0
    script.write_text(r.stdout)
    probe = (
        f"source {script}\n"
        'COMP_WORDS=(edgectl fla); COMP_CWORD=1; _shtab_edgectl; echo "1:${COMPREPLY[*]}"\n'
        'COMP_WORDS=(edgectl flash --b); COMP_CWORD=2; _shtab_edgectl; echo "2:${COMPREPLY[*]}"\n'
    )
    out = subprocess.run(
        [shutil.which("bash"), "-c", probe], capture_output=True, text=True, timeout=60
    ).stdout
    assert "1:flash" in out and "--board" in out.split("2:")[1], out
    for shell in ("zsh", "tcsh"):
        assert _run("completion", shell).returncode == 0


def test_options_of_a_nested_sub_command_are_known(capsys):
    """`edgectl cluster down --workdir X` is parsed by `down`'s parser (its options are not
    `cluster`'s); a misspelled one is still named."""
    from host_tools import cli

    assert cli.main(["cluster", "down", "--workdir", "/nonexistent/edge-cluster"]) == 2
    assert capsys.readouterr().err.startswith("edgectl: no cluster in /nonexistent/edge-cluster")
    assert cli.main(["cluster", "down", "--wrkdir", "x"]) == 2
    assert "did you mean --workdir?" in capsys.readouterr().err
