"""`edgectl`: argparse front end. Handlers only parse and call the API modules."""

from __future__ import annotations

import argparse
import importlib
import sys

import edge

from host_tools.errors import ToolError

# Each command module exposes `register(subparsers)`, which adds its sub-command(s) and sets
# `func` to a handler returning an int exit code. Add one line here per module.
COMMAND_MODULES = [
    "host_tools.backend.broker",
    "host_tools.backend.collect",
    "host_tools.backend.cluster",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl", description="Edge telemetry agent tools")
    parser.add_argument(
        "--version",
        action="version",
        version=f"edgectl {edge.__version__} (agent {edge.__version__}, edge/__init__.py)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ToolError as e:
        print(f"edgectl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgectl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
