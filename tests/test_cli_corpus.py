"""The error contract of every `edgectl` command (docs/CLI.md section 1):
a corpus of bad inputs (misspelled options, bad numbers and ports, missing, hostile and
special files, broken configs, unreachable brokers and serial ports) each gives one line
`edgectl: message` naming what was wrong and exit code 2: never a traceback, a hang, a process
left running, a silent success, or a file the tool did not create destroyed.

Every case runs the real CLI (host_tools.cli.main) in a forked child (tests/cli_corpus_rig.py):
no interpreter start per case, so the whole corpus takes seconds."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from host_tools.cli import build_parser
from tests.cli_corpus_rig import Outcome, run_edgectl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECIOUS = b"precious user data, not made by edgectl\n"

# (argv, text the message must contain). `{name}` fills in from the `files` fixture below.
HAND_WRITTEN: list[tuple[str, str]] = [
    # top level
    ("", "COMMAND"),
    ("bogus", "bogus"),
    ("--bogus", "--bogus"),
    ("brokr", "broker"),  # a suggestion for a misspelled command
    # broker
    ("broker --port 70000", "--port"),
    ("broker --port -1", "--port"),
    ("broker --port {busy}", "{busy}"),
    ("broker --config {missing}", "{missing}"),
    ("broker --config {dir}", "{dir}"),
    ("broker --kind amqtt --port 70000", "--port"),
    # collect
    ("collect --port {closed} --seconds 2", "{closed}"),
    ("collect --port 0", "--port"),
    ("collect --seconds -1", "--seconds"),
    ("collect --db {dir} --port {closed}", "{dir}"),
    ("collect --db {binary} --port {closed}", "{binary}"),
    ("collect --device-keys {missing} --port {closed}", "{missing}"),
    ("collect --device-keys {binary} --port {closed}", "{binary}"),
    ("collect --credentials {missing} --port {closed}", "{missing}"),
    ("collect --credentials {notjson} --port {closed}", "{notjson}"),
    ("collect --tls-ca {missing} --port {closed}", "{missing}"),
    ("collect --tls-ca {binary} --port {closed}", "{binary}"),
    ("collect --tls-cert {missing} --port {closed}", "{missing}"),
    ("collect --prefix a/# --port {closed}", "--prefix"),
    ("collect --prefix + --port {closed}", "--prefix"),
    ("collect --client-id '' --port {closed}", "--client-id"),
    ("collect --client-id 'a b' --port {closed}", "--client-id"),
    # run
    ("run --config {missing}", "{missing}"),
    ("run --config {dir}", "{dir}"),
    ("run --config {notjson}", "{notjson}"),
    ("run --config {array}", "{array}"),
    ("run --config {binary}", "{binary}"),
    ("run --config {empty}", "{empty}"),
    ("run --config {misspelt}", "sample_intervall"),
    ("run --board nope", "nope"),
    ("run --board {binary}", "{binary}"),
    ("run --count -5", "--count"),
    ("run --count 0", "--count"),
    ("run --seconds -1", "--seconds"),
    ("run --seconds 0", "--seconds"),
    ("run --rate 0", "--rate"),
    ("run --rate -1", "--rate"),
    ("run --heap lots", "--heap"),
    ("run --heap 0", "--heap"),
    ("run --port 70000", "--port"),
    ("run --workdir {regular}", "{regular}"),
    ("run --seconds 3 --port {closed}", "{closed}"),
    # demo
    ("demo --seconds 0", "--seconds"),
    ("demo --seconds -1", "--seconds"),
    ("demo --rate 0", "--rate"),
    ("demo --rate -3", "--rate"),
    # consent
    ("consent dev1 --grant usage --port {closed} --timeout 2", "{closed}"),
    ("consent dev1 --grant us/age --port {closed}", "us/age"),
    ("consent dev1 --port {closed}", "--grant"),
    ("consent dev1 --grant usage --deny usage --port {closed}", "usage"),
    ("consent '' --grant usage --port {closed}", "device"),
    ("consent a/b --grant usage --port {closed}", "a/b"),
    ("consent + --grant usage --port {closed}", "+"),
    ("consent # --grant usage --port {closed}", "#"),
    ("consent dev1 --grant usage --key {missing} --port {closed}", "{missing}"),
    ("consent dev1 --grant usage --key {binary} --port {closed}", "{binary}"),
    ("consent dev1 --grant usage --key {notjson} --port {closed}", "{notjson}"),
    ("consent dev1 --grant usage --version -1 --port {closed}", "--version"),
    ("consent dev1 --grant usage --timeout 0 --port {closed}", "--timeout"),
    ("consent dev1 --grant usage --timeout -1 --port {closed}", "--timeout"),
    ("consent dev1 --grant usage --credentials {binary} --port {closed}", "{binary}"),
    ("consent dev1 --grant usage --tls-ca {missing} --port {closed}", "{missing}"),
    ("consent dev1 --grant usage --port 70000", "--port"),
    # bench
    ("bench nope", "nope"),
    ("bench day --hours -1", "--hours"),
    ("bench day --hours 0", "--hours"),
    ("bench day --profile nope", "nope"),
    ("bench store --board nope", "nope"),
    # dump
    ("dump {missing}", "{missing}"),
    ("dump {binary}", "{binary}"),
    ("dump {empty}", "{empty}"),
    ("dump {notjson}", "{notjson}"),
    ("dump {emptydir}", "{emptydir}"),
    ("dump {fifo}", "{fifo}"),
    ("dump /dev/zero", "/dev/zero"),
    ("dump {rawlog} --categories a/b", "a/b"),
    ("dump {rawlog} --categories ''", "--categories"),
    # flash
    ("flash --board nope", "nope"),
    (
        "flash --board esp32-generic --port {nodev} --firmware {firmware} --keep-partitions",
        "{nodev}",
    ),
    ("flash --board esp32-generic --port {regular} --firmware {firmware}", "{regular}"),
    ("flash --board esp32-generic --firmware {missing}", "{missing}"),
    ("flash --board esp32-generic --firmware {empty}", "{empty}"),
    ("flash --board esp32-generic --firmware {dir}", "{dir}"),
    ("flash --board esp32-generic --baud 0", "--baud"),
    ("flash --board esp32-generic --baud -1", "--baud"),
    ("flash --board esp32-generic --port bogus://x --firmware {firmware}", "bogus://x"),
    # check
    ("check {missing}", "{missing}"),
    ("check {notjson}", "{notjson}"),
    ("check {array}", "{array}"),
    ("check {binary}", "{binary}"),
    ("check {empty}", "{empty}"),
    ("check {dir}", "{dir}"),
    ("check {fifo}", "{fifo}"),
    ("check", "CONFIG"),
    ("check {config} --board nope", "nope"),
    ("check {misspelt}", "sample_intervall"),
    # deploy
    ("deploy --board nope --device {config}", "nope"),
    ("deploy --board esp32-generic --device {missing}", "{missing}"),
    ("deploy --board esp32-generic --device {notjson}", "{notjson}"),
    ("deploy --board esp32-generic --device {misspelt}", "sample_intervall"),
    ("deploy --board esp32-generic --port {nodev} --device {config}", "{nodev}"),
    ("deploy --board esp32-generic --port {regular} --device {config}", "{regular}"),
    ("deploy --board esp32-generic --port bogus://x --device {config}", "bogus://x"),
    # vboard
    ("vboard --link {regular}", "{regular}"),
    ("vboard --link {dir}", "{dir}"),
    ("vboard --link {d}/vb --image /", "--image"),
    ("vboard --link {d}/vb --image {dir}", "{dir}"),
    ("vboard --link {d}/vb --image {regular}", "{regular}"),
    ("vboard --link {d}/vb --image-bytes 5", "--image-bytes"),
    ("vboard --link {d}/vb --image-bytes -1", "--image-bytes"),
    ("vboard --link {d}/vb --image-bytes 0", "--image-bytes"),
    ("vboard --link {d}/vb --heapsize lots", "--heapsize"),
    ("vboard --link {d}/vb --heapsize 0", "--heapsize"),
    ("vboard --link {d}/vb --heapsize -1", "--heapsize"),
    ("vboard --link {d}/vb --uart bogus", "bogus"),
    ("vboard --link {d}/vb --uart UART9=/dev/nonexistent", "UART9"),
    ("vboard --link {missing}/sub/link", "{missing}"),
    # logs
    ("logs --port {nodev}", "{nodev}"),
    ("logs --port {regular}", "{regular}"),
    ("logs --baud 0", "--baud"),
    ("logs --seconds -1", "--seconds"),
    ("logs --port rfc2217://127.0.0.1:{closed}", "{closed}"),
    ("logs --port bogus://x", "bogus://x"),
    ("logs", "no board found"),  # nothing on USB here: autodetection says so
    ("flash --board esp32-generic --firmware {firmware} --keep-partitions", "no board found"),
    ("deploy --board esp32-generic --device {config}", "no board found"),
    # provision
    ("provision ''", "device"),
    ("provision a/b", "a/b"),
    ("provision +", "+"),
    ("provision dev1 --out {regular}", "{regular}"),
    ("provision dev1 --board nope", "nope"),
    ("provision dev1 --port 70000", "--port"),
    ("provision dev1 --backend-port 0", "--backend-port"),
    ("provision dev1 --prefix a/#", "--prefix"),
    # subject
    ("subject export dev1 --db {missing}", "{missing}"),
    ("subject erase dev1 --db {missing}", "{missing}"),
    ("subject export dev1 --db {binary}", "{binary}"),
    ("subject export dev1 --db {dir}", "{dir}"),
    ("subject export dev1 --db {notjson}", "{notjson}"),
    ("subject export '' --db {missing}", "device"),
    # export and plot: a FIFO or device as a source would block the read for ever
    ("export --db {fifo}", "{fifo}"),
    ("export --replay {fifo}", "{fifo}"),
    ("export --replay {regular} --config {fifo}", "{fifo}"),
    ("export --db {dir}", "{dir}"),
    ("export --category ''", "--category"),
    ("plot --db {fifo} --out {d}/p.png", "{fifo}"),
    # capture
    ("capture --port {nodev} --out {d}/o.ecap", "{nodev}"),
    ("capture --port {regular} --out {d}/o.ecap", "{regular}"),
    ("capture --port bogus://x --out {d}/o.ecap", "bogus://x"),
    ("capture --port loop:// --out {dir}", "{dir}"),
    ("capture --port loop:// --out {missing}/x.ecap", "{missing}"),
    ("capture --port loop:// --out {regular}", "{regular}"),
    ("capture --port loop:// --out {d}/o.ecap --baud 0", "--baud"),
    ("capture --port loop:// --out {d}/o.ecap --duration -1", "--duration"),
    ("capture --port loop:// --out {d}/o.ecap --idle -1", "--idle"),
    ("capture --port loop:// --out {d}/o.ecap --rotate-bytes 0", "--rotate-bytes"),
    ("capture --port loop:// --out {d}/o.ecap --meta bogus", "bogus"),
    # capture-convert
    ("capture-convert spy {missing} --out {d}/c.ecap", "{missing}"),
    ("capture-convert text {binary} --out {d}/c.ecap", "{binary}"),
    ("capture-convert text {dir} --out {d}/c.ecap", "{dir}"),
    ("capture-convert text {fifo} --out {d}/c.ecap", "{fifo}"),
    ("capture-convert text /dev/zero --out {d}/c.ecap", "/dev/zero"),
    ("capture-convert text {empty} --out {d}/c.ecap", "{empty}"),
    ("capture-convert spy {notjson} --out {d}/c.ecap", "{notjson}"),
    ("capture-convert text {text} --out {dir}", "{dir}"),
    ("capture-convert text {text} --out {regular}", "{regular}"),
    ("capture-convert text {text} --out {d}/c.ecap --interval 0", "--interval"),
    ("capture-convert text {text} --out {d}/c.ecap --interval -1", "--interval"),
    ("capture-convert text {text} --out {d}/c.ecap --baud 0", "--baud"),
    ("capture-convert text {text} --out {d}/c.ecap --started nonsense", "--started"),
    # replay
    ("replay {missing} --pty {d}/p", "{missing}"),
    ("replay {binary} --pty {d}/p", "{binary}"),
    ("replay {empty} --pty {d}/p", "{empty}"),
    ("replay {dir} --pty {d}/p", "{dir}"),
    ("replay {fifo} --pty {d}/p", "{fifo}"),
    ("replay {capture} --agent nope", "nope"),
    ("replay {capture} --pty {d}/p --speed 0", "--speed"),
    ("replay {capture} --pty {d}/p --speed -1", "--speed"),
    ("replay {capture} --pty {d}/p --loop 0", "--loop"),
    ("replay {capture} --pty {d}/p --loop -1", "--loop"),
    ("replay {capture} --pty {d}/p --from x", "--from"),
    ("replay {capture} --pty {d}/p --to x", "--to"),
    ("replay {capture} --pty {d}/p --from 10 --to 5", "--to"),
    ("replay {capture} --pty {d}/p --wait -1", "--wait"),
    ("replay {capture} --agent unix-sim --timeout 0", "--timeout"),
    ("replay {capture} --agent unix-sim --config {config} --expect {missing}", "{missing}"),
    ("replay {capture} --agent unix-sim --config {config} --expect {binary}", "{binary}"),
    ("replay {capture} --agent unix-sim --config {missing}", "{missing}"),
    ("replay {capture} --agent unix-sim --config {notjson}", "{notjson}"),
    ("replay {capture} --agent unix-sim --config {config} --grant bogus", "bogus"),
    ("replay {capture} --agent unix-sim --config {config} --heap lots", "--heap"),
    ("replay {capture} --port {nodev}", "{nodev}"),
    ("replay {capture} --port bogus://x", "bogus://x"),
    ("replay {capture} --pty {regular}", "{regular}"),
    ("replay {capture} --pty {dir}", "{dir}"),
    # simulate
    ("simulate", "APPLIANCE"),
    ("simulate fridge --out {d}/s.ecap --duration 0", "--duration"),
    ("simulate fridge --out {d}/s.ecap --duration -1", "--duration"),
    ("simulate fridge --out {d}/s.ecap --interval 0", "--interval"),
    ("simulate fridge --out {d}/s.ecap --interval -1", "--interval"),
    ("simulate fridge --out {dir}", "{dir}"),
    ("simulate fridge --out {missing}/s.ecap", "{missing}"),
    ("simulate fridge --out {d}/s.ecap --config-out {dir}", "{dir}"),
    ("simulate fridge --out {regular} --config-out {d}/c.json", "--config-out"),
    ("simulate --serve modbus --map {missing} --pty {d}/sp", "{missing}"),
    ("simulate --serve modbus --map {notjson} --pty {d}/sp", "{notjson}"),
    ("simulate --serve line --lines {missing} --pty {d}/sp", "{missing}"),
    ("simulate --serve line --faults bogus --pty {d}/sp", "--faults"),
    ("simulate --serve line --port {nodev}", "{nodev}"),
    ("simulate --serve line --pty {regular}", "{regular}"),
    ("simulate --serve line --pty {d}/sp --seconds -1", "--seconds"),
    ("simulate --serve line --pty {d}/sp --baud 0", "--baud"),
    # release, release-key
    ("release --board unix-sim --version 1.0.0 --key {missing} --out {d}/b.bin", "{missing}"),
    ("release --board unix-sim --version 1.0.0 --key {binary} --out {d}/b.bin", "{binary}"),
    ("release --check {missing}", "{missing}"),
    ("release --check {binary}", "{binary}"),
    ("release --check {empty}", "{empty}"),
    ("release --board unix-sim --version nonsense --key {key} --out {d}/b.bin", "nonsense"),
    (
        "release --board unix-sim --version 1.0.0 --key {key} --min-version x --out {d}/b.bin",
        "--min-version",
    ),
    ("release --board unix-sim --version 1.0.0 --key {key} --mpy 0 --out {d}/b.bin", "--mpy"),
    ("release --board nope --version 1.0.0 --key {key} --out {d}/b.bin", "nope"),
    ("release --board unix-sim --version 1.0.0 --key {key} --out {dir}", "{dir}"),
    ("release-key {regular}", "{regular}"),
    ("release-key {dir}", "{dir}"),
    ("release-key {missing}/sub/k", "{missing}"),
    # update, config
    ("update dev1 {missing} --port {closed}", "{missing}"),
    ("update dev1 {binary} --port {closed}", "{binary}"),
    ("update dev1 {empty} --port {closed}", "{empty}"),
    ("update dev1 {dir} --port {closed}", "{dir}"),
    ("update {binary} --port {closed}", "device"),
    ("update dev1 {binary} --wave 0 --port {closed}", "--wave"),
    ("update dev1 {binary} --wave -1 --port {closed}", "--wave"),
    ("update dev1 {binary} --max-failure-rate 2 --port {closed}", "--max-failure-rate"),
    ("update dev1 {binary} --max-failure-rate -0.5 --port {closed}", "--max-failure-rate"),
    ("update dev1 {binary} --chunk 0 --port {closed}", "--chunk"),
    ("update dev1 {binary} --chunk -1 --port {closed}", "--chunk"),
    ("update dev1 {binary} --timeout 0 --port {closed}", "--timeout"),
    ("update --devices {missing} {binary} --port {closed}", "{missing}"),
    ("config dev1 --port {closed}", "--set"),
    ("config dev1 --set nokeyvalue --port {closed}", "nokeyvalue"),
    ("config dev1 --set =x --port {closed}", "=x"),
    ("config dev1 --get --timeout 0 --port {closed}", "--timeout"),
    ("config dev1 --get --port {closed} --timeout 2", "{closed}"),
    ("config a/b --get --port {closed}", "a/b"),
]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("edgectl has no sub-commands")


def generated() -> list[tuple[str, str]]:
    """For every sub-command (so a new one is covered the day it lands): a misspelled option,
    a word where each number goes, a value outside each option's choices."""
    cases = []
    for name, sub in _subcommands().items():
        cases.append((f"{name} --no-such-option", "--no-such-option"))
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            opt = action.option_strings[-1]
            if action.type in (int, float) or getattr(action.type, "number", False):
                cases.append((f"{name} {opt} lots", opt))
            if action.choices:
                cases.append((f"{name} {opt} bogus-choice", opt))
            bad = BAD_VALUE_OF_TYPE.get(getattr(action.type, "__name__", ""))
            if bad:
                cases.append((f"{name} {opt} {bad}", opt))
        cases += _bad_positionals(name, sub)
    return cases


