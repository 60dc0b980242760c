# Tuya MCU serial protocol, Wi-Fi module side (issue 6 item 2). The agent plays the module: it
# sends heartbeats and the init queries so the appliance MCU keeps talking, and maps datapoint
# (DP) reports to channels.
#
# Frame (Tuya "Wi-Fi general serial protocol", frame format): 55 AA | ver u8 | cmd u8 |
# len u16 BE | data[len] | sum8 of every byte from the header. Module frames use ver 0x00;
# the MCU answers with ver 0x03 (any version is accepted). DP unit (cmd 0x07 / 0x22 data):
# dpid u8 | type u8 | len u16 BE | value[len], big-endian; types: 0 raw, 1 bool, 2 value (s32),
# 3 string, 4 enum (u8), 5 bitmap (1/2/4 bytes).
#
# Resynchronisation: bytes go into a sliding window; a header whose frame fails (length over the
# limit, bad checksum, stalled partial frame) is dropped one byte at a time and the window is
# rescanned, so a valid frame that began inside a broken one is still found.

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus import crc, keys, target
from edge.ticks import ticks_diff

CMD_HEARTBEAT = const(0x00)
CMD_PRODUCT = const(0x01)
CMD_MODE = const(0x02)
CMD_WIFI_STATE = const(0x03)
CMD_DP_REPORT = const(0x07)
CMD_DP_QUERY = const(0x08)
CMD_LOCAL_TIME = const(0x1C)
CMD_DP_REPORT_SYNC = const(0x22)
CMD_DP_SYNC_ACK = const(0x23)
CMD_NET_STATUS = const(0x2B)

_NET_CLOUD = const(0x04)  # Wi-Fi status 0x03/0x2B: "connected to the cloud"
_STALL_MS = const(500)  # a partial frame idle this long is dropped ("timeout")
_HB_FAST_MS = const(3000)  # heartbeat period until the MCU answers
_HB_REPLY_MS = const(3000)  # heartbeat answer deadline (protocol: MCU offline after 3 s)

_T_RAW = const(0)
_T_BOOL = const(1)
_T_VALUE = const(2)
_T_STRING = const(3)
_T_ENUM = const(4)
_T_BITMAP = const(5)

REASONS = ("too_long", "checksum", "timeout", "dp_truncated", "dp_len", "dp_value", "dp_type")


def _uint(buf, start, n):
    v = 0
    for i in range(start, start + n):
        v = (v << 8) | buf[i]
    return v


def _decimal(buf, start, end):
    """ASCII decimal integer in buf[start:end] or None."""
    neg = False
    if start < end and buf[start] == 0x2D:
        neg = True
        start += 1
    if start >= end or end - start > 9:
        return None
    v = 0
    for i in range(start, end):
        d = buf[i] - 0x30
        if d < 0 or d > 9:
            return None
        v = v * 10 + d
    return -v if neg else v


