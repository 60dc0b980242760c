# Modbus RTU master (docs/INPUTS.md 3.3): polls holding (fn 3) or input (fn 4) registers of one
# slave and maps them to channels. Non-blocking: poll() advances a small state machine.
#
# Spec: "MODBUS over Serial Line V1.02" (RTU framing, 2.5; CRC 6.2.2, low byte first; t3.5 gap
# 2.5.1.1) and "MODBUS Application Protocol V1.1b3" (6.3 / 6.4 read registers, 7 exceptions).
# Request:  slave | fn | addr u16 BE | count u16 BE | crc16 LE
# Response: slave | fn | byte count | data[2*count] | crc16 LE
# Exception: slave | fn|0x80 | code | crc16 LE

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus import crc, target, value
from edge.bus.ledger import Ledger, source_stats
from edge.ticks import ticks_diff

_IDLE = const(0)
_SEND = const(1)
_WAIT = const(2)
_EXC_BUSY = const(6)  # "server device busy": worth a retry
_RX_CAP = const(300)  # 5 + 2*125 register bytes, plus room for leading garbage

REASONS = ("timeout", "crc", "exception", "gave_up", "overflow", "value_range")


class _Read:
    """One configured request, encoded once in the constructor."""

    def __init__(self, slave, spec, path, decimals):
        fn = spec.get("fn", 3)
        addr = spec.get("addr", 0)
        count = spec.get("count", 1)
        if fn not in (3, 4):
            raise ValueError("config key '%s.fn' must be 3 (holding) or 4 (input)" % path)
        if not isinstance(addr, int) or not 0 <= addr <= 0xFFFF:
            raise ValueError("config key '%s.addr' must be 0..65535" % path)
        if not isinstance(count, int) or not 1 <= count <= 125:
            raise ValueError("config key '%s.count' must be 1..125" % path)
        self.fn = fn
        self.addr = addr
        self.count = count
        req = bytearray(8)
        req[0] = slave
        req[1] = fn
        req[2] = addr >> 8
        req[3] = addr & 0xFF
        req[4] = count >> 8
        req[5] = count & 0xFF
        c = crc.crc16_modbus(req, 0, 6)
        req[6] = c & 0xFF
        req[7] = c >> 8
        self.req = req
        self.map = []  # type: list  # (word offset, order in config, value layout, target)
        regs = spec.get("map")
        if not isinstance(regs, dict) or not regs:
            raise ValueError("config key '%s.map' must map register numbers to channels" % path)
        for k in regs:
            specs = regs[k] if isinstance(regs[k], list) else [regs[k]]
            for i, one in enumerate(specs):
                p = "%s.map.%s" % (path, k) if len(specs) == 1 else "%s.map.%s[%d]" % (path, k, i)
                t = target.parse(one, p, value.KEYS, decimals)
                lay = value.Layout(t.extra, p)
                if lay.size % 2:
                    raise ValueError("config key '%s.type' must be whole registers" % p)
                try:
                    reg = int(k)
                except ValueError:
                    raise ValueError("config key '%s': register must be a number" % p) from None
                off = reg - addr
                if off < 0 or off + lay.size // 2 > count:
                    raise ValueError(
                        "config key '%s': register outside %d..%d" % (p, addr, addr + count - 1)
                    )
                self.map.append((off, len(self.map), lay, t))
        # emit in register order, a register's targets in list order, on every port
        # (MicroPython's sort is not stable and its dicts keep no order)
        self.map.sort(key=lambda e: (e[0], e[1]))


