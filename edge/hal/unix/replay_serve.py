# Modbus replay: a UART that plays the slave of a capture (docs/REPLAY.md 3.1). The host parses
# the capture into exchanges (host_tools/captures/modbus_capture.py) and writes a serve file;
# each request the agent's master writes gets the recorded reply of the next unserved exchange
# for the same request, after the recorded latency on the virtual clock. A recorded timeout
# gives no reply (the master's own timeout timer runs), a recorded bad frame is served as it was.
#
# Serve file: the record of edge/wire.py (docs/FORMAT.md 5.4), in capture order.

import os

from micropython import const

from edge import wire
from edge.bus import crc

_HEAD = const(15)  # wire.SERVE_HEAD_LEN
_WINDOW = const(32)  # exchanges read ahead for other requests before the oldest is dropped
_ANY_ADDR = const(1)  # wire.SERVE_ANY_ADDR, folded here
_ANY_COUNT = const(2)  # wire.SERVE_ANY_COUNT
_NO_REPLY = const(4)  # wire.SERVE_NO_REPLY
END = const(0x7FFFFFFF)


class ServeUART:
    """write(request) -> the reply becomes due; readinto() returns it once it is due."""

    def __init__(self, hal, path):
        self._hal = hal
        self._f = open(path, "rb")
        self._size = os.stat(path)[6]
        self._off = 0
        self._head = bytearray(_HEAD)
        self._window = []  # read-ahead exchanges: (flags, slave, fn, addr, count, lat, reply)
        self._eof = self._size == 0
        self._out = b""
        self._pos = 0
        self.next_due = END
        self.dry = False  # a request found nothing and the capture is read to its end
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.requests = 0
        self.served = 0
        self.timeouts = 0  # recorded timeouts served as silence
        self.unmatched = 0  # requests the capture has no exchange for
        self.unserved = 0  # exchanges dropped from the read-ahead or left at the end
        self.bad_requests = 0

    def _read(self):
        """The next exchange of the file, or None at its end."""
        if self._eof:
            return None
        if self._f.readinto(self._head) < _HEAD:
            raise ValueError("replay serve file: truncated record")
        _t, lat, flags, slave, fn, addr, count, n = wire.serve_head(self._head)
        reply = self._f.read(n) if n else b""
        if len(reply) < n:
            raise ValueError("replay serve file: truncated record")
        self._off += _HEAD + n
        self._eof = self._off >= self._size  # known at once: no request is left waiting
        return (flags, slave, fn, addr, count, lat, reply)

    @staticmethod
    def _fits(x, slave, fn, addr, count):
        f = x[0]
        return (
            x[1] == slave
            and x[2] == fn
            and (f & _ANY_ADDR or x[3] == addr)
            and (f & _ANY_COUNT or x[4] == count)
        )

    def _match(self, slave, fn, addr, count):
        w = self._window
        for i in range(len(w)):
            if self._fits(w[i], slave, fn, addr, count):
                return w.pop(i)
        while True:
            x = self._read()
            if x is None:
                return None
            if self._fits(x, slave, fn, addr, count):
                return x
            w.append(x)
            if len(w) > _WINDOW:
                w.pop(0)
                self.unserved += 1

    def write(self, buf):
        n = len(buf)
        self.tx_bytes += n
        self.requests += 1
        self._out = b""
        self.next_due = END
        c = crc.crc16_modbus(buf, 0, n - 2) if n == 8 else -1
        if n != 8 or buf[6] != c & 0xFF or buf[7] != c >> 8:
            self.bad_requests += 1
            return n
        x = self._match(buf[0], buf[1], (buf[2] << 8) | buf[3], (buf[4] << 8) | buf[5])
        if x is None:
            self.unmatched += 1
            self.dry = self._eof
            return n
        if x[0] & _NO_REPLY:
            self.timeouts += 1
            return n
        self.served += 1
        self._out = x[6]
        self._pos = 0
        self.next_due = self._hal.now + (x[5] if x[5] else 1)
        return n

    def due(self):
        return self.next_due <= self._hal.now

    def readinto(self, buf):
        if self.next_due > self._hal.now:
            return 0
        k = min(len(buf), len(self._out) - self._pos)
        buf[0:k] = self._out[self._pos : self._pos + k]
        self._pos += k
        self.rx_bytes += k
        if self._pos >= len(self._out):
            self.next_due = END
        return k

    def finished(self):
        """Nothing left to serve: the capture ran dry for a request, or every exchange was
        served (and the last reply delivered)."""
        if self.next_due != END:
            return False
        return self.dry or (self._eof and not self._window)

    def stats(self):
        left = len(self._window)
        if self._eof:
            return self._counts(left)
        # what is still in the file was never asked for
        while self._read() is not None:
            left += 1
        return self._counts(left)

    def _counts(self, left):
        return {
            "requests": self.requests,
            "served": self.served,
            "timeouts": self.timeouts,
            "unmatched": self.unmatched,
            "unserved": self.unserved + left,
            "bad_requests": self.bad_requests,
        }

    def close(self):
        self._f.close()
