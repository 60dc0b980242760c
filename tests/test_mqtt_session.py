"""MQTT 3.1.1 section 4.4 (MQTT-4.4.0-1): when the broker kept the session, the agent re-sends
the PUBLISH packets it has no PUBACK for under their original packet ids with DUP set, then
carries on after them. A scripted broker (paho harness style) checks the packets byte for byte."""

from __future__ import annotations

import socket
import struct
import threading

from edge import codec
from host_tools.agent.run import AgentProcess, agent_config


def _read_packet(conn: socket.socket) -> tuple[int, bytes] | None:
    head = conn.recv(1)
    if not head:
        return None
    mult, length = 1, 0
    while True:
        b = conn.recv(1)[0]
        length += (b & 0x7F) * mult
        mult <<= 7
        if not b & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return head[0], body


class ScriptedBroker:
    """Connection 1: CONNACK without session, takes telemetry without PUBACK, drops the link
    after `drop_after` of them. Connection 2: CONNACK with session present, PUBACKs all."""

    def __init__(self, drop_after: int) -> None:
        self.drop_after = drop_after
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(2)
        self.port = self.sock.getsockname()[1]
        self.conns: list[list[tuple[int, int, bytes]]] = []  # (flags, pid, payload) per link
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for n in range(2):
            conn, _ = self.sock.accept()
            got: list[tuple[int, int, bytes]] = []
            self.conns.append(got)
            with conn:
                pkt = _read_packet(conn)
                assert pkt and pkt[0] == 0x10
                conn.sendall(bytes([0x20, 2, 1 if n else 0, 0]))
                while True:
                    try:
                        pkt = _read_packet(conn)
                    except OSError:
                        break
                    if pkt is None:
                        break
                    h, body = pkt
                    if h == 0x82:  # SUBSCRIBE -> SUBACK granting QoS 1
                        conn.sendall(bytes([0x90, 3]) + body[:2] + b"\x01")
                    elif h == 0xC0:
                        conn.sendall(b"\xd0\x00")
                    elif h == 0xE0:
                        break
                    elif h & 0xF0 == 0x30:
                        tl = struct.unpack(">H", body[:2])[0]
                        topic = body[2 : 2 + tl]
                        qos = (h >> 1) & 3
                        pid = struct.unpack(">H", body[2 + tl : 4 + tl])[0] if qos else 0
                        payload = body[2 + tl + (2 if qos else 0) :]
                        if b"/t/" not in topic:
                            if qos:
                                conn.sendall(b"\x40\x02" + struct.pack(">H", pid))
                            continue
                        got.append((h, pid, payload))
                        if n == 0 and len(got) == self.drop_after:
                            conn.shutdown(socket.SHUT_RDWR)
                            break
                        if n == 1:
                            conn.sendall(b"\x40\x02" + struct.pack(">H", pid))

    def close(self) -> None:
        self.sock.close()


def test_unacknowledged_publishes_are_resent_with_their_ids_and_dup(micropython):
    broker = ScriptedBroker(drop_after=2)
    cfg = agent_config(
        "unix-sim",
        device_id="dup-1",
        mqtt={"port": broker.port, "window": 8},
        sim={"count": 1500, "rate_hz": 3000},
    )
    agent = AgentProcess(cfg).start()
    try:
        agent.wait(90)
    finally:
        agent.cleanup()
        broker.close()
    first, second = broker.conns
    assert len(first) == 2
    # the two publishes the broker never acknowledged come first, same ids, same bytes, DUP
    for (h1, pid1, p1), (h2, pid2, p2) in zip(first, second[:2], strict=True):
        assert h1 & 0x08 == 0 and h2 & 0x08 == 0x08
        assert pid2 == pid1 and p2 == p1
    # then the agent carries on after them: no reading is sent twice on the second link
    seqs = [r[0] for _, _, p in second for r in codec.decode_batch(p)["readings"]]
    assert len(seqs) == len(set(seqs)) == agent.final["appended"] == 500
    assert all(h & 0x08 == 0 for h, _, _ in second[2:])
