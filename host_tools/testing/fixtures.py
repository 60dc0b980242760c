"""What the pytest fixtures hand out (host_tools/testing/plugin.py): each starts real parts
(the agent under unix MicroPython, mosquitto, the collector, a vboard, `edgectl simulate
--serve`) and stops every one it started when the test ends, pass or fail (docs/TESTING.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_tools.agent.run import AgentProcess, agent_config
from host_tools.errors import ToolError

# how long the helpers wait by default: bounds a hang, generous for a loaded CI machine
WAIT_S = 60.0


@dataclass(frozen=True)
class Reading:
    """One reading as the collector stored it, with the name, unit and category the device
    declared for its channel (docs/MQTT.md section 2). `value` is scaled by the channel's
    decimals (2150 with 2 decimals is 21.5); `raw` is the integer on the wire."""

    device: str
    seq: int
    ts: int
    category: str
    channel: int
    name: str | None
    unit: str | None
    value: float
    raw: int


def _config(cfg: dict | str | os.PathLike) -> dict:
    if isinstance(cfg, dict):
        return cfg
    from host_tools.errors import read_json_object

    return read_json_object(cfg, "device config")


class Agents:
    """The `agents` fixture: `agents(cfg, **opts)` starts the real agent (a config dict, or the
    path of a device config JSON file merged over its board's defaults and pointed at the test
    broker); `agents.run(cfg, timeout)` runs one to its end. Every agent is stopped and its
    temporary work directory removed at teardown."""

    def __init__(self, broker: Any = None) -> None:
        self.broker = broker
        self.started: list[AgentProcess] = []

    def config(self, cfg: dict | str | os.PathLike, board: str | None = None, **over) -> dict:
        """The full config an agent would boot with: `cfg` over `board`'s defaults (default:
        the board the config names, else unix-sim), aimed at the test broker, then `over`."""
        device = _config(cfg)
        full = agent_config(board or device.get("board") or "unix-sim", device)
        if self.broker is not None:
            full.setdefault("mqtt", {}).update(host=self.broker.host, port=self.broker.port)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(full.get(key), dict):
                full[key] = {**full[key], **value}
            else:
                full[key] = value
        return full

    def __call__(
        self, cfg: dict | str | os.PathLike, cls: type[AgentProcess] = AgentProcess, **kw
    ) -> AgentProcess:
        """Start an agent with config `cfg` (AgentProcess options: heap, workdir, root...). A
        path is read and completed with config(); a dict is used as it is."""
        if not isinstance(cfg, dict):
            cfg = self.config(cfg)
        a = cls(cfg, **kw).start()
        self.started.append(a)
        return a

    def run(self, cfg: dict | str | os.PathLike, timeout: float = 120, **kw) -> AgentProcess:
        """Start an agent and wait until it ends (ToolError on a crash or the timeout); its
        `final` holds the last counters."""
        a = self(cfg, **kw)
        a.wait(timeout)
        return a

    def stop_all(self) -> None:
        for a in self.started:
            a.cleanup()


class TestCollector:
    """The `collector` fixture: the real collector (host_tools/backend/collect.py) subscribed
    to the test broker, its database in memory. Wait for readings and check them by channel
    name, with the units the device declared."""

    __test__ = False  # a helper, not a test class pytest should collect

    def __init__(self, broker: Any, prefix: str = "edge") -> None:
        from host_tools.backend.collect import Collector

        self.col = Collector(broker.host, broker.port, prefix).start()

    def readings(self, device: str | None = None, channel: str | int | None = None) -> list:
        """Every reading so far (of `device`, of `channel`: a name or a number), in order of
        (device, channel, seq)."""
        out = []
        metas = self.col.channels
        for dev, seq, ts, cat, ch, raw in list(self.col.readings):
            meta = (metas.get(dev) or {}).get(ch) or {}
            dec = meta.get("decimals") or 0
            r = Reading(
                dev, seq, ts, cat, ch, meta.get("name"), meta.get("unit"), raw / 10**dec, raw
            )
            if device is not None and dev != device:
                continue
            if channel is not None and channel not in (ch, r.name):
                continue
            out.append(r)
        return sorted(out, key=lambda r: (r.device, r.channel, r.seq))

    def wait_for_readings(
        self,
        count: int = 1,
        device: str | None = None,
        channel: str | int | None = None,
        timeout: float = WAIT_S,
    ) -> list:
        """Wait until at least `count` readings (of `device`, `channel`) arrived; returns them.
        AssertionError after `timeout` s saying how many came and of which channels."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.readings(device, channel)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                seen = sorted({(r.device, r.name or r.channel) for r in self.readings()}, key=str)
                raise AssertionError(
                    f"{len(got)} of {count} readings (device {device}, channel {channel}) "
                    f"within {timeout:g} s; the collector has: {seen or 'nothing'}"
                )
            time.sleep(0.05)

    def status(self, device: str) -> dict:
        """The device's last retained status document (docs/HEALTH.md)."""
        return dict(self.col.status.get(device) or {})

    def stop(self) -> None:
        self.col.stop()


def assert_readings(
    readings: list,
    count: int | None = None,
    at_least: int | None = None,
    between: tuple[float, float] | None = None,
    unit: str | None = None,
) -> None:
    """Check a list of Reading: exactly `count` or `at_least` of them, every value within
    `between` (inclusive), every unit `unit`. The message names the first reading that fails."""
    if count is not None and len(readings) != count:
        raise AssertionError(f"{len(readings)} readings, expected {count}")
    if at_least is not None and len(readings) < at_least:
        raise AssertionError(f"{len(readings)} readings, expected at least {at_least}")
    for r in readings:
        if between is not None and not between[0] <= r.value <= between[1]:
            raise AssertionError(f"{r.name or r.channel} = {r.value} outside {between}: {r}")
        if unit is not None and r.unit != unit:
            raise AssertionError(f"{r.name or r.channel} has unit {r.unit!r}, not {unit!r}: {r}")


