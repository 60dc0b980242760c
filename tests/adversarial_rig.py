"""Host side of the adversarial suite (docs/SECURITY.md 5): a real mosquitto, the real agent
under unix MicroPython (optionally at the code footprint + 48 KiB heap, precompiled as a
device carries it), an attacker and an observer that log in like any other client."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import paho.mqtt.client as mqtt

from edge import codec
from host_tools.agent.run import AgentProcess, agent_config
from host_tools.bench import forward as fwdbench

DEVICE = "adv-0001"
CHANNELS = [
    {"id": 1, "name": "temp", "category": "essential"},
    {"id": 3, "name": "power", "category": "diagnostics"},
    {"id": 4, "name": "defrost", "category": "diagnostics"},
    {"id": 5, "name": "door", "category": "usage"},
    {"id": 6, "name": "ice", "category": "usage"},
]


def code_heap(micropython: str, tree: str) -> int:
    """Heap the agent's precompiled modules take (host_tools/bench/mp/agent_code.py)."""
    env = dict(os.environ, MICROPYPATH=".frozen:" + tree)
    probe = os.path.join(os.path.dirname(fwdbench.SCRIPT), "agent_code.py")
    out = subprocess.run(
        [micropython, "-X", "heapsize=1M", probe], env=env, capture_output=True, text=True
    )
    return int(out.stdout.split()[-1])


class Observer:
    """Everything the broker delivers under the device's topics, with arrival times."""

    def __init__(self, port: int, device: str = DEVICE, **login) -> None:
        self.device = device
        self.msgs: list[tuple[float, str, bytes]] = []
        self.lock = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if login:
            self.c.username_pw_set(login["user"], login["password"])
        ready = threading.Event()
        self.c.on_connect = lambda cl, *a: (cl.subscribe(f"edge/{device}/#", qos=1), ready.set())
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert ready.wait(10), "observer could not connect"
        time.sleep(0.2)

    def _on_message(self, cl, ud, m) -> None:
        with self.lock:
            self.msgs.append((time.monotonic(), m.topic, bytes(m.payload)))
            self.lock.notify_all()

    def wait(self, pred, timeout: float):
        """The first message (t, topic, payload) after index 0 for which pred holds."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for m in self.msgs:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)

    def receipt(self, version: int, timeout: float):
        """(arrival time, receipt) of the device's receipt of `version`, or None."""
        sub = f"edge/{self.device}/consent/receipt"

        def pred(m):
            if m[1] != sub or not m[2]:
                return False
            try:
                return json.loads(m[2]).get("version") == version
            except ValueError:
                return False

        m = self.wait(pred, timeout)
        return (m[0], json.loads(m[2])) if m else None

    def replies(self, name: str) -> list[dict]:
        with self.lock:
            out = []
            for _t, topic, p in self.msgs:
                if topic == f"edge/{self.device}/reply/{name}":
                    try:
                        out.append(json.loads(p))
                    except ValueError:
                        out.append({"raw": p[:64]})
            return out

    def readings(self) -> list[tuple[float, str, int]]:
        """(arrival time, category, seq) of every reading published, decoded."""
        out = []
        with self.lock:
            msgs = list(self.msgs)
        for t, topic, p in msgs:
            parts = topic.split("/")
            if len(parts) == 4 and parts[2] == "t":
                try:
                    b = codec.decode_batch(p, self.device, parts[3])
                except (codec.FormatError, ValueError):
                    continue
                out += [(t, parts[3], r[0]) for r in b["readings"]]
        return out

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Attacker:
    """Publishes whatever it is told to the device's command topics (any login may)."""

    def __init__(self, port: int, **login) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if login:
            self.c.username_pw_set(login["user"], login["password"])
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, sub: str, payload, qos: int = 1, retain: bool = False, wait: bool = True):
        info = self.c.publish(f"edge/{DEVICE}/{sub}", payload, qos=qos, retain=retain)
        if wait and qos:
            info.wait_for_publish(10)
        return info

    def consent(self, version: int, grant=(), deny=(), **extra) -> float:
        """Publish an unsigned consent update; returns when the broker acknowledged it."""
        doc = {"version": version, "grant": list(grant), "deny": list(deny), **extra}
        t = time.monotonic()
        self.send("cmd/consent", json.dumps(doc), retain=True)
        return t

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def start_agent(port: int, heap: str = "512K", **over) -> AgentProcess:
    """The agent of device_config() started (its owner stops it: Scene.close)."""
    return AgentProcess(device_config(port, **over), heap=heap).start()


def device_config(port: int, **over) -> dict:
    """The agent with the simulated appliance (every category), no consent key (unsigned
    updates accepted: the bounded step is what protects the version)."""
    return agent_config(
        "unix-sim",
        device_id=DEVICE,
        channels=CHANNELS,
        mqtt={"host": "127.0.0.1", "port": port, "keepalive": 30},
        sim={
            "enabled": True,
            "rate_hz": over.pop("rate_hz", 40),
            "seconds": over.pop("seconds", 60),
        },
        batch={"latency_ms": 50},
        status_ms=over.pop("status_ms", 5000),
        **over,
    )


def clear_retained(port: int) -> None:
    """Empty every retained message under the device's topics (left by an earlier test)."""
    seen: list[str] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = lambda cl, ud, m: seen.append(m.topic) if m.retain else None
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.subscribe(f"edge/{DEVICE}/#", qos=1)
    time.sleep(0.4)
    for t in set(seen):
        c.publish(t, b"", qos=1, retain=True).wait_for_publish(5)
    c.loop_stop()
    c.disconnect()
