# Appliances for `edgectl bench day` (host_tools/bench/day.py), MicroPython side: each is a
# model of what an appliance's controller says on its UART over a day, in virtual time
# (vclock/time.py), behind the unix HAL's UART interface (readinto / write). The agent's own
# bus drivers (line protocol, Modbus RTU master) parse them: only the hardware is simulated.
#
# Deterministic: every model draws from its own 31-bit LCG, so two runs give the same day.

import json
import time

from edge.bus import crc
from edge.hal.unix import hal as unix

_DAY_MS = 86400000


class _Rand:
    def __init__(self, seed):
        self.s = seed & 0x7FFFFFFF or 1

    def next(self, n):
        """0..n-1 (LCG, Numerical Recipes constants; a small int on every port)."""
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


def _tri(t, period, lo, hi):
    """Triangle wave between lo and hi (integers)."""
    ph = t % period
    half = period // 2
    if ph < half:
        return lo + (hi - lo) * ph // half
    return hi - (hi - lo) * (ph - half) // half


class _Port:
    """The agent's side of a simulated UART: what the appliance printed waits here."""

    def __init__(self, model):
        self.model = model
        self.buf = bytearray(2048)
        self.n = 0
        self.rx_bytes = 0
        self.tx_bytes = 0
        model.port = self

    def put(self, data):
        k = min(len(data), len(self.buf) - self.n)  # a UART FIFO overflows by dropping
        self.buf[self.n : self.n + k] = data[:k]
        self.n += k

    def readinto(self, buf):
        self.model.advance(time.elapsed_ms())
        k = min(len(buf), self.n)
        if not k:
            return 0
        buf[0:k] = self.buf[0:k]
        self.buf[0 : self.n - k] = self.buf[k : self.n]
        self.n -= k
        self.rx_bytes += k
        return k

    def write(self, buf):
        self.tx_bytes += len(buf)
        self.model.on_write(bytes(buf), time.elapsed_ms())
        return len(buf)

    def close(self):
        pass


class _Model:
    port = None

    def on_write(self, data, now):
        pass


