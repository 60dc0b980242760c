"""`edgectl collect`: the collector (docs/BACKEND.md). An MQTT source with a persistent session
feeds one worker (host_tools/backend/ingest.py) that stores readings in SQLite keyed on
(device, seq) and keeps the device registry, latest status and receipts in TinyDB.

`Collector` wires the three together; tests and the demo use it in-process (`keep_readings`
mirrors stored rows in memory for them).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from typing import IO

from edge import wire
from host_tools.backend import connect as conn_mod
from host_tools.backend import e2e
from host_tools.backend.connect import ConnectOptions
from host_tools.backend.docstore import DocStore
from host_tools.backend.ingest import Delivery, Worker, WorkerConfig, channel_meta, scaled
from host_tools.backend.mqtt_source import MqttSource
from host_tools.backend.sqlite_sink import SqliteSink
from host_tools.errors import ToolError
from host_tools import argtypes


def docs_path(db_path: str) -> str:
    """The TinyDB file that goes with a database: `collector.sqlite` -> `collector.docs.json`."""
    stem = db_path[: -len(".sqlite")] if db_path.endswith(".sqlite") else db_path
    return stem + ".docs.json"


def default_client_id(db_path: str) -> str:
    """Fixed across restarts, different per host and database file."""
    h = hashlib.sha256(f"{socket.gethostname()}:{os.path.abspath(db_path)}".encode())
    return f"edgectl-collect-{h.hexdigest()[:12]}"


class Collector:
    """Subscribe to `{prefix}/+/t/+` and friends, store, acknowledge; `stats()` reports."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        prefix: str = "edge",
        db_path: str | None = None,
        keep_readings: bool = True,
        share_group: str | None = None,
        e2e_ack: bool = False,
        opts: ConnectOptions | None = None,
        client_id: str | None = None,
        device_keys: dict[str, bytes] | None = None,
        on_revoke: str = "delete",
        synchronous: str = "FULL",
        source=None,
        log=None,
    ) -> None:
        self.opts = opts or ConnectOptions(host=host, port=port)
        self.prefix = prefix
        self.db_path = db_path
        self._lockfile: IO[str] | None = None
        if db_path and client_id is None and source is None:
            client_id = default_client_id(db_path)
        if db_path and client_id:
            self._take_lock(db_path, client_id)
        self.client_id = client_id
        self.sink = SqliteSink(db_path, synchronous)
        try:
            self.docs = DocStore(docs_path(db_path) if db_path else None)
        except ToolError:
            self.sink.close()
            raise
        self.source = source or MqttSource(
            self.opts,
            prefix,
            client_id=client_id if db_path else None,  # in memory: nothing to keep a session for
            share_group=share_group,
        )
        self.worker = Worker(
            self.source,
            self.sink,
            self.docs,
            WorkerConfig(
                prefix=prefix,
                device_keys=device_keys,
                e2e_ack=e2e_ack,
                on_revoke=on_revoke,
                keep_readings=keep_readings,
                log=log or (lambda msg: None),
                stats_name=client_id if db_path else None,
                stats_info={
                    "client_id": client_id,
                    "broker": self.opts.where,
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                },
            ),
        )
        if isinstance(self.source, MqttSource):
            self.source.on_error = self.worker.callback_error
            self.source.on_refuse = self.worker.note
        self.e2e_ack = e2e_ack
        self._stopped = False
        self._final_gaps: dict[str, int] | None = None

    def _take_lock(self, db_path: str, client_id: str) -> None:
        # two collectors with one client id would take each other's session in turns
        # (MQTT 3.1.1 section 3.1.4); each needs its own --client-id
        path = f"{db_path}.{client_id}.lock"
        f = open(path, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            raise ToolError(
                f"another collector with client id {client_id} is running on {db_path}; "
                f"give each collector its own --client-id"
            ) from e
        self._lockfile = f

    # --- what in-process readers use ----------------------------------------------------------
    @property
    def lock(self):
        return self.worker.lock

    @property
    def client(self):
        return self.source.client

    @property
    def counts(self) -> dict[str, int]:
        return self.worker.counts

    @property
    def readings(self) -> list[tuple]:
        return self.worker.readings

    @property
    def receipts(self) -> dict[str, dict]:
        return self.worker.receipts

    @property
    def receipt_log(self) -> list:
        return self.worker.receipt_log

    @property
    def status(self) -> dict[str, dict]:
        return self.worker.status

    @property
    def replies(self):
        return self.worker.replies

    @property
    def channels(self) -> dict[str, dict[int, dict]]:
        return self.worker.channels

    @property
    def boot_relative(self) -> dict[str, dict[int, int]]:
        return self.worker.boot_relative

    @property
    def errors(self) -> list[str]:
        with self.worker.lock:
            return list(self.worker.errors)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Collector:
        self.worker.start()
        try:
            self.source.start(self.worker.deliver)
        except ToolError:
            self.stop()
            raise
        return self

    def feed(self, topic: str, payload: bytes) -> None:
        """Process one message now, on the caller's thread (tests of the checks)."""
        self.worker.process([Delivery(topic, payload)])

    def stop(self) -> None:
        """Stop taking messages, finish what is queued (commit, acks), disconnect, close."""
        if self._stopped:
            return
        self._stopped = True
        pause = getattr(self.source, "pause", None)
        if pause is not None:
            pause()  # nothing new is queued; the broker keeps it for the next session
        self.worker.stop()
        self.source.stop()
        self.close()

    def close(self) -> None:
        if self._final_gaps is None:
            try:
                self._final_gaps = self.sink.gaps()  # stats() still answers after close
            except sqlite3.Error:
                self._final_gaps = {}
        try:
            self.sink.close()
        finally:
            self.docs.close()
            if self._lockfile is not None:
                self._lockfile.close()
                self._lockfile = None

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.worker.alive() and self.worker.failed is None

    # --- reporting ---------------------------------------------------------------------------
    def stats(self, gaps: bool = True) -> dict:
        w = self.worker
        out = w.snapshot()
        if gaps:
            if self._final_gaps is not None:
                out["gaps"] = dict(self._final_gaps)
            else:
                with w.db_lock:
                    out["gaps"] = self.sink.gaps()
        return out

    def wall_ms(self, device: str, boot: int, ts: int) -> int | None:
        """Unix ms of a boot-relative stamp, from the clock mapping in the device's retained
        status (FORMAT.md 4) when it is about that boot and synced; None otherwise."""
        with self.lock:
            clk = (self.status.get(device) or {}).get("clock") or {}
        if not clk.get("synced") or clk.get("boot") != boot:
            return None
        return wire.ticks_to_wall(ts, clk["sync_ticks"], clk["sync_wall_ms"])

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)


