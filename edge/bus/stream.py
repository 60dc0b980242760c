# A source that reads a UART without blocking and feeds a streaming parser (line, Tuya).
# poll(now_ms, emit) -> readings emitted: the contract with the agent's sampler.

try:
    from micropython import const
except ImportError:  # CPython: the host fuzzes these parsers in-process

    def const(x):  # type: ignore[misc]
        return x


_MAX_READS = const(8)  # bound the work per poll so one chatty bus cannot starve the loop


class StreamSource:
    def __init__(self, uart, parser, bufsize=128):
        self.uart = uart
        self.parser = parser
        self._buf = bytearray(bufsize)
        self._tick = getattr(parser, "tick", None)

    def poll(self, now_ms, emit):
        out = 0
        for _ in range(_MAX_READS):
            n = self.uart.readinto(self._buf)
            if not n:  # None (ESP32) or 0 (pty): nothing available
                break
            out += self.parser.feed(self._buf, n, emit, now_ms)
        if self._tick is not None:
            out += self._tick(now_ms, emit)
        return out

    def stats(self):
        return self.parser.stats()

    def wake_ms(self, now_ms):
        """Tick by which poll() must run again for the parser's timers (a replay's clock)."""
        f = getattr(self.parser, "wake_ms", None)
        return f(now_ms) if f is not None else None

    def flush(self, emit):
        """End of input: the parser classifies what it still buffers."""
        return self.parser.flush(emit)
