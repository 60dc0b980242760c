"""Forwarding figures and memory (docs/MQTT.md 6): the bench at a small scale, and the agent under
-X heapsize = code footprint + 48 KiB with precompiled modules (how a device carries them)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from host_tools.agent.run import agent_config
from host_tools.bench import forward as fwdbench
from host_tools.errors import ToolError
from host_tools.paths import edge_root


def test_bench_forward_figures(micropython, monkeypatch):
    monkeypatch.setenv("EDGE_BENCH_SCALE", "0.1")
    r = fwdbench.bench_forward()
    print("bench forward (scale 0.1):", r)
    for key in (
        "loopback_readings_per_s",
        "rtt20_readings_per_s",
        "rtt20_baseline_readings_per_s",
        "rtt20_ratio",
        "wire_bytes_per_reading",
    ):
        assert key in r
    # ratios and sizes, not absolute timings (CONTRIBUTING.md): robust on a loaded machine
    assert r["wire_bytes_per_reading"] <= 20
    assert r["rtt20_ratio"] >= 100
    assert r["baseline_wire_bytes_per_reading"] > 4 * r["wire_bytes_per_reading"]
    # format 2 (the default) against format 1 in the same run (docs/FORMAT.md 3.8)
    assert r["wire_bytes_per_reading"] < r["wire_bytes_per_reading_v1"]
    assert r["encode_v2_payload_bytes_per_reading"] < r["encode_v1_payload_bytes_per_reading"] / 3


def _mpy_tree(micropython: str, dest: str) -> str:
    """edge/ compiled with mpy-cross (no .py beside an .mpy: the .py would win)."""
    src = os.path.join(edge_root(), "edge")
    for dirpath, _dirs, files in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        out = os.path.join(dest, "edge", rel)
        os.makedirs(out, exist_ok=True)
        for f in files:
            if f.endswith(".py"):
                mpy = os.path.join(out, f[:-3] + ".mpy")
                subprocess.run(
                    [
                        shutil.which("mpy-cross")
                        or os.path.join(os.path.dirname(micropython), "mpy-cross"),
                        "-march=x64",
                        "-o",
                        mpy,
                        os.path.join(dirpath, f),
                    ],
                    check=True,
                )
    # the board files beside the package, where edge/board.py looks on the host
    shutil.copytree(os.path.join(edge_root(), "boards"), os.path.join(dest, "boards"))
    return dest


def _run_in_heap(agents, micropython, broker, tmp_path, monkeypatch, headroom):
    tree = _mpy_tree(micropython, str(tmp_path / "lib"))
    env = dict(os.environ, MICROPYPATH=".frozen:" + tree)
    # the code footprint: every module the agent loads, imported as the memory bench does
    probe = os.path.join(os.path.dirname(fwdbench.SCRIPT), "agent_code.py")
    out = subprocess.run(
        [micropython, "-X", "heapsize=1M", probe],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    code = int(out.split()[-1])
    heap = code + headroom
    cfg = agent_config(
        "unix-sim",
        mqtt={"host": broker.host, "port": broker.port},
        sim={"rate_hz": 5000, "count": 30000},
    )
    monkeypatch.setattr("host_tools.paths.edge_root", lambda: tree)  # run the .mpy tree
    a = agents.run(cfg, 120, heap=str(heap))
    print(f"code footprint {code} B, heap {heap} B:", a.final)
    assert a.final["acked"] == a.final["committed"] > 0


def test_agent_runs_in_code_footprint_plus_96k(agents, micropython, broker, tmp_path, monkeypatch):
    _run_in_heap(agents, micropython, broker, tmp_path, monkeypatch, 96 * 1024)


def test_agent_runs_in_code_footprint_plus_48k(agents, micropython, broker, tmp_path, monkeypatch):
    """The bounded-RAM requirement (docs/DESIGN.md "Requirements"): heapsize = code
    footprint + 48 KiB."""
    _run_in_heap(agents, micropython, broker, tmp_path, monkeypatch, 48 * 1024)


def test_agent_fails_in_code_footprint_plus_24k(
    agents, micropython, broker, tmp_path, monkeypatch
):
    """The heap test can fail: half the headroom is not enough."""
    with pytest.raises(ToolError, match="MemoryError"):
        _run_in_heap(agents, micropython, broker, tmp_path, monkeypatch, 24 * 1024)


def test_bench_memory_figures(micropython, monkeypatch):
    monkeypatch.setenv("EDGE_BENCH_SCALE", "0.05")
    r = fwdbench.bench_memory()
    print("bench memory (scale 0.05):", r)
    assert r["readings"] == 50_000
    assert r["late_imports"] == ""  # all code was loaded before the working set was measured
    assert r["working_set_bytes"] <= 32 * 1024  # docs/MQTT.md 6, unix 64-bit
    assert abs(r["working_set_growth_bytes"]) <= 1024  # flat
    assert 0 < r["emulated_flash_bytes"] < 2048  # the flash stand-in, left out, stays small
    # measured beside it (tests/test_heap32.py checks them): ROMFS and the 32-bit port
    assert 0 < r["code_heap_bytes_romfs"] < r["code_heap_bytes_mpy"]
    assert 0 < r["heap32_agent_code_bytes_romfs"] < r["heap32_agent_code_bytes"]
