"""Reading the collector's data for people: the dashboard, plots and exports (docs/DASHBOARD.md).

A `ViewStore` answers the few questions those tools ask (the fleet, one device, its readings in
seq order, its status history and consent ledger, the collectors' counters) without ever
writing. `SqliteView` reads the SQLite database of `edgectl collect` (docs/BACKEND.md 3) over a
read-only connection and the TinyDB document file beside it; a PostgreSQL store implements the
same methods over the same tables.

Readings come out as they are stored (integers, ts in ms, boot-relative when `boot` is set);
`Channels` turns them into what the device meant: names, units and decimals from the device's
retained `meta` document, and wall-clock time from its status's clock mapping
(docs/FORMAT.md 4).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from typing import Iterator, Protocol

from edge import codec, wire
from host_tools.backend.collect import docs_path
from host_tools.backend.docstore import AtomicJSONStorage
from host_tools.backend.ingest import channel_meta
from host_tools.errors import ToolError

DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # docs/BACKEND.md 5: the collector's rule
_READING_COLS = "seq, ts, boot, category, channel, value, received_ms"


def decode_status(doc, previous: dict | None = None):
    """A stored status in the full document's key names (docs/HEALTH.md 1): compact snapshots
    and change messages are expanded by the shared codec where it knows them."""
    dec = getattr(codec, "decode_status", None)
    return dec(doc, previous) if dec is not None else doc


WITHHELD = ("consent", "purged")  # drop reasons that are consent working, not data lost


def drops_total(status: dict, only: tuple = (), skip: tuple = ()) -> int:
    """Sum of `drops` ({reason: {category: n}}, docs/HEALTH.md 1) in a status, of the reasons
    in `only` (all when empty) not in `skip`; malformed parts count 0."""
    total = 0
    drops = status.get("drops")
    for reason, per_cat in drops.items() if isinstance(drops, dict) else ():
        if (only and reason not in only) or reason in skip:
            continue
        if isinstance(per_cat, dict):
            total += sum(n for n in per_cat.values() if isinstance(n, int))
        elif isinstance(per_cat, int):
            total += per_cat
    return total


class Channels:
    """One device's channel metadata and clock mapping: scale values, name channels, place
    boot-relative stamps in wall-clock time."""

    def __init__(self, meta_doc: dict | None, status: dict | None) -> None:
        self.meta = channel_meta(meta_doc) if isinstance(meta_doc, dict) else {}
        clk = (status or {}).get("clock") if isinstance(status, dict) else None
        self.clock = clk if isinstance(clk, dict) and clk.get("synced") else None

    def name(self, channel: int) -> str:
        m = self.meta.get(channel) or {}
        name = m.get("name")
        return name if isinstance(name, str) and name else f"channel {channel}"

    def unit(self, channel: int) -> str:
        unit = (self.meta.get(channel) or {}).get("unit")
        return unit if isinstance(unit, str) else ""

    def decimals(self, channel: int) -> int:
        dec = (self.meta.get(channel) or {}).get("decimals")
        return dec if isinstance(dec, int) and 0 <= dec <= 9 else 0

    def value(self, channel: int, raw: int) -> float | int:
        dec = self.decimals(channel)
        return raw / 10**dec if dec else raw

    def wall_ms(self, ts: int, boot: int | None) -> int | None:
        """Unix ms of a stored stamp; None for a boot-relative one no known sync maps."""
        if boot is None:
            return ts
        clk = self.clock
        if clk is None or clk.get("boot") != boot:
            return None
        try:
            return int(wire.ticks_to_wall(ts, clk["sync_ticks"], clk["sync_wall_ms"]))
        except (KeyError, TypeError):
            return None

    def describe(self, channel: int) -> dict:
        m = self.meta.get(channel) or {}
        cat = m.get("category")
        return {
            "channel": channel,
            "name": self.name(channel),
            "unit": self.unit(channel),
            "decimals": self.decimals(channel),
            "category": cat if isinstance(cat, str) else None,
        }


class ReadingSource(Protocol):
    """What `edgectl export` and `edgectl plot` read: a collector database or a replay's output
    (host_tools/view/replay_file.py)."""

    path: str

    def devices(self) -> list[str]: ...
    def device(self, device: str) -> dict | None: ...
    def channels(self, device: str) -> Channels: ...
    def readings_tail(self, device: str, limit: int) -> list[tuple]: ...
    def iter_readings(self, device: str | None, batch: int = 5000) -> Iterator[tuple]: ...
    def close(self) -> None: ...


class ViewStore(Protocol):
    """What the dashboard, `edgectl plot` and `edgectl export` read (read-only)."""

    path: str

    def change_token(self) -> tuple: ...
    def devices(self) -> list[str]: ...
    def fleet(self) -> list[dict]: ...
    def collectors(self) -> list[dict]: ...
    def device(self, device: str) -> dict | None: ...
    def channels(self, device: str) -> Channels: ...
    def readings_after(self, device: str, after_seq: int, limit: int) -> list[tuple]: ...
    def readings_tail(self, device: str, limit: int) -> list[tuple]: ...
    def iter_readings(self, device: str | None, batch: int = 5000) -> Iterator[tuple]: ...
    def status_history(self, device: str, limit: int) -> list[dict]: ...
    def ledger(self, device: str) -> list[dict]: ...
    def close(self) -> None: ...


class SqlView:
    """The questions, over the collector's tables (docs/BACKEND.md 3): the same SQL for SQLite
    and PostgreSQL (`?` placeholders). A subclass gives `_q` (run a query), `_table` (the
    registry and receipt documents by device) and `change_token`."""

    path: str

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def _table(self, name: str) -> dict[str, dict]:
        raise NotImplementedError

    # --- questions ---------------------------------------------------------------------------
    def devices(self) -> list[str]:
        found = set(self._table("devices")) | set(self._table("receipts"))
        # one index seek per device: the primary key (device, seq) skips from one to the next
        row = self._q("SELECT min(device) FROM readings")[0]
        while row[0] is not None:
            found.add(row[0])
            row = self._q("SELECT min(device) FROM readings WHERE device > ?", (row[0],))[0]
        return sorted(found)

    def _latest_status(self, device: str, registry: dict | None) -> tuple[dict, int | None]:
        """The newest status: the document file's (merged by the collector) or, when the
        history has a newer row, that row decoded over it."""
        status = (registry or {}).get("status")
        status = decode_status(status) if isinstance(status, dict) else {}
        at = (registry or {}).get("status_ms")
        row = self._q(
            "SELECT received_ms, doc FROM status_history WHERE device=? "
            "ORDER BY received_ms DESC LIMIT 1",
            (device,),
        )
        if row and (not isinstance(at, int) or row[0][0] > at):
            doc = _json_object(row[0][1])
            if doc is not None:
                return decode_status(doc, status), row[0][0]
        return status, at if isinstance(at, int) else None

    def _last_reading(self, device: str) -> tuple | None:
        rows = self._q(
            "SELECT seq, received_ms FROM readings WHERE device=? ORDER BY seq DESC LIMIT 1",
            (device,),
        )
        return rows[0] if rows else None

    def fleet(self) -> list[dict]:
        reg = self._table("devices")
        receipts = self._table("receipts")
        out = []
        for dev in self.devices():
            r = reg.get(dev)
            status, status_ms = self._latest_status(dev, r)
            last = self._last_reading(dev)
            seen = [x for x in ((r or {}).get("last_seen_ms"), status_ms, last and last[1]) if x]
            receipt = (receipts.get(dev) or {}).get("receipt") or {}
            out.append(
                {
                    "device": dev,
                    "state": status.get("state") if isinstance(status.get("state"), str) else None,
                    "last_seen_ms": max(seen) if seen else None,
                    "store_depth": _int(status.get("store_depth")),
                    "drops": drops_total(status),
                    # lost: a full store, a quota, an unknown channel; withheld: consent
                    "lost": drops_total(status, skip=WITHHELD),
                    "withheld": drops_total(status, only=WITHHELD),
                    "last_seq": last[0] if last else None,
                    "consent_version": _int(receipt.get("version")),
                    "uptime_ms": _int(status.get("uptime_ms")),
                }
            )
        return out

    def collectors(self) -> list[dict]:
        out = []
        for key, value in self._q("SELECT key, value FROM meta WHERE key LIKE 'collector:%'"):
            doc = _json_object(value)
            if doc is not None:
                doc.setdefault("client_id", key[len("collector:") :])
                out.append(doc)
        return sorted(out, key=lambda d: str(d.get("client_id")))

    def device(self, device: str) -> dict | None:
        reg = self._table("devices").get(device)
        receipt = self._table("receipts").get(device)
        last = self._last_reading(device)
        if reg is None and receipt is None and last is None:
            return None
        status, status_ms = self._latest_status(device, reg)
        return {
            "device": device,
            "first_seen_ms": (reg or {}).get("first_seen_ms"),
            "last_seen_ms": max(
                [x for x in ((reg or {}).get("last_seen_ms"), status_ms, last and last[1]) if x],
                default=None,
            ),
            "status": status,
            "status_ms": status_ms,
            "receipt": (receipt or {}).get("receipt"),
            "receipt_ms": (receipt or {}).get("received_ms"),
            "meta": (reg or {}).get("meta"),
            "last_seq": last[0] if last else None,
        }

    def channels(self, device: str) -> Channels:
        reg = self._table("devices").get(device)
        status, _ = self._latest_status(device, reg)
        return Channels((reg or {}).get("meta"), status)

    def readings_after(self, device: str, after_seq: int, limit: int) -> list[tuple]:
        """Rows (seq, ts, boot, category, channel, value, received_ms) with seq > after_seq,
        in seq order, at most limit (a range seek on the primary key)."""
        return self._q(
            f"SELECT {_READING_COLS} FROM readings WHERE device=? AND seq>? ORDER BY seq LIMIT ?",
            (device, after_seq, limit),
        )

    def readings_tail(self, device: str, limit: int) -> list[tuple]:
        """The newest `limit` rows of a device, in seq order."""
        rows = self._q(
            f"SELECT {_READING_COLS} FROM readings WHERE device=? ORDER BY seq DESC LIMIT ?",
            (device, limit),
        )
        rows.reverse()
        return rows

    def iter_readings(self, device: str | None, batch: int = 5000) -> Iterator[tuple]:
        """Every row as (device, seq, ts, boot, category, channel, value, received_ms), in key
        order, fetched `batch` rows at a time by keyset pagination: memory stays flat however
        large the database, and no read transaction is held open between batches."""
        dev, seq = (device, 0) if device else ("", -1)
        while True:
            if device:
                sql = "WHERE device=? AND seq>?"
                args: tuple = (device, seq)
            else:
                sql = "WHERE device>? OR (device=? AND seq>?)"
                args = (dev, dev, seq)
            rows = self._q(
                f"SELECT device, {_READING_COLS} FROM readings {sql} "
                f"ORDER BY device, seq LIMIT {int(batch)}",
                args,
            )
            if not rows:
                return
            yield from rows
            dev, seq = rows[-1][0], rows[-1][1]

    def status_history(self, device: str, limit: int) -> list[dict]:
        """The newest `limit` status rows, oldest first, each decoded over the one before it
        (a change message carries only what moved, docs/HEALTH.md 1)."""
        rows = self._q(
            "SELECT received_ms, doc FROM status_history WHERE device=? "
            "ORDER BY received_ms DESC LIMIT ?",
            (device, limit),
        )
        out: list[dict] = []
        prev: dict | None = None
        for at, text in reversed(rows):
            doc = _json_object(text)
            if doc is None:
                continue
            prev = decode_status(doc, prev)
            out.append({"received_ms": at, "status": prev})
        return out

    def ledger(self, device: str) -> list[dict]:
        rows = self._q(
            "SELECT version, event, category, seq, readings, action, at_ms, detail "
            "FROM consent_ledger WHERE device=? ORDER BY id",
            (device,),
        )
        cols = ("version", "event", "category", "seq", "readings", "action", "at_ms", "detail")
        out = []
        for r in rows:
            d = dict(zip(cols, r, strict=True))
            d["detail"] = _json_object(d["detail"]) if d["detail"] else None
            out.append(d)
        return out


class SqliteView(SqlView):
    """The collector's SQLite database and document file, read-only. One connection, used
    from one thread at a time (the dashboard serialises its queries)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            raise ToolError(f"{path}: no such collector database (edgectl collect --db {path})")
        if os.path.isdir(path):
            raise ToolError(f"{path}: is a directory, not a collector database")
        try:
            # mode=ro: this tool never writes, even by accident; a collector may write meanwhile
            self.db = sqlite3.connect(
                f"file:{_uri_path(path)}?mode=ro", uri=True, check_same_thread=False, timeout=10
            )
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
            if "readings" not in tables or "meta" not in tables:
                raise ToolError(f"{path}: not a collector database (no readings table)")
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or row[0] != "1":
                raise ToolError(f"{path}: collector schema {row and row[0]}, this tool reads 1")
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{path}: not a usable collector database: {e}") from None
        self.docs_file = docs_path(path)
        self._docs: dict = {}
        self._docs_stamp: tuple | None = None
        self._load_docs()

    # --- the document file (registry, latest status and receipt, channel metadata) -----------
    def _docs_mtime(self) -> tuple | None:
        try:
            st = os.stat(self.docs_file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load_docs(self) -> None:
        stamp = self._docs_mtime()
        if stamp == self._docs_stamp:
            return
        data = AtomicJSONStorage(self.docs_file).read() if stamp else None
        self._docs = data or {}
        self._docs_stamp = stamp

    def _table(self, name: str) -> dict[str, dict]:
        """device -> document of one TinyDB table (the collector writes one per device)."""
        self._load_docs()
        out = {}
        for doc in (self._docs.get(name) or {}).values():
            if isinstance(doc, dict) and isinstance(doc.get("device"), str):
                out[doc["device"]] = doc
        return out

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{self.path}: cannot read: {e}") from None

    def change_token(self) -> tuple:
        """Changes whenever another connection commits to the database or the document file is
        replaced (PRAGMA data_version, file stamp): the dashboard's cue to send updates."""
        return (self._q("PRAGMA data_version")[0][0], self._docs_mtime())

    def close(self) -> None:
        self.db.close()


def _uri_path(path: str) -> str:
    """A file name as a SQLite URI path (?, # and % would end or escape it)."""
    from urllib.parse import quote

    return quote(os.path.abspath(path))


def _json_object(text) -> dict | None:
    try:
        doc = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _int(x) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def open_view(db: str | None = None, pg: str | None = None) -> ViewStore:
    """The store of `--db FILE` (the embedded collector's SQLite, the default
    collector.sqlite) or `--pg DSN` (the cluster tier's PostgreSQL)."""
    if db and pg:
        raise ToolError("--db and --pg: give one database")
    if pg:
        from host_tools.view.pg_view import PgView

        return PgView(pg)
    return SqliteView(db or "collector.sqlite")
