"""`edgectl replay --agent`: the real agent under unix MicroPython with a virtual clock
(docs/REPLAY.md 3): identical collector output on two runs, golden compare and update."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from host_tools.captures import simulate
from tests.test_capture import ROOT, edgectl

SAMPLES = ROOT / "samples"


def replay_json(*args: str, check: bool = True) -> tuple[dict, str]:
    proc = edgectl("replay", *args, "--agent", "unix-sim", "--json", check=check, timeout=300)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_two_agent_replays_give_identical_collector_output(tmp_path: Path) -> None:
    outs = []
    for run in range(2):
        out = tmp_path / f"run{run}.json"
        summary, _ = replay_json(
            str(SAMPLES / "fridge-line.ecap"), "--to", "120", "--collector-out", str(out)
        )
        outs.append((summary, out.read_bytes()))
    (s1, o1), (s2, o2) = outs
    assert o1 == o2  # same seqs, timestamps, channels, values
    assert s1["digest"] == s2["digest"] and s1["readings"] == 600 and s1["frames"] == 120
    doc = json.loads(o1)
    first = doc["readings"][0]
    # seq 1.., timestamps from the capture's start (2000-01-01T00:00:00Z) plus its own time
    assert (
        first[0] >= 1
        and first[1] == 946684800000
        and first[2] in ("essential", "usage", "diagnostics")
    )
    assert doc["readings"][-1][1] == 946684800000 + 119_000


def test_tuya_capture_through_agent(tmp_path: Path) -> None:
    summary, _ = replay_json(str(SAMPLES / "tuya-kettle.ecap"), "--to", "60")
    assert summary["readings"] == 60 * 4 and summary["frames"] >= 60


def test_golden_compare_and_update(tmp_path: Path) -> None:
    golden = tmp_path / "golden.json"
    src = str(SAMPLES / "fridge-line.ecap")
    _, out = replay_json(src, "--to", "30", "--expect", str(golden), "--update-golden")
    assert "updated: 150 readings" in out
    _, out = replay_json(src, "--to", "30", "--expect", str(golden))
    assert "match (150 readings)" in out
    doc = json.loads(golden.read_text())
    doc["readings"][3][4] += 1  # one value changed in the golden file
    doc["digest"] = "x"
    golden.write_text(json.dumps(doc))
    proc = edgectl(
        "replay",
        src,
        "--to",
        "30",
        "--agent",
        "unix-sim",
        "--expect",
        str(golden),
        check=False,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "collector output differs" in proc.stdout
    minus = [ln for ln in proc.stdout.splitlines() if ln.startswith("-ch")]
    plus = [ln for ln in proc.stdout.splitlines() if ln.startswith("+ch")]
    assert len(minus) == len(plus) == 1 and minus[0][1:].split("=")[0] == plus[0][1:].split("=")[0]


@pytest.mark.slow
def test_24h_capture_replays_through_agent(tmp_path: Path) -> None:
    """24 h at one frame per second, twice, identical; figure printed."""
    cap = tmp_path / "day.ecap"
    simulate.simulate("fridge", str(cap), 86400)
    cfg = str(SAMPLES / "fridge-line.agent.json")
    runs = []
    for _ in range(2):
        t0 = time.monotonic()
        summary, _ = replay_json(str(cap), "--config", cfg)
        runs.append((time.monotonic() - t0, summary))
    print(
        f"24 h replay: {runs[0][0]:.1f} s and {runs[1][0]:.1f} s, "
        f"{runs[0][1]['readings']} readings, digest {runs[0][1]['digest'][:16]}"
    )
    assert runs[0][1]["digest"] == runs[1][1]["digest"] and runs[0][1]["readings"] == 432000
    assert max(r[0] for r in runs) <= 60


def test_the_replay_api_takes_options_not_a_namespace(tmp_path: Path) -> None:
    """host_tools.agent.replay.run is callable without argparse: an AgentReplayOptions, and
    a golden mismatch comes back as the exit code."""
    from host_tools.agent import replay as replay_agent
    from host_tools.captures.replay import load, parse_time, schedule

    src = str(SAMPLES / "fridge-line.ecap")
    meta, chunks, _ = load([src])
    items = schedule(chunks, ("rx",), None, parse_time("10"), 1)
    golden = tmp_path / "golden.json"
    opts = replay_agent.AgentReplayOptions(
        board="unix-sim", capture=src, expect=str(golden), update_golden=True
    )
    result, code = replay_agent.run(opts, meta, items, chunks)
    assert code == 0 and result.readings == 50 and json.loads(golden.read_text())["readings"]
    doc = json.loads(golden.read_text())
    doc["readings"][0][4] += 1
    doc["digest"] = "x"
    golden.write_text(json.dumps(doc))
    opts.update_golden = False
    assert replay_agent.run(opts, meta, items, chunks)[1] == 1


def _readings(n: int, drop: int | None = None) -> list[list]:
    """n seconds of 5 channels; `drop`: that reading is missing and later seqs close the gap,
    as when the agent's parser rejects one frame."""
    rows = [[0, 946684800000 + 1000 * (i // 5), "essential", 1 + i % 5, i] for i in range(5 * n)]
    if drop is not None:
        del rows[drop]
    for seq, row in enumerate(rows, 1):
        row[0] = seq
    return rows


def test_one_missing_reading_is_one_line_of_golden_diff(tmp_path: Path) -> None:
    """The golden diff is keyed on (channel, time), seq shown: a reading lost early in the run
    is one `-` line, not a diff of every later reading whose seq moved."""
    from host_tools.agent import replay as replay_agent

    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps(replay_agent.golden_doc("d1", _readings(30))))
    run = replay_agent.golden_doc("d1", _readings(30, drop=7))
    diff = replay_agent.compare_golden(str(golden), run)
    minus = [ln for ln in diff if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln for ln in diff if ln.startswith("+") and not ln.startswith("+++")]
    assert len(minus) == 1 and not plus, "\n".join(diff)
    assert minus[0].startswith("-ch3 ") and "2000-01-01T00:00:01.000Z" in minus[0], minus
    assert "seq 8" in minus[0]  # the golden's seq, shown but not compared
    # the same readings with other seq numbers only: said in one line, no reading lines
    shifted = replay_agent.golden_doc("d1", [[r[0] + 100, *r[1:]] for r in _readings(30)])
    diff = replay_agent.compare_golden(str(golden), shifted)
    assert diff and not [ln for ln in diff if ln[:1] in "+-"] and "seq" in diff[-1], diff


def test_a_replay_with_no_readings_fails_its_golden_check_and_says_why(tmp_path: Path) -> None:
    """A config that maps nothing in the capture: --update-golden refuses to record an empty
    golden file, and --expect exits 1 with the reason, whatever the golden file holds."""
    from host_tools.agent import replay as replay_agent
    from host_tools.captures.replay import load, schedule
    from host_tools.errors import ToolError

    cfg = json.loads((SAMPLES / "fridge-line.agent.json").read_text())
    cfg["inputs"][0]["keys"] = {"NO_SUCH_KEY": 1}
    cfg_path = tmp_path / "nothing.json"
    cfg_path.write_text(json.dumps(cfg))
    src = str(SAMPLES / "fridge-line.ecap")
    meta, chunks, _ = load([src])
    items = schedule(chunks, ("rx",), None, 10.0, 1)
    golden = tmp_path / "golden.json"
    opts = replay_agent.AgentReplayOptions(
        board="unix-sim", capture=src, config=str(cfg_path), expect=str(golden)
    )
    opts.update_golden = True
    with pytest.raises(ToolError, match="no readings to write to the golden file"):
        replay_agent.run(opts, meta, items, chunks)
    assert not golden.exists()
    golden.write_text(json.dumps(replay_agent.golden_doc(cfg["device_id"], [])))
    opts.update_golden = False
    result, code = replay_agent.run(opts, meta, items, chunks)
    assert code == 1 and result.readings == 0 and result.why


@pytest.mark.parametrize(
    "where", [["--agent", "unix-sim"], ["--port", "loop://", "--to", "60", "--speed", "60"]]
)
def test_a_replay_on_a_terminal_shows_its_progress(tmp_path: Path, where: list) -> None:
    """stderr a terminal: a progress bar of the capture time sent (a port) or reached by the
    readings (the agent); not a terminal (every other test here): no bar, the output stays
    clean for scripts."""
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_tools", "replay", str(SAMPLES / "fridge-line.ecap"), *where],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(300) == 0, seen[-2000:]
    assert b"replay" in seen and b"s of capture" in seen, seen[-2000:]
