"""Runs `edgectl` (host_tools.cli.main) on one argument list in a forked child: fast (no
interpreter start per case), isolated (its own process group, cwd, stdin, memory limit) and
bounded (killed after a timeout). Used by tests/test_cli_corpus.py."""

from __future__ import annotations

import os
import resource
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass

# a hostile input must not take the shared machine down with it
_CHILD_ADDRESS_SPACE = 3 << 30


@dataclass
class Outcome:
    argv: list[str]
    rc: int | None  # None: it hung and was killed
    stdout: str
    stderr: str
    seconds: float
    leaked: bool  # a process of the child's group outlived it

    def describe(self) -> str:
        return (
            f"edgectl {' '.join(self.argv)} -> rc={self.rc} in {self.seconds:.1f}s"
            f"{' LEAKED a process' if self.leaked else ''}\n"
            f"  stderr: {self.stderr[-1500:]!r}\n  stdout: {self.stdout[-300:]!r}"
        )


def _child(argv: list[str], cwd: str, w_out: int, w_err: int) -> int:
    """What the `edgectl` console script does (`sys.exit(main())`), including the
    interpreter's last flush of stdout."""
    os.setsid()  # its own group: grandchildren (mosquitto, micropython) can be found and killed
    resource.setrlimit(resource.RLIMIT_AS, (_CHILD_ADDRESS_SPACE, _CHILD_ADDRESS_SPACE))
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(w_out, 1)
    os.dup2(w_err, 2)
    # the interpreter's own streams, not pytest's capture objects
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from host_tools.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        rc = 1
    try:
        sys.stdout.flush()
    except BaseException:
        print("Exception ignored in: <stdout>", file=sys.stderr)
        traceback.print_exc()
        rc = 120
    sys.stderr.flush()
    return rc


def run_edgectl(
    argv: list[str], cwd: str, timeout: float = 20.0, close_stdout: bool = False
) -> Outcome:
    """Run `edgectl ARGV` as the console script would; kill its process group on a hang.
    `close_stdout` makes stdout a pipe nobody reads after the first bytes (`| head -c0`)."""
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    t0 = time.monotonic()
    if close_stdout:
        os.close(r_out)  # no reader anywhere: the child's first write meets a broken pipe
    pid = os.fork()
    if pid == 0:  # the child
        rc = 99
        try:
            if not close_stdout:
                os.close(r_out)
            os.close(r_err)
            rc = _child(argv, cwd, w_out, w_err)
        finally:
            os._exit(rc)
    os.close(w_out)
    os.close(w_err)
    bufs: dict[int, bytearray] = {r_err: bytearray()}
    if not close_stdout:
        bufs[r_out] = bytearray()
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    rc: int | None = None
    deadline = t0 + timeout
    while True:
        if not sel.get_map():
            time.sleep(0.002)  # both pipes closed: only the exit is left to wait for
        for key, _ in sel.select(timeout=0.05) if sel.get_map() else ():
            chunk = os.read(key.fd, 65536)
            if chunk:
                bufs[key.fd] += chunk[: max(0, (1 << 20) - len(bufs[key.fd]))]
            else:
                sel.unregister(key.fd)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            break
    leaked = False
    try:
        os.killpg(pid, 0)
        leaked = rc is not None  # the child ended but something it started did not
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if rc is None:
        os.waitpid(pid, 0)
    for fd in list(bufs):
        try:
            while chunk := os.read(fd, 65536):
                bufs[fd] += chunk
        except OSError:
            pass
        os.close(fd)
    sel.close()
    return Outcome(
        argv,
        rc,
        bufs.get(r_out, bytearray()).decode(errors="replace"),
        bufs[r_err].decode(errors="replace"),
        time.monotonic() - t0,
        leaked,
    )
