"""Packet-level MQTT 3.1.1 test harness, after paho.mqtt.python's tests/paho_test.py: build
packets, read them off a socket, expect them byte for byte, and a fake broker on a free
loopback port whose connections a test drives packet by packet. The one place tests build MQTT
packets (section numbers: the OASIS MQTT 3.1.1 specification)."""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass

# control packet types, first byte with the flags each requires (2.2.2)
CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0


# --- building packets --------------------------------------------------------------------
def remaining_length(n: int) -> bytes:
    """The variable-length encoding of the remaining length (2.2.3)."""
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes = b"") -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def string(s: str | bytes) -> bytes:
    """A UTF-8 string with its u16 length (1.5.3)."""
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def connect(
    client_id: str,
    keepalive: int = 30,
    clean: bool = False,
    will: tuple[bytes, bytes, bool] | None = None,
    user: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (3.1), protocol level 4; will: (topic, message, retain) at QoS 0."""
    flags = (0x02 if clean else 0) | (0x80 if user is not None else 0)
    flags |= 0x40 if password is not None else 0
    payload = string(client_id)
    if will is not None:
        flags |= 0x04 | (0x20 if will[2] else 0)
        payload += string(will[0]) + string(will[1])
    if user is not None:
        payload += string(user)
    if password is not None:
        payload += string(password)
    return packet(
        CONNECT, string("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + payload
    )


def connack(session_present: bool = False, rc: int = 0) -> bytes:
    return packet(CONNACK, bytes([1 if session_present else 0, rc]))


def publish(
    topic: str | bytes,
    payload: bytes = b"",
    qos: int = 0,
    pid: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    first = PUBLISH | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return packet(first, string(topic) + (struct.pack(">H", pid) if qos else b"") + payload)


def puback(pid: int) -> bytes:
    return packet(PUBACK, struct.pack(">H", pid))


def subscribe(pid: int, topic: str | bytes, qos: int = 1) -> bytes:
    return packet(SUBSCRIBE, struct.pack(">H", pid) + string(topic) + bytes([qos]))


def suback(pid: int, *codes: int) -> bytes:
    return packet(SUBACK, struct.pack(">H", pid) + bytes(codes))


def pingresp() -> bytes:
    return packet(PINGRESP)


def disconnect() -> bytes:
    return packet(DISCONNECT)


# --- reading packets ---------------------------------------------------------------------
@dataclass
class Packet:
    first: int  # type and flags
    body: bytes

    @property
    def kind(self) -> int:
        return self.first & 0xF0

    @property
    def raw(self) -> bytes:
        return packet(self.first, self.body)

    def publish_fields(self) -> tuple[bytes, int, bytes]:
        """(topic, packet id or 0, payload) of a PUBLISH (3.3)."""
        n = struct.unpack(">H", self.body[:2])[0]
        topic = self.body[2 : 2 + n]
        if (self.first >> 1) & 3:
            return topic, struct.unpack(">H", self.body[2 + n : 4 + n])[0], self.body[4 + n :]
        return topic, 0, self.body[2 + n :]

    @property
    def pid(self) -> int:
        """The packet id of a SUBSCRIBE, PUBACK or QoS 1 PUBLISH."""
        if self.kind == PUBLISH:
            return self.publish_fields()[1]
        return struct.unpack(">H", self.body[:2])[0]


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_packet(sock: socket.socket) -> Packet | None:
    """The next whole packet, or None when the peer closed the connection."""
    head = _recv_exact(sock, 1)
    if head is None:
        return None
    mult, length = 1, 0
    for _ in range(4):
        b = _recv_exact(sock, 1)
        if b is None:
            return None
        length += (b[0] & 0x7F) * mult
        mult <<= 7
        if not b[0] & 0x80:
            break
    body = _recv_exact(sock, length) if length else b""
    return None if body is None else Packet(head[0], body)


# --- the fake broker ----------------------------------------------------------------------
class Conn:
    """One accepted connection, driven by the test."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        sock.settimeout(timeout)

    def read(self) -> Packet | None:
        try:
            return read_packet(self.sock)
        except OSError:
            return None

    def expect(self, expected: bytes) -> None:
        """Read len(expected) bytes and check them byte for byte (paho's expect_packet)."""
        got = _recv_exact(self.sock, len(expected))
        assert got == expected, f"expected {expected.hex()}, got {got.hex() if got else got}"

    def send(self, *packets: bytes) -> None:
        self.sock.sendall(b"".join(packets))

    def closed_by_peer(self) -> bool:
        """True when the client closes the connection (or resets it) before sending more."""
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def drop(self) -> None:
        """Cut the link as a broker or network failure would."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeBroker:
    """A listening socket on a free loopback port. `serve(script)` runs script(conn, n) for
    the n-th accepted connection in a thread, for `connections` connections. rcvbuf: the
    kernel receive buffer of its connections (small: the broker's window closes quickly)."""

    def __init__(self, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.srv = socket.socket()
        if rcvbuf is not None:  # inherited by accepted connections: a broker slow to read
            self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.timeout = timeout
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def accept(self) -> Conn:
        self.srv.settimeout(self.timeout)
        c, _ = self.srv.accept()
        return Conn(c, self.timeout)

    def serve(self, script, connections: int) -> FakeBroker:
        def run() -> None:
            try:
                for n in range(connections):
                    conn = self.accept()
                    try:
                        script(conn, n)
                    finally:
                        conn.sock.close()
            except BaseException as e:  # noqa: BLE001 - reported by join()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the script; re-raise what failed in it (a wrong packet, a timeout)."""
        if self.thread is not None:
            self.thread.join(timeout)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.srv.close()

    def __enter__(self) -> FakeBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
