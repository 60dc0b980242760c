# Tuya MCU serial protocol, Wi-Fi module side. The agent plays the module: it keeps the
# appliance's MCU talking (heartbeats, init queries, the answers the MCU waits for) and maps
# datapoint (DP) reports to channels (edge/bus/tuya_dp.py). docs/INPUTS.md section 3.2.
#
# Frame (Tuya "Wi-Fi general serial protocol", frame format): 55 AA | ver u8 | cmd u8 |
# len u16 BE | data[len] | sum8 of every byte from the header. Module frames use ver 0x00.
#
# Two protocol variants reuse command numbers with other meanings (edge/bus/tuya_cmd.py):
# "normal" (mains powered: module heartbeats, 0x07 reports) and "low_power" (the battery /
# "Wi-Fi power-off" protocol: no heartbeats, 0x05 real-time and 0x08 record reports, 0x06 time,
# 0x10 DP cache). "auto" sends both openings (heartbeat and product query) and settles on the
# first sign (tuya_cmd.frame): a heartbeat answer -> normal; a product answer in a ver 0x00
# frame, or a command only the low-power MCU sends -> low power. The choice and its reason are
# reported in stats ("variant", "variant_by").
#
# Resynchronisation: bytes go into a sliding window; a header whose frame fails (length over
# the limit, bad checksum, stalled partial frame) is dropped one byte at a time and the window is
# rescanned, so a valid frame that began inside a broken one is still found. A rejection is
# counted once per broken frame (not again for headers inside its span), and every byte lands
# in the ledger (edge/bus/ledger.py).

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


from edge.bus import crc, tuya_cmd
from edge.bus.ledger import Ledger, source_stats
from edge.bus.tuya_dp import DPTable
from edge.ticks import ticks_diff

_STALL_MS = const(500)  # a partial frame idle this long is dropped ("timeout")
_HB_FAST_MS = const(3000)  # heartbeat / product query period until the MCU answers
_HB_REPLY_MS = const(3000)  # heartbeat answer deadline (protocol: MCU offline after 3 s)
_TX_DATA = const(8)  # longest data the module sends (local time)

REASONS = ("too_long", "checksum", "timeout")
VARIANTS = ("auto", "normal", "low_power")