class ModbusMaster:
    """Source: poll(now_ms, emit) -> readings emitted. uart has write(buf) and readinto(buf).
    decimals: {channel id: decimals} (edge/bus/target.py)."""

    def __init__(
        self,
        uart,
        slave,
        reads,
        interval_ms=1000,
        timeout_ms=300,
        retries=2,
        baud=9600,
        decimals=None,
    ):
        if not isinstance(slave, int) or not 1 <= slave <= 247:
            raise ValueError("config key 'slave' must be 1..247")
        if not isinstance(reads, list) or not reads:
            raise ValueError("config key 'reads' must be a non-empty list")
        self._uart = uart
        self.slave = slave
        self._reads = [_Read(slave, r, "reads[%d]" % i, decimals) for i, r in enumerate(reads)]
        self._interval = interval_ms
        self._timeout = timeout_ms
        self._retries = retries
        # t3.5 silent interval; 1.75 ms fixed above 19200 baud (Serial Line 2.5.1.1)
        self._gap = max(2, 38500 // baud) if baud <= 19200 else 2
        self._rx = bytearray(_RX_CAP)
        self._rxmv = memoryview(self._rx)
        self._n = 0
        self._rej = 0  # receive-window bytes before this belong to a frame that failed its CRC
        self._state = _IDLE
        self._next = None
        self._i = 0
        self._tries = 0
        self._t = 0
        self.responses = 0
        self.requests = 0
        self.ledger = Ledger()
        self.exceptions = {}  # exception code -> count
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0

    @property
    def garbage_bytes(self):
        return self.ledger.garbage

    def stats(self):
        d = source_stats(self.responses, self.ledger, self.errors)
        d["requests"] = self.requests
        return d

    def flush(self, emit):
        """End of input: bytes still in the receive window are classified (no answer)."""
        self._drop(self._n)
        return 0

    def wake_ms(self, now_ms):
        """Tick by which poll() must run again: the interval, the t3.5 gap or the timeout."""
        st = self._state
        if st == _IDLE:
            return now_ms if self._next is None else self._next
        if st == _SEND:
            return self._t + self._gap
        return self._t + self._timeout

    def poll(self, now_ms, emit):
        st = self._state
        if st == _IDLE:
            if self._next is not None and ticks_diff(now_ms, self._next) < 0:
                return 0
            self._next = now_ms + self._interval
            self._i = 0
            self._tries = 0
            self._state = _SEND
            self._t = now_ms - self._gap
            st = _SEND
        if st == _SEND:
            if ticks_diff(now_ms, self._t) < self._gap:
                return 0
            self._drop(self._n)  # a partial frame left from the last exchange
            for _ in range(8):  # stale bytes before a request: not an answer to it
                k = self._uart.readinto(self._rx)
                if not k:
                    break
                self.ledger.fed += k
                self.ledger.garbage += k
            self._n = 0
            self._rej = 0
            self._uart.write(self._reads[self._i].req)
            self.requests += 1
            self._tries += 1
            self._t = now_ms
            self._state = _WAIT
            return 0
        # _WAIT
        out = 0
        while self._state == _WAIT:
            if self._n >= _RX_CAP:
                self.errors["overflow"] += 1
                self.ledger.rejected += self._n
                self._n = 0
                self._rej = 0
            got = self._uart.readinto(self._rxmv[self._n :])
            if not got:
                break
            self.ledger.fed += got
            out += self.take(got, emit, now_ms)
        if self._state == _WAIT and ticks_diff(now_ms, self._t) >= self._timeout:
            self.errors["timeout"] += 1
            self._fail(now_ms)
        return out

    def take(self, got, emit, now_ms):
        """Account got new bytes at the end of the receive window and try to complete the
        response to the current request. Returns readings emitted."""
        self._n += got
        rx = self._rx
        rd = self._reads[self._i]
        while self._n:
            # Case 1: not our slave address -> garbage, slide by one byte
            if rx[0] != self.slave:
                self._drop(1)
                continue
            if self._n < 3:
                return 0
            f = rx[1]
            if f == rd.fn:
                # Case 2: normal response; its byte count must match the request
                if rx[2] != 2 * rd.count:
                    self._drop(1)
                    continue
                need = 5 + rx[2]
            elif f == rd.fn | 0x80:
                need = 5  # Case 3: exception response
            else:
                self._drop(1)  # Case 4: another function code -> garbage
                continue
            if self._n < need:
                return 0
            c = crc.crc16_modbus(rx, 0, need - 2)
            if rx[need - 2] != c & 0xFF or rx[need - 1] != c >> 8:
                # Case 5: CRC error: counted once per frame; rescan from its second byte, so a
                # good frame that starts inside it is still found
                if not self._rej:
                    self.errors["crc"] += 1
                    self._rej = need
                self._drop(1)
                continue
            self._rej = 0
            self.ledger.decoded += need
            self.ledger.garbage += self._n - need  # bytes after the answer answer nothing
            self._n = 0
            if f & 0x80:
                code = rx[2]
                self.errors["exception"] += 1
                self.exceptions[code] = self.exceptions.get(code, 0) + 1
                if code == _EXC_BUSY:
                    self._fail(now_ms)
                else:
                    self._advance(now_ms)
                return 0
            self.responses += 1
            out = self._decode(rd, emit)
            self._advance(now_ms)
            return out
        return 0

    def _drop(self, k):
        """Slide the receive window by k bytes; they were rejected (inside a frame that failed
        its CRC) or garbage."""
        rx = self._rx
        r = self._rej
        if r:
            j = k if k < r else r
            self.ledger.rejected += j
            self.ledger.garbage += k - j
            self._rej = r - j
        else:
            self.ledger.garbage += k
        n = self._n - k
        for j in range(n):
            rx[j] = rx[j + k]
        self._n = n

    def _decode(self, rd, emit):
        out = 0
        rx = self._rx
        for off, _, lay, t in rd.map:
            v = lay.decode(rx, 3 + 2 * off)
            if t.emit_float(emit, v) if lay.flt else t.emit(emit, v):
                out += 1
            else:
                self.errors["value_range"] += 1
        return out

    def _fail(self, now_ms):
        if self._tries <= self._retries:
            self._state = _SEND
            self._t = now_ms
        else:
            self.errors["gave_up"] += 1
            self._advance(now_ms)

    def _advance(self, now_ms):
        self._i += 1
        self._tries = 0
        self._t = now_ms
        self._state = _SEND if self._i < len(self._reads) else _IDLE