class TuyaMCU:
    """dps: {"dpid": target spec}; a spec may carry "map" ({"label": int}, string DPs) and
    "raw" ({"offset": o, "size": 1|2|4, "signed": bool}, raw DPs). write(buf) sends bytes."""

    def __init__(self, dps, write, heartbeat_ms=15000, max_len=256):
        if not 16 <= max_len <= 1024:
            raise ValueError("config key 'max_len' must be 16..1024")
        self._dps = {}
        for k in dps:
            path = "dps.%s" % k
            try:
                dpid = int(k)
            except ValueError:
                raise ValueError("config key '%s': DP id must be 1..255" % path) from None
            if not 1 <= dpid <= 255:
                raise ValueError("config key '%s': DP id must be 1..255" % path)
            t = target.parse(dps[k], path, ("map", "raw"))
            m = t.extra.get("map")
            t.map = keys.KeyTable(m) if isinstance(m, dict) else None
            raw = t.extra.get("raw") or {}
            t.roff = raw.get("offset", 0)
            t.rsize = raw.get("size", 4)
            t.rsigned = bool(raw.get("signed", False))
            if t.rsize not in (1, 2, 4) or not isinstance(t.roff, int) or t.roff < 0:
                raise ValueError("config key '%s.raw' needs offset >= 0 and size 1, 2 or 4" % path)
            self._dps[dpid] = t
        self._write = write
        self._hb_ms = heartbeat_ms
        self._max = max_len
        self._w = bytearray(2 * (7 + max_len))
        self._n = 0
        self._tx = bytearray(7 + 8)
        self._txmv = memoryview(self._tx)
        self._last_rx = 0
        self._next_hb = None  # first poll sends the first heartbeat
        self._hb_sent = None  # tick of the unanswered heartbeat, or None
        self.online = False
        self.net_status = _NET_CLOUD
        self.product = None
        self.frames = 0
        self.garbage_bytes = 0
        self.mcu_restarts = 0
        self.heartbeat_misses = 0
        self.unmapped_dp = 0
        self.unhandled_cmd = 0
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0

    # -- transmit ------------------------------------------------------------------------------

    def send(self, cmd, data=None):
        """Send one module frame (ver 0x00) with up to 8 data bytes."""
        tx = self._tx
        n = len(data) if data else 0
        tx[0] = 0x55
        tx[1] = 0xAA
        tx[2] = 0x00
        tx[3] = cmd
        tx[4] = 0
        tx[5] = n
        for i in range(n):
            tx[6 + i] = data[i]
        tx[6 + n] = crc.sum8(tx, 0, 6 + n)
        self._write(self._txmv[: 7 + n])

    def tick(self, now_ms, emit):
        """Timers: heartbeat every heartbeat_ms (every 3 s until the MCU answers)."""
        if self._hb_sent is not None and ticks_diff(now_ms, self._hb_sent) >= _HB_REPLY_MS:
            self._hb_sent = None
            self.heartbeat_misses += 1
            self.online = False
        if self._next_hb is None or ticks_diff(now_ms, self._next_hb) >= 0:
            self.send(CMD_HEARTBEAT)
            self._hb_sent = now_ms
            self._next_hb = now_ms + (self._hb_ms if self.online else _HB_FAST_MS)
        if self._n and ticks_diff(now_ms, self._last_rx) >= _STALL_MS:
            # Case: a partial frame stalled (lost bytes or a corrupted length); drop its header.
            self.errors["timeout"] += 1
            return self._scan(1, emit)
        return 0

    # -- receive -------------------------------------------------------------------------------

    def feed(self, buf, n, emit, now_ms=0):
        """Take buf[0:n] from the UART. Returns the number of readings emitted."""
        out = 0
        i = 0
        w = self._w
        cap = len(w)
        self._last_rx = now_ms
        while i < n:
            while i < n and self._n < cap:
                w[self._n] = buf[i]
                self._n += 1
                i += 1
            out += self._scan(0, emit)
        return out

    def _scan(self, start, emit):
        w = self._w
        n = self._n
        out = 0
        while True:
            # find a header at or after start
            h = start
            while h < n and not (w[h] == 0x55 and (h + 1 == n or w[h + 1] == 0xAA)):
                h += 1
            self.garbage_bytes += h - start
            start = h
            if n - h < 6:
                break
            ln = (w[h + 4] << 8) | w[h + 5]
            if ln > self._max:
                self.errors["too_long"] += 1
                start = h + 1
                continue
            end = h + 7 + ln
            if end > n:
                break
            if crc.sum8(w, h, end - 1) != w[end - 1]:
                self.errors["checksum"] += 1
                start = h + 1
                continue
            self.frames += 1
            if emit is not None:
                out += self._frame(w[h + 3], h + 6, end - 1, emit)
            start = end
        # compact: keep the unparsed tail at the front of the window
        m = n - start
        for j in range(m):
            w[j] = w[start + j]
        self._n = m
        return out

    def _frame(self, cmd, off, end, emit):
        w = self._w
        if cmd == CMD_DP_REPORT or cmd == CMD_DP_REPORT_SYNC:
            out = self._dps_in(off, end, emit)
            if cmd == CMD_DP_REPORT_SYNC:
                self.send(CMD_DP_SYNC_ACK, b"\x01")
            return out
        if cmd == CMD_HEARTBEAT:
            self._hb_sent = None
            if end > off and w[off] == 0x00:
                # Case: first answer after the MCU (re)booted: run the init queries again.
                self.mcu_restarts += 1
                self.send(CMD_PRODUCT)
            elif not self.online and self.product is None:
                self.send(CMD_PRODUCT)
            self.online = True
        elif cmd == CMD_PRODUCT:
            self.product = bytes(w[off:end])
            self.send(CMD_MODE)
        elif cmd == CMD_MODE:
            self.send(CMD_WIFI_STATE, bytes((self.net_status,)))
            self.send(CMD_DP_QUERY)
        elif cmd == CMD_NET_STATUS:
            self.send(CMD_NET_STATUS, bytes((self.net_status,)))
        elif cmd == CMD_LOCAL_TIME:
            self.send(CMD_LOCAL_TIME, b"\x00\x00\x00\x00\x00\x00\x00\x00")  # time not valid
        elif cmd != CMD_WIFI_STATE:
            self.unhandled_cmd += 1
        return 0

    def _dps_in(self, off, end, emit):
        w = self._w
        out = 0
        while off < end:
            if end - off < 4:
                self.errors["dp_truncated"] += 1
                return out
            dpid = w[off]
            typ = w[off + 1]
            ln = (w[off + 2] << 8) | w[off + 3]
            v0 = off + 4
            off = v0 + ln
            if off > end:
                self.errors["dp_truncated"] += 1
                return out
            t = self._dps.get(dpid)
            if t is None:
                self.unmapped_dp += 1
                continue
            if typ == _T_BOOL or typ == _T_ENUM:
                if ln != 1:
                    self.errors["dp_len"] += 1
                    continue
                v = w[v0]
                if typ == _T_BOOL:
                    v = 1 if v else 0
            elif typ == _T_VALUE:
                if ln != 4:
                    self.errors["dp_len"] += 1
                    continue
                v = _uint(w, v0, 4)
                if v & 0x80000000:
                    v -= 0x100000000
            elif typ == _T_BITMAP:
                if ln not in (1, 2, 4):
                    self.errors["dp_len"] += 1
                    continue
                v = _uint(w, v0, ln)
            elif typ == _T_STRING:
                v = t.map.get_bytes(w, v0, off) if t.map is not None else _decimal(w, v0, off)
                if v is None:
                    self.errors["dp_value"] += 1
                    continue
            elif typ == _T_RAW:
                if ln < t.roff + t.rsize:
                    self.errors["dp_len"] += 1
                    continue
                v = _uint(w, v0 + t.roff, t.rsize)
                if t.rsigned and v & (1 << (8 * t.rsize - 1)):
                    v -= 1 << (8 * t.rsize)
            else:
                self.errors["dp_type"] += 1
                continue
            t.emit(emit, v)
            out += 1
        return out
