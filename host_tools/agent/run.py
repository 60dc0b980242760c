"""Run the real `edge` agent under the unix port of MicroPython (`edgectl run`)."""

from __future__ import annotations

import copy
import json
import socket
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from host_tools.board.check import problems as config_problems
from host_tools.errors import ToolError, read_json_object
from host_tools.paths import board_file, micropython_path, mp_env
from host_tools import argtypes

DEFAULT_HEAP = "512K"
RESET_EXIT = 75  # edge/ota/boot.py: the agent asks for a board reset
MAX_BOOTS = 20  # a boot loop ends the run instead of spinning


class AgentProcess:
    """One agent under unix MicroPython. Parses its `@stats`/`@final`/`@log` lines."""

    module = "edge.main"  # entry module; `edgectl replay --agent` uses edge.hal.unix.replay_main

    def __init__(
        self,
        config: dict,
        heap: str | None = None,
        workdir: str | None = None,
        echo=None,
        root: bool = False,
        secrets: dict[str, bytes] | None = None,
    ) -> None:
        self.workdir = workdir or tempfile.mkdtemp(prefix="edge-agent-")
        # root: the workdir is laid out like a board's filesystem and the agent boots through
        # deploy's main.py and the boot selector (docs/OTA.md section 4); an exit with
        # RESET_EXIT is a board reset: the agent is started again on the same directory
        self.root = root
        self.secrets = secrets
        self.boots = 0
        self.stopping = False
        self.done = threading.Event()
        self.own_workdir = workdir is None
        self.config = dict(config)
        self.config.setdefault("store", {})
        self.config["store"] = {
            "path": os.path.join(self.workdir, "store"),
            **self.config["store"],
        }
        self.heap = heap or DEFAULT_HEAP
        self.echo = echo
        self.stats: dict = {}
        self.final: dict | None = None
        self.logs: list[str] = []
        self.bad_lines = 0
        self.output: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        path = os.path.join(self.workdir, "config.json")
        if self.root:
            from host_tools.agent.board_root import make_root

            make_root(Path(self.workdir), self.config, self.secrets)
        else:
            with open(path, "w") as f:
                json.dump(self.config, f)
        self._spawn()
        self.reader = threading.Thread(target=self._supervise, daemon=True)
        self.reader.start()
        return self

    def _spawn(self) -> None:
        self.boots += 1
        if self.root:
            argv = [os.path.join(self.workdir, "main.py"), self.workdir]
            env = dict(os.environ, MICROPYPATH=".frozen")  # edge comes from the slot
        else:
            argv = ["-m", self.module, os.path.join(self.workdir, "config.json")]
            env = mp_env()
        self.proc = subprocess.Popen(
            [micropython_path(), "-X", f"heapsize={self.heap}", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
            text=True,
            bufsize=1,
        )

    def _watchdog_reset(self, rc: int, since: int) -> bool:
        """The run was ended by the simulated hardware watchdog (edge/hal/unix/sim.py SimWDT
        logs its expiry, then kills the process): on a board that is a reset, so a board-like
        run boots again, and the boot selector sees it (a trial rolls back, docs/OTA.md 4)."""
        return rc == -signal.SIGKILL and any(
            ln.startswith("@log watchdog: expired") for ln in self.output[since:]
        )

    def _supervise(self) -> None:
        while True:
            since = len(self.output)
            self._read()
            assert self.proc
            rc = self.proc.wait()
            reset = rc == RESET_EXIT or self._watchdog_reset(rc, since)
            if self.root and reset and not self.stopping and self.boots < MAX_BOOTS:
                self.output.append(f"@reboot {self.boots}")
                self._spawn()
                continue
            break
        self.done.set()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            try:
                if line.startswith("@stats "):
                    self.stats = json.loads(line[7:])
                elif line.startswith("@final "):
                    self.final = json.loads(line[7:])
                    self.stats = self.final
            except ValueError:
                # a line the agent could not finish (out of memory while writing it): keep
                # reading, or its stdout pipe fills and the agent blocks on its next line
                self.bad_lines += 1
            if line.startswith("@log "):
                self.logs.append(line[5:])
            if self.echo:
                self.echo(line)

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc
        if not self.done.wait(timeout):
            self.stop()
            raise ToolError(f"agent did not finish within {timeout} s")
        rc = self.proc.wait()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        if rc != 0:
            # MicroPython prints tracebacks to stdout, not stderr
            tail = "\n".join(self.output[-15:])
            raise ToolError(f"agent exited with code {rc}: {err.strip()}\n{tail}".strip())
        return rc

    def stop(self) -> None:
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.done.wait(5)

    def cleanup(self) -> None:
        self.stop()
        if self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def agent_config(board: str, device: dict | None = None, **overrides) -> dict:
    """Device config for a run: board defaults < device file < explicit overrides."""
    b = board_file(board)
    cfg: dict = {"board": b.get("name", board)}
    for key, value in (b.get("config") or {}).items():
        cfg[key] = value
    if device:
        cfg = _merge(cfg, device)
    return _merge(cfg, overrides)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def broker_reachable(host: str, port: int, timeout: float = 3.0) -> None:
    """ToolError unless something accepts TCP connections at host:port: the agent would
    otherwise sample into its store and wait for a broker that never comes."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ToolError(
            f"no broker at {host}:{port} ({e.strerror or e}); start one with "
            f"`edgectl broker --port {port}` or pass --host/--port"
        ) from None


# after sampling stops, how long the agent may take to forward its store before `run` gives up
_DRAIN_GRACE_S = 60


def cmd_run(args) -> int:
    device = read_json_object(args.config, "config") if args.config else None
    over: dict = {"mqtt": {"host": args.host, "port": args.port}}
    sim = {}
    if args.count is not None:
        sim["count"] = args.count
    if args.seconds is not None:
        sim["seconds"] = args.seconds
    if args.rate is not None:
        sim["rate_hz"] = args.rate
    if sim:
        over["sim"] = sim
    cfg = agent_config(args.board, device, **over)
    found = config_problems(copy.deepcopy(cfg))
    if found:
        raise ToolError(f"{args.config or args.board}: {'; '.join(found)}")
    broker_reachable(args.host, args.port)
    agent = AgentProcess(
        cfg,
        heap=args.heap,
        workdir=args.workdir,
        echo=lambda line: print(line, flush=True),
        root=args.slots,
    )
    agent.start()
    try:
        agent.wait(args.seconds + _DRAIN_GRACE_S if args.seconds else None)
    finally:
        agent.cleanup()
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run the agent under unix MicroPython")
    p.add_argument("--board", default="unix-sim")
    p.add_argument(
        "--config",
        type=argtypes.input_file,
        help="device config JSON (merged over the board's defaults)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=argtypes.tcp_port, default=1883, help="broker port")
    p.add_argument(
        "--count", type=argtypes.positive_int, help="stop after this many simulated readings"
    )
    p.add_argument("--seconds", type=argtypes.whole_seconds, help="stop sampling after this long")
    p.add_argument("--rate", type=argtypes.positive_int, help="simulated readings per second")
    p.add_argument(
        "--heap",
        type=argtypes.heapsize,
        default=None,
        help=f"MicroPython heap (default {DEFAULT_HEAP})",
    )
    p.add_argument(
        "--workdir",
        type=argtypes.directory,
        default=None,
        help="keep the store here (default: a temp dir)",
    )
    p.add_argument(
        "--slots",
        action="store_true",
        help="boot like a board: the workdir is its root (lib/edge = slot a, main.py from "
        "deploy, ota/ boot state), updates and remote config work, resets restart the agent",
    )
    p.set_defaults(func=cmd_run)
