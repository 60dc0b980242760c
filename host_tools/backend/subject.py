"""`edgectl subject export|erase DEVICE`: what the backend holds about one device, for a data
subject's access request and erasure request (docs/BACKEND.md 4).

Both read the collector's SQLite database and its TinyDB documents (`--db`), or the cluster
tier's PostgreSQL (`--pg DSN`, docs/BACKEND.md 7), print a receipt (JSON) and record it in the
consent ledger. Erasure deletes the readings, conflicting readings, status
history, registry entry and receipt; the consent ledger is kept (it is the record that consent
was given, withdrawn and the data erased) unless `--with-ledger`, and the erasure itself is
always recorded.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import time
from typing import Any

from host_tools.backend.collect import docs_path
from host_tools.backend.docstore import DocStore
from host_tools.backend.sqlite_sink import SqliteSink, now_ms
from host_tools.errors import ToolError
from host_tools import argtypes

_TABLES = ("readings", "seq_conflicts", "status_history", "consent_ledger")


def _open(db: str, pg: str | None = None) -> tuple[Any, Any]:
    """The sink and the document side: SQLite + TinyDB, or PostgreSQL (both in one database
    and one transaction there; workers may run, the rows' locks order them)."""
    if pg is not None:
        from host_tools.backend.pg_sink import PgDocs, PgSink

        pgsink = PgSink(pg, connect_timeout=5)
        return pgsink, PgDocs(pgsink)
    if not os.path.exists(db):
        raise ToolError(f"{db}: no such collector database")
    _no_collector_running(db)
    sink = SqliteSink(db)
    try:
        docs = DocStore(docs_path(db))
    except ToolError:
        sink.close()
        raise
    return sink, docs


def _no_collector_running(db: str) -> None:
    """A running collector owns the document file (it rewrites it from RAM): refuse."""
    for path in glob.glob(glob.escape(db) + ".*.lock"):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                cid = path[len(db) + 1 : -len(".lock")]
                raise ToolError(
                    f"a collector (client id {cid}) is running on {db}: stop it first"
                ) from None
            fcntl.flock(f, fcntl.LOCK_UN)


def export(db: str, device: str, out: str, pg: str | None = None) -> dict:
    """Write everything held about `device` to `out`: one JSON object, written as it is read
    (temporary file, then rename); returns the receipt."""
    sink, docs = _open(db, pg)
    try:
        at = now_ms()
        head = {"device": device, "exported_ms": at, **docs.device(device)}
        digest = hashlib.sha256()
        counts: dict[str, int] = {}
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:

            def put(text: str) -> None:
                b = text.encode()
                digest.update(b)
                f.write(b)

            put(json.dumps(head, sort_keys=True)[:-1])
            for table, rows in sink.subject_tables(device):
                put(f',\n "{table}": [')
                n = 0
                for row in rows:
                    put(("\n  " if n == 0 else ",\n  ") + json.dumps(row, sort_keys=True))
                    n += 1
                put("\n ]" if n else "]")
                counts[table] = n
            put("\n}\n")
        os.replace(tmp, out)
        receipt = {
            "subject": device,
            "action": "export",
            "at_ms": at,
            "file": os.path.abspath(out),
            "sha256": digest.hexdigest(),
            "counts": counts,
            "registry": head["registry"] is not None,
        }
        sink.ledger(device, at, "export", "*", None, 0, "exported", receipt)
        sink.commit()
        return receipt
    finally:
        sink.close()
        docs.close()


def erase(db: str, device: str, with_ledger: bool = False, pg: str | None = None) -> dict:
    """Delete what is held about `device`; returns the receipt (also kept in the ledger)."""
    sink, docs = _open(db, pg)
    try:
        counts = sink.erase_subject(device, keep_ledger=not with_ledger)
        counts["documents"] = docs.forget(device)
        at = now_ms()
        receipt = {"subject": device, "action": "erase", "at_ms": at, "counts": counts}
        total = sum(v for k, v in counts.items() if k != "consent_ledger")
        sink.ledger(device, at, "erase", "*", None, total, "erased", receipt)
        sink.commit()  # the rows and the record of their erasure in one transaction
        docs.flush()
        return receipt
    finally:
        sink.close()
        docs.close()


def cmd_subject(args: argparse.Namespace) -> int:
    if args.pg is not None and args.db is not None:
        raise ToolError("--db and --pg: give one database")
    if args.pg == "":
        raise ToolError("--pg '': give a DSN")
    db = args.db or "collector.sqlite"
    if args.action == "export":
        out = args.out or f"{args.device}-export-{time.strftime('%Y%m%dT%H%M%S')}.json"
        receipt = export(db, args.device, out, args.pg)
    else:
        receipt = erase(db, args.device, args.with_ledger, args.pg)
    print(json.dumps(receipt, sort_keys=True))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subject", help="export or erase what the backend holds about a device")
    p.add_argument("action", choices=["export", "erase"])
    p.add_argument("device", type=argtypes.device_id, help="device id")
    p.add_argument("--db", help="the collector's database (default collector.sqlite)")
    p.add_argument("--pg", metavar="DSN", help="the cluster tier's PostgreSQL instead of --db")
    p.add_argument(
        "--out",
        type=argtypes.output_file,
        help="export: JSON file to write (default DEVICE-export-TIME.json)",
    )
    p.add_argument(
        "--with-ledger",
        action="store_true",
        help="erase: delete the consent ledger rows too (the erasure itself stays recorded)",
    )
    p.set_defaults(func=cmd_subject)
