"""docs/DEPLOY.md 8, run as written: provision a heat pump, add its config from docs/INPUTS.md
4.2, check it, start the provisioned broker and the collector, a Modbus slave simulator and a
virtual board with its UART bridged to it, deploy, watch the boot with `edgectl logs`, and find
the registers' and the room sensor's values at the collector.

The commands come from the shell block of that section; the test changes only the ports (two
free ones instead of 1883/1884) and puts /tmp paths in its own directory. `sleep 20` becomes a
bounded wait for the collector's count, and the comment that says to add the heat pump's keys
is done as it says. DEPLOY_MODES is where another way to deploy (e.g. a ROMFS image) adds its
flag: the walkthrough then runs once per mode."""

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.conftest import ROOT

DEPLOY_MODES = {"plain": [], "romfs": ["--romfs"]}  # mode -> extra `edgectl deploy` arguments
EDGECTL = os.path.join(os.path.dirname(sys.executable), "edgectl")


def section(path, title):
    """From the heading `title` to the next heading of its level or above (not counting `#`
    lines inside code blocks)."""
    lines = open(os.path.join(ROOT, path)).read().split("\n")
    start = lines.index(title) if title in lines else [x.startswith(title) for x in lines].index(1)
    level = len(title) - len(title.lstrip("#"))
    fenced = False
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,%d} " % level, lines[i]):
            return "\n".join(lines[start:i])
    return "\n".join(lines[start:])


def blocks(text, lang):
    """The contents of the fenced code blocks opened with ```lang (lang "" : no language)."""
    out, cur, want = [], None, False
    for line in text.split("\n"):
        if line.startswith("```"):
            if cur is None:
                cur, want = [], line[3:].strip() == lang
            else:
                if want:
                    out.append("\n".join(cur) + "\n")
                cur = None
        elif cur is not None:
            cur.append(line)
    return out


def free_port_pair():
    """Two consecutive free loopback ports (device listener P, backend listener P + 1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


class Job:
    """A background command (`... &`): its output lines, collected by a thread."""

    def __init__(self, argv, cwd):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(pred(x) for x in self.lines):
                return True
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the reader may still hold the last lines
                return any(pred(x) for x in self.lines)
            time.sleep(0.1)
        return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def stored(line):
    m = re.match(r"collect: (\d+) (stored|unique)", line)
    return int(m.group(1)) if m else 0


@pytest.fixture
def workdir():
    """The user's directory. mosquitto, started as root, reads its password files as the
    `mosquitto` user: unlike pytest's 0700 tmp_path, a user's directory lets it in."""
    path = tempfile.mkdtemp(prefix="edge-walkthrough-")
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


# the ROMFS mode repeats the whole walkthrough (about 35 s): behind --slow;
# tests/test_romfs_deploy.py runs a ROMFS deploy in the default set
SLOW_MODES = {"romfs"}


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(m, marks=[pytest.mark.slow] if m in SLOW_MODES else [])
        for m in sorted(DEPLOY_MODES)
    ],
)
def test_deploy_md_heat_pump_walkthrough(workdir, mode):
    tmp_path = workdir
    sec = section("docs/DEPLOY.md", "## 8. The whole sequence on the virtual board")
    (regs,) = blocks(sec, "json")
    script, expected = blocks(sec, "sh")[0], blocks(sec, "")[0]
    (tmp_path / "heatpump-regs.json").write_text(regs)
    port = free_port_pair()
    tmpdir = str(tmp_path / "tmp")
    os.mkdir(tmpdir)

    def subst(text):
        text = text.replace("1884", str(port + 1)).replace("1883", str(port))
        return text.replace("/tmp/", tmpdir + "/")

    jobs, ran = [], {}
    try:
        for line in script.strip().splitlines():
            line = subst(line.strip())
            m = re.match(r'# add "channels" and "inputs" of docs/INPUTS.md 4.2 to (\S+)$', line)
            if m:
                hp = json.loads(
                    blocks(section("docs/INPUTS.md", "### 4.2 A heat pump"), "json")[0]
                )
                dev = tmp_path / m.group(1)
                cfg = json.loads(dev.read_text())
                cfg.update(hp)
                dev.write_text(json.dumps(cfg, indent=2))
                continue
            assert not line.startswith("#"), f"a step the test does not know: {line}"
            if line.startswith("sleep "):
                # the readings of 20 s: 10 Modbus polls of 3 registers, 4 room samples of 2
                collect = jobs[1]
                assert collect.wait_for(lambda x: stored(x) >= 24, 120), collect.lines[-5:]
                continue
            if line.startswith("kill %"):
                jobs[int(line[6:]) - 1].stop()
                continue
            argv = shlex.split(line)
            assert argv[0] == ".venv/bin/edgectl", line
            argv[0] = EDGECTL
            if argv[1] == "deploy":
                argv += DEPLOY_MODES[mode]
            if argv[-1] == "&":
                job = Job(argv[:-1], tmp_path)
                jobs.append(job)
                # every background command says where it is listening before it serves
                assert job.wait_for(lambda x: True, 30), (argv, job.lines)
                assert job.proc.poll() is None, (argv, job.lines)
                continue
            r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, (argv, r.stdout, r.stderr)
            ran[argv[1]] = r.stdout.splitlines()
    finally:
        for job in reversed(jobs):
            job.stop()

    # what the section says the deploy's self-test shows
    for want in subst(expected).strip().splitlines():
        assert want in ran["deploy"], (want, ran["deploy"])
    assert ran["deploy"][-1] == "self-test: pass"
    # `edgectl logs` reset the board and stopped at the agent's boot line
    assert "vboard: hard reset (EN)" in ran["logs"]
    assert ran["logs"][-1].startswith(
        "@log boot: device hp-0001 on unix-sim (unix), reset cause "
    ), ran["logs"]
    # the registers' and the room sensor's values at the collector
    export = json.loads((tmp_path / "hp-0001.json").read_text())
    by_channel = {}
    for r in export["readings"]:
        by_channel.setdefault(r["channel"], set()).add(r["value"])
    assert by_channel == {1: {412}, 2: {355}, 3: {58}, 4: {2130}, 5: {4650}}, by_channel
    assert len(export["readings"]) >= 24