def _bad_positionals(name: str, sub: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """Each typed positional given a wrong value, the others a good one (the first choice,
    a device id, an existing file)."""
    positionals = [a for a in sub._actions if not a.option_strings and a.dest != "help"]
    cases = []
    for target in positionals:
        bad = BAD_VALUE_OF_TYPE.get(getattr(target.type, "__name__", ""))
        if not bad:
            continue
        words = []
        for a in positionals:
            if a is target:
                words.append(bad)
            elif a.choices:
                words.append(str(list(a.choices)[0]))
            elif getattr(a.type, "__name__", "") == "device_id":
                words.append("dev1")
            else:
                words.append("{config}")
        cases.append((f"{name} {' '.join(words)}", bad))
    return cases


# a value each kind of argument must refuse, by the name of its argparse type
BAD_VALUE_OF_TYPE = {
    "input_file": "{missing}",
    "input_path": "{missing}",
    "output_file": "{dir}",
    "new_file": "{regular}",
    "link_path": "{regular}",
    "directory": "{regular}",
    "serial_port": "{regular}",
    "device_id": "a/b",
    "name": "a+b",
    "board": "no-such-board",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files():
    # not under pytest's shared base temp directory: other sessions' runs prune it
    d = Path(tempfile.mkdtemp(prefix="edgectl-corpus-"))
    (d / "adir").mkdir()
    (d / "emptydir").mkdir()
    (d / "notjson.json").write_text("{not json")
    (d / "array.json").write_text("[1, 2]")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 3 + b"\xff\xfe\x80")
    (d / "empty").write_bytes(b"")
    (d / "text.log").write_text("T_FRIDGE=4.1\nT_FREEZER=-18.0\n")
    (d / "firmware.bin").write_bytes(b"\xe9" + bytes(4095))
    os.mkfifo(d / "fifo")
    cfg = (open(os.path.join(ROOT, "samples", "fridge-line.agent.json"))).read()
    (d / "config.json").write_text(cfg)
    (d / "misspelt.json").write_text('{"device_id": "d1", "sample_intervall": 5}')
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    values = {
        "d": str(d),
        "missing": str(d / "missing.json"),
        "dir": str(d / "adir"),
        "emptydir": str(d / "emptydir"),
        "notjson": str(d / "notjson.json"),
        "array": str(d / "array.json"),
        "binary": str(d / "binary.bin"),
        "empty": str(d / "empty"),
        "text": str(d / "text.log"),
        "fifo": str(d / "fifo"),
        "firmware": str(d / "firmware.bin"),
        "regular": str(d / "precious.txt"),
        "config": str(d / "config.json"),
        "misspelt": str(d / "misspelt.json"),
        "capture": os.path.join(ROOT, "samples", "fridge-line.ecap"),
        "rawlog": os.path.join(ROOT, "tests", "vectors", "rawlog.img"),
        "nodev": "/dev/ttyNOSUCHPORT9",
        "closed": str(_free_port()),
        "busy": str(busy.getsockname()[1]),
    }
    from host_tools.ota.keys import ReleaseKey

    ReleaseKey.generate(d / "release.key", 5)
    values["key"] = str(d / "release.key")
    values["keep"] = {p.name for p in d.iterdir()} | {"precious.txt"}
    yield values
    busy.close()
    shutil.rmtree(d, ignore_errors=True)


def _argv(template: str, values: dict) -> list[str]:
    import shlex

    return shlex.split(template.format(**values))


def check(o: Outcome, must: str, precious: str) -> list[str]:
    """What is wrong with one outcome under the contract (empty: it holds)."""
    problems = []
    if o.rc is None:
        problems.append("hung")
    elif o.rc != 2:
        problems.append(f"exit {o.rc}, not 2")
    if "Traceback" in o.stderr:
        problems.append("traceback")
    lines = o.stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("edgectl: "):
        problems.append(f"{len(lines)} stderr lines, not one `edgectl: ...` line")
    elif must not in lines[0]:
        problems.append(f"message does not name {must!r}")
    if o.leaked:
        problems.append("left a process running")
    if not os.path.isfile(precious) or open(precious, "rb").read() != PRECIOUS:
        problems.append("destroyed a file it did not create")
    return problems


def test_corpus_covers_every_command_and_is_large():
    cases = HAND_WRITTEN + generated()
    named = {c.split()[0] for c, _ in cases if c and not c.startswith("-")}
    assert set(_subcommands()) <= named
    assert len(cases) >= 150, len(cases)


def _clean(files: dict) -> None:
    """Remove what earlier cases wrote into the corpus directory (only the fixture's files
    stay), so each case meets the same files."""
    for entry in os.scandir(files["d"]):
        if entry.name in files["keep"]:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _reset(path: str) -> None:
    """The user's file, back as it was (a case that broke the contract may have replaced it)."""
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)
    with open(path, "wb") as f:
        f.write(PRECIOUS)


