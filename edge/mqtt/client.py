# MQTT 3.1.1 client on asyncio streams (docs/MQTT.md). Section numbers refer to the OASIS MQTT
# 3.1.1 specification. One buffer and one write per packet, TCP_NODELAY (docs/MQTT.md 6).

import asyncio
import socket
import struct
import time

from micropython import const

from edge.mqtt.parser import REASONS, Parser

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # 3.8.1: reserved flag bits 0010
_UNSUBSCRIBE = const(0xA2)  # 3.10.1: reserved flag bits 0010
_PINGREQ = const(0xC0)
_DISCONNECT = const(0xE0)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)
_EINPROGRESS = const(115)
_RX_BUF = const(2048)
_CONNECT_TIMEOUT_MS = const(5000)
# Output not yet taken by the socket beyond which the read loop stops reading (and so stops
# adding PUBACKs) until it drains: a broker that stops reading cannot grow the heap.
_OUT_MAX = const(512)
_STALL_MS = const(10)  # a stalled read loop retries the refused PUBLISH this often

# 3.2.2.3 CONNACK return codes
_REFUSED = (
    None,
    "unacceptable protocol version",
    "client identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorised",
)


async def _writable(sock):
    """Wait until the socket takes bytes (asyncio internals, not in the stubs)."""
    yield asyncio.core._io_queue.queue_write(sock)  # type: ignore[attr-defined]


class MQTTError(Exception):
    """Connection-level failure; `code` is the CONNACK return code when the broker refused."""

    def __init__(self, msg, code=0):
        super().__init__(msg)
        self.code = code


def _put_varlen(buf, pos, n):
    """Remaining Length, 2.2.3: 7 bits per byte, continuation bit 0x80, at most 4 bytes."""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[pos] = b | 0x80
            pos += 1
        else:
            buf[pos] = b
            return pos + 1


def _put_str(buf, pos, s):
    """UTF-8 string / binary data with a 2-byte big-endian length prefix (1.5.3)."""
    struct.pack_into(">H", buf, pos, len(s))
    pos += 2
    buf[pos : pos + len(s)] = s
    return pos + len(s)


