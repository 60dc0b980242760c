"""The cluster tier's sink: readings in PostgreSQL keyed on (device, seq) (docs/BACKEND.md 7).

A drop-in for `SqliteSink` under the same worker (host_tools/backend/ingest.py): the same
tables and key, `INSERT ... ON CONFLICT DO NOTHING`, one transaction per group of messages
and a savepoint per message. Any number of workers write to one database: the primary key
keeps each reading once whichever worker a redelivered message lands on.

The documents the embedded collector keeps in TinyDB (registry with the latest status,
channel metadata, the latest receipt per device) are tables here, written in the worker's
transaction (`PgDocs`). Consent is shared state between workers: the worker reads a device's
receipt from the database under a row lock (`receipt()`), so a revocation committed by one
worker and a batch of the revoked category on another are serialised: either the batch
commits first and the revocation's erasure deletes it, or the batch sees the revocation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from host_tools.backend.sqlite_sink import (
    CONFLICTS_PER_DEVICE,
    SUBJECT_TABLES,
    Row,
    subject_queries,
)
from host_tools.errors import ToolError

SCHEMA_VERSION = 1
_SCHEMA_LOCK = 0x65646765  # advisory lock: one worker creates the schema at a time

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device text NOT NULL, seq bigint NOT NULL, ts bigint NOT NULL, boot bigint,
    category text NOT NULL, channel integer NOT NULL, value bigint NOT NULL,
    received_ms bigint NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE TABLE IF NOT EXISTS seq_conflicts (
    device text NOT NULL, seq bigint NOT NULL, ts bigint NOT NULL, boot bigint,
    category text NOT NULL, channel integer NOT NULL, value bigint NOT NULL,
    received_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS seq_conflicts_device ON seq_conflicts (device, seq);
CREATE TABLE IF NOT EXISTS status_history (
    device text NOT NULL, received_ms bigint NOT NULL, doc text NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_device ON status_history (device, received_ms);
CREATE TABLE IF NOT EXISTS consent_ledger (
    id bigserial PRIMARY KEY, device text NOT NULL, version bigint NOT NULL,
    event text NOT NULL, category text NOT NULL, seq bigint, readings bigint NOT NULL,
    action text NOT NULL, at_ms bigint NOT NULL, detail text,
    UNIQUE (device, version, event, category)
);
CREATE TABLE IF NOT EXISTS devices (
    device text PRIMARY KEY, first_seen_ms bigint NOT NULL, last_seen_ms bigint NOT NULL,
    status jsonb, status_ms bigint, meta jsonb
);
CREATE TABLE IF NOT EXISTS receipts (
    device text PRIMARY KEY, receipt jsonb NOT NULL, received_ms bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL);
"""

