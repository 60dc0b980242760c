"""Fault proxy on loopback: a TCP relay that adds latency, limits bandwidth,
black-holes or resets connections on command. Used by tests and `edgectl bench forward`.

The kernel's `tc netem` needs privileges the tests do not have, so latency is added in user
space: every chunk read from one side is released to the other side `delay` seconds later, so a
pipelined sender still keeps many bytes in flight (the link has latency, not a window of one).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

from host_tools.errors import ToolError

HOST = "127.0.0.1"


class FaultProxy:
    """`FaultProxy(target_port, rtt_ms=20).start()`; clients connect to `.port`."""

    def __init__(
        self,
        target_port: int,
        rtt_ms: float = 0.0,
        bandwidth_bps: int = 0,
        target_host: str = HOST,
        port: int = 0,
        tap=None,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = rtt_ms / 2000.0  # each direction carries half the round trip
        self.bandwidth = bandwidth_bps  # bytes per second per direction, 0 = unlimited
        # tap(conn, key, data): every chunk as it is delivered, conn numbering the client
        # connections from 1, key "bytes_up" (client to server) or "bytes_down"
        self.tap = tap
        self.blackhole = False
        self.want_port = port
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.base_events.Server | None = None
        self.thread: threading.Thread | None = None
        self.conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.stats = {
            "connections": 0,
            "bytes_up": 0,
            "bytes_down": 0,
            "dropped_bytes": 0,
            "resets": 0,
        }
        self._ready = threading.Event()

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        """Run the proxy's event loop in a daemon thread; returns once it listens."""
        self.thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self.thread.start()
        if not self._ready.wait(5) or not self.port:
            raise ToolError("fault proxy did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._serve())
        self._ready.set()
        self.loop.run_forever()
        self.loop.close()

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._accept, HOST, self.want_port)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Close every connection and the listener; ends the thread."""
        if self.loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        fut.result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread:
            self.thread.join(5)
        self.loop = None

    async def _shutdown(self) -> None:
        if self.server:
            self.server.close()
        self._reset_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- commands (thread-safe) ------------------------------------------------------------
    def set_blackhole(self, on: bool) -> None:
        """While on, bytes in both directions are swallowed; connections stay open."""
        self.blackhole = on

    def set_latency(self, rtt_ms: float) -> None:
        self.delay = rtt_ms / 2000.0

    def set_bandwidth(self, bytes_per_s: int) -> None:
        self.bandwidth = bytes_per_s

    def reset(self) -> None:
        """Abort every open connection with a TCP RST (SO_LINGER 0)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._reset_all)

    def _reset_all(self) -> None:
        for pair in list(self.conns):
            for w in pair:
                sock = w.get_extra_info("socket")
                try:
                    if sock is not None:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    w.transport.abort()
                except OSError:
                    pass
            self.stats["resets"] += 1
        self.conns.clear()

    # --- relay -------------------------------------------------------------------------------
    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            br, bw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.transport.abort()
            return
        for w in (cw, bw):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats["connections"] += 1
        conn = self.stats["connections"]
        pair = (cw, bw)
        self.conns.add(pair)
        await asyncio.gather(
            self._pipe(cr, bw, "bytes_up", conn),
            self._pipe(br, cw, "bytes_down", conn),
            return_exceptions=True,
        )
        self.conns.discard(pair)
        for w in pair:
            w.transport.abort()

    async def _pipe(
        self, r: asyncio.StreamReader, w: asyncio.StreamWriter, key: str, conn: int = 0
    ) -> None:
        q: asyncio.Queue = asyncio.Queue()
        sender = asyncio.ensure_future(self._deliver(q, w, key, conn))
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                if self.blackhole:
                    self.stats["dropped_bytes"] += len(data)
                    continue
                q.put_nowait((time.monotonic() + self.delay, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            q.put_nowait(None)
            await asyncio.wait([sender], timeout=self.delay + 1)
            sender.cancel()
            w.transport.abort()

    async def _deliver(
        self, q: asyncio.Queue, w: asyncio.StreamWriter, key: str, conn: int = 0
    ) -> None:
        while True:
            item = await q.get()
            if item is None:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.blackhole:
                self.stats["dropped_bytes"] += len(data)
                continue
            w.write(data)
            self.stats[key] += len(data)
            if self.tap is not None:
                self.tap(conn, key, data)
            if self.bandwidth:
                await asyncio.sleep(len(data) / self.bandwidth)
            await w.drain()
