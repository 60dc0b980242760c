"""`edgectl export`: the collector's readings as CSV, JSON Lines or Parquet, with each reading's
device, seq, wall-clock time, channel name, unit, category and scaled value (docs/DASHBOARD.md 5).

Rows come from the database in key order (device, seq) a few thousand at a time, so an export
of any size runs in flat memory; names, units and decimals come from each device's retained
`meta` document (docs/FORMAT.md 6), wall-clock time from the status's clock mapping for
readings stamped before a clock sync (docs/FORMAT.md 4).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import stat
import sys
from typing import IO, Iterator

from host_tools import argtypes
from host_tools.errors import ToolError
from host_tools.view.query import Channels, ReadingSource, open_view

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = (
    "device", "seq", "time", "time_ms", "boot", "ts", "category", "channel", "name", "unit",
    "value", "raw",
)  # fmt: skip
PARQUET_BATCH = 50_000  # rows per Parquet row group


def iso_ms(ms: int | None) -> str:
    """Unix ms as ISO 8601 UTC with milliseconds ("2026-12-04T16:00:00.000Z"); "" for None."""
    if ms is None:
        return ""
    when = _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str, flag: str) -> int:
    """Unix ms from `--since`/`--until`: integer ms, or ISO 8601 (UTC when it names no zone)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"{flag} {text!r}: give ISO 8601 (2026-12-04T16:00:00Z, 2026-12-04) or Unix ms"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return int(when.timestamp() * 1000)


