# Inbound MQTT 3.1.1 packet parser. No I/O: the client feeds it bytes read into its preallocated
# buffer; the fuzz tests feed it in-process. Section numbers refer to OASIS MQTT 3.1.1.
# A PUBLISH larger than the buffer is not a protocol error: it is skipped as it streams in
# (docs/MQTT.md 2), so one oversized message never costs the connection.

from array import array

from micropython import const

_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_UNSUBACK = const(0xB0)
_PINGRESP = const(0xD0)

# Reasons for a rejected packet (index into REASONS; counted in Parser.rejects).
R_LENGTH = const(0)  # Remaining Length uses more than 4 bytes (2.2.3)
R_TYPE = const(1)  # packet type a server never sends to a client, or reserved
R_FLAGS = const(2)  # fixed-header flags differ from the fixed values of 2.2.2
R_SIZE = const(3)  # body size wrong for the type
R_QOS = const(4)  # PUBLISH QoS 2/3 (we subscribe at QoS <= 1) or bad DUP on QoS 0
R_TOPIC = const(5)  # PUBLISH topic length overruns the packet, empty, or wildcards (3.3.2.1)
R_OVERSIZE = const(6)  # a packet other than PUBLISH larger than the receive buffer
R_STATE = const(7)  # CONNACK on an open session
REASONS = ("length", "type", "flags", "size", "qos", "topic", "oversize", "state")
_TAIL = const(24)  # the last topic bytes of a skipped PUBLISH, kept so its owner can answer
# skip state slots (one preallocated array: every attribute costs heap on a tight board)
_LEFT = const(0)  # body bytes still to read past; 0: not skipping
_AT = const(1)  # body offset of the next byte
_PID_AT = const(2)  # body offset of the packet id, -1 for QoS 0
_TAIL_AT = const(3)  # body offset of the first topic byte kept
_TOPIC_END = const(4)  # body offset after the topic
_PID = const(5)
_SIZE = const(6)
_SKIPPED = const(7)  # PUBLISHes read past since boot
_STALLED = const(8)  # feed() stopped at a PUBLISH its consumer refused


