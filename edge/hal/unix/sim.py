# Simulated hardware for the unix HAL: values come from a script in the
# config ("sim" of an input) or from a file; each device answers its real wire protocol so the
# drivers in edge/sensors/ run unchanged on unix.
#
# Script forms: 2150 (constant) | [[t_ms, v], ...] (steps, t from start) |
# {"base": b, "amp": a, "period_ms": p} (integer triangle wave) | {"file": path} (lines "t_ms v").

from edge.bus import crc
from edge.ticks import ticks_diff


class Script:
    def __init__(self, spec, clock):
        self._clock = clock
        self._t0 = clock()
        self._const = None
        self._steps = None
        self._wave = (0, 0, 2)  # read only when _const and _steps are None: a dict script set it
        if isinstance(spec, int):
            self._const = spec
        elif isinstance(spec, list):
            self._steps = [(int(p[0]), int(p[1])) for p in spec]
        elif isinstance(spec, dict) and "file" in spec:
            steps = []
            with open(spec["file"]) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 2 and not line.startswith("#"):
                        steps.append((int(parts[0]), int(parts[1])))
            self._steps = steps
        elif isinstance(spec, dict):
            self._wave = (
                spec.get("base", 0),
                spec.get("amp", 0),
                max(2, spec.get("period_ms", 60000)),
            )
        else:
            raise ValueError("sim script must be an int, a list of [t_ms, v], or an object")

    def value(self):
        t = ticks_diff(self._clock(), self._t0)
        if self._const is not None:
            return self._const
        if self._steps is not None:
            v = self._steps[0][1] if self._steps else 0
            for ts, sv in self._steps:
                if ts > t:
                    break
                v = sv
            return v
        base, amp, period = self._wave
        ph = t % period
        half = period // 2
        # triangle: base-amp .. base+amp
        return (
            base - amp + (2 * amp * ph // half if ph < half else 2 * amp * (period - ph) // half)
        )


class _SHT3x:
    def __init__(self, spec, clock):
        sim = spec.get("sim", {})
        self.temp = Script(sim.get("temp_cC", 2150), clock)
        self.rh = Script(sim.get("rh_cP", 4500), clock)
        self.bad_crc_every = sim.get("bad_crc_every", 0)
        self.reads = 0
        self.out = bytearray(6)
        self.ready = False

    def write(self, buf):
        if len(buf) == 2 and buf[0] in (0x24, 0x2C):  # single-shot measurement commands
            t = self.temp.value()
            rh = self.rh.value()
            # the smallest raw word the driver's floor conversion (datasheet 4.13) reads back
            # as the scripted value: a round trip gives exactly temp_cC / rh_cP
            rt = max(0, min(65535, -(-(t + 4500) * 65535 // 17500)))
            rr = max(0, min(65535, -(-rh * 65535 // 10000)))
            o = self.out
            o[0], o[1], o[3], o[4] = rt >> 8, rt & 0xFF, rr >> 8, rr & 0xFF
            o[2] = crc.crc8_sensirion(o, 0, 2)
            o[5] = crc.crc8_sensirion(o, 3, 5)
            self.ready = True

    def read(self, buf):
        if not self.ready:
            raise OSError(19)  # the real sensor NACKs a read before a measurement
        self.reads += 1
        for i in range(min(len(buf), 6)):
            buf[i] = self.out[i]
        if self.bad_crc_every and self.reads % self.bad_crc_every == 0:
            buf[2] ^= 0x01
        self.ready = False


class SimI2C:
    """machine.I2C subset: writeto, readfrom_into, scan. Unknown address -> OSError(19)."""

    def __init__(self, attached, clock):
        self._dev = {}
        for spec in attached:
            if spec.get("type") == "sht3x":
                self._dev[spec.get("addr", 0x44)] = _SHT3x(spec, clock)

    def scan(self):
        return sorted(self._dev)

    def writeto(self, addr, buf, stop=True):
        d = self._dev.get(addr)
        if d is None:
            raise OSError(19)
        d.write(buf)
        return len(buf)

    def readfrom_into(self, addr, buf, stop=True):
        d = self._dev.get(addr)
        if d is None:
            raise OSError(19)
        d.read(buf)


class SimOneWire:
    """onewire.OneWire subset with one DS18B20: reset, writebyte, write, readinto, select_rom."""

    def __init__(self, attached, clock):
        sim = attached.get("sim", {}) if attached else {}
        self.temp = Script(sim.get("temp_cC", 2150), clock)
        self.present = sim.get("present", True)
        self._clock = clock
        self.rom = bytearray(b"\x28\x01\x02\x03\x04\x05\x06\x00")
        self.rom[7] = crc.crc8_maxim(self.rom, 0, 7)
        self._pad = bytearray(9)
        self._set_raw(0x0550)  # power-on value: 85.00 C
        self._conv_at = None
        self._rpos = 9
        self._select = 0

    def _set_raw(self, raw):
        p = self._pad
        p[0], p[1], p[2], p[3], p[4] = raw & 0xFF, (raw >> 8) & 0xFF, 0x4B, 0x46, 0x7F
        p[5], p[6], p[7] = 0xFF, 0x0C, 0x10
        p[8] = crc.crc8_maxim(p, 0, 8)

    def scan(self):
        return [bytes(self.rom)] if self.present else []

    def reset(self, required=False):
        if not self.present and required:
            raise OSError(19)
        self._rpos = 9
        self._select = 0
        return self.present

    def select_rom(self, rom):
        self.reset()
        self.writebyte(0x55)
        self.write(rom)

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def writebyte(self, b):
        if self._select:
            self._select -= 1  # ROM bytes after MATCH ROM
            return
        if b == 0x55:
            self._select = 8
        elif b == 0x44:  # CONVERT T: 750 ms at 12 bits
            t = self.temp.value()
            self._pending = (t * 16) // 100 & 0xFFFF
            self._conv_at = self._clock()
        elif b == 0xBE:  # READ SCRATCHPAD
            if self._conv_at is not None and ticks_diff(self._clock(), self._conv_at) >= 750:
                self._set_raw(self._pending)
                self._conv_at = None
            self._rpos = 0

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self._pad[self._rpos] if self._rpos < 9 else 0xFF
            self._rpos += 1


class SimADC:
    """machine.ADC subset: read_u16() from a script (clamped to 0..65535)."""

    def __init__(self, spec, clock):
        self._s = Script(spec, clock)

    def read_u16(self):
        return max(0, min(65535, self._s.value()))


class SimCounter:
    """Edges from a rate script in pulses per minute, integrated exactly over ticks."""

    def __init__(self, spec, clock):
        self._rate = Script(spec, clock)
        self._clock = clock
        self._t = clock()
        self._count = 0
        self._rem = 0

    def value(self):
        now = self._clock()
        dt = ticks_diff(now, self._t)
        self._t = now
        self._rem += self._rate.value() * dt
        self._count += self._rem // 60000
        self._rem %= 60000
        return self._count


class SimWDT:
    """machine.WDT stand-in: feed() records the tick; expired() tells a hang. With `on_expire`
    a monitor thread acts as the hardware would, even while the event loop is blocked: when
    no feed came for timeout_ms it calls on_expire(ms_since_feed) and resets (ends) the
    process with SIGKILL, so the exit status is non-zero (docs/HEALTH.md 2)."""

    def __init__(self, timeout_ms, clock, on_expire=None):
        self.timeout_ms = timeout_ms
        self._clock = clock
        self._fed = clock()
        self._on_expire = on_expire
        self._stop = False
        if on_expire is not None:
            import _thread

            _thread.start_new_thread(self._monitor, ())

    def feed(self):
        self._fed = self._clock()

    def expired(self):
        return ticks_diff(self._clock(), self._fed) > self.timeout_ms

    def deinit(self):
        self._stop = True

    def _monitor(self):
        import time

        while not self._stop:
            time.sleep_ms(min(100, self.timeout_ms // 4 + 1))
            if not self._stop and self.expired():
                self._on_expire(ticks_diff(self._clock(), self._fed))
                import os

                os.system("kill -9 $PPID")  # the shell's parent is this process
                return