# one statement per batch: what a batch shares (device, boot, category, arrival) as values,
# the columns as arrays (binary); the keys that were free come back
_INSERT = (
    "INSERT INTO readings (device, seq, ts, boot, category, channel, value, received_ms) "
    "SELECT %s::text, s, t, %s::bigint, %s::text, c, v, %s::bigint "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::integer[], %s::bigint[]) AS u(s, t, c, v) "
    "ON CONFLICT DO NOTHING RETURNING seq"
)
_INSERT_ROWS = (
    "INSERT INTO readings (device, seq, ts, boot, category, channel, value, received_ms) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], "
    "%s::integer[], %s::bigint[], %s::bigint[]) "
    "ON CONFLICT DO NOTHING RETURNING seq"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def _params(rows: list[Row]) -> tuple[str, list]:
    """The insert and its parameters: the short form when the rows share device, boot,
    category and arrival time (every batch the worker writes), else one array per column."""
    cols = [list(c) for c in zip(*rows, strict=True)]
    first = rows[0]
    if all(cols[i].count(first[i]) == len(rows) for i in (0, 3, 4, 7)):
        return _INSERT, [
            first[0],
            first[3],
            first[4],
            first[7],
            cols[1],
            cols[2],
            cols[5],
            cols[6],
        ]
    return _INSERT_ROWS, cols


class PgUnavailable(ToolError):
    """The server did not answer or dropped the connection (a worker tries again later); any
    other ToolError from PgSink is a database that will not become usable by waiting."""


class PgSink:
    """One connection, owned by one worker thread."""

    errors = (psycopg.Error,)  # what the worker treats as a database failure

    def __init__(self, dsn: str, connect_timeout: float = 10.0) -> None:
        self.dsn = dsn
        try:
            self.db = psycopg.connect(dsn, connect_timeout=int(max(1, connect_timeout)))
        except psycopg.Error as e:
            raise PgUnavailable(
                f"cannot connect to PostgreSQL {_safe(dsn)}: {_first_line(e)}"
            ) from e
        try:
            with self.db.transaction():
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self.db.execute(_SCHEMA)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self.db.execute(
                        "INSERT INTO meta VALUES ('schema', %s) ON CONFLICT DO NOTHING",
                        (str(SCHEMA_VERSION),),
                    )
                elif row[0] != str(SCHEMA_VERSION):
                    raise ToolError(f"{_safe(dsn)}: collector schema {row[0]}, this tool reads 1")
        except ToolError:
            self.db.close()
            raise
        except psycopg.OperationalError as e:  # the server went away meanwhile
            self.db.close()
            raise PgUnavailable(f"PostgreSQL {_safe(dsn)}: {_first_line(e)}") from e
        except psycopg.Error as e:
            self.db.close()
            raise ToolError(
                f"{_safe(dsn)}: not a usable collector database: {_first_line(e)}"
            ) from e
        self._receipts: dict[tuple[str, bool], Any] = {}  # read under a lock in this transaction
        self._release = False  # a RELEASE owed, sent with the next SAVEPOINT (one round trip)

    # --- transactions (psycopg begins one with the first statement) ---------------------------
    def commit(self) -> None:
        self._release = False  # COMMIT releases every savepoint
        self.db.commit()
        self._receipts.clear()

    def rollback(self) -> None:
        self._release = False
        self._receipts.clear()
        try:
            self.db.rollback()
        except psycopg.Error:
            pass

    def savepoint(self) -> None:
        if self._release:
            self._release = False
            self.db.execute("RELEASE SAVEPOINT message; SAVEPOINT message")
        else:
            self.db.execute("SAVEPOINT message")

    def release(self) -> None:
        self._release = True

    def rollback_to(self) -> None:
        # row locks taken since the savepoint are released with it
        self._receipts.clear()
        self.db.execute("ROLLBACK TO SAVEPOINT message")
        self.db.execute("RELEASE SAVEPOINT message")

    def close(self) -> None:
        self.rollback()
        self.db.close()

    def _one(self, sql: str, args: tuple) -> Any:
        row = self.db.execute(sql, args).fetchone()
        return row[0] if row else None

    # --- writes ---------------------------------------------------------------------------
    def insert_readings(self, rows: list[Row]) -> tuple[list[Row], int, list[Row]]:
        """Insert one batch's rows; (inserted rows, duplicates, conflicting rows) as
        SqliteSink. A key another worker holds in an open transaction makes this wait for it
        (the unique index), so the answer is the committed truth."""
        sql, params = _params(rows)
        got = {r[0] for r in self.db.execute(sql, params, binary=True)}
        if len(got) == len(rows):
            return rows, 0, []
        dev, lo, hi = rows[0][0], rows[0][1], rows[-1][1]
        stored = {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT seq, category, channel, value FROM readings "
                "WHERE device=%s AND seq BETWEEN %s AND %s",
                (dev, lo, hi),
            )
        }
        fresh, conflicts, dups = [], [], 0
        for r in rows:
            if r[1] in got:
                fresh.append(r)
            elif stored.get(r[1]) == (r[4], r[5], r[6]):
                dups += 1
            else:
                conflicts.append(r)
        if conflicts:
            n = self._one("SELECT count(*) FROM seq_conflicts WHERE device=%s", (dev,))
            room = max(0, CONFLICTS_PER_DEVICE - n)
            if room:
                with self.db.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO seq_conflicts VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        conflicts[:room],
                    )
        return fresh, dups, conflicts

    def add_status(self, device: str, received_ms: int, doc_text: str) -> None:
        self.db.execute(
            "INSERT INTO status_history VALUES (%s, %s, %s)", (device, received_ms, doc_text)
        )

    def put_meta(self, key: str, value: str) -> None:
        """Set one key of the `meta` table (a worker's counters, docs/BACKEND.md 3)."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, value),
        )

    def count_category(self, device: str, category: str) -> int:
        return self._one(
            "SELECT count(*) FROM readings WHERE device=%s AND category=%s", (device, category)
        )

    def erase_category(self, device: str, category: str) -> int:
        cur = self.db.execute(
            "DELETE FROM readings WHERE device=%s AND category=%s", (device, category)
        )
        self.db.execute(
            "DELETE FROM seq_conflicts WHERE device=%s AND category=%s", (device, category)
        )
        return cur.rowcount

    def ledger(
        self,
        device: str,
        version: int,
        event: str,
        category: str,
        seq: int | None,
        readings: int,
        action: str,
        detail: dict | None = None,
    ) -> bool:
        cur = self.db.execute(
            "INSERT INTO consent_ledger (device, version, event, category, seq, readings, "
            "action, at_ms, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (device, version, event, category, seq, readings, action, now_ms(),
             json.dumps(detail, sort_keys=True) if detail else None),
        )  # fmt: skip
        return cur.rowcount == 1

    # --- consent shared between workers ------------------------------------------------------
    def receipt(self, device: str, for_update: bool = False) -> dict | None:
        """The device's latest accepted receipt, read under a row lock held to the end of the
        transaction: FOR SHARE for a consent check, FOR UPDATE before a new receipt is taken."""
        key = (device, for_update)
        if key in self._receipts:
            return self._receipts[key]
        lock = "FOR UPDATE" if for_update else "FOR SHARE"
        row = self.db.execute(
            f"SELECT receipt FROM receipts WHERE device=%s {lock}", (device,)
        ).fetchone()
        doc = row[0] if row else None
        self._receipts[key] = doc
        return doc

    # --- reading -----------------------------------------------------------------------------
    def gaps(self) -> dict[str, int]:
        q = "SELECT device, max(seq) - count(*) FROM readings GROUP BY device"
        out = {d: g for d, g in self.db.execute(q)}
        self.db.rollback()
        return out

    def rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        out = self.db.execute(sql, args).fetchall()
        self.db.rollback()
        return out

    def subject_tables(self, device: str) -> Iterator[tuple[str, Iterator[dict]]]:
        """SqliteSink.subject_tables: the same tables, columns and order, streamed from a
        server-side cursor inside the caller's transaction (commit() ends it)."""
        for name, sql in subject_queries("%s"):
            cur = self.db.cursor(name=f"subject_{name}")
            cur.execute(sql, (device,))
            yield name, _dicts(cur)

    def erase_subject(self, device: str, keep_ledger: bool = True) -> dict[str, int]:
        """Delete every row about one device (the consent ledger unless keep_ledger is off)."""
        out = {}
        for t in SUBJECT_TABLES:
            if t == "consent_ledger" and keep_ledger:
                continue
            out[t] = self.db.execute(f"DELETE FROM {t} WHERE device=%s", (device,)).rowcount
        return out


