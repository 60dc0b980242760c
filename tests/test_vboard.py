"""The virtual board (docs/DEPLOY.md 0): littlefs root on a file-backed flash image, behind a pty,
driven by the real mpremote without `resume`; the image survives reboots."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import serial

from host_tools.board.vboard import spawn

MPREMOTE = str(Path(sys.executable).parent / "mpremote")


class VBoard:
    """A `python -m host_tools.board.vboard` subprocess (same code as `edgectl vboard`)."""

    def __init__(self, tmp: Path, image: Path | None = None, uarts: tuple[str, ...] = ()):
        self.link = tmp / "ttyVB0"
        self.image = image or tmp / "flash.img"
        self.uarts = uarts  # `--uart NAME=TARGET` arguments
        self.proc = None

    def start(self):
        self.proc = spawn(self.link, self.image, uarts=self.uarts)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc and self.proc.stdout:
            self.out = self.proc.stdout.read().decode(errors="replace")
        self.proc = None

    def output(self):
        """What the vboard printed (after stop())."""
        return getattr(self, "out", "")

    def mpremote(self, *args, check=True, timeout=60):
        r = subprocess.run(
            [MPREMOTE, "connect", str(self.link), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError("mpremote %s failed: %s%s" % (args, r.stdout, r.stderr))
        return r.stdout


@pytest.fixture
def vboard(tmp_path):
    vb = VBoard(tmp_path).start()
    yield vb
    vb.stop()


def test_root_is_littlefs_on_the_image(vboard):
    out = vboard.mpremote("exec", "import vfs,sys;print(vfs.mount());print(sys.path)")
    assert "VfsLfs2" in out and "'/lib'" in out
    assert os.path.getsize(vboard.image) == 2 * 1024 * 1024


def test_files_survive_reboot_and_soft_reset_works(vboard, tmp_path):
    src = tmp_path / "hello.py"
    src.write_text("X = 42\n")
    vboard.mpremote("fs", "cp", str(src), ":lib/hello.py")
    # Without `resume`, mpremote soft-resets (Ctrl-D): state is cleared, the board comes back.
    out = vboard.mpremote(
        "exec",
        "Y=1",
        "+",
        "soft-reset",
        "+",
        "exec",
        "import hello\ntry:\n print(Y)\nexcept NameError:\n print('cleared', hello.X)",
    )
    assert "cleared 42" in out
    vboard.stop()  # power off
    with open(vboard.image, "rb") as f:
        assert b"hello.py" in f.read()  # the bytes really are on the emulated flash
    vboard.start()
    assert "42" in vboard.mpremote("exec", "import hello;print(hello.X)")


def test_main_runs_at_power_up_and_mpremote_interrupts_it(vboard, tmp_path):
    main = tmp_path / "main.py"
    main.write_text("import time\nprint('main running')\nwhile True:\n    time.sleep(0.05)\n")
    vboard.mpremote("fs", "cp", str(main), ":main.py")
    vboard.stop()
    vboard.start()
    with serial.Serial(str(vboard.link), 115200, timeout=5) as port:
        assert b"main running" in port.read_until(b"main running")
    assert "ok" in vboard.mpremote("exec", "print('ok')")


def test_boots_blank_image_and_tolerates_esptool_probe(vboard):
    # esptool on the pty fails fast; the board must survive it.
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "esptool",
            "--port",
            str(vboard.link),
            "--connect-attempts",
            "1",
            "--before",
            "no-reset",
            "chip-id",
        ],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "ok" in vboard.mpremote("exec", "print('ok')")
