# MQTT 3.1.1 client on asyncio streams (DESIGN.md 5). Section numbers refer to the OASIS
# MQTT 3.1.1 specification. One buffer and one write per packet, TCP_NODELAY (TOOLCHAIN 8).

import asyncio
import struct
import time

from micropython import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # 3.8.1: reserved flag bits 0010
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)
_RX_BUF = const(2048)


class MQTTError(Exception):
    pass


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


class Client:
    """Minimal QoS 0/1 client with a window of in-flight QoS 1 publishes.

    on_puback(pid) is called for every PUBACK in order; on_message(topic, payload) for every
    inbound PUBLISH."""

    def __init__(self, client_id, max_packet, window=8, keepalive=30, user=None, password=None):
        self.client_id = client_id.encode() if isinstance(client_id, str) else client_id
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.window = window
        self.tx = bytearray(max_packet + 64)
        self.txmv = memoryview(self.tx)
        self.rx = bytearray(_RX_BUF)
        self.rxmv = memoryview(self.rx)
        self.pid = 0
        self.inflight = 0
        self.slot = asyncio.Event()
        self.connected = asyncio.Event()
        self.reader = None
        self.writer = None
        self.task = None
        self.on_puback = None
        self.on_message = None
        self.on_disconnect = None
        self.will = None  # (topic, payload, retain)
        self.last_tx = time.ticks_ms()
        self.stats = {"connects": 0, "rx_rejected": 0, "pubacks": 0, "published": 0, "tx_bytes": 0}

    async def connect(self, host, port, clean=False):
        """Open the connection, CONNECT (3.1), wait for CONNACK (3.2). Returns session_present."""
        self.reader, self.writer = await asyncio.open_connection(host, port)
        try:
            self.writer.s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        b = self.tx
        flags = 0x00 if not clean else 0x02  # 3.1.2.4 Clean Session
        vh = bytearray(10)
        vh[0:8] = b"\x00\x04MQTT\x04\x00"  # protocol name and level 4 (3.1.2.1, 3.1.2.2)
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
        b[p : p + 8] = vh[0:8]
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
        ack = await self.reader.readexactly(4)
        if ack[0] != _CONNACK or ack[1] != 2:
            raise MQTTError("bad CONNACK")
        if ack[3] != 0:
            # 3.2.2.3 return codes: 1 protocol, 2 identifier, 3 unavailable, 4 credentials, 5 auth
            raise MQTTError("connection refused, CONNACK return code %d" % ack[3])
        self.stats["connects"] += 1
        self.inflight = 0
        self.connected.set()
        self.slot.set()
        self.task = asyncio.create_task(self._read_loop())
        return bool(ack[2] & 1)

    async def _send(self, n):
        self.writer.write(self.txmv[:n])
        self.stats["tx_bytes"] += n
        self.last_tx = time.ticks_ms()
        await self.writer.drain()

    def _next_pid(self):
        self.pid = self.pid % 0xFFFF + 1  # packet ids are 1..65535 (2.3.1)
        return self.pid

    async def wait_slot(self):
        """Wait until the window has room for one more QoS 1 publish."""
        while self.inflight >= self.window:
            self.slot.clear()
            await self.slot.wait()
            if not self.connected.is_set():
                raise MQTTError("disconnected")
        if not self.connected.is_set():
            raise MQTTError("not connected")

    def send_publish(self, topic, payload, qos=1, retain=False):
        """Build and write one PUBLISH (3.3) without yielding; returns the packet id (0 for
        QoS 0). The caller records the id before the PUBACK can possibly be parsed."""
        b = self.tx
        n = 2 + len(topic) + (2 if qos else 0) + len(payload)
        if n + 5 > len(b):
            raise ValueError("payload too large for the packet buffer")
        b[0] = _PUBLISH | (qos << 1) | (1 if retain else 0)
        p = _put_varlen(b, 1, n)
        p = _put_str(b, p, topic)
        pid = 0
        if qos:
            pid = self._next_pid()
            struct.pack_into(">H", b, p, pid)
            p += 2
            self.inflight += 1
        b[p : p + len(payload)] = payload
        p += len(payload)
        self.writer.write(self.txmv[:p])
        self.stats["tx_bytes"] += p
        self.last_tx = time.ticks_ms()
        self.stats["published"] += 1
        return pid

    async def drain(self):
        await self.writer.drain()

    async def publish(self, topic, payload, qos=1, retain=False):
        """PUBLISH and flush; with QoS 1 waits for a window slot, not for the PUBACK."""
        if qos:
            await self.wait_slot()
        elif not self.connected.is_set():
            raise MQTTError("not connected")
        pid = self.send_publish(topic, payload, qos, retain)
        await self.writer.drain()
        return pid

    async def subscribe(self, topic, qos=1):
        """SUBSCRIBE (3.8) to one filter; the SUBACK is consumed by the read loop."""
        b = self.tx
        b[0] = _SUBSCRIBE
        p = _put_varlen(b, 1, 2 + 2 + len(topic) + 1)
        struct.pack_into(">H", b, p, self._next_pid())
        p = _put_str(b, p + 2, topic)
        b[p] = qos
        await self._send(p + 1)

    async def ping(self):
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
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None
        if was and self.on_disconnect:
            self.on_disconnect()

    async def _read_loop(self):
        """Parse inbound packets from a preallocated buffer until the connection ends."""
        have = 0
        try:
            while True:
                n = await self.reader.readinto(self.rxmv[have:])
                if not n:
                    break
                have += n
                used = self._parse(have)
                if used < 0:
                    self.stats["rx_rejected"] += 1
                    break
                if used:
                    self.rx[: have - used] = self.rx[used:have]
                    have -= used
                if have == len(self.rx):
                    self.stats["rx_rejected"] += 1  # packet larger than we accept
                    break
        except (OSError, MQTTError):
            pass
        self._close()

    def _parse(self, have):
        """Consume whole packets from rx[0:have]; returns bytes used, or -1 on a protocol error."""
        b = self.rx
        pos = 0
        while have - pos >= 2:
            mult = 1
            rl = 0
            i = pos + 1
            while True:
                if i >= have:
                    return pos
                c = b[i]
                rl += (c & 0x7F) * mult
                i += 1
                if not c & 0x80:
                    break
                mult <<= 7
                if mult > 0x200000:
                    return -1  # more than 4 length bytes (2.2.3)
            if i + rl > have:
                return pos
            t = b[pos] & 0xF0
            if t == _PUBACK:
                if rl != 2 or b[pos] != _PUBACK:
                    return -1
                self.stats["pubacks"] += 1
                if self.inflight:
                    self.inflight -= 1
                self.slot.set()
                if self.on_puback:
                    self.on_puback((b[i] << 8) | b[i + 1])
            elif t == _PUBLISH:
                if not self._on_publish(b[pos], i, rl):
                    return -1
            elif t == _SUBACK or t == _PINGRESP:
                pass
            else:
                return -1
            pos = i + rl
        return pos

    def _on_publish(self, h, i, rl):
        qos = (h >> 1) & 3
        if qos > 1 or rl < 2:
            return False
        tl = (self.rx[i] << 8) | self.rx[i + 1]
        start = i + 2 + tl + (2 if qos else 0)
        if start > i + rl:
            return False
        topic = bytes(self.rxmv[i + 2 : i + 2 + tl])
        payload = bytes(self.rxmv[start : i + rl])
        if qos:
            # 4.3.2: acknowledge QoS 1 with a PUBACK carrying the same packet id
            ack = bytearray(4)
            ack[0] = _PUBACK
            ack[1] = 2
            ack[2] = self.rx[i + 2 + tl]
            ack[3] = self.rx[i + 3 + tl]
            self.writer.write(ack)
        if self.on_message:
            self.on_message(topic, payload)
        return True
