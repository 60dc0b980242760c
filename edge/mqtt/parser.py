# Inbound MQTT 3.1.1 packet parser (issue 4). No I/O: the client feeds it bytes read into its
# preallocated buffer; the fuzz test feeds it in-process. Section numbers refer to OASIS MQTT 3.1.1.

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
R_OVERSIZE = const(6)  # packet larger than the receive buffer
R_STATE = const(7)  # CONNACK on an open session
REASONS = ("length", "type", "flags", "size", "qos", "topic", "oversize", "state")


class Parser:
    """Consumes whole packets from buf[0:have]. Callbacks: on_puback(pid),
    on_publish(flags, topic_mv, payload_mv, pid), on_suback(pid, rc), on_pingresp().
    feed() returns the bytes used, or -1 after a protocol violation (reason in self.reason)."""

    def __init__(self, buf):
        self.buf = buf
        self.mv = memoryview(buf)
        self.rejects = [0] * len(REASONS)
        self.reason = -1
        self.on_puback = None
        self.on_publish = None
        self.on_suback = None
        self.on_pingresp = None

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
            if i - pos + rl > len(b):  # the packet (not its end offset) must fit
                return self.reject(R_OVERSIZE)
            if i + rl > have:
                return pos  # incomplete: wait for more bytes
            r = self._packet(b[pos], i, rl)
            if r >= 0:
                return self.reject(r)
            pos = i + rl
        return pos

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
            self.on_publish(h, self.mv[i + 2 : i + 2 + tl], self.mv[start:end], pid)
        return -1