class Fridge(_Model):
    """A fridge controller's console (line protocol, `kv`): every second the cabinet and
    freezer temperatures (0.01 degC) and the compressor power (W); every 10 s the defrost,
    door-opening and ice-maker counters and the door alarm flag. The compressor cycles 12 min
    on / 28 min off; door openings (about 30 a day, in the daytime) warm the cabinet; a door
    left open over 60 s raises the alarm."""

    def __init__(self, seed):
        self.r = _Rand(seed)
        self.next_fast = 1000
        self.next_slow = 10000
        self.defrosts = 0
        self.doors = 0
        self.ice = 0
        self.warm = 0  # cabinet warming left by the last door opening, 0.01 degC
        self.open_until = 0

    def _events(self, now):
        hour = (now % _DAY_MS) // 3600000
        day_time = 7 <= hour < 23
        # per second: a door opening with probability ~30 / 57600 in the daytime
        if day_time and self.r.next(1920) == 0:
            self.doors += 1
            self.warm = 150 + self.r.next(100)
            # one opening in twenty is left open for two minutes
            self.open_until = now + (120000 if self.r.next(20) == 0 else 15000)
        if self.r.next(7200) == 0:
            self.ice += 1
        if now % (8 * 3600000) < 1000:
            self.defrosts += 1

    def advance(self, now):
        while now >= self.next_fast:
            t = self.next_fast
            self._events(t)
            on = t % 2400000 < 720000
            cab = 400 + (-60 if on else 60) + _tri(t, 2400000, -60, 60) + self.warm
            cab += self.r.next(11) - 5  # an NTC read to 0.01 degC: +-0.05 degC of noise
            frz = -1850 + _tri(t + 600000, 2400000, -120, 120) + self.r.next(11) - 5
            power = (115 + self.r.next(7)) if on else 1 + self.r.next(2)
            self.warm = self.warm * 99 // 100
            self.port.put(b"CT=%d.%02d;FT=%s;CP=%d\n" % (cab // 100, cab % 100, _c(frz), power))
            self.next_fast += 1000
        while now >= self.next_slow:
            t = self.next_slow
            alarm = 1 if t - (self.open_until - 120000) > 60000 and t < self.open_until else 0
            self.port.put(
                b"DF=%d;DO=%d;IM=%d;AL=%d\n" % (self.defrosts, self.doors, self.ice, alarm)
            )
            self.next_slow += 10000


def _c(v):
    """A 0.01-unit integer as decimal text."""
    sign = "-" if v < 0 else ""
    v = -v if v < 0 else v
    return "%s%d.%02d" % (sign, v // 100, v % 100)


class Washer(_Model):
    """A washing machine's console (line protocol, `kv`): two programmes a day (08:00 and
    19:00, 90 min each) reporting every second drum speed (rpm), water temperature (0.1 degC),
    phase, power (W) and minutes left; idle, a status line every minute."""

    _STARTS = (8 * 3600000, 19 * 3600000)
    _LEN = 5400000

    def __init__(self, seed):
        self.r = _Rand(seed)
        self.next = 1000
        self.runs = 0

    def advance(self, now):
        while now >= self.next:
            t = self.next
            tod = t % _DAY_MS
            start = -1
            for s in self._STARTS:
                if s <= tod < s + self._LEN:
                    start = s
            if start < 0:
                if tod % 60000 < 1000:
                    self.port.put(b"PH=0;RPM=0;P=1\n")
                self.next += 1000
                continue
            e = tod - start  # ms into the programme
            if e < 600000:  # fill and heat
                ph, rpm, power = 1, 0, 1900 + self.r.next(150) if e > 120000 else 30
                temp = 150 + min(e // 2000, 250)
            elif e < 3600000:  # wash: tumble 50 rpm, 12 s one way, 3 s rest
                ph, temp = 2, 400 - (e - 600000) // 60000
                rpm = 50 + self.r.next(3) if (e // 1000) % 15 < 12 else 0
                power = 180 + self.r.next(60) if rpm else 20
            elif e < 4800000:  # rinse
                ph, temp, rpm = 3, 200, 45 + self.r.next(3)
                power = 160 + self.r.next(40)
            else:  # spin up to 1400 rpm
                ph, temp = 4, 200
                rpm = min(1400, (e - 4800000) // 300) + self.r.next(5)
                power = 300 + rpm // 3 + self.r.next(30)
            left = (self._LEN - e) // 60000
            self.port.put(
                b"PH=%d;RPM=%d;WT=%d.%d;P=%d;LEFT=%d\n"
                % (ph, rpm, temp // 10, temp % 10, power, left)
            )
            self.next += 1000


class HeatPump(_Model):
    """A heat pump's controller as a Modbus RTU slave (holding registers from 0): flow and
    return temperature, outdoor, hot-water tank (0.1 degC, signed), compressor frequency (Hz),
    electrical power (W), operating mode (0 off, 1 heating, 2 hot water, 3 defrost). Heating
    follows the outdoor temperature over the day; the inverter moves the power every second."""

    def __init__(self, seed, slave=1):
        self.r = _Rand(seed)
        self.slave = slave
        self.regs = [0] * 8

    def advance(self, now):
        pass  # answers requests only (on_write)

    def _state(self, t):
        tod = t % _DAY_MS
        outdoor = -20 + _tri(tod + 3 * 3600000, _DAY_MS, -40, 60)  # 0.1 degC: -6..+4 degC
        hot_water = (6 * 3600000 <= tod < 6 * 3600000 + 2700000) or (
            18 * 3600000 <= tod < 18 * 3600000 + 2700000
        )
        defrost = tod % 7200000 < 300000 and outdoor < 30
        if defrost:
            mode, freq = 3, 40
        elif hot_water:
            mode, freq = 2, 70
        else:
            mode, freq = 1, 35 + (40 - outdoor // 10) // 2
        flow = (500 if mode == 2 else 350 - outdoor // 2) + self.r.next(3) - 1
        ret = flow - 50 + self.r.next(3) - 1
        power = freq * 28 + self.r.next(41) - 20
        tank = 480 - _tri(tod, 43200000, 0, 60)
        return flow, ret, outdoor, tank, freq, power, mode

    def on_write(self, data, now):
        # request: slave fn addr(2) count(2) crc(2) (Modbus over Serial Line 2.5.1)
        if len(data) != 8 or data[0] != self.slave or data[1] not in (3, 4):
            return
        if crc.crc16_modbus(data, 0, 6) != data[6] | data[7] << 8:
            return
        addr = data[2] << 8 | data[3]
        count = data[4] << 8 | data[5]
        vals = self._state(now)
        out = bytearray(5 + 2 * count)
        out[0] = self.slave
        out[1] = data[1]
        out[2] = 2 * count
        for i in range(count):
            v = vals[addr + i] if 0 <= addr + i < len(vals) else 0
            out[3 + 2 * i] = (v >> 8) & 0xFF
            out[4 + 2 * i] = v & 0xFF
        c = crc.crc16_modbus(out, 0, 3 + 2 * count)
        out[3 + 2 * count] = c & 0xFF
        out[4 + 2 * count] = c >> 8
        self.port.put(out)


MODELS = {"fridge": Fridge, "washer": Washer, "heatpump": HeatPump}


class Hal(unix.Hal):
    """The unix HAL with simulated appliances on its UARTs: a UART whose `path` is
    `sim:NAME` plays model NAME (MODELS). Time is the virtual clock (vclock/time.py)."""

    def __init__(self, seed=1, consent=None):
        unix.Hal.__init__(self)
        self.seed = seed
        self.ports = []
        self._consent = consent

    def mount_store(self, path):
        """The unix store, seeded with the run's consent state (edge/consent.py reads it at
        boot), as `edgectl replay --agent` does (edge/hal/unix/replay.py)."""
        root = unix.Hal.mount_store(self, path)
        if self._consent is not None:
            unix._makedirs(root)
            with open(root + "/consent.json", "w") as f:
                f.write(json.dumps(self._consent))
        return root

    def uart(self, spec):
        path = spec.get("path") or ""
        if not path.startswith("sim:"):
            return unix.Hal.uart(self, spec)
        port = _Port(MODELS[path[4:]](self.seed + len(self.ports)))
        self.ports.append(port)
        return port
