# Builds the agent's input sources from config "inputs": [...] (schema in docs/INPUTS.md).
# Each source has poll(now_ms, emit) -> int and never blocks. Channels with a deadband /
# interval policy are wrapped in a shared deadband Gate.

from edge import board as boards
from edge.bus.modbus import ModbusMaster
from edge.bus.stream import StreamSource
from edge.deadband import Deadband, Gate

TYPES = ("line", "tuya", "modbus", "sht3x", "ds18b20", "adc", "pulse")


def _int(spec, key, default, path, lo=0, hi=0x7FFFFFFF):
    v = spec.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError("config key '%s.%s' must be an integer %d..%d" % (path, key, lo, hi))
    return v


def _chan(spec, name, path, required=True):
    from edge.sensors.base import channel

    chans = spec.get("channels")
    if not isinstance(chans, dict):
        raise ValueError("config key '%s.channels' must be an object" % path)
    return channel(chans, name, path, required)


def _uart(hal, board, spec, path):
    u = boards.resolve(board, "uarts", spec.get("uart"), path + ".uart")
    key = path + ".uart"
    try:
        return hal.uart(u), u
    except ValueError as e:  # the HAL's message names the UART and its path
        raise ValueError("config key '%s': %s" % (key, e)) from None
    except OSError as e:  # a driver's bare errno: say which UART it was
        raise ValueError(
            "config key '%s': uart %r (id %s): %s" % (key, u.get("name"), u.get("id"), e)
        ) from None


def _one(spec, hal, board, path, decimals):
    typ = spec.get("type")
    if typ not in TYPES:
        raise ValueError("config key '%s.type' must be one of %s" % (path, ", ".join(TYPES)))
    try:
        return _make(typ, spec, hal, board, path, decimals)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("config key '") and not msg.startswith("config key '" + path):
            msg = "config key '%s.%s" % (path, msg[12:])  # qualify keys named by the driver
        raise ValueError(msg) from None


def _make(typ, spec, hal, board, path, decimals):
    if typ == "line":
        from edge.bus.line import LineParser

        parser = LineParser(spec, decimals, path)
        return StreamSource(_uart(hal, board, spec, path)[0], parser)
    if typ == "tuya":
        from edge.bus.tuya import TuyaMCU

        dps = spec.get("dps")
        if not isinstance(dps, dict) or not dps:
            raise ValueError("config key '%s.dps' must map DP ids to channels" % path)
        uart = _uart(hal, board, spec, path)[0]
        mcu = TuyaMCU(
            dps,
            uart.write,
            _int(spec, "heartbeat_ms", 15000, path, 1000),
            _int(spec, "max_len", 256, path, 16, 1024),
            spec.get("protocol", "auto"),
            hal.wall_ms,
            spec.get("tz_offset_min", 0),
            decimals,
        )
        return StreamSource(uart, mcu)
    if typ == "modbus":
        uart, u = _uart(hal, board, spec, path)
        return ModbusMaster(
            uart,
            spec.get("slave"),
            spec.get("reads"),
            _int(spec, "interval_ms", 1000, path, 10),
            _int(spec, "timeout_ms", 300, path, 10, 60000),
            _int(spec, "retries", 2, path, 0, 10),
            u.get("baud", 9600),
            decimals,
        )
    interval = _int(spec, "interval_ms", 2000, path, 10)
    if typ == "sht3x":
        from edge.sensors.sht3x import SHT3x

        i2c = hal.i2c(boards.resolve(board, "i2c", spec.get("i2c"), path + ".i2c"), [spec])
        return SHT3x(
            i2c,
            spec.get("addr", 0x44),
            _chan(spec, "temp", path),
            _chan(spec, "rh", path, False),
            interval,
        )
    pin = spec.get("pin")
    if isinstance(pin, str):
        pin = (board.get("pins") or {}).get(pin)
    if not isinstance(pin, int):
        raise ValueError("config key '%s.pin' must be a GPIO number or a board pin name" % path)
    pspec = {"pin": pin}
    if typ == "ds18b20":
        from edge.sensors.ds18b20 import DS18B20

        rom = spec.get("rom")
        rom = bytes.fromhex(rom) if isinstance(rom, str) else None
        return DS18B20(hal.onewire(pspec, spec), _chan(spec, "temp", path), rom, interval)
    if typ == "adc":
        from edge.sensors.adc import ADCChannel

        return ADCChannel(
            hal.adc(pspec, spec),
            _chan(spec, "value", path),
            spec.get("cal"),
            _int(spec, "samples", 4, path, 1, 64),
            interval,
        )
    from edge.sensors.pulse import PulseCounter

    pspec["debounce_ms"] = _int(spec, "debounce_ms", 0, path, 0, 1000)
    return PulseCounter(
        hal.counter(pspec, spec),
        _chan(spec, "count", path),
        _chan(spec, "delta", path, False),
        _int(spec, "mul", 1, path, 1),
        _int(spec, "div", 1, path, 1),
        interval,
    )


def build(cfg, hal):
    """Sources for cfg["inputs"], each opened (UART, bus, pin). Raises ConfigError (a
    ValueError) naming the config key on a bad entry or an input that cannot be opened, so
    the agent stops at boot with that line instead of a bare errno."""
    from edge.config import ConfigError

    specs = cfg.get("inputs")
    if not isinstance(specs, list):
        raise ConfigError("config key 'inputs' must be a list")
    try:
        board = boards.load(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    decimals = {}  # channel id -> decimals of its fixed-point value (edge/bus/target.py)
    for ch in cfg.get("channels") or ():
        if ch.get("decimals"):
            decimals[ch["id"]] = ch["decimals"]
    out = []
    for i, spec in enumerate(specs):
        path = "inputs[%d]" % i
        if not isinstance(spec, dict):
            raise ConfigError("config key '%s' must be an object" % path)
        try:
            out.append(_one(spec, hal, board, path, decimals))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    db = Deadband(cfg.get("channels") or ())
    if db.active():
        out = [Gate(s, db) for s in out]
    return out


def stats(sources):
    """Counters per source for the health message: {"inputs[0]": {"accepted": n, "bytes":
    {...}, reason: n}} (docs/HEALTH.md; byte ledger: edge/bus/ledger.py)."""
    d = {}
    flat = []
    for s in sources:
        inner = getattr(s, "sources", None)  # the replay driver wraps the real sources
        if inner is not None:
            flat.extend(inner)
        else:
            flat.append(s)
    for i, s in enumerate(flat):
        f = getattr(s, "stats", None)
        if f is not None:
            d["inputs[%d]" % i] = f()
    return d


_LEDGER = ("fed", "decoded", "unhandled", "rejected", "garbage")
_VERBOSE = ("cmds", "variant_by", "lines")  # left out of the status (its size is bounded)


def health_stats(sources):
    """stats() in the status message's compact form (docs/HEALTH.md): the byte ledger as a
    list `b` = [fed, decoded, unhandled, rejected, garbage] (pending is what is left), without
    the per-command and per-line detail the replay summary shows."""
    d = stats(sources)
    for name in d:
        st = d[name]
        b = st.pop("bytes", None)
        if b is not None:
            st["b"] = [b[k] for k in _LEDGER]
        for k in _VERBOSE:
            st.pop(k, None)
    return d