def test_corpus(files):
    cases = HAND_WRITTEN + generated()
    failures = []
    for template, must in cases:
        precious = files["regular"]
        _reset(precious)
        _clean(files)
        cwd = Path(files["d"]) / "cwd"
        cwd.mkdir()
        o = run_edgectl(
            _argv(template, files), str(cwd), timeout=float(os.environ.get("CORPUS_TIMEOUT", "10"))
        )
        problems = check(o, must.format(**files), precious)
        if os.environ.get("CORPUS_LOG"):
            with open(os.environ["CORPUS_LOG"], "a") as log:
                log.write(f"{o.seconds:5.1f}s {problems} {template}\n")
        if problems:
            failures.append(f"[{', '.join(problems)}] {o.describe()}")
    report = f"{len(failures)} of {len(cases)} bad inputs broke the contract:\n" + "\n".join(
        failures
    )
    assert not failures, report


@pytest.mark.parametrize("argv", [["check", "--reference"], ["dump", "{rawlog}"]])
def test_a_reader_that_goes_away_is_no_error(files, argv):
    """`edgectl dump IMAGE | head`: the pipe closes early; no traceback, no message, 141."""
    o = run_edgectl([a.format(**files) for a in argv], files["d"], close_stdout=True)
    assert o.rc == 141 and o.stderr == "", o.describe()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_broker_command_stops_mosquitto(sig):
    """SIGTERM (a service manager) or SIGINT (Ctrl-C) to `edgectl broker` stops the broker
    process it started: none is left running."""
    port = _free_port()
    p = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "edgectl"), "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "broker:" in p.stdout.readline()
        kids = _children(p.pid)
        assert kids and all(_alive(k) for k in kids)
        p.send_signal(sig)
        rc = p.wait(30)
        assert rc == 0, p.stderr.read()
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids), f"left running: {kids}"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_vboard_never_replaces_a_file_beside_its_link(files):
    """The vboard's control socket goes at LINK.ctl: a user's file there is refused, kept."""
    d = Path(files["d"])
    ctl = d / "board.ctl"
    ctl.write_bytes(PRECIOUS)
    try:
        o = run_edgectl(
            ["vboard", "--link", str(d / "board"), "--image", str(d / "b.img")], str(d)
        )
        assert o.rc == 2 and str(ctl) in o.stderr and "Traceback" not in o.stderr, o.describe()
        assert ctl.read_bytes() == PRECIOUS and not os.path.lexists(d / "board")
    finally:
        for p in (ctl, d / "b.img", d / "b.img.log", d / "b.img.rom"):
            if p.exists():
                p.unlink()


def test_two_vboards_never_share_one_image(files, micropython):
    """A second vboard on a running one's image is refused (both would write its flash)."""
    from host_tools.board.vboard import spawn

    d = Path(files["d"])
    first = spawn(d / "first", d / "shared.img")
    try:
        o = run_edgectl(
            ["vboard", "--link", str(d / "second"), "--image", str(d / "shared.img")], str(d)
        )
        assert o.rc == 2 and "in use by another vboard" in o.stderr, o.describe()
        assert not os.path.lexists(d / "second")
    finally:
        first.terminate()
        first.wait(10)
        for p in d.glob("shared.img*"):
            p.unlink()


def test_sigterm_to_run_stops_the_agent(broker, micropython):
    """`edgectl run` stopped by a service manager: the agent under MicroPython stops too."""
    p = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "edgectl"), "run"]
        + ["--port", str(broker.port), "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _children(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        kids = _children(p.pid)
        assert kids, p.stderr.read() if p.poll() is not None else "no agent started"
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 143
        assert p.stderr.read().strip().splitlines()[-1] == "edgectl: terminated"
        deadline = time.monotonic() + 10
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids), f"left running: {kids}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
