"""The cluster tier's PostgreSQL database read like the embedded collector's SQLite file, so
`edgectl dashboard`, `export` and `plot` take `--pg DSN` (docs/DASHBOARD.md 2, docs/BACKEND.md 7).

The tables and keys are the same (host_tools/backend/pg_sink.py); the registry and the latest
receipts, which the embedded collector keeps in its document file, are the tables `devices` and
`receipts` here. The session is read-only (`default_transaction_read_only`), so this tool cannot
write even by mistake.
"""

from __future__ import annotations

from host_tools.errors import ToolError
from host_tools.view.query import SqlView


class PgView(SqlView):
    """One autocommit, read-only connection, used from one thread at a time."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.path = _without_password(dsn)
        self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        try:
            self.db = psycopg.connect(
                dsn,
                autocommit=True,
                connect_timeout=5,
                options="-c default_transaction_read_only=on",
            )
        except psycopg.Error as e:
            raise ToolError(f"--pg {self.path}: cannot connect: {_first_line(e)}") from None
        tables = {r[0] for r in self._q("SELECT tablename FROM pg_tables")}
        if not {"readings", "meta", "devices", "receipts"} <= tables:
            self.db.close()
            raise ToolError(f"--pg {self.path}: not a collector database (no readings table)")
        row = self._q("SELECT value FROM meta WHERE key = 'schema'")
        if not row or row[0][0] != "1":
            self.db.close()
            raise ToolError(
                f"--pg {self.path}: collector schema {row and row[0][0]}, this reads 1"
            )

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            if args:
                return self.db.execute(sql.replace("?", "%s"), args).fetchall()
            return self.db.execute(sql).fetchall()
        except self._errors as e:
            raise ToolError(f"--pg {self.path}: cannot read: {_first_line(e)}") from None

    def _table(self, name: str) -> dict[str, dict]:
        """The registry (`devices`) or the latest receipts (`receipts`) as documents by device,
        with the keys the document file uses."""
        cols: tuple[str, ...]
        if name == "devices":
            cols = ("device", "first_seen_ms", "last_seen_ms", "status", "status_ms", "meta")
        else:
            cols = ("device", "receipt", "received_ms")
        rows = self._q(f"SELECT {', '.join(cols)} FROM {name}")
        return {r[0]: dict(zip(cols, r, strict=True)) for r in rows}

    def change_token(self) -> tuple:
        """Moves whenever a write transaction anywhere in the server ends (the next transaction
        id), which is when the dashboard looks again."""
        return tuple(self._q("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")[0])

    def close(self) -> None:
        self.db.close()


def _without_password(dsn: str) -> str:
    """The DSN for messages, a password in it masked."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        u = urlsplit(dsn)
    except ValueError:
        return "(the DSN given)"
    if u.password:
        netloc = u.netloc.replace(f":{u.password}@", ":***@")
        return urlunsplit(u._replace(netloc=netloc))
    return dsn if "password" not in dsn else "(the DSN given)"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