class PgDocs:
    """The document side (`DocStore`'s methods) as tables in the sink's own connection, so a
    receipt or status is written in the same transaction as the rows it goes with."""

    def __init__(self, sink: PgSink) -> None:
        self.sink = sink

    @property
    def db(self) -> psycopg.Connection:
        return self.sink.db

    def _read(self, sql: str) -> dict[str, Any]:
        out = {r[0]: r[1] for r in self.db.execute(sql)}
        self.db.commit()
        return out

    def all_receipts(self) -> dict[str, dict]:
        return self._read("SELECT device, receipt FROM receipts")

    def all_status(self) -> dict[str, dict]:
        return self._read("SELECT device, status FROM devices WHERE status IS NOT NULL")

    def all_meta(self) -> dict[str, dict]:
        return self._read("SELECT device, meta FROM devices WHERE meta IS NOT NULL")

    def seen(self, device: str, at_ms: int, status: dict | None = None) -> None:
        self.db.execute(
            "INSERT INTO devices (device, first_seen_ms, last_seen_ms, status, status_ms) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (device) DO UPDATE SET "
            "last_seen_ms = EXCLUDED.last_seen_ms, "
            "status = COALESCE(EXCLUDED.status, devices.status), "
            "status_ms = COALESCE(EXCLUDED.status_ms, devices.status_ms)",
            (device, at_ms, at_ms, Jsonb(status) if status is not None else None,
             at_ms if status is not None else None),
        )  # fmt: skip

    def set_receipt(self, device: str, receipt: dict, at_ms: int) -> None:
        self.db.execute(
            "INSERT INTO receipts VALUES (%s, %s, %s) ON CONFLICT (device) DO UPDATE SET "
            "receipt = EXCLUDED.receipt, received_ms = EXCLUDED.received_ms",
            (device, Jsonb(receipt), at_ms),
        )

    def set_meta(self, device: str, meta: dict) -> None:
        now = now_ms()
        self.db.execute(
            "INSERT INTO devices (device, first_seen_ms, last_seen_ms, meta) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (device) DO UPDATE SET meta = EXCLUDED.meta",
            (device, now, now, Jsonb(meta)),
        )

    def device(self, device: str) -> dict:
        """DocStore.device: the registry row (first/last seen, latest status, channel
        metadata) and the latest receipt, read in the sink's transaction."""
        row = self.db.execute(
            "SELECT first_seen_ms, last_seen_ms, status, status_ms, meta FROM devices "
            "WHERE device=%s",
            (device,),
        ).fetchone()
        registry = None
        if row:
            keys = ("first_seen_ms", "last_seen_ms", "status", "status_ms", "meta")
            registry = {"device": device, **dict(zip(keys, row, strict=True))}
        rec = self.db.execute("SELECT receipt FROM receipts WHERE device=%s", (device,)).fetchone()
        return {"registry": registry, "receipt": rec[0] if rec else None}

    def forget(self, device: str) -> int:
        """DocStore.forget: delete the registry row and the receipt (in the transaction)."""
        n = self.db.execute("DELETE FROM devices WHERE device=%s", (device,)).rowcount
        return n + self.db.execute("DELETE FROM receipts WHERE device=%s", (device,)).rowcount

    def flush(self) -> None:
        pass  # written in the worker's transaction

    def close(self) -> None:
        pass


def _dicts(cur: psycopg.Cursor) -> Iterator[dict]:
    cols = None
    for r in cur:
        cols = cols or [c.name for c in cur.description or ()]
        yield dict(zip(cols, r, strict=True))
    cur.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _safe(dsn: str) -> str:
    """A DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return dsn
