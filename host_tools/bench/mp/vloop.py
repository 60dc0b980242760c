# Virtual time for asyncio in `edgectl bench day` (with vclock/time.py first on the path): when
# every task sleeps and nothing is expected from the network, the clock jumps to the next timer
# instead of waiting, so a device-day of timers (status, keepalive, latency budgets, the
# sampler's polls) runs in seconds. While `busy()` says an exchange with the broker is
# outstanding (a PUBLISH not yet acknowledged, a PINGREQ without its PINGRESP, a connection
# being set up) the loop waits for the socket in real time, and the virtual clock runs with
# it: the network's own delay stays in the figures, nothing of it is skipped.

import time

import asyncio.core as core

_REAL_WAIT_MS = 5


class VirtualLoop:
    def __init__(self, busy):
        self.busy = busy
        self.jumps = 0
        self.jumped_ms = 0
        self.on_wait = None  # called with the virtual ms at every wait of the loop
        self._orig = core.IOQueue.wait_io_event
        loop = self

        def wait_io_event(q, dt):
            if loop.on_wait is not None:
                loop.on_wait()
            if dt <= 0:
                return loop._orig(q, dt)
            if loop.busy():
                return loop._orig(q, min(dt, _REAL_WAIT_MS))
            loop._orig(q, 0)
            t = core._task_queue.peek()
            if t is not None and time.ticks_diff(t.ph_key, time.ticks_ms()) <= 0:
                return  # the poll made a task runnable: run it before any jump
            loop.jumps += 1
            loop.jumped_ms += dt
            time.jump(dt)

        core.IOQueue.wait_io_event = wait_io_event

    def close(self):
        core.IOQueue.wait_io_event = self._orig
