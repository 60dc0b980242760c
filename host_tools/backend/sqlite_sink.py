"""The collector's durable store: readings in SQLite keyed on (device, seq) (docs/BACKEND.md 3).

Every write of the worker happens inside one transaction per group of messages; the worker
commits before it acknowledges anything (end-to-end ack, then the broker's PUBACK), so a crash
at any point is absorbed by redelivery and `INSERT ... ON CONFLICT DO NOTHING`.

A sink is what the worker writes to (docs/BACKEND.md 2); a PostgreSQL sink implements the same
methods with the same key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Iterable, Iterator

from host_tools.errors import ToolError

SCHEMA_VERSION = 1
CONFLICTS_PER_DEVICE = 10_000  # seq_conflicts rows kept per device (the rest only counted)

# WITHOUT ROWID: the primary key is the table (no second b-tree for the rowid)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, boot INTEGER,
    category TEXT NOT NULL, channel INTEGER NOT NULL, value INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seq_conflicts (
    device TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL, boot INTEGER,
    category TEXT NOT NULL, channel INTEGER NOT NULL, value INTEGER NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS seq_conflicts_device ON seq_conflicts (device, seq);
CREATE TABLE IF NOT EXISTS status_history (
    device TEXT NOT NULL, received_ms INTEGER NOT NULL, doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS status_history_device ON status_history (device, received_ms);
CREATE TABLE IF NOT EXISTS consent_ledger (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, version INTEGER NOT NULL,
    event TEXT NOT NULL, category TEXT NOT NULL, seq INTEGER, readings INTEGER NOT NULL,
    action TEXT NOT NULL, at_ms INTEGER NOT NULL, detail TEXT,
    UNIQUE (device, version, event, category)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_INSERT = (
    "INSERT INTO readings (device, seq, ts, boot, category, channel, value, received_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

Row = tuple  # (device, seq, ts, boot, category, channel, value, received_ms)


def now_ms() -> int:
    return int(time.time() * 1000)


class SqliteSink:
    """One connection, owned by one worker thread (sqlite3 objects are not shared)."""

    def __init__(self, path: str | None, synchronous: str = "FULL") -> None:
        self.path = path or ":memory:"
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous is FULL or NORMAL")
        try:
            # isolation_level None: transactions are begun and committed explicitly
            self.db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the worker acknowledges (power loss included);
            # NORMAL survives a crash of the process but not of the machine
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self.db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise ToolError(f"{self.path}: collector schema {row[0]}, this tool reads 1")
            self._check_columns()
        except sqlite3.DatabaseError as e:
            raise ToolError(f"{self.path}: not a usable collector database: {e}") from e
        self.in_txn = False

    def _check_columns(self) -> None:
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(readings)")]
        want = ["device", "seq", "ts", "boot", "category", "channel", "value", "received_ms"]
        if cols != want:
            raise ToolError(f"{self.path}: table `readings` has columns {cols}, not {want}")

    # --- transactions ---------------------------------------------------------------------
    def begin(self) -> None:
        if not self.in_txn:
            # IMMEDIATE: take the write lock now, so a second collector on the same file
            # waits here (busy timeout) instead of failing at commit
            self.db.execute("BEGIN IMMEDIATE")
            self.in_txn = True

    def commit(self) -> None:
        if self.in_txn:
            self.db.execute("COMMIT")
            self.in_txn = False

    def rollback(self) -> None:
        if self.in_txn:
            self.in_txn = False
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def savepoint(self) -> None:
        """Mark the start of one message's writes inside the group's transaction."""
        self.begin()
        self.db.execute("SAVEPOINT message")

    def release(self) -> None:
        self.db.execute("RELEASE message")

    def rollback_to(self) -> None:
        """Undo what the current message wrote (it failed half-way); the group goes on."""
        self.db.execute("ROLLBACK TO message")
        self.db.execute("RELEASE message")

    def close(self) -> None:
        self.rollback()
        self.db.close()

    # --- writes (inside the worker's transaction) ---------------------------------------------
    def insert_readings(self, rows: list[Row]) -> tuple[list[Row], int, list[Row]]:
        """Insert one batch's rows (one device, rising seqs). Returns (inserted rows, number of
        duplicates, conflicting rows). A duplicate has the stored category, channel and value;
        a conflict has another one under the same key: it is kept in `seq_conflicts`."""
        self.begin()
        dev, lo, hi = rows[0][0], rows[0][1], rows[-1][1]
        # one range seek per batch (usually empty) says which keys are taken; the write lock
        # of BEGIN IMMEDIATE keeps another writer from taking one before the insert
        stored = {
            r[0]: r[1:]
            for r in self.db.execute(
                "SELECT seq, category, channel, value FROM readings "
                "WHERE device=? AND seq BETWEEN ? AND ?",
                (dev, lo, hi),
            )
        }
        if not stored:
            self.db.executemany(_INSERT, rows)
            return rows, 0, []
        fresh, conflicts, dups = [], [], 0
        for r in rows:
            s = stored.get(r[1])
            if s is None:
                fresh.append(r)
            elif s == (r[4], r[5], r[6]):
                dups += 1
            else:
                conflicts.append(r)
        if fresh:
            self.db.executemany(_INSERT, fresh)
        if conflicts:
            n = self.db.execute(
                "SELECT count(*) FROM seq_conflicts WHERE device=?", (dev,)
            ).fetchone()[0]
            room = max(0, CONFLICTS_PER_DEVICE - n)
            self.db.executemany(
                "INSERT INTO seq_conflicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", conflicts[:room]
            )
        return fresh, dups, conflicts

    def add_status(self, device: str, received_ms: int, doc_text: str) -> None:
        self.begin()
        self.db.execute(
            "INSERT INTO status_history VALUES (?, ?, ?)", (device, received_ms, doc_text)
        )

    def put_meta(self, key: str, value: str) -> None:
        """Set one key of the `meta` table (the collector's counters, docs/BACKEND.md 3)."""
        self.begin()
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def count_category(self, device: str, category: str) -> int:
        return self.db.execute(
            "SELECT count(*) FROM readings WHERE device=? AND category=?", (device, category)
        ).fetchone()[0]

    def erase_category(self, device: str, category: str) -> int:
        self.begin()
        cur = self.db.execute(
            "DELETE FROM readings WHERE device=? AND category=?", (device, category)
        )
        self.db.execute(
            "DELETE FROM seq_conflicts WHERE device=? AND category=?", (device, category)
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
        """Record one consent event; False when this (device, version, event, category) is
        already recorded (a redelivered receipt)."""
        self.begin()
        cur = self.db.execute(
            "INSERT INTO consent_ledger (device, version, event, category, seq, readings, "
            "action, at_ms, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device, version, event, category, seq, readings, action, now_ms(),
             json.dumps(detail, sort_keys=True) if detail else None),
        )  # fmt: skip
        return cur.rowcount == 1

    # --- reading (tools, stats) ------------------------------------------------------------------
    def gaps(self) -> dict[str, int]:
        """Per device: highest seq minus rows held (0 when every seq from 1 is stored)."""
        q = "SELECT device, max(seq) - count(*) FROM readings GROUP BY device"
        return {d: g for d, g in self.db.execute(q)}

    def rows(self, sql: str, args: Iterable = ()) -> list[tuple]:
        return self.db.execute(sql, tuple(args)).fetchall()

    def subject_tables(self, device: str) -> Iterator[tuple[str, Iterator[dict]]]:
        """Everything held about one device: (table name, rows as dicts), streamed from a
        cursor so a device with millions of readings is never held in RAM at once."""
        for name, sql in subject_queries("?"):
            cur = self.db.execute(sql, (device,))
            cols = [c[0] for c in cur.description]
            yield name, (dict(zip(cols, r, strict=True)) for r in cur)

    def erase_subject(self, device: str, keep_ledger: bool = True) -> dict[str, int]:
        """Delete every row about one device (the consent ledger unless keep_ledger is off)."""
        self.begin()
        out = {}
        for t in SUBJECT_TABLES:
            if t == "consent_ledger" and keep_ledger:
                continue
            out[t] = self.db.execute(f"DELETE FROM {t} WHERE device=?", (device,)).rowcount
        return out


SUBJECT_TABLES = ("readings", "seq_conflicts", "status_history", "consent_ledger")


def subject_queries(mark: str) -> tuple[tuple[str, str], ...]:
    """What a subject export reads, table by table (both sinks; `mark` is the driver's
    parameter placeholder): the same columns and order from SQLite and PostgreSQL."""
    return (
        ("readings", f"SELECT * FROM readings WHERE device={mark} ORDER BY seq"),
        ("seq_conflicts", f"SELECT * FROM seq_conflicts WHERE device={mark} ORDER BY seq"),
        (
            "status_history",
            "SELECT received_ms, doc FROM status_history "
            f"WHERE device={mark} ORDER BY received_ms",
        ),
        (
            "consent_ledger",
            "SELECT version, event, category, seq, readings, action, at_ms, detail "
            f"FROM consent_ledger WHERE device={mark} ORDER BY id",
        ),
    )


def db_file_size(path: str) -> int:
    """Bytes of the database with its WAL."""
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