class TuyaMCU:
    """dps: {"dpid": target spec or [specs]} (edge/bus/tuya_dp.py). write(buf) sends bytes.
    wall_ms(): Unix ms or None (answers the MCU's time requests); tz_min: local time offset."""

    def __init__(
        self,
        dps,
        write,
        heartbeat_ms=15000,
        max_len=256,
        protocol="auto",
        wall_ms=None,
        tz_min=0,
        decimals=None,
    ):
        if not 16 <= max_len <= 1024:
            raise ValueError("config key 'max_len' must be 16..1024")
        if protocol not in VARIANTS:
            raise ValueError("config key 'protocol' must be one of auto normal low_power")
        if not isinstance(tz_min, int) or not -900 <= tz_min <= 900:
            raise ValueError("config key 'tz_offset_min' must be -900..900")
        self.table = DPTable(dps, decimals)
        self._write = write
        self._hb_ms = heartbeat_ms
        self._max = max_len
        self._w = bytearray(2 * (7 + max_len))
        self._n = 0
        self._rej_end = 0  # window bytes before this belong to an already rejected frame
        self._tx = bytearray(7 + _TX_DATA)
        self._txmv = memoryview(self._tx)
        self.wall_ms = wall_ms
        self.tz_ms = tz_min * 60000
        self.auto = protocol == "auto"
        self.variant = "normal" if self.auto else protocol
        self.detected_by = "config" if not self.auto else None
        self._last_rx = 0
        self._next_hb = None  # first poll sends the first heartbeat / product query
        self._hb_sent = None  # tick of the unanswered heartbeat, or None
        self.online = False
        self.self_processing = False  # working mode: the module drives LED and reset itself
        self.net_status = tuya_cmd.NET_CLOUD
        self.product = None
        self.asked = False  # a product query is on its way (auto opening)
        self.frames = 0
        self.handled = False  # the last frame was understood (set by tuya_cmd.frame)
        self.by_cmd = {}  # MCU frames per command byte
        self.ledger = Ledger()
        self.mcu_restarts = 0
        self.mcu_heartbeats = 0
        self.heartbeat_misses = 0
        self.unhandled_cmd = 0
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0

    @property
    def unmapped_dp(self):
        return self.table.unmapped

    def stats(self):
        e = {}
        for k in self.errors:
            e[k] = self.errors[k]
        t = self.table.errors
        for k in t:
            e[k] = t[k]
        extra = {
            "unhandled_cmd": self.unhandled_cmd,
            "unmapped_dp": self.table.unmapped,
            "heartbeat_misses": self.heartbeat_misses,
            "mcu_restarts": self.mcu_restarts,
        }
        d = source_stats(self.frames, self.ledger, e, extra)
        cmds = {}
        for c in self.by_cmd:
            cmds["%02x" % c] = self.by_cmd[c]
        d["cmds"] = cmds
        d["variant"] = self.variant
        if self.detected_by:
            d["variant_by"] = self.detected_by
        return d

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

    def decide(self, variant, why):
        """The variant "auto" settled on, and what showed it (reported in stats)."""
        self.auto = False
        self.variant = variant
        self.detected_by = why
        if variant == "low_power":
            self._hb_sent = None
            self._next_hb = None
            self.online = False

    def tick(self, now_ms, emit):
        """Timers: heartbeats (normal), product query until answered (low power, and while
        the variant is undecided), stalled partial frames."""
        if self.variant == "normal":
            if self._hb_sent is not None and ticks_diff(now_ms, self._hb_sent) >= _HB_REPLY_MS:
                self._hb_sent = None
                self.heartbeat_misses += 1
                self.online = False
            if self._next_hb is None or ticks_diff(now_ms, self._next_hb) >= 0:
                self.send(tuya_cmd.HEARTBEAT)
                if self.auto and self.product is None:
                    self.send(tuya_cmd.PRODUCT)  # a low-power MCU answers only this
                    self.asked = True
                self._hb_sent = now_ms
                self._next_hb = now_ms + (self._hb_ms if self.online else _HB_FAST_MS)
        elif self.product is None and (
            self._next_hb is None or ticks_diff(now_ms, self._next_hb) >= 0
        ):
            self.send(tuya_cmd.PRODUCT)  # low power: the module asks first, retries
            self._next_hb = now_ms + _HB_FAST_MS
        if self._n and ticks_diff(now_ms, self._last_rx) >= _STALL_MS:
            # Case: a partial frame stalled (lost bytes or a corrupted length); its bytes are
            # rejected and the window is rescanned from the byte after its header.
            self._reject(0, self._n, "timeout")
            return self._scan(1, emit)
        return 0

    def wake_ms(self, now_ms):
        """Tick by which poll() must run again (heartbeat, answer deadline, product query
        retry, stall), or None when no timer runs."""
        t = None
        if self.variant == "normal":
            t = self._next_hb if self._next_hb is not None else now_ms
            if self._hb_sent is not None and ticks_diff(self._hb_sent + _HB_REPLY_MS, t) < 0:
                t = self._hb_sent + _HB_REPLY_MS
        elif self.product is None:
            t = self._next_hb if self._next_hb is not None else now_ms
        if self._n and (t is None or ticks_diff(self._last_rx + _STALL_MS, t) < 0):
            t = self._last_rx + _STALL_MS
        return t

    # -- receive -------------------------------------------------------------------------------

    def feed(self, buf, n, emit, now_ms=0):
        """Take buf[0:n] from the UART. Returns the number of readings emitted."""
        out = 0
        i = 0
        w = self._w
        cap = len(w)
        self._last_rx = now_ms
        self.ledger.fed += n
        while i < n:
            while i < n and self._n < cap:
                w[self._n] = buf[i]
                self._n += 1
                i += 1
            out += self._scan(0, emit)
        return out

    def flush(self, emit):
        """End of input (a replay's end, a fuzz run): what is still buffered is a stalled
        frame (rejected, "timeout") or garbage; afterwards nothing is pending."""
        out = 0
        while self._n:
            self._reject(0, self._n, "timeout")
            out += self._scan(1, emit)
        return out

    def _skip(self, a, b):
        """Window bytes [a, b) were passed over: inside a rejected frame, or garbage."""
        r = self._rej_end
        if r > a:
            k = (b if b < r else r) - a
            self.ledger.rejected += k
            a += k
        if b > a:
            self.ledger.garbage += b - a

    def _scan(self, start, emit):
        w = self._w
        n = self._n
        out = 0
        while True:
            h = start
            while h < n and not (w[h] == 0x55 and (h + 1 == n or w[h + 1] == 0xAA)):
                h += 1
            if h > start:
                self._skip(start, h)
            start = h
            if n - h < 6:
                break
            ln = (w[h + 4] << 8) | w[h + 5]
            if ln > self._max:
                self._reject(h, h + 2, "too_long")
                start = h + 1
                continue
            end = h + 7 + ln
            if end > n:
                break
            if crc.sum8(w, h, end - 1) != w[end - 1]:
                self._reject(h, end, "checksum")
                start = h + 1
                continue
            # a valid frame: whatever rejected frame claimed these bytes was cut short
            if self._rej_end > h:
                self._rej_end = h
            self.frames += 1
            cmd = w[h + 3]
            self.by_cmd[cmd] = self.by_cmd.get(cmd, 0) + 1
            if cmd == 0x07 and self.variant == "normal" and not self.auto:
                # the hot path: a DP report of the normal protocol needs no answer
                out += self.table.decode(w, h + 6, end - 1, emit)
                self.handled = self.table.mapped > 0
            else:
                out += tuya_cmd.frame(self, w[h + 2], cmd, h + 6, end - 1, emit)
            if self.handled:
                self.ledger.decoded += end - h
            else:
                self.ledger.unhandled += end - h
            start = end
        # compact: keep the unparsed tail at the front of the window
        m = n - start
        for j in range(m):
            w[j] = w[start + j]
        self._n = m
        self._rej_end = self._rej_end - start if self._rej_end > start else 0
        return out

    def _reject(self, h, end, reason):
        if h >= self._rej_end:  # a new broken frame, not a header inside one
            self.errors[reason] += 1
        if end > self._rej_end:
            self._rej_end = end
        self.ledger.rejected += 1  # the header byte; the rest is passed over by _skip
