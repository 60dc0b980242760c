"""`edgectl`: argparse front end. Handlers only parse and call the API modules."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import subprocess
import sys
import threading
import traceback
from typing import NoReturn

import serial

import edge

from host_tools.errors import Terminated, ToolError

# Each command module exposes `register(subparsers)`, which adds its sub-command(s) and sets
# `func` to a handler returning an int exit code. Add one line here per module.
COMMAND_MODULES = [
    "host_tools.backend.broker",
    "host_tools.backend.collect",
    "host_tools.backend.cluster",
    "host_tools.backend.fleet",
    "host_tools.agent.run",
    "host_tools.agent.demo",
    "host_tools.backend.consent",
    "host_tools.bench.cli",
    "host_tools.board.dump",
    "host_tools.board.flash",
    "host_tools.board.check",
    "host_tools.board.deploy",
    "host_tools.board.vboard",
    "host_tools.board.logs",
    "host_tools.backend.provision",
    "host_tools.backend.subject",
    "host_tools.captures.capture",
    "host_tools.captures.convert",
    "host_tools.captures.replay_command",
    "host_tools.captures.simulate",
    "host_tools.ota.release",
    "host_tools.ota.update",
    "host_tools.view.dashboard",
    "host_tools.view.export",
    "host_tools.view.plot",
]


class Parser(argparse.ArgumentParser):
    """argparse with the tools' error contract: a usage error is one line naming the command
    and the argument, with the closest known option or command when one was misspelled."""

    def error(self, message: str) -> NoReturn:
        cmd = self.prog.removeprefix("edgectl").strip()
        hint = _suggestion(self, message)
        where = f"{cmd}: " if cmd else ""
        self.exit(
            2, f"edgectl: {where}{message}{hint} (see edgectl {cmd} --help)\n".replace("  ", " ")
        )


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    words: list[str] = []
    if message.startswith("unrecognized arguments:"):
        words = [w for w in message.split(":", 1)[1].split() if w.startswith("-")]
        known = [o for a in parser._actions for o in a.option_strings]
    elif "invalid choice:" in message:
        words = [message.split("invalid choice:", 1)[1].split("'")[1]]
        known = [str(c) for a in parser._actions if a.choices for c in a.choices]
    for word in words:
        close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="edgectl", description="Edge telemetry agent tools")
    parser.add_argument(
        "--version",
        action="version",
        version=f"edgectl {edge.__version__} (agent {edge.__version__}, edge/__init__.py)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    c = sub.add_parser("completion", help="print a shell completion script (bash, zsh, tcsh)")
    c.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    c.set_defaults(func=cmd_completion)
    return parser


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# file and directory arguments complete as paths (shtab's markers), found by their types
_FILE_TYPES = ("input_file", "output_file", "new_file", "input_path", "link_path")


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a static completion script generated from the parser (shtab): nothing is imported
    when the shell completes. `eval "$(edgectl completion bash)"` or save it (docs/CLI.md 3)."""
    import shtab

    parser = build_parser()
    for sp in commands(parser).values():
        for action in sp._actions:
            kind = getattr(action.type, "__name__", "")
            if kind in _FILE_TYPES:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif kind == "directory":
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    print(shtab.complete(parser, shell=args.shell))
    return 0


def _unknown_options_first(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """A misspelled option is the error to report, not the required arguments argparse would
    miss because of it (`edgectl flash --prot X` says `--prot`, not `--port is required`)."""
    sub, rest = parser, argv
    while True:  # down to the innermost sub-command named (`cluster up`)
        words = [w for w in rest if not w.startswith("-")]
        inner = commands(sub).get(words[0]) if words else None
        if inner is None:
            break
        sub, rest = inner, rest[rest.index(words[0]) + 1 :]
    if sub is parser:
        return
    known = [o for a in sub._actions for o in a.option_strings]
    for word in rest:
        if word == "--":
            return
        if word.startswith("--"):
            opt = word.split("=", 1)[0]
            if not any(k.startswith(opt) for k in known):
                sub.error(f"unrecognized arguments: {word}")


def _on_sigterm(_sig: int, _frame: object) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure a user can cause is one stderr line and a documented
    exit code (docs/CLI.md section 1)."""
    parser = build_parser()
    try:
        _unknown_options_first(parser, sys.argv[1:] if argv is None else argv)
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the sub-command's parser, which knows its own options
            subs = commands(parser)
            (subs.get(str(getattr(args, "command", ""))) or parser).error(
                f"unrecognized arguments: {' '.join(extra)}"
            )
    except SystemExit as e:  # a usage error (already printed), --help or --version
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        names = ", ".join(sorted(commands(parser)))
        print(f"edgectl: no COMMAND given; one of {names} (see edgectl --help)", file=sys.stderr)
        return 2
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return _run(args)
    finally:
        if in_main:  # main() called in-process (tests, scripts) leaves SIGTERM as it was
            signal.signal(signal.SIGTERM, old_term)


def _run(args: argparse.Namespace) -> int:
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return rc
    except ToolError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Terminated:
        return _fail("terminated", 143)
    except BrokenPipeError:
        # the reader of stdout went away (`edgectl dump ... | head`): nothing to tell it
        _quiet_stdout()
        return 141
    except serial.SerialException as e:
        return _fail(f"serial port: {e} (check the cable, the port name and the driver)")
    except subprocess.CalledProcessError as e:
        return _fail(f"{_cmd(e.cmd)} failed with exit code {e.returncode}{_last_line(e.stderr)}")
    except subprocess.TimeoutExpired as e:
        return _fail(f"{_cmd(e.cmd)} did not finish within {e.timeout:g} s")
    except UnicodeError as e:
        return _fail(f"not UTF-8 text: {e}")
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except MemoryError:
        return _fail("out of memory (is an input file far larger than expected?)")
    except Exception:
        traceback.print_exc()
        return _fail(
            "internal error: this is a bug in edgectl; please report it with the traceback "
            "above and the command line",
            70,
        )


def _fail(message: str, code: int = 2) -> int:
    try:
        print(f"edgectl: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass
    try:
        sys.stdout.flush()
    except OSError:  # stdout's reader went away too
        _quiet_stdout()
    return code


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail on a closed pipe."""
    try:
        sys.stdout.flush()
    except OSError:
        pass
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def _cmd(cmd: object) -> str:
    return os.path.basename(str(cmd[0] if isinstance(cmd, list | tuple) else cmd))


def _last_line(stderr: object) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = str(stderr or "").strip().splitlines()
    return f": {lines[-1]}" if lines else ""


if __name__ == "__main__":
    sys.exit(main())