__all__ = ["AckingCollector", "Collector", "channel_meta", "docs_path", "scaled"]


class AckingCollector(Collector):
    """A Collector that sends end-to-end acknowledgements (docs/MQTT.md section 4)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("e2e_ack", True)
        super().__init__(*args, **kwargs)


# --- the command -------------------------------------------------------------------------------


def cmd_collect(args) -> int:
    opts = conn_mod.options_from_args(args)
    keys = e2e.load_device_keys(args.device_keys) if args.device_keys else None
    col = Collector(
        prefix=args.prefix,
        db_path=args.db or None,
        keep_readings=False,
        share_group=args.share,
        e2e_ack=args.e2e_ack,
        opts=opts,
        client_id=args.client_id,
        device_keys=keys,
        on_revoke=args.on_revoke,
        synchronous=args.sync.upper(),
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    stop = threading.Event()

    def on_term(signum, frame) -> None:
        stop.set()

    old = signal.signal(signal.SIGTERM, on_term)
    col.start()
    print(
        f"collect: {args.db or '(in memory)'} <- {args.prefix}/+/t/+ on {opts.where}"
        f" (client id {col.client_id or 'random, clean session'})",
        flush=True,
    )
    t0 = time.monotonic()
    failed = None
    try:
        while not stop.is_set() and (not args.seconds or time.monotonic() - t0 < args.seconds):
            stop.wait(1.0)
            if not col.alive():
                failed = col.worker.failed or "the worker thread died"
                break
            if not args.json:
                s = col.stats(gaps=False)
                print(
                    f"collect: {s['unique']} stored, {s['duplicates']} duplicates, "
                    f"{s['refused']} refused by consent, {s['rejected']} rejected batches, "
                    f"{sum(s['refused_by_reason'].values())} refusals",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        if failed is None:
            col.stop()
            failed = col.worker.failed
        else:
            col.source.stop()
            col.close()
    if failed:
        raise ToolError(f"collector: {failed}")
    s = col.stats(gaps=False)
    print(json.dumps(s) if args.json else f"collect: done, {s['unique']} readings stored")
    return 0


def _client_id(text: str) -> str:
    """`--client-id`: a persistent session's id, 1..256 characters, no spaces or controls
    (MQTT 3.1.1 section 3.1.3.1 allows more; brokers and logs handle these)."""
    if not 1 <= len(text) <= 256 or any(c.isspace() or ord(c) < 32 for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a client id (1-256 characters, no spaces or control characters)"
        )
    return text


def register(sub) -> None:
    p = sub.add_parser("collect", help="subscribe, check, store and acknowledge telemetry")
    p.add_argument("--prefix", type=argtypes.name, default="edge")
    p.add_argument(
        "--db",
        default="collector.sqlite",
        help="SQLite database (default collector.sqlite; its TinyDB documents go beside it "
        "as NAME.docs.json; '' keeps both in memory with a clean session)",
    )
    p.add_argument(
        "--client-id",
        type=_client_id,
        help="fixed MQTT client id of the persistent session (default: derived from the "
        "host name and the database path; a second collector needs its own)",
    )
    p.add_argument(
        "--no-e2e-ack",
        dest="e2e_ack",
        action="store_false",
        help="do not send end-to-end acks (by default each stored batch is acked to its device "
        "after the commit; devices in PUBACK mode ignore them)",
    )
    p.add_argument(
        "--device-keys",
        metavar="FILE",
        type=argtypes.input_file,
        help="JSON device id -> hex backend key (edgectl provision's backend/device_keys.json):"
        " acks are signed, receipts must be, devices not listed are refused",
    )
    p.add_argument(
        "--on-revoke",
        choices=["delete", "keep"],
        default="delete",
        help="what a revocation receipt does to stored readings of the category "
        "(keep: only count them in the consent ledger)",
    )
    p.add_argument(
        "--sync",
        choices=["full", "normal"],
        default="full",
        help="SQLite synchronous: full survives power loss, normal only a crash",
    )
    p.add_argument(
        "--seconds",
        type=argtypes.seconds_or_zero,
        default=0,
        help="stop after this long (0: Ctrl-C)",
    )
    p.add_argument(
        "--share",
        type=argtypes.name,
        default=None,
        help="shared-subscription group ($share/GROUP/...)",
    )
    p.add_argument("--json", action="store_true")
    conn_mod.add_arguments(p)
    p.set_defaults(func=cmd_collect)