class Parser:
    """Consumes whole packets from buf[0:have]. Callbacks: on_puback(pid),
    on_publish(flags, topic_mv, payload_mv, pid) -> False to stop before this packet (the
    consumer has no room: it is parsed again by the next feed), on_suback(pid, rc),
    on_pingresp(), on_skipped(topic_tail_mv, pid, size) after a PUBLISH too large for the
    buffer was read past (the tail: the topic's last bytes, at most 24). feed() returns the
    bytes used, or -1 after a protocol violation (reason in self.reason); stalled() tells
    that it stopped at a refused PUBLISH."""

    def __init__(self, buf):
        self.buf = buf
        self.mv = memoryview(buf)
        self.rejects = [0] * len(REASONS)
        self.reason = -1
        self.on_puback = None
        self.on_publish = None
        self.on_suback = None
        self.on_pingresp = None
        self.on_skipped = None
        self.sk = array("i", bytes(4 * 9))
        self.tail = bytearray(_TAIL)

    def reset(self):
        """A new connection: no packet is half read."""
        self.sk[_LEFT] = 0
        self.sk[_STALLED] = 0

    def skipped(self):
        return self.sk[_SKIPPED]

    def stalled(self):
        return self.sk[_STALLED]

    def reject(self, why):
        self.rejects[why] += 1
        self.reason = why
        return -1

    def rejected(self):
        n = 0
        for c in self.rejects:
            n += c
        return n

    def feed(self, have):
        b = self.buf
        pos = 0
        self.sk[_STALLED] = 0
        if self.sk[_LEFT]:
            pos = self._skip_bytes(0, have)
        while have - pos >= 2:
            mult = 1
            rl = 0
            i = pos + 1
            while True:
                if i >= have:
                    return pos if i - pos <= 4 else self.reject(R_LENGTH)
                c = b[i]
                rl += (c & 0x7F) * mult
                i += 1
                if not c & 0x80:
                    break
                if i - pos > 4:
                    return self.reject(R_LENGTH)  # at most 4 length bytes (2.2.3)
                mult <<= 7
            if i - pos + rl > len(b):
                # larger than the whole buffer (its start is pos, not 0: a packet that only
                # straddles the buffer's end is compacted and completed by the next read)
                if b[pos] & 0xF0 != _PUBLISH:
                    return self.reject(R_OVERSIZE)  # no other server packet is ever this long
                if have - i < 2:
                    return pos  # wait for the topic length
                r = self._start_skip(b[pos], i, rl)
                if r >= 0:
                    return self.reject(r)
                pos = self._skip_bytes(i, have)
                continue
            if i + rl > have:
                return pos  # incomplete: wait for more bytes
            r = self._packet(b[pos], i, rl)
            if r == -2:
                self.sk[_STALLED] = 1
                return pos  # the consumer is full: this packet waits in the buffer
            if r >= 0:
                return self.reject(r)
            pos = i + rl
        return pos

    # --- an oversized PUBLISH, skipped as it streams in ----------------------------------
    def _start_skip(self, h, i, rl):
        qos = (h >> 1) & 3
        if qos > 1 or (qos == 0 and h & 0x08):
            return R_QOS
        b = self.buf
        tl = (b[i] << 8) | b[i + 1]
        if tl == 0 or 2 + tl + (2 if qos else 0) > rl:
            return R_TOPIC
        sk = self.sk
        sk[_LEFT] = sk[_SIZE] = rl
        sk[_AT] = sk[_PID] = 0
        sk[_PID_AT] = 2 + tl if qos else -1
        sk[_TOPIC_END] = 2 + tl
        sk[_TAIL_AT] = 2 + tl - min(tl, _TAIL)
        return -1

    def _skip_bytes(self, start, have):
        """Read past the oversized PUBLISH's body bytes in buf[start:have]; keeps its packet id
        and its topic's last bytes. Returns the position after what it consumed."""
        sk = self.sk
        n = min(sk[_LEFT], have - start)
        b = self.buf
        at = sk[_AT]
        ta = sk[_TAIL_AT]
        te = sk[_TOPIC_END]
        pa = sk[_PID_AT]
        last = pa + 1 if pa >= 0 else te - 1
        for k in range(n):
            off = at + k
            if off > last:
                break  # nothing more to keep: count the rest without looking at it
            if ta <= off < te:
                self.tail[off - ta] = b[start + k]
            elif off == pa or off == pa + 1:
                sk[_PID] = ((sk[_PID] << 8) | b[start + k]) & 0xFFFF
        sk[_AT] = at + n
        sk[_LEFT] -= n
        if not sk[_LEFT]:
            sk[_SKIPPED] += 1
            if self.on_skipped:
                t = memoryview(self.tail)[: te - ta]
                self.on_skipped(t, sk[_PID] if pa >= 0 else 0, sk[_SIZE])
        return start + n

    def _packet(self, h, i, rl):
        """Dispatch one complete packet; returns -1 if accepted, else a reason."""
        b = self.buf
        t = h & 0xF0
        if t == _PUBACK:
            # 3.4: flags 0000, remaining length 2
            if h != _PUBACK:
                return R_FLAGS
            if rl != 2:
                return R_SIZE
            if self.on_puback:
                self.on_puback((b[i] << 8) | b[i + 1])
            return -1
        if t == _PUBLISH:
            return self._publish(h, i, rl)
        if t == _SUBACK:
            # 3.9: flags 0000; packet id + one return code per filter (we send one)
            if h != _SUBACK:
                return R_FLAGS
            if rl != 3:
                return R_SIZE
            rc = b[i + 2]
            if rc not in (0, 1, 2, 0x80):
                return R_SIZE  # 3.9.3: other return codes are reserved
            if self.on_suback:
                self.on_suback((b[i] << 8) | b[i + 1], rc)
            return -1
        if t == _UNSUBACK:
            # 3.11: flags 0000, remaining length 2 (the packet id); nothing waits for it
            if h != _UNSUBACK:
                return R_FLAGS
            return -1 if rl == 2 else R_SIZE
        if t == _PINGRESP:
            if h != _PINGRESP:
                return R_FLAGS
            if rl:
                return R_SIZE
            if self.on_pingresp:
                self.on_pingresp()
            return -1
        if t == _CONNACK:
            return R_STATE  # 3.2: only once, read by connect() before this parser runs
        return R_TYPE  # CONNECT, PUBREC/PUBREL/PUBCOMP, SUBSCRIBE, ... or reserved 0x00/0xF0

    def _publish(self, h, i, rl):
        qos = (h >> 1) & 3
        if qos > 1:
            return R_QOS
        if qos == 0 and h & 0x08:
            return R_QOS  # 3.3.1.1: DUP must be 0 for QoS 0
        if rl < 2:
            return R_SIZE
        b = self.buf
        tl = (b[i] << 8) | b[i + 1]
        start = i + 2 + tl
        end = i + rl
        if tl == 0:
            return R_TOPIC
        pid = 0
        if qos:
            if start + 2 > end:
                return R_TOPIC
            pid = (b[start] << 8) | b[start + 1]
            if pid == 0:
                return R_SIZE  # 2.3.1: packet id must be non-zero
            start += 2
        elif start > end:
            return R_TOPIC
        for k in range(i + 2, i + 2 + tl):
            c = b[k]
            if c == 0x23 or c == 0x2B or c == 0:  # '#', '+', NUL (4.7.1, 1.5.3)
                return R_TOPIC
        if self.on_publish:
            if self.on_publish(h, self.mv[i + 2 : i + 2 + tl], self.mv[start:end], pid) is False:
                return -2
        return -1
