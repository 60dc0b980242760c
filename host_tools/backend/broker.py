"""Broker launcher: mosquitto on loopback when installed, otherwise an embedded amqtt broker.

The demo, the tests and the benchmarks all start their broker through `start()`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from host_tools.errors import Terminated, ToolError
from host_tools import argtypes

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_listening(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process runs under this PID (a zombie, not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait until PID has exited; False when it still runs after timeout seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class Broker:
    kind: str
    port: int
    proc: subprocess.Popen
    workdir: str
    host: str = HOST
    extra: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Stop the broker process we started (by PID) and remove its config."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would (chaos tests); restart() brings it back on the same port."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.kill()
        self.proc = _spawn(self.kind, self.port, self.workdir, self.extra.get("conf_extra", ""))
        if not wait_listening(self.port, 10, self.proc):
            raise ToolError(f"{self.kind} did not come back on port {self.port}")

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def mosquitto_path() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _mosquitto_conf(port: int, extra: str) -> str:
    return (
        f"listener {port} {HOST}\n"
        "allow_anonymous true\n"
        "persistence false\n"
        # Nagle halves a pipelined window's rate
        "set_tcp_nodelay true\n"
        "max_queued_messages 100000\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        f"{extra}"
    )


def _spawn(kind: str, port: int, workdir: str, conf_extra: str) -> subprocess.Popen:
    log = open(os.path.join(workdir, "broker.log"), "ab")
    if kind == "mosquitto":
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(_mosquitto_conf(port, conf_extra))
        cmd = [mosquitto_path() or "mosquitto", "-c", conf]
    else:
        cmd = [sys.executable, "-m", "host_tools.backend.amqtt_broker", "--port", str(port)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def start(port: int | None = None, prefer: str = "auto", conf_extra: str = "") -> Broker:
    """Start a loopback broker. prefer: "auto" (mosquitto if installed), "mosquitto", "amqtt"."""
    kind = prefer
    if prefer == "auto":
        kind = "mosquitto" if mosquitto_path() else "amqtt"
    if kind == "mosquitto" and not mosquitto_path():
        raise ToolError("mosquitto is not installed (apt-get install mosquitto), try --kind amqtt")
    if kind == "amqtt":
        try:
            import amqtt  # noqa: F401
        except ImportError as e:
            raise ToolError(
                "no broker: mosquitto is not installed and amqtt is not importable "
                "(apt-get install mosquitto, or pip install amqtt)"
            ) from e
    if port and not port_free(port):
        raise ToolError(f"port {port} on {HOST} is already in use")
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="edge-broker-")
    proc = _spawn(kind, port, workdir, conf_extra)
    if not wait_listening(port, 15, proc):
        proc.kill()
        with open(os.path.join(workdir, "broker.log"), "rb") as f:
            tail = f.read()[-300:].decode(errors="replace").strip()
        shutil.rmtree(workdir, ignore_errors=True)
        raise ToolError(f"{kind} did not start on {HOST}:{port}: {tail or 'no output'}")
    return Broker(kind, port, proc, workdir, extra={"conf_extra": conf_extra})


def start_config(conf_path: str, extra: str = "") -> Broker:
    """Run mosquitto on a complete config file (e.g. `edgectl provision`'s), with `extra`
    lines put first (tests: `user root`); waits until every `listener` of it listens. The
    Broker's port is the first listener's, `extra["ports"]` all of them."""
    if not mosquitto_path():
        raise ToolError("mosquitto is not installed (apt-get install mosquitto)")
    try:
        with open(conf_path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ToolError(f"cannot read broker config {conf_path}: {e.strerror or e}") from e
    ports = [int(m) for m in re.findall(r"^listener\s+(\d+)", text, re.M)]
    if not ports:
        raise ToolError(f"broker config {conf_path} has no `listener PORT` line")
    for port in ports:
        if not port_free(port):
            raise ToolError(f"port {port} on {HOST} is already in use")
    workdir = tempfile.mkdtemp(prefix="edge-broker-")
    conf = os.path.join(workdir, "mosquitto.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(extra + text)
    log = open(os.path.join(workdir, "broker.log"), "ab")
    proc = subprocess.Popen(
        [mosquitto_path() or "mosquitto", "-c", conf],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    for port in ports:
        if not wait_listening(port, 15, proc):
            proc.kill()
            proc.wait(5)
            with open(os.path.join(workdir, "broker.log"), "rb") as f:
                tail = f.read()[-300:].decode(errors="replace").strip()
            shutil.rmtree(workdir, ignore_errors=True)
            raise ToolError(f"mosquitto did not listen on {HOST}:{port}: {tail or 'no output'}")
    return Broker("mosquitto", ports[0], proc, workdir, extra={"ports": ports})


def cmd_broker(args) -> int:
    b = start_config(args.config) if args.config else start(args.port, args.kind)
    try:
        print(f"broker: {b.kind} on {b.host}:{b.port} (pid {b.pid}); Ctrl-C stops it", flush=True)
        while b.proc.poll() is None:
            time.sleep(0.5)
        raise ToolError(f"{b.kind} exited with code {b.proc.returncode}")
    except (KeyboardInterrupt, Terminated):
        pass  # Ctrl-C or a service manager's SIGTERM: the normal way to stop it
    finally:
        # a second Ctrl-C or SIGTERM must not cut the stop short and leave the broker running
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        b.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    print("broker: stopped")
    return 0


def register(sub) -> None:
    p = sub.add_parser("broker", help="run a loopback MQTT broker (mosquitto, else amqtt)")
    p.add_argument(
        "--port", type=argtypes.tcp_port, default=None, help="TCP port (default: a free one)"
    )
    p.add_argument("--kind", choices=["auto", "mosquitto", "amqtt"], default="auto")
    p.add_argument(
        "--config",
        metavar="FILE",
        type=argtypes.input_file,
        help="run mosquitto on this config (e.g. provision/broker/mosquitto.conf)",
    )
    p.set_defaults(func=cmd_broker)
