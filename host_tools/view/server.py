"""The dashboard's web app and server (`edgectl dashboard`, docs/DASHBOARD.md).

An aiohttp app with a fleet page and a device page; both are one static page of our own
(`static/`) that draws with plotly.js served from the installed `plotly` package (nothing is
loaded from another site). The page gets its data from one Server-Sent Events stream
(`/api/events`): a snapshot when it connects, then whatever changed whenever the collector
commits (SQLite's `data_version`) or rewrites its document file. The same data is at
`/api/fleet`, `/api/device/{id}` and `/api/device/{id}/readings` as JSON.

Safety: it only reads (a read-only SQLite connection); it listens on loopback unless told
otherwise; it answers only requests whose Host header names the address it listens on (a web
page elsewhere cannot reach it through DNS rebinding); device strings reach the page as JSON
and are shown as text, never as markup.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, Callable

from aiohttp import web

from host_tools.errors import ToolError
from host_tools.view.follow import SeqWindow, unseen
from host_tools.view.query import DEVICE_ID, WITHHELD, ViewStore, drops_total

TAIL_READINGS = 20_000  # readings a device page starts with (the newest)
STEP_READINGS = 20_000  # readings per update message at most
HEALTH_ROWS = 500  # status history rows a device page shows
POLL_S = 0.5  # how often the event stream checks for a change
HEARTBEAT_S = 15.0  # an SSE comment keeps proxies and dead-peer detection honest

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'"
)
_STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}


def plotly_js() -> bytes:
    """plotly.min.js from the installed plotly package."""
    try:
        return resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ToolError(f"the plotly package is not installed properly: {e}") from None


def _static(name: str) -> bytes:
    return resources.files("host_tools.view").joinpath("static", name).read_bytes()


# --- the data the page draws ---------------------------------------------------------------


def series(view: ViewStore, device: str, rows: list[tuple]) -> dict:
    """Readings grouped by channel, scaled and placed in wall-clock time, for plotly."""
    ch = view.channels(device)
    out: dict[str, dict[str, list]] = {}
    unplaced = 0
    for seq, ts, boot, _cat, channel, value, _rx in rows:
        x = ch.wall_ms(ts, boot)
        if x is None:
            unplaced += 1
            continue
        s = out.setdefault(str(channel), {"seq": [], "x": [], "y": []})
        s["seq"].append(seq)
        s["x"].append(x)
        s["y"].append(ch.value(channel, value))
    return {
        "channels": out,
        "last_seq": max(r[0] for r in rows) if rows else None,
        "unplaced": unplaced,
    }


def fleet_doc(view: ViewStore) -> dict:
    return {"devices": view.fleet(), "collectors": view.collectors(), "now_ms": _now_ms()}


def device_doc(view: ViewStore, device: str) -> dict | None:
    d = view.device(device)
    if d is None:
        return None
    ch = view.channels(device)
    known = set(ch.meta)
    tail = view.readings_tail(device, 1)
    # channels of the metadata plus any seen without metadata in the newest readings
    seen = {r[4] for r in view.readings_tail(device, 2000)} if tail else set()
    status = d["status"] if isinstance(d["status"], dict) else {}
    health = []
    for h in view.status_history(device, HEALTH_ROWS):
        s = h["status"]
        health.append(
            {
                "at_ms": h["received_ms"],
                "state": s.get("state"),
                "heap_free": s.get("heap_free"),
                "store_depth": s.get("store_depth"),
                "oldest_unsent_age_ms": s.get("oldest_unsent_age_ms"),
                "reconnects": s.get("reconnects"),
                "uptime_ms": s.get("uptime_ms"),
                "drops": drops_total(s),
                "reset_cause": s.get("reset_cause"),
            }
        )
    ledger = view.ledger(device)
    return {
        **{k: d[k] for k in ("device", "first_seen_ms", "last_seen_ms", "status_ms", "last_seq")},
        "state": status.get("state"),
        "status": status,
        "receipt": d["receipt"],
        "receipt_ms": d["receipt_ms"],
        "channels": [ch.describe(c) for c in sorted(known | seen)],
        "ledger": ledger,
        "erasures": sum(1 for e in ledger if e["action"] == "erased"),
        "lost": drops_total(status, skip=WITHHELD),
        "health": health,
        "collectors": view.collectors(),
        "now_ms": _now_ms(),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- the app -----------------------------------------------------------------------------------


class Dashboard:
    """The aiohttp application over one ViewStore. Every query runs on one worker thread (the
    store's connection is used by one thread at a time), never on the event loop."""

    def __init__(self, view: ViewStore, allowed_hosts: set[str] | None = None) -> None:
        self.view = view
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-db")
        self.allowed_hosts = allowed_hosts  # None: any Host header (tests in-process)
        self.plotly = plotly_js()
        self.index = _static("index.html")
        self.app = web.Application(middlewares=[self._guard])
        r = self.app.router
        r.add_get("/", self._page)
        r.add_get("/device/{device}", self._page)
        r.add_get("/favicon.ico", self._no_icon)
        r.add_get("/static/plotly.min.js", self._plotly)
        r.add_get("/static/{name}", self._file)
        r.add_get("/api/fleet", self._fleet)
        r.add_get("/api/device/{device}", self._device)
        r.add_get("/api/device/{device}/readings", self._readings)
        r.add_get("/api/events", self._events)
        self.app.on_shutdown.append(self._on_shutdown)
        self.streams: set[asyncio.Task] = set()  # the open event streams' handler tasks

    async def run(self, fn: Callable[..., Any], *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.allowed_hosts is not None and request.host not in self.allowed_hosts:
            return web.Response(status=421, text="unknown Host header\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="read-only\n")
        try:
            resp = await handler(request)
        except ToolError as e:
            return web.json_response({"error": str(e)}, status=503)
        resp.headers["Content-Security-Policy"] = _CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    async def _page(self, request: web.Request) -> web.Response:
        if "device" in request.match_info:
            self._device_id(request)
        return web.Response(body=self.index, content_type="text/html", charset="utf-8")

    async def _no_icon(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _plotly(self, request: web.Request) -> web.Response:
        resp = web.Response(body=self.plotly, content_type="application/javascript")
        resp.headers["Cache-Control"] = "max-age=3600"
        return resp

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_static(name), content_type=_STATIC[name])

    def _device_id(self, request: web.Request) -> str:
        dev = request.match_info.get("device") or request.query.get("device", "")
        if not DEVICE_ID.match(dev):
            raise web.HTTPNotFound(text="no such device id\n")
        return dev

    async def _fleet(self, request: web.Request) -> web.Response:
        return web.json_response(await self.run(fleet_doc, self.view))

    async def _device(self, request: web.Request) -> web.Response:
        doc = await self.run(device_doc, self.view, self._device_id(request))
        if doc is None:
            raise web.HTTPNotFound(text="no such device\n")
        return web.json_response(doc)

    async def _readings(self, request: web.Request) -> web.Response:
        dev = self._device_id(request)
        try:
            after = int(request.query.get("after", "-1"))
            limit = max(1, min(int(request.query.get("limit", str(TAIL_READINGS))), 100_000))
        except ValueError:
            raise web.HTTPBadRequest(text="after and limit are integers\n") from None

        def read() -> dict:
            if after < 0:
                rows = self.view.readings_tail(dev, limit)
            else:
                rows = self.view.readings_after(dev, after, limit)
            return {**series(self.view, dev, rows), "more": len(rows) == limit}

        return web.json_response(await self.run(read))

    # --- the live stream -----------------------------------------------------------------------
    async def _events(self, request: web.Request) -> web.StreamResponse:
        dev = self._device_id(request) if "device" in request.query else None
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        resp.headers["Content-Security-Policy"] = _CSP
        await resp.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self.streams.add(task)
        try:
            await self._stream(resp, dev)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        except ToolError as e:
            # the database went away or broke: say so; the page's EventSource retries
            try:
                await self._send(resp, "problem", {"error": str(e)})
            except ConnectionResetError:
                pass
        finally:
            self.streams.discard(task)
        return resp

    async def _send(self, resp: web.StreamResponse, event: str, data: Any) -> None:
        text = json.dumps(data, separators=(",", ":"))
        await resp.write(f"event: {event}\ndata: {text}\n\n".encode())

    async def _stream(self, resp: web.StreamResponse, dev: str | None) -> None:
        token = None
        window: SeqWindow | None = None  # the readings this page has been sent
        erasures = None
        beat = time.monotonic()
        while True:
            now = await self.run(self.view.change_token)
            if now != token:
                token = now
                await self._send(resp, "fleet", await self.run(fleet_doc, self.view))
                if dev is not None:
                    doc = await self.run(device_doc, self.view, dev)
                    if doc is not None:
                        await self._send(resp, "device", doc)
                        if doc["erasures"] != erasures:
                            # a revocation erased readings: the page starts its charts again
                            erasures = doc["erasures"]
                            window = None
                    window = await self._send_readings(resp, dev, window)
                beat = time.monotonic()
            elif time.monotonic() - beat > HEARTBEAT_S:
                await resp.write(b": alive\n\n")
                beat = time.monotonic()
            await asyncio.sleep(POLL_S)

    async def _send_readings(
        self, resp: web.StreamResponse, dev: str, window: SeqWindow | None
    ) -> SeqWindow:
        """The readings the page has not been sent; with no window yet, the newest
        TAIL_READINGS marked `reset` (the page drops what it drew)."""
        if window is None:
            window = SeqWindow()
            rows = await self.run(self.view.readings_tail, dev, TAIL_READINGS)
            window.start(rows)
            doc = await self.run(series, self.view, dev, rows)
            await self._send(resp, "readings", {**doc, "reset": True})
            return window
        read_after = functools.partial(self.view.readings_after, dev)
        while True:
            rows, more = await self.run(unseen, window, read_after, STEP_READINGS)
            if rows:
                doc = await self.run(series, self.view, dev, rows)
                await self._send(resp, "readings", {**doc, "reset": False})
            if not more:
                return window

    async def _on_shutdown(self, app: web.Application) -> None:
        # an event stream never ends by itself: end them so a stop does not wait for them
        for task in list(self.streams):
            task.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# --- serving -----------------------------------------------------------------------------------


def _host_headers(host: str, port: int) -> set[str]:
    """Host header values a browser sends for this listener (loopback names included)."""
    names = {host}
    if ipaddress.ip_address(host).is_loopback:
        names |= {"127.0.0.1", "localhost", "[::1]"}
    if ":" in host and not host.startswith("["):
        names.add(f"[{host}]")
    return {f"{n}:{port}" for n in names} | ({n for n in names} if port == 80 else set())


class Server:
    """The dashboard served on its own thread and event loop (for the demo and tests);
    `edgectl dashboard` runs the same app in the foreground."""

    def __init__(
        self, view: ViewStore, host: str = "127.0.0.1", port: int = 0, port_flag: str = "--port"
    ) -> None:
        self.view = view
        self.host = host
        self.port = port
        self.port_flag = port_flag  # the option that chose the port, for the messages
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="dashboard", daemon=True)
        self.runner: web.AppRunner | None = None
        self.dash: Dashboard | None = None

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/"

    async def start_async(self) -> None:
        self.dash = Dashboard(self.view)
        self.runner = web.AppRunner(
            self.dash.app, handle_signals=False, access_log=None, shutdown_timeout=2.0
        )
        await self.runner.setup()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        try:
            # SO_REUSEADDR: a port left in TIME_WAIT by the last run binds; one in use does not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError as e:
            sock.close()
            await self.runner.cleanup()
            raise ToolError(_bind_error(self.host, self.port, e, self.port_flag)) from None
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()
        self.dash.allowed_hosts = _host_headers(self.host, self.port)

    async def stop_async(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.dash is not None:
            self.dash.close()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.start_async())
        except BaseException as e:
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.stop_async())
            self.loop.close()

    def start(self) -> Server:
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def _bind_error(host: str, port: int, e: OSError, flag: str) -> str:
    if e.errno in (98, 48):  # EADDRINUSE (Linux, BSD)
        return f"port {port} on {host} is in use: choose another with {flag} (0 picks a free one)"
    if e.errno == 13:
        return f"port {port} on {host}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {host}:{port}: {e.strerror or e}"