@dataclass
class ReplayOutcome:
    """What a capture replay into the agent produced: the collector's readings (with names and
    units from the config), why there were none if so, and the replay summary."""

    readings: list = field(default_factory=list)
    why: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


class CaptureReplay:
    """The `capture_replay` fixture: replay a capture (.ecap) into the real agent on a virtual
    clock with a device config, as `edgectl replay FILE --agent BOARD --config CFG` does
    (docs/REPLAY.md); returns a ReplayOutcome."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def __call__(
        self,
        capture: str | os.PathLike,
        config: str | os.PathLike | dict | None = None,
        board: str = "unix-sim",
        grant: str = "all",
        t_from: float | None = None,
        t_to: float | None = None,
        timeout: float = 600.0,
    ) -> ReplayOutcome:
        from host_tools.agent import replay as replay_agent
        from host_tools.captures.replay import load, schedule

        if isinstance(config, dict):
            path = self.tmp / f"replay-config-{len(list(self.tmp.iterdir()))}.json"
            path.write_text(json.dumps(config))
            config = path
        out = self.tmp / f"replay-out-{len(list(self.tmp.iterdir()))}.json"
        meta, chunks, damage = load([str(capture)])
        if damage is not None:
            raise ToolError(str(damage))
        items = schedule(chunks, ("rx",), t_from, t_to, 1)
        opts = replay_agent.AgentReplayOptions(
            board=board,
            capture=str(capture),
            config=None if config is None else str(config),
            framing="auto",
            t_from_s=t_from,
            t_to_s=t_to,
            grant=grant,
            heap=None,
            timeout=timeout,
            collector_out=str(out),
            expect=None,
            update_golden=False,
        )
        result, _ = replay_agent.run(opts, meta, items, chunks)
        doc = json.loads(out.read_text())
        cfg = replay_agent.device_config(opts.config, opts.capture)
        names = {c.get("id"): c for c in cfg.get("channels", []) if isinstance(c, dict)}
        readings = []
        for seq, ts, cat, ch, raw in doc["readings"]:
            c = names.get(ch) or {}
            dec = c.get("decimals") or 0
            readings.append(
                Reading(
                    doc["device"], seq, ts, cat, ch, c.get("name"), c.get("unit"),
                    raw / 10**dec, raw,
                )
            )  # fmt: skip
        return ReplayOutcome(readings, list(result.why or []), json.loads(result.to_json()))


@dataclass
class VBoard:
    """A running virtual board: `port` is the link mpremote, `edgectl deploy` and `edgectl
    logs` open; `image` its flash image."""

    port: str
    image: str
    proc: subprocess.Popen


class VBoards:
    """The `vboard` fixture: `vboard()` starts a virtual board (host_tools/board/vboard.py) on
    a fresh flash image in the test's temporary directory; `uarts` are `--uart` specs. Every
    board is stopped at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[VBoard] = []

    def __call__(self, uarts: tuple[str, ...] = (), image: str | None = None) -> VBoard:
        from host_tools.board.vboard import spawn

        n = len(self.started)
        link = self.tmp / f"vboard{n}"
        img = Path(image) if image else self.tmp / f"vboard{n}.img"
        proc = spawn(link, img, timeout=30, uarts=uarts)
        board = VBoard(str(link), str(img), proc)
        self.started.append(board)
        return board

    def stop_all(self) -> None:
        for b in self.started:
            _stop(b.proc)


class Simulator:
    """The `simulator` fixture: `capture(kind, ...)` writes a synthetic appliance capture
    (`edgectl simulate`), `serve(kind, ...)` plays an appliance live on a pty and returns the
    link an agent's UART opens (`edgectl simulate --serve`, stopped at teardown)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []

    def capture(
        self,
        kind: str,
        duration: float = 60.0,
        interval: float = 1.0,
        seed: int = 1,
        faults: str = "",
        record: str = "master",
    ) -> Path:
        """A capture of `kind` (fridge, meter, tuya) in the test's directory."""
        from host_tools.captures.simulate import simulate

        out = self.tmp / f"{kind}-{seed}-{len(list(self.tmp.iterdir()))}.ecap"
        simulate(kind, str(out), duration, interval, seed, faults, record)
        return out

    def serve(
        self,
        kind: str,
        map: str | os.PathLike | None = None,
        lines: str | os.PathLike | None = None,
        faults: str = "",
        interval: float = 1.0,
        timeout: float = 30.0,
    ) -> str:
        """Serve a live `kind` (modbus, tuya, line) appliance on a new pty; returns its link."""
        link = self.tmp / f"appliance{len(self.started)}"
        argv = [sys.executable, "-m", "host_tools", "simulate", "--serve", kind]
        argv += ["--pty", str(link), "--interval", str(interval)]
        for opt, value in (("--map", map), ("--lines", lines), ("--faults", faults)):
            if value:
                argv += [opt, str(value)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.started.append(proc)
        deadline = time.monotonic() + timeout
        while not link.is_symlink():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                _stop(proc)
                raise ToolError(f"simulate --serve {kind} did not start: {out.strip()[-300:]}")
            time.sleep(0.02)
        return str(link)

    def stop_all(self) -> None:
        for p in self.started:
            _stop(p)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s: a process this fixture started (by its PID)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def temp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
