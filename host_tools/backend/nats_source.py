"""The cluster tier's source: one durable JetStream pull consumer shared by every worker
(docs/BACKEND.md 2 and 7).

A drop-in for `MqttSource` under the same worker. Devices publish over MQTT to any node of the
NATS cluster; the stream `EDGE` keeps each message (three replicas) until a worker
acknowledges it. Every worker pulls from the one durable consumer `collectors`, so JetStream
hands each message to one worker at a time (queue semantics; MQTT `$share` subscriptions are
granted by NATS and deliver nothing). A message not acknowledged within the consumer's
`ack_wait` (a worker that crashed, a database that went away) goes to another worker; the
database key makes the second write a no-op.

nats-py is asyncio: the connection lives on an event loop in this source's own thread. The
worker thread's acks and device publishes are queued to that loop in call order, so a group's
end-to-end acks leave before its JetStream acks.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable

from host_tools.backend.ingest import Delivery
from host_tools.backend.mqtt_source import MAX_TOPIC
from host_tools.backend.nats_cluster import CONSUMER, STREAM
from host_tools.errors import ToolError

FETCH = 256  # messages per pull request
# messages a worker holds unacknowledged at most: about one group (docs/BACKEND.md 2), so what
# it holds is done well within the consumer's ack_wait; holding more only makes JetStream hand
# the waiting ones to another worker as well, which a loaded tier then spends its time on
HOLD = 1000


def _not_started(d: Delivery) -> None:
    raise RuntimeError("the source is not started")


class NatsSource:
    """Source for the worker: start(deliver), ack(token), send(device, suffix, payload),
    pause(), stop(), alive()."""

    def __init__(
        self,
        urls: list[str],
        prefix: str = "edge",
        name: str = "edgectl-worker",
        max_payload: int = 65536,
        user: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        on_refuse: Callable[[str, str], None] | None = None,
    ) -> None:
        self.urls = urls
        self.prefix = prefix
        self.name = name
        self.max_payload = max_payload
        self.user = user
        self.password = password
        self.tls = tls
        self.on_refuse = on_refuse or (lambda reason, msg: None)
        self.deliver: Callable[[Delivery], None] = _not_started
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.closing = threading.Event()
        self.failed: str | None = None
        self._out: deque = deque()  # ("ack", msg) / ("pub", subject, payload), in call order
        self._out_lock = threading.Lock()
        self._scheduled = False
        self._pending: dict[int, Any] = {}  # delivered, not yet acknowledged (nak'd at stop)
        self.stats = {"fetched": 0, "acked": 0, "reconnects": 0, "fetch_errors": 0}

    # --- the source interface -------------------------------------------------------------
    def start(self, deliver: Callable[[Delivery], None], timeout: float = 30.0) -> None:
        self.deliver = deliver
        self.thread = threading.Thread(target=self._thread, name="nats-source", daemon=True)
        self.thread.start()
        if not self.ready.wait(timeout) or self.failed:
            self.stop()
            raise ToolError(f"NATS source: {self.failed or 'no connection in time'}")

    def ack(self, token: Any) -> None:
        self._queue(("ack", token))

    def send(self, device: str, suffix: str, payload: bytes) -> None:
        """A core NATS publish on `{prefix}.{device}.{suffix}`; the MQTT listener delivers it
        to the device's subscription `{prefix}/{device}/{suffix}` (QoS 0)."""
        subject = ".".join([self.prefix, device] + suffix.split("/"))
        self._queue(("pub", subject, payload))

    def pause(self) -> None:
        self.closing.set()

    def stop(self) -> None:
        self.closing.set()
        loop, t = self.loop, self.thread
        if loop is not None and t is not None and t.is_alive():
            self._queue(("stop",))
            t.join(15)

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.failed is None

    # --- the loop's side ----------------------------------------------------------------------
    def _queue(self, item: tuple) -> None:
        with self._out_lock:
            self._out.append(item)
            if self._scheduled or self.loop is None:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        with self._out_lock:
            items = list(self._out)
            self._out.clear()
            self._scheduled = False
        for item in items:
            try:
                if item[0] == "ack":
                    msg = item[1]
                    self._pending.pop(id(msg), None)
                    await msg.ack()
                    self.stats["acked"] += 1
                elif item[0] == "pub":
                    await self.nc.publish(item[1], item[2])
                else:
                    self._stopping.set()
            except Exception:
                # not acknowledged: JetStream redelivers after ack_wait; the key absorbs it.
                # A lost device ack is made up by the device's re-send.
                pass

    def _thread(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._main())
        except Exception as e:
            self.failed = f"{type(e).__name__}: {e}"
            self.ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        self._stopping = asyncio.Event()

        async def reconnected() -> None:
            self.stats["reconnects"] += 1

        self.nc = await nats.connect(
            servers=self.urls,
            name=self.name,
            user=self.user,
            password=self.password,
            tls=self.tls,
            connect_timeout=2,
            reconnect_time_wait=0.2,
            max_reconnect_attempts=-1,
            reconnected_cb=reconnected,
        )
        try:
            js = self.nc.jetstream(timeout=5)
            deadline = time.monotonic() + 30
            while True:
                try:
                    sub = await js.pull_subscribe_bind(CONSUMER, STREAM)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            self.ready.set()
            loop = asyncio.get_running_loop()
            while not self.closing.is_set():
                room = HOLD - len(self._pending)
                if room <= 0:
                    await asyncio.sleep(0.005)  # the worker's acks make room
                    continue
                try:
                    msgs = await sub.fetch(min(FETCH, room), timeout=1.0)
                except NatsTimeout:
                    continue
                except Exception:
                    # no leader for the moment (a node was killed), or reconnecting
                    self.stats["fetch_errors"] += 1
                    await asyncio.sleep(0.2)
                    continue
                self.stats["fetched"] += len(msgs)
                batch = []
                for m in msgs:
                    d = self._delivery(m)
                    if d is not None:
                        self._pending[id(m)] = m
                        batch.append(d)
                if batch:
                    # the worker's queue applies backpressure: block a thread, not the loop
                    await loop.run_in_executor(None, self._deliver_all, batch)
            await self._stopping.wait()
            # what the worker never finished goes back at once, not after ack_wait
            for m in list(self._pending.values()):
                try:
                    await m.nak()
                except Exception:
                    pass
            self._pending.clear()
        finally:
            # the acks and device publishes queued so far go out; then close (a drain would
            # wait out its 30 s timeout on the pull subscription's open request)
            try:
                await self.nc.flush(timeout=2)
            except Exception:
                pass
            await self.nc.close()

    def _delivery(self, m: Any) -> Delivery | None:
        """The message as the worker sees it, or None (refused here and acknowledged: a
        message that is refused now would be refused every time)."""
        subject: str = m.subject
        if len(subject) > MAX_TOPIC:
            self.on_refuse("topic_too_long", f"subject of {len(subject)} bytes")
            self._queue(("ack", m))
            return None
        if len(m.data) > self.max_payload:
            self.on_refuse("oversize", f"{subject[:80]!r}: payload of {len(m.data)} bytes")
            self._queue(("ack", m))
            return None
        # NATS writes an MQTT `/` as `.` (and an MQTT `.` as `//`, which no device id or
        # category contains: the worker refuses such a topic)
        return Delivery(subject.replace(".", "/"), m.data, m)

    def _deliver_all(self, batch: list[Delivery]) -> None:
        for d in batch:
            if self.closing.is_set():
                return  # left unacknowledged: nak'd at stop, redelivered to another worker
            self.deliver(d)
