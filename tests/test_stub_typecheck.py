"""Stub type check: the whole `edge` package type-checks with mypy against
micropython-esp32-stubs and the MicroPython stdlib stubs (used as the typeshed), so a wrong
machine.* call fails `make test`. Where the stubs are wrong or a module is unix-only, the line
carries `# type: ignore[code]` with its reason (edge/ has no `typing` at run time)."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHECKED = ["edge"]
# Not checked (path regexes for mypy --exclude):
EXCLUDED = [
    # a CPython freeze script run by the firmware build (`module()` comes from it), never
    # agent code; os.path is CPython-only, so it has no place under the MicroPython typeshed
    r"^edge/manifest\.py$",
]


def _site_packages():
    import mypy

    sp = pathlib.Path(mypy.__file__).resolve().parent.parent
    if not (sp / "stdlib" / "VERSIONS").exists() or not (sp / "machine.pyi").exists():
        pytest.fail("micropython-esp32-stubs / micropython-stdlib-stubs not installed in %s" % sp)
    return sp


def _esp32_stub_dir(sp, dest):
    """Copy the esp32 stub modules and the shared _mpy_shed package (listed in the wheels'
    RECORDs): mypy refuses site-packages itself on its search path. Returns the stub dir and
    a mypy config that silences errors inside the third-party stubs themselves."""
    names = set()
    for pattern in ("micropython_esp32_stubs-*.dist-info", "micropython_stdlib_stubs-*.dist-info"):
        dist = next(sp.glob(pattern))
        for line in (dist / "RECORD").read_text().splitlines():
            rel = line.split(",")[0]
            if not rel.endswith(".pyi") or rel.startswith("stdlib/"):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sp / rel, out)
            names.add(rel.split("/")[0].removesuffix(".pyi"))
    cfg = dest.parent / "mypy.ini"
    cfg.write_text(
        "[mypy]\n"
        + "".join("[mypy-%s,%s.*]\nignore_errors = True\n" % (n, n) for n in sorted(names))
    )
    return dest, cfg


def run_mypy(tmp_path, files, exclude=()):
    sp = _site_packages()
    stubs, cfg = _esp32_stub_dir(sp, tmp_path / "esp32stubs")
    env = dict(os.environ, MYPYPATH=str(stubs))
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--custom-typeshed-dir",
        str(sp),
        "--no-site-packages",
        "--explicit-package-bases",
        "--config-file",
        str(cfg),
        "--follow-imports=silent",
        "--no-incremental",
        "--check-untyped-defs",
        "--cache-dir",
        str(tmp_path / "cache"),
    ] + files
    for pattern in exclude:
        cmd += ["--exclude", pattern]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_edge_is_clean_against_esp32_stubs(tmp_path):
    r = run_mypy(tmp_path, CHECKED, EXCLUDED)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout
    # every module of edge/ outside EXCLUDED was checked, not silently skipped
    n = sum(
        1
        for p in (ROOT / "edge").rglob("*.py")
        if not any(re.search(x, p.relative_to(ROOT).as_posix()) for x in EXCLUDED)
    )
    assert "%d source files" % n in r.stdout, r.stdout


def test_the_check_catches_a_wrong_machine_call(tmp_path):
    bad = tmp_path / "bad_hal.py"
    bad.write_text(
        "import machine\n\n\ndef f():\n    u = machine.UART(1, baudrate=9600)\n"
        "    u.readinto(1, 2, 3, 4)\n    machine.ADC(machine.Pin(1)).read_volts()\n"
    )
    r = run_mypy(tmp_path, [str(bad)])
    assert r.returncode == 1
    assert "read_volts" in r.stdout and "readinto" in r.stdout