class Selection:
    """Which readings to take: devices, channels (name or number), categories, a time range."""

    def __init__(
        self,
        devices: list[str] | None = None,
        channels: list[str] | None = None,
        categories: list[str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
    ) -> None:
        self.devices = devices or []
        self.channels = channels or []
        self.categories = set(categories or [])
        self.since_ms = since_ms
        self.until_ms = until_ms
        if since_ms is not None and until_ms is not None and until_ms <= since_ms:
            raise ToolError("--until is not after --since: nothing to take")

    def channel_ids(self, ch: Channels, seen: set[int]) -> set[int] | None:
        """The channel numbers --channel names on one device (None: all of them)."""
        if not self.channels:
            return None
        known = set(ch.meta) | seen
        out = set()
        for want in self.channels:
            for c in known:
                if want == str(c) or want == ch.name(c):
                    out.add(c)
        return out

    def wants_time(self, wall: int | None) -> bool:
        if self.since_ms is None and self.until_ms is None:
            return True
        if wall is None:  # not placed in time: outside any range asked for
            return False
        if self.since_ms is not None and wall < self.since_ms:
            return False
        return self.until_ms is None or wall < self.until_ms


def named_readings(view: ReadingSource, sel: Selection) -> Iterator[dict]:
    """Every selected reading as a dict of COLUMNS, in (device, seq) order. A device or channel
    that matches nothing is an error here, before the first row."""
    missing = [d for d in sel.devices if view.device(d) is None]
    if missing:
        known = ", ".join(view.devices()[:20]) or "none"
        raise ToolError(f"--device {missing[0]}: no such device in {view.path} ({known})")
    plan = []
    for dev in sel.devices or view.devices():
        ch = view.channels(dev)
        seen = {r[4] for r in view.readings_tail(dev, 2000)} if sel.channels else set()
        ids = sel.channel_ids(ch, seen)
        if ids is None or ids:
            plan.append((dev, ch, ids))
    if sel.channels and not plan:
        raise ToolError(f"--channel {', '.join(sel.channels)}: no such channel on any device")
    return _rows(view, sel, plan)


def _rows(view: ReadingSource, sel: Selection, plan: list) -> Iterator[dict]:
    for dev, ch, ids in plan:
        for _d, seq, ts, boot, cat, channel, raw, _rx in view.iter_readings(dev):
            if ids is not None and channel not in ids:
                continue
            if sel.categories and cat not in sel.categories:
                continue
            wall = ch.wall_ms(ts, boot)
            if not sel.wants_time(wall):
                continue
            yield {
                "device": dev,
                "seq": seq,
                "time": iso_ms(wall),
                "time_ms": wall,
                "boot": boot,
                "ts": ts,
                "category": cat,
                "channel": channel,
                "name": ch.name(channel),
                "unit": ch.unit(channel),
                "value": ch.value(channel, raw),
                "raw": raw,
            }


def _csv_value(row: dict, ch_decimals: int) -> str:
    v = row["value"]
    return f"{v:.{ch_decimals}f}" if ch_decimals else str(v)


_TEXT_COLUMNS = [COLUMNS.index(c) for c in ("name", "unit")]  # category: an id (docs/BACKEND.md 5)
_VALUE_COLUMN = COLUMNS.index("value")


def _cell_text(s: str) -> str:
    """A device-supplied string as a CSV cell a spreadsheet shows as text: one that starts like
    a formula (= + - @, tab, CR) gets a leading apostrophe (OWASP "CSV injection")."""
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def write_csv(rows: Iterator[dict], out: IO[str], decimals) -> int:
    """CSV with a header (RFC 4180; values with their channel's decimals, no float noise)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    n = 0
    for r in rows:
        cells = ["" if r[c] is None else r[c] for c in COLUMNS]
        cells[_VALUE_COLUMN] = _csv_value(r, decimals(r))
        for i in _TEXT_COLUMNS:
            cells[i] = _cell_text(cells[i])
        w.writerow(cells)
        n += 1
    return n


def write_jsonl(rows: Iterator[dict], out: IO[str]) -> int:
    n = 0
    for r in rows:
        out.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        n += 1
    return n


def write_parquet(rows: Iterator[dict], path: str) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ToolError(
            "--format parquet needs the pyarrow package (pip install pyarrow)"
        ) from None
    schema = pa.schema(
        [
            ("device", pa.string()), ("seq", pa.int64()),
            ("time", pa.timestamp("ms", tz="UTC")), ("time_ms", pa.int64()),
            ("boot", pa.int64()), ("ts", pa.int64()), ("category", pa.string()),
            ("channel", pa.int32()), ("name", pa.string()), ("unit", pa.string()),
            ("value", pa.float64()), ("raw", pa.int64()),
        ]
    )  # fmt: skip
    n = 0
    with pq.ParquetWriter(path, schema) as w:
        batch: list[dict] = []
        for r in rows:
            batch.append({**r, "time": r["time_ms"], "value": float(r["value"])})
            if len(batch) >= PARQUET_BATCH:
                w.write_table(pa.Table.from_pylist(batch, schema=schema))
                n += len(batch)
                batch = []
        if batch or n == 0:
            w.write_table(pa.Table.from_pylist(batch, schema=schema))
            n += len(batch)
    return n


def export(view: ReadingSource, sel: Selection, fmt: str, out_path: str | None) -> int:
    """Write the selected readings; returns how many. out_path None or "-": stdout (not for
    parquet). A file is written beside its final name and renamed when complete."""
    if fmt not in FORMATS:
        raise ToolError(f"--format {fmt}: give one of {', '.join(FORMATS)}")
    rows = named_readings(view, sel)
    decimals_cache: dict[tuple[str, int], int] = {}

    def decimals(r: dict) -> int:
        key = (r["device"], r["channel"])
        if key not in decimals_cache:
            decimals_cache[key] = view.channels(r["device"]).decimals(r["channel"])
        return decimals_cache[key]

    if out_path is None or out_path == "-":
        if fmt == "parquet":
            raise ToolError("--format parquet writes a file: give --out FILE")
        return _write_text(rows, sys.stdout, fmt, decimals)
    check_out(out_path)
    with output_path(out_path) as path:
        if fmt == "parquet":
            return write_parquet(rows, path)
        with open(path, "w", encoding="utf-8", newline="") as f:
            return _write_text(rows, f, fmt, decimals)


def check_out(out_path: str) -> None:
    """Refuse an --out that cannot be written before any work is done."""
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise ToolError(f"--out {out_path}: no such directory {parent}")
    if os.path.isdir(out_path):
        raise ToolError(f"--out {out_path}: is a directory")


@contextlib.contextmanager
def output_path(out_path: str) -> Iterator[str]:
    """Where to write --out. A regular file (or a new name) is written beside it, under a
    temporary name, and renamed over it when the block ends without an error, so an interrupted
    run leaves no half file; through a symbolic link the file it points to is the one replaced.
    Anything else that exists (a device such as /dev/stdout, a FIFO) is written in place and
    never replaced."""
    real = os.path.realpath(out_path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ToolError(f"--out {out_path}: {e.strerror or e}") from None
    try:
        if st is not None and not stat.S_ISREG(st.st_mode):
            yield real
            return
        tmp = f"{real}.partial-{os.getpid()}"
        try:
            yield tmp
            os.replace(tmp, real)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)  # ours: an output that failed or was interrupted
    except OSError as e:
        raise ToolError(f"--out {out_path}: {e.strerror or e}") from None


def _write_text(rows: Iterator[dict], out: IO[str], fmt: str, decimals) -> int:
    if fmt == "csv":
        return write_csv(rows, out, decimals)
    return write_jsonl(rows, out)


def selection_from(args) -> Selection:
    return Selection(
        devices=args.device,
        channels=args.channel,
        categories=args.category,
        since_ms=parse_time(args.since, "--since") if args.since is not None else None,
        until_ms=parse_time(args.until, "--until") if args.until is not None else None,
    )


def open_source(args) -> ReadingSource:
    """The collector database of --db or --pg, or the replay output of --replay (with
    --config)."""
    for flag in ("db", "pg", "replay", "config"):
        if getattr(args, flag) == "":
            raise ToolError(
                f"--{flag} '': give a file name" if flag != "pg" else "--pg '': give a DSN"
            )
    if args.replay and (args.db or args.pg):
        raise ToolError(f"{'--db' if args.db else '--pg'} and --replay: give one source")
    if args.config and not args.replay:
        raise ToolError("--config goes with --replay (a database has the devices' own names)")
    if args.replay:
        from host_tools.view.replay_file import ReplayFileView

        return ReplayFileView(args.replay, args.config)
    return open_view(args.db, args.pg)


def add_selection_args(p) -> None:
    """The source and the selection (shared with `edgectl plot`)."""
    # regular files only: a FIFO or a device would block the read for ever (docs/CLI.md 1)
    p.add_argument(
        "--db",
        type=argtypes.input_file,
        help="the collector's database (default collector.sqlite)",
    )
    p.add_argument("--pg", metavar="DSN", help="the cluster tier's PostgreSQL instead of --db")
    p.add_argument(
        "--replay",
        type=argtypes.input_file,
        metavar="OUT.json",
        help="a replay's output (edgectl replay ... --collector-out OUT.json) instead of --db",
    )
    p.add_argument(
        "--config",
        type=argtypes.input_file,
        metavar="DEV.json",
        help="with --replay: the device config (channel names)",
    )
    p.add_argument("--device", action="append", metavar="ID", help="only this device (repeat)")
    p.add_argument(
        "--channel", action="append", metavar="NAME", help="only this channel, by name or number"
    )
    p.add_argument(
        "--category",
        action="append",
        type=argtypes.name,
        metavar="C",
        help="only this category",
    )
    p.add_argument("--since", metavar="T", help="from this time (ISO 8601 UTC or Unix ms)")
    p.add_argument("--until", metavar="T", help="before this time (ISO 8601 UTC or Unix ms)")


def cmd_export(args) -> int:
    sel = selection_from(args)
    view = open_source(args)
    try:
        n = export(view, sel, args.format, args.out)
    except BrokenPipeError:
        # the reader went away (`edgectl export | head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        view.close()
    if args.out not in (None, "-"):
        print(f"export: {n} readings to {args.out} ({args.format})", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="the collector's readings with device, seq, time, channel name, unit, category "
        "and value as CSV, JSON Lines or Parquet",
    )
    add_selection_args(p)
    p.add_argument(
        "--format", choices=FORMATS, default="csv", help="csv (default), jsonl, parquet"
    )
    p.add_argument("--out", metavar="FILE", help="write FILE instead of stdout (parquet: needed)")
    p.set_defaults(func=cmd_export)