def tls_context(ca_der, cert_der=None, key_der=None):
    """Client TLS context that verifies the broker (MicroPython's default is CERT_NONE)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # a documented MicroPython SSLContext attribute the stubs lack
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    ctx.load_verify_locations(cadata=ca_der)
    if cert_der is not None:
        ctx.load_cert_chain(cert_der, key_der)
    return ctx


class Client:
    """QoS 0/1 client with a window of in-flight QoS 1 publishes.

    Inbound events go to callbacks the composition root sets (edge/agent.py):
    on_connect(session_present) at every accepted CONNACK, on_puback(pid) for every PUBACK,
    on_message(topic, payload) for every inbound PUBLISH (views into the receive buffer, valid
    during the call): it returns False when its owner has no room, and the PUBLISH is then
    neither taken nor acknowledged until a retry finds room (backpressure, docs/MQTT.md 2);
    on_skipped(topic tail, size) after a PUBLISH too large for the receive buffer was read past
    (and PUBACKed); on_disconnect() when a connection ends.
    tls: None or (SSLContext, server_hostname): never a plaintext fallback."""

    def __init__(
        self, client_id, max_packet, window=8, keepalive=30, user=None, password=None, tls=None
    ):
        self.client_id = client_id.encode() if isinstance(client_id, str) else client_id
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.window = window
        self.tls = tls
        self.tx = bytearray(max_packet + 64)
        self.txmv = memoryview(self.tx)
        self.rx = bytearray(_RX_BUF)
        self.rxmv = memoryview(self.rx)
        self.parser = Parser(self.rx)
        self.parser.on_puback = self._on_puback
        self.parser.on_publish = self._on_publish
        self.parser.on_pingresp = self._on_pingresp
        self.parser.on_suback = self._on_suback
        self.parser.on_skipped = self._on_skipped
        self.draining = False  # one drain at a time (the socket has one write waiter)
        self.ack = bytearray(4)
        self.pid = 0
        self.inflight = 0
        # window slots bulk publishers leave free (wait_slot): set while a consent receipt
        # waits, so it never queues behind a stream of batches (edge/outbox.py)
        self.reserved = 0
        self.slot = asyncio.Event()
        self.connected = asyncio.Event()
        self.sock = None
        # None only until the first _open(); every use follows a connect (_close keeps it)
        self.stream = None  # type: asyncio.StreamWriter  # type: ignore[assignment]
        self.task = None
        self.on_connect = None
        self.on_puback = None
        self.on_message = None
        self.on_skipped = None
        self.on_disconnect = None
        self.will = None  # (topic, payload, retain)
        self.last_rx = self.last_tx = time.ticks_ms()
        self.ping_due = False
        self.stats = {  # type: dict
            "connects": 0,
            "rx_rejected": 0,
            "pubacks": 0,
            "published": 0,
            "tx_bytes": 0,
            "pings": 0,
            "dead": 0,
            "suback_fail": 0,
            "last_reject": "",
            "rx_skipped": 0,  # PUBLISHes too large for the receive buffer, read past
            "rx_stalls": 0,  # times the read loop waited for the consumer or the socket
            "rx_errors": 0,  # read loops ended by an error in a callback (a bug)
        }

    async def _open(self, host, port, server_name=None, ai=None):
        """TCP (+TLS) connection to `ai` (a getaddrinfo entry; default: host's first address);
        TCP_NODELAY is set on the raw socket so it holds for TLS."""
        if ai is None:
            ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        s = socket.socket(ai[0], ai[1], ai[2])
        self.sock = s
        try:
            s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as e:
            if e.errno != _EINPROGRESS:
                raise
        if self.tls is not None:
            ctx, hostname = self.tls
            s = ctx.wrap_socket(
                s, server_hostname=server_name or hostname, do_handshake_on_connect=False
            )
            s.setblocking(False)
            self.sock = s
        self.stream = asyncio.StreamWriter(s, {})
        # asyncio internals (wait for the non-blocking connect), not in the stubs
        yield asyncio.core._io_queue.queue_write(s)  # type: ignore[attr-defined]

    async def connect(self, host, port, clean=False, server_name=None, ai=None):
        """Open the connection, CONNECT (3.1), wait for CONNACK (3.2). Returns session_present.
        server_name: the name the TLS certificate must carry (default: the client's); ai: the
        address to use (a getaddrinfo entry). TLS verification failures and refusals raise
        MQTTError with a clear message."""
        try:
            return await asyncio.wait_for_ms(
                self._connect(host, port, clean, server_name, ai), _CONNECT_TIMEOUT_MS
            )
        except asyncio.TimeoutError:
            self._close()
            raise MQTTError("no CONNACK within %d ms" % _CONNECT_TIMEOUT_MS)
        except ValueError as e:
            # Mbed TLS reports verification failures as ValueError
            self._close()
            raise MQTTError(
                "TLS handshake failed (certificate not trusted, expired, or wrong "
                "hostname): %s" % str(e).strip()
            )

    session_present = False

    async def _connect(self, host, port, clean, server_name=None, ai=None):
        self._close()
        await self._open(host, port, server_name, ai)
        b = self.tx
        flags = 0x02 if clean else 0x00  # 3.1.2.4 Clean Session
        body = 10 + 2 + len(self.client_id)
        if self.will:
            flags |= 0x04 | (0x20 if self.will[2] else 0)  # 3.1.2.5-3.1.2.7, will QoS 0
            body += 4 + len(self.will[0]) + len(self.will[1])
        if self.user is not None:
            flags |= 0x80
            body += 2 + len(self.user)
        if self.password is not None:
            flags |= 0x40
            body += 2 + len(self.password)
        b[0] = _CONNECT
        p = _put_varlen(b, 1, body)
        b[p : p + 7] = b"\x00\x04MQTT\x04"  # protocol name and level 4 (3.1.2.1, 3.1.2.2)
        b[p + 7] = flags
        struct.pack_into(">H", b, p + 8, self.keepalive)
        p = _put_str(b, p + 10, self.client_id)
        if self.will:
            p = _put_str(b, p, self.will[0])
            p = _put_str(b, p, self.will[1])
        if self.user is not None:
            p = _put_str(b, p, self.user.encode())
        if self.password is not None:
            p = _put_str(b, p, self.password.encode())
        await self._send(p)
        # MicroPython has one Stream class (StreamReader is StreamWriter); the stubs split it
        ack = await self.stream.readexactly(4)  # type: ignore[attr-defined]
        if len(ack) < 4:
            raise MQTTError("connection closed before CONNACK")
        if ack[0] != _CONNACK or ack[1] != 2:
            raise MQTTError("bad CONNACK")
        rc = ack[3]
        if rc:
            why = _REFUSED[rc] if rc < len(_REFUSED) else "unknown reason"
            raise MQTTError("connection refused: %s (CONNACK return code %d)" % (why, rc), rc)
        self.stats["connects"] += 1
        self.parser.reset()
        self.inflight = 0
        self.last_rx = self.last_tx = time.ticks_ms()
        self.ping_due = False
        self.session_present = bool(ack[2] & 1)  # 3.2.2.2
        if self.on_connect:
            self.on_connect(self.session_present)  # before anyone can see `connected`
        self.connected.set()
        self.slot.set()
        self.task = asyncio.create_task(self._read_loop())
        return self.session_present

    async def _send(self, n):
        self.stream.write(self.txmv[:n])
        self.last_tx = time.ticks_ms()
        self.stats["tx_bytes"] += n
        await self.drain()

    def next_pid(self):
        self.pid = self.pid % 0xFFFF + 1  # packet ids are 1..65535 (2.3.1)
        return self.pid

    def full(self, bulk=False):
        """No window slot for one more QoS 1 publish; for a bulk publisher (the forwarder's
        batches) the `reserved` slots do not count as free."""
        return self.inflight + (self.reserved if bulk else 0) >= self.window

    async def wait_slot(self, bulk=False):
        """Wait until the window has room for one more QoS 1 publish (see full())."""
        while self.full(bulk) and self.connected.is_set():
            self.slot.clear()
            await self.slot.wait()
        if not self.connected.is_set():
            raise MQTTError("not connected")

    def send_publish(self, topic, payload, qos=1, retain=False, pid=0, dup=False):
        """Build and write one PUBLISH (3.3) without yielding; returns the packet id (0 for
        QoS 0), so a caller can record it before its PUBACK can be parsed. dup marks a
        re-delivery of the given pid (3.3.1.1, 4.4)."""
        b = self.tx
        n = 2 + len(topic) + (2 if qos else 0) + len(payload)
        if n + 5 > len(b):
            raise ValueError("payload too large for the packet buffer")
        b[0] = _PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup and qos else 0)
        p = _put_varlen(b, 1, n)
        p = _put_str(b, p, topic)
        if qos:
            if not pid:
                pid = self.next_pid()
            struct.pack_into(">H", b, p, pid)
            p += 2
            self.inflight += 1
        else:
            pid = 0
        b[p : p + len(payload)] = payload
        p += len(payload)
        self.stream.write(self.txmv[:p])
        self.last_tx = time.ticks_ms()
        self.stats["tx_bytes"] += p
        self.stats["published"] += 1
        return pid

    def send_placed(self, topic, off, n, qos=0, retain=False, pid=0, dup=False):
        """Write one PUBLISH (3.3) of the n payload bytes the caller already wrote at tx[off:]
        without yielding: the fixed header, topic and packet id go just before them, so the
        payload is never copied (the retained status, edge/health.py; the batches, which the
        forwarder builds in place, edge/forwarder.py). Returns the packet id (0 for QoS 0).
        With QoS 1 the caller has waited for a window slot (wait_slot)."""
        if not self.connected.is_set():
            raise MQTTError("not connected")
        rem = 2 + len(topic) + (2 if qos else 0) + n
        hlen = rem - n + 1 + (1 if rem < 0x80 else 2 if rem < 0x4000 else 3)
        start = off - hlen
        if start < 0:
            raise ValueError("topic too long for the room before the payload")
        b = self.tx
        b[start] = _PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup and qos else 0)
        p = _put_str(b, _put_varlen(b, start + 1, rem), topic)
        if qos:
            if not pid:
                pid = self.next_pid()
            struct.pack_into(">H", b, p, pid)
            self.inflight += 1
        else:
            pid = 0
        self.stream.write(self.txmv[start : off + n])
        self.last_tx = time.ticks_ms()
        self.stats["tx_bytes"] += hlen + n
        self.stats["published"] += 1
        return pid

    async def publish_placed(self, topic, off, n, retain=False):
        """QoS 0 PUBLISH of n payload bytes the caller already wrote at tx[off:] (send_placed),
        then flush."""
        self.send_placed(topic, off, n, 0, retain)
        await self.drain()

    def backlog(self):
        """Bytes written but not yet taken by the socket."""
        st = self.stream
        return len(st.out_buf) if st is not None else 0  # type: ignore[attr-defined]

    async def drain(self):
        """Write out what the stream buffered. asyncio's Stream.drain() is not safe with several
        tasks: two waiting writers trip its I/O queue, and bytes written while one drains are
        dropped when it clears the buffer. Here one task drains at a time and keeps what others
        append meanwhile (appends go behind the buffer, so the byte order holds)."""
        st = self.stream
        if not st.out_buf and not self.draining:  # type: ignore[attr-defined]
            await asyncio.sleep_ms(0)  # always yield, as asyncio's drain does
            return
        while self.draining:  # contended only while the socket is full: poll, no lock object
            await asyncio.sleep_ms(_STALL_MS)
        self.draining = True
        try:
            while st.out_buf:  # type: ignore[attr-defined]
                buf = st.out_buf  # type: ignore[attr-defined]
                mv = memoryview(buf)
                off = 0
                while off < len(mv):
                    await _writable(self.sock)
                    if self.sock is None:
                        raise MQTTError("not connected")
                    ret = self.sock.write(mv[off:])
                    if ret is not None:
                        off += ret
                # what other tasks appended while this one waited stays, in order
                st.out_buf = st.out_buf[len(buf) :]  # type: ignore[attr-defined]
        finally:
            self.draining = False

    async def publish(self, topic, payload, qos=1, retain=False, pid=0, dup=False):
        """PUBLISH and flush; with QoS 1 waits for a window slot, not for the PUBACK."""
        if qos:
            await self.wait_slot()
        elif not self.connected.is_set():
            raise MQTTError("not connected")
        pid = self.send_publish(topic, payload, qos, retain, pid, dup)
        await self.drain()
        return pid

    async def subscribe(self, topic, qos=1):
        """SUBSCRIBE (3.8) to one filter; the SUBACK is consumed by the read loop."""
        b = self.tx
        b[0] = _SUBSCRIBE
        p = _put_varlen(b, 1, 2 + 2 + len(topic) + 1)
        struct.pack_into(">H", b, p, self.next_pid())
        p = _put_str(b, p + 2, topic)
        b[p] = qos
        await self._send(p + 1)

    async def unsubscribe(self, topic):
        """UNSUBSCRIBE (3.10) from one filter; the UNSUBACK is consumed by the read loop."""
        b = self.tx
        b[0] = _UNSUBSCRIBE
        p = _put_varlen(b, 1, 2 + 2 + len(topic))
        struct.pack_into(">H", b, p, self.next_pid())
        p = _put_str(b, p + 2, topic)
        await self._send(p)

    async def keepalive_check(self):
        """Called about every 100 ms by the link task. 3.1.2.10: PINGREQ when nothing was sent
        for a keepalive period; no byte received within 1.5x keepalive means a dead link."""
        if not self.connected.is_set() or not self.keepalive:
            return
        now = time.ticks_ms()
        ka = self.keepalive * 1000
        if time.ticks_diff(now, self.last_rx) > ka + ka // 2:
            self.stats["dead"] += 1
            self._close()
            return
        if time.ticks_diff(now, self.last_tx) >= ka or (
            time.ticks_diff(now, self.last_rx) >= ka and not self.ping_due
        ):
            self.ping_due = True
            self.stats["pings"] += 1
            self.tx[0] = _PINGREQ
            self.tx[1] = 0
            await self._send(2)

    async def disconnect(self):
        if self.connected.is_set():
            self.tx[0] = _DISCONNECT
            self.tx[1] = 0
            try:
                await self._send(2)
            except OSError:
                pass
        self._close()

    def _close(self):
        was = self.connected.is_set()
        self.connected.clear()
        self.slot.set()  # wake publishers so they see the disconnect
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None
        if was and self.on_disconnect:
            self.on_disconnect()

    async def _read_loop(self):
        """Parse inbound packets from the preallocated buffer until the connection ends.
        Reading pauses (the broker then holds what it sends: TCP and its in-flight window are
        the backpressure) while the consumer refuses a PUBLISH or the output backlog is over
        _OUT_MAX, so nothing inbound-driven grows without bound."""
        have = 0
        p = self.parser
        try:
            while True:
                # one Stream class at run time (see _connect)
                n = await self.stream.readinto(self.rxmv[have:])  # type: ignore[attr-defined]
                if not n:
                    break
                self.last_rx = time.ticks_ms()
                have += n
                while True:
                    used = p.feed(have)
                    if used < 0:
                        # a protocol violation: count it and drop the connection (4.8)
                        self.stats["rx_rejected"] += 1
                        self.stats["last_reject"] = REASONS[p.reason]
                        raise MQTTError("protocol violation")
                    if used:
                        self.rx[: have - used] = self.rxmv[used:have]
                        have -= used
                    if self.backlog() > _OUT_MAX:
                        self.stats["rx_stalls"] += 1
                        await self.drain()
                    if not p.stalled():
                        break
                    self.stats["rx_stalls"] += 1
                    await asyncio.sleep_ms(_STALL_MS)
                    # the rest of a refused packet may still be in the socket: read it only
                    # once the packet in the buffer was taken
                    self.last_rx = time.ticks_ms()
        except (OSError, MQTTError):
            pass
        except Exception:  # noqa: BLE001 - a failing callback must not leave a dead reader
            # the connection is dropped (the link reconnects) rather than left unread
            self.stats["rx_errors"] += 1
        self._close()

    # --- parser callbacks (no allocation on the PUBACK path) ------------------------------
    def _on_puback(self, pid):
        self.stats["pubacks"] += 1
        if self.inflight:
            self.inflight -= 1
        self.slot.set()
        if self.on_puback:
            self.on_puback(pid)

    def _on_pingresp(self):
        self.ping_due = False

    def _on_suback(self, pid, rc):
        if rc == 0x80:
            self.stats["suback_fail"] += 1

    def _puback(self, pid):
        # 4.3.2: acknowledge QoS 1 with a PUBACK carrying the same packet id
        a = self.ack
        a[0] = _PUBACK
        a[1] = 2
        a[2] = pid >> 8
        a[3] = pid & 0xFF
        self.stream.write(a)

    def _on_publish(self, h, topic, payload, pid):
        if self.backlog() > _OUT_MAX:
            return False  # no room for its PUBACK: parsed again after the drain
        if self.on_message and self.on_message(topic, payload) is False:
            return False  # the consumer is full: neither taken nor acknowledged (4.3.2)
        if pid:
            self._puback(pid)
        return True

    def _on_skipped(self, topic, pid, size):
        self.stats["rx_skipped"] += 1
        if pid:
            self._puback(pid)  # taken (and refused by size): the broker may forget it
        if self.on_skipped:
            self.on_skipped(topic, size)
