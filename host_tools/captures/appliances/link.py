"""Run an appliance model live on a link: a raw pty pair (tests, `simulate --serve`) or an
open pyserial port.

A model has `feed(data) -> [frames]` (answers to what the master/module wrote), `due(now) ->
[frames]` (what it sends unasked by `now`, seconds since the start) and `reply_delay`
(seconds before an answer is written).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty
from typing import Any, Protocol


class Link(Protocol):
    def read(self, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...


class Pty:
    """A raw pty pair; `path` is what the agent opens (also symlinked to `link` when given)."""

    def __init__(self, link: str | None = None) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        if link:
            if os.path.islink(link):
                os.unlink(link)  # a stale link of an earlier run
            elif os.path.lexists(link):
                raise FileExistsError(f"{link} exists and is not a link; refusing to replace it")
            os.symlink(self.path, link)
            self.path = link

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], timeout)
        return os.read(self.master, 4096) if r else b""

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class SerialLink:
    """A pyserial port (`serial.serial_for_url(...)`) as a link."""

    def __init__(self, port: Any) -> None:
        self.port = port

    def read(self, timeout: float) -> bytes:
        self.port.timeout = timeout
        first = self.port.read(1)
        return first + self.port.read(self.port.in_waiting) if first else b""

    def write(self, data: bytes) -> None:
        self.port.write(data)


class Server(threading.Thread):
    """Serves `model` on `link` until stop() (a daemon thread; join() after stop())."""

    def __init__(self, model: Any, link: Link, poll_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.model = model
        self.link = link
        self.poll_s = poll_s
        self._stop_evt = threading.Event()
        self.t0 = time.monotonic()

    def stop(self) -> None:
        self._stop_evt.set()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            try:
                data = self.link.read(self.poll_s)
                for frame in self.model.feed(data) if data else ():
                    if self.model.reply_delay:
                        time.sleep(self.model.reply_delay)
                    self.link.write(frame)
                for frame in self.model.due(time.monotonic() - self.t0):
                    self.link.write(frame)
            except OSError:
                return  # the link closed under us


def serve(model: Any, link: Link) -> Server:
    """Start serving `model` on `link`; returns the running Server."""
    server = Server(model, link)
    server.start()
    return server
