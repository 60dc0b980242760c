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


def test_options_of_a_nested_sub_command_are_known(capsys):
    """`edgectl cluster down --workdir X` is parsed by `down`'s parser (its options are not
    `cluster`'s); a misspelled one is still named."""
    from host_tools import cli

    assert cli.main(["cluster", "down", "--workdir", "/nonexistent/edge-cluster"]) == 2
    assert capsys.readouterr().err.startswith("edgectl: no cluster in /nonexistent/edge-cluster")
    assert cli.main(["cluster", "down", "--wrkdir", "x"]) == 2
    assert "did you mean --workdir?" in capsys.readouterr().err
