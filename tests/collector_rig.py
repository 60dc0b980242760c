"""Host side of the collector tests: hostile publishers, batch builders, and `edgectl collect`
as a subprocess (so memory, exit codes and signals are those of the real command)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt

from edge import codec


def publisher(port: int, cid: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def batch(device: str, category: str, first_seq: int, n: int, value: int = 0, step: int = 1):
    """A binary batch (docs/FORMAT.md 3) of n readings, channel 1, values value..value+n-1."""
    w = codec.BatchWriter(device, codec.batch_header_len(device, category) + 11 * n)
    w.start(category, 1, 0)
    for i in range(n):
        assert w.add(first_seq + i * step, 1000 + i, 1, 0, 1, value + i)
    return bytes(w.finish())


def json_batch(device: str, category: str, body: bytes) -> bytes:
    """A batch header with encoding 1 (JSON body, docs/FORMAT.md 3.4) and any body."""
    head = bytearray(batch(device, category, 1, 1)[: -codec.ENTRY_LEN])
    head[3] = codec.ENC_JSON
    return bytes(head) + body


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def db_rows(path: str, sql: str, args=()) -> list[tuple]:
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


class CollectProcess:
    """`edgectl collect` in a subprocess; ready() waits for its start line."""

    def __init__(self, port: int, db: str, *extra: str) -> None:
        self.args = [
            sys.executable, "-m", "host_tools", "collect", "--port", str(port),
            "--db", db, "--json", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.err: list[str] = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("collect: "):
                self._ready.set()

    def _read_err(self) -> None:
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.err.append(line.rstrip("\n"))

    def ready(self, timeout: float = 20) -> CollectProcess:
        if not self._ready.wait(timeout):
            self.kill()
            raise AssertionError(f"collector did not start: {self.lines} {self.err}")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def term(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def final(self) -> dict:
        """The stats line `--json` prints at exit."""
        time.sleep(0.2)  # the reader thread drains the pipe
        if not self.lines or not self.lines[-1].startswith("{"):
            raise AssertionError(f"no final stats: rc {self.proc.poll()}, {self.lines} {self.err}")
        return json.loads(self.lines[-1])


def clean_db(path: str) -> None:
    for p in os.listdir(os.path.dirname(path)):
        if p.startswith(os.path.basename(path).split(".")[0]):
            os.remove(os.path.join(os.path.dirname(path), p))
