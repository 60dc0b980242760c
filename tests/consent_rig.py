"""Host side of the consent tests (docs/CONSENT.md): a real mosquitto, the real collector and the
real agent under unix MicroPython, driven line by line through tests/mp/consent_driver.py."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time

from host_tools.agent.run import agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.backend.consent import make_update
from host_tools.paths import edge_root, micropython_path, mp_env

HERE = os.path.dirname(os.path.abspath(__file__))
DEVICE = "consent-0001"
KEY = bytes(range(32))
CATS = ["diagnostics", "location", "marketing", "usage"]  # the ones consent can change
CHANNEL = {"essential": 1, "diagnostics": 3, "usage": 5, "location": 7, "marketing": 8}


def device_config(port: int, store: str, key: bytes | None = KEY) -> dict:
    chans = [
        {"id": 1, "name": "temp", "category": "essential"},
        {"id": 3, "name": "power", "category": "diagnostics"},
        {"id": 5, "name": "door", "category": "usage"},
        {"id": 7, "name": "cell", "category": "location"},
        {"id": 8, "name": "promo", "category": "marketing"},
    ]
    cfg = agent_config(
        "unix-sim",
        device_id=DEVICE,
        channels=chans,
        mqtt={"host": "127.0.0.1", "port": port, "window": 3},
        store={"path": store, "flush_n": 16, "flush_ms": 40},
        batch={"max_readings": 12, "latency_ms": 5},
        status_ms=60000,
    )
    cfg["consent"] = {"local_dir": os.path.dirname(store)}
    if key is not None:
        cfg["consent"]["key"] = key.hex()
    return cfg


class Rig:
    """Broker + collector + one long-running agent. Call close() when done."""

    def __init__(self, key: bytes | None = KEY, workdir: str | None = None, broker=None) -> None:
        self.key = key
        self.own_broker = broker is None
        self.broker = broker or broker_mod.start()
        self.col = Collector(self.broker.host, self.broker.port).start()
        self.workdir = workdir or tempfile.mkdtemp(prefix="consent-")
        self.topic = f"edge/{DEVICE}/cmd/consent"
        self.col.client.publish(self.topic, b"", qos=1, retain=True).wait_for_publish(5)
        self.ping_id = 0
        self.proc: subprocess.Popen | None = None

    # --- the agent process -------------------------------------------------------------------
    def start_agent(self) -> None:
        cfg = device_config(self.broker.port, os.path.join(self.workdir, "store"), self.key)
        path = os.path.join(self.workdir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        env = mp_env()
        env["MICROPYPATH"] = ".frozen:" + edge_root()
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [
                micropython_path(),
                "-X",
                "heapsize=1M",
                os.path.join(HERE, "mp", "consent_driver.py"),
                path,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            if line.startswith("@ok "):
                self.lines.put(line[4:])
        self.lines.put(None)

    def send(self, line: str, timeout: float = 10.0) -> str:
        """One driver command; returns what follows `@ok <op> `."""
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            got = None
        if got is None:
            raise AssertionError(
                f"driver gave no answer to {line!r}:\n" + "\n".join(self.output[-20:])
            )
        assert got.startswith(line[:1]), got
        return got[2:]

    def stop_agent(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            if kill:
                self.proc.kill()  # a power cut, as far as the process can tell
            else:
                self.proc.stdin.write("q\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop_agent(kill=True)
        self.col.stop()
        if self.own_broker:
            self.broker.stop()

    # --- actions -------------------------------------------------------------------------------
    def emit(self, cat: str, n: int) -> int:
        return int(self.send(f"r {CHANNEL[cat]} {n}"))

    def sync(self) -> int:
        """Everything stored is acknowledged and has reached the collector; returns next seq."""
        self.ping_id += 1
        pid = self.ping_id
        nxt = int(self.send(f"s {pid}"))
        ok = self.col.wait_for(
            lambda c: any(n == "ping" and r.get("id") == pid for _, n, r in list(c.replies)[-5:]),
            10,
        )
        assert ok, "no reply/ping after sync"
        return nxt

    def replies(self) -> int:
        with self.col.lock:
            return len(self.col.replies)

    def consent_mqtt(self, payload: bytes | str, retain: bool = True, timeout: float = 10) -> dict:
        """Publish to cmd/consent and return the device's reply."""
        n = self.replies()
        self.col.client.publish(self.topic, payload, qos=1, retain=retain)
        ok = self.col.wait_for(lambda c: len(c.replies) > n, timeout)
        assert ok, "no reply/consent"
        with self.col.lock:
            dev, name, reply = self.col.replies[n]
        assert name == "consent", (name, reply)
        return reply

    def consent_local(self, payload: str) -> dict:
        return json.loads(self.send("c " + payload))

    def update(
        self, version: int, grant: list[str], deny: list[str], key: bytes | None = None, **extra
    ) -> str:
        doc = make_update(DEVICE, version, grant, deny, key, ts=int(time.time() * 1000))
        doc.update(extra)
        return json.dumps(doc)

    def wait_receipt(self, version: int, timeout: float = 10) -> dict:
        ok = self.col.wait_for(
            lambda c: (c.receipts.get(DEVICE) or {}).get("version") == version, timeout
        )
        assert ok, f"no receipt v{version}: {self.col.receipts.get(DEVICE)}"
        return self.col.receipts[DEVICE]
