"""`edgectl demo`: broker + collector + one agent under unix MicroPython, with a consent grant
and a revocation mid-run, a live table per category and a summary. The collector writes to a
database file, so `edgectl dashboard` shows the run afterwards; `--dashboard` serves the page
while the demo runs and after it (docs/DASHBOARD.md)."""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from host_tools.agent.run import AgentProcess, agent_config
from host_tools.backend import broker as broker_mod
from host_tools.backend.collect import Collector
from host_tools.backend.consent import format_receipt
from host_tools.errors import ToolError
from host_tools import argtypes

DEVICE = "fridge-0001"
DB_NAME = "demo.sqlite"
# the simulated fridge's channels (edge/example.py) with units, so the collector and the
# dashboard show what the integers mean (docs/MQTT.md 2, channel metadata)
CHANNELS = [
    {"id": 1, "name": "cabinet_temp", "category": "essential", "unit": "°C", "decimals": 2},
    {"id": 2, "name": "freezer_temp", "category": "essential", "unit": "°C", "decimals": 2},
    {"id": 3, "name": "compressor_power", "category": "diagnostics", "unit": "W", "decimals": 2},
    {"id": 4, "name": "defrost_cycles", "category": "diagnostics"},
    {"id": 5, "name": "door_opens", "category": "usage"},
    {"id": 6, "name": "ice_maker_uses", "category": "usage"},
]


def default_db() -> str:
    """The demo's own database: one per user, replaced by every run."""
    return os.path.join(tempfile.gettempdir(), f"edge-demo-{os.getuid()}", DB_NAME)


def prepare_db(path: str | None) -> str:
    """The database file for this run. The default one lives in the demo's own directory and
    the files of the previous run are removed; a --db the user names must not exist yet (a new
    agent starts again at seq 1, which an old database would hold as conflicts)."""
    if path is None:
        path = default_db()
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        stem = path[: -len(".sqlite")]
        for old in glob.glob(glob.escape(path) + "*") + glob.glob(
            glob.escape(stem) + ".docs.json"
        ):
            os.remove(old)
        return path
    if os.path.exists(path):
        raise ToolError(f"--db {path} exists: the demo writes a new database (name another)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ToolError(f"--db {path}: no such directory {parent}")
    return path


def _consent(col: Collector, version: int, grant: list[str], deny: list[str]) -> None:
    doc = {"version": version, "grant": grant, "deny": deny}
    # retained, so a device that was offline gets the latest (docs/CONSENT.md)
    col.client.publish(f"edge/{DEVICE}/cmd/consent", json.dumps(doc), qos=1, retain=True)


def _table(agent: AgentProcess, col: Collector, events: list[str], elapsed: float) -> Table:
    s = agent.stats or {}
    cs = col.stats()
    t = Table(title=f"edge demo  t={elapsed:4.1f}s  device {DEVICE}", expand=False)
    t.add_column("category")
    t.add_column("forwarded+acked", justify="right")
    t.add_column("received (unique)", justify="right")
    t.add_column("receipt says", justify="left")
    t.add_column("purged", justify="right")
    acked = s.get("acked_by_category", {})
    receipt = col.receipts.get(DEVICE) or {}
    grants = receipt.get("grants") or {}
    totals = receipt.get("purged_total") or {}
    for cat in ("essential", "diagnostics", "usage", "location", "marketing"):
        said = "-" if cat not in grants else ("granted" if grants[cat] else "denied")
        t.add_row(
            cat,
            str(acked.get(cat, 0)),
            str(cs["by_category"].get(cat, 0)),
            said,
            str(totals.get(cat, 0)),
        )
    t.caption = (
        f"sampled {s.get('sampled', 0)}  dropped by consent {s.get('dropped_by_consent', 0)}  "
        f"duplicates {cs['duplicates']}  refused by collector {cs['refused']}  "
        f"consent v{s.get('consent_version', 0)}, receipt v{receipt.get('version', '-')}\n"
        + "\n".join(events[-4:])
    )
    return t


def run_demo(
    seconds: int = 12,
    rate: int = 400,
    live: bool = True,
    out=sys.stdout,
    db_path: str | None = None,
    on_db=None,
) -> dict:
    """Run the demo; returns the summary dict. db_path: the collector's database (None: in
    memory); on_db(path) is called once the collector has created it (the dashboard starts
    there)."""
    console = Console(file=out if live else sys.stderr, force_terminal=None)
    t_start = time.monotonic()
    events: list[str] = []
    with broker_mod.start() as b:
        events.append(f"broker: {b.kind} on {b.host}:{b.port}")
        col = Collector(b.host, b.port, db_path=db_path).start()
        if db_path and on_db is not None:
            try:
                note = on_db(db_path)
            except BaseException:
                col.stop()
                raise
            if note:
                events.append(note)
        # clear a retained consent document left from another run on this broker
        col.client.publish(f"edge/{DEVICE}/cmd/consent", b"", qos=1, retain=True)
        cfg = agent_config(
            "unix-sim",
            device_id=DEVICE,
            mqtt={"host": b.host, "port": b.port},
            sim={"enabled": True, "rate_hz": rate, "seconds": seconds},  # the simulated fridge
            channels=CHANNELS,
        )
        agent = AgentProcess(cfg).start()
        grant_at, revoke_at = seconds * 0.2, seconds * 0.6
        step = 0
        try:
            with Live(
                _table(agent, col, events, 0),
                console=console,
                refresh_per_second=4,
                transient=not live,
            ) as view:
                proc = agent.proc
                assert proc is not None  # start() ran
                while proc.poll() is None:
                    el = time.monotonic() - t_start
                    if step == 0 and el >= grant_at:
                        _consent(col, 1, ["diagnostics", "usage"], [])
                        events.append(f"t={el:.1f}s grant diagnostics, usage (consent v1)")
                        step = 1
                    elif step == 1 and el >= revoke_at:
                        _consent(col, 2, [], ["usage"])
                        events.append(f"t={el:.1f}s revoke usage (consent v2)")
                        step = 2
                    if (
                        step == 2
                        and DEVICE in col.receipts
                        and col.receipts[DEVICE].get("version") == 2
                    ):
                        r = col.receipts[DEVICE]
                        usage = "granted" if r["grants"]["usage"] else "denied"
                        events.append(
                            f"receipt v2 (retained): usage {usage}, purged "
                            f"{r['purged']} unsent, enforced from seq {r.get('seq')}"
                        )
                        step = 3
                    view.update(_table(agent, col, events, el))
                    time.sleep(0.25)
                agent.wait(5)
                final = agent.final or {}
                dropped = final.get("dropped", {})
                purged = sum(v for k, v in dropped.items() if k.startswith("purged:"))
                evicted = sum(v for k, v in dropped.items() if not k.startswith("purged:"))
                stored = final.get("appended", 0) - purged - evicted
                col.wait_for(lambda c: c.stats()["unique"] >= stored, 10)
                view.update(_table(agent, col, events, time.monotonic() - t_start))
        finally:
            agent.cleanup()
            col.stop()
        cs = col.stats()
    summary = {
        "sampled": final.get("sampled", 0),
        "stored": stored,
        "forwarded": final.get("forwarded", 0),
        "received_unique": cs["unique"],
        "duplicates": cs["duplicates"],
        "dropped_by_consent": final.get("dropped_by_consent", 0),
        "purged": purged,
        "evicted": evicted,
        "lost": stored - cs["unique"],
        "rejected_batches": cs["rejected"],
        "refused_by_collector": cs["refused"],
        "consent_version": final.get("consent_version", 0),
        "receipt": col.receipts.get(DEVICE),
        "broker": b.kind,
        "seconds": round(time.monotonic() - t_start, 2),
        "db": db_path,
    }
    return summary


def cmd_demo(args) -> int:
    if args.seconds < 3:
        raise ToolError("--seconds must be at least 3 (the consent changes need time to show)")
    if args.rate < 1:
        raise ToolError(f"--rate {args.rate}: give readings per second, at least 1")
    server = None
    if args.dashboard is not None:
        from host_tools.view.server import Server
        from host_tools.view.query import open_view

        if not 0 <= args.dashboard <= 65535:
            raise ToolError(f"--dashboard {args.dashboard}: give a port 0-65535 (0: any)")
    db = prepare_db(args.db)

    def start_dashboard(path: str) -> str | None:
        nonlocal server
        if args.dashboard is None:
            return None
        view = open_view(path)
        try:
            server = Server(view, "127.0.0.1", args.dashboard, "--dashboard").start()
        except BaseException:
            view.close()
            raise
        print(f"dashboard: {server.url}", file=sys.stderr, flush=True)
        return f"dashboard: {server.url}"

    try:
        summary = run_demo(args.seconds, args.rate, live=not args.json, db_path=db,
                           on_db=start_dashboard)  # fmt: skip
        _report(summary, args.json)
        if server is not None:
            print(
                f"dashboard: {server.url}device/{DEVICE} (still serving; Ctrl-C stops)", flush=True
            )
            _wait_for_interrupt()
        else:
            # the summary stays the last line of stdout with --json
            prog = sys.argv[0] if os.path.basename(sys.argv[0]) == "edgectl" else "edgectl"
            print(f"dashboard: {prog} dashboard --db {db}  (or: {prog} demo --dashboard)",
                  flush=True,
                  file=sys.stderr if args.json else sys.stdout)  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return 0 if summary["lost"] == 0 else 1


def _wait_for_interrupt() -> None:
    """Until Ctrl-C or SIGTERM."""
    import signal

    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


def _report(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
    else:
        print()
        print(
            f"summary: sampled {summary['sampled']}, stored {summary['stored']}, "
            f"forwarded {summary['forwarded']}, received unique {summary['received_unique']}, "
            f"duplicates {summary['duplicates']}, dropped by consent "
            f"{summary['dropped_by_consent']}, purged {summary['purged']}, lost {summary['lost']}, "
            f"{summary['seconds']} s"
        )
        if summary["receipt"]:
            print("receipt: " + format_receipt(summary["receipt"]))


def register(sub) -> None:
    p = sub.add_parser("demo", help="broker + collector + agent, with a consent change mid-run")
    p.add_argument(
        "--seconds", type=argtypes.whole_seconds, default=12, help="sampling time (default 12)"
    )
    p.add_argument(
        "--rate", type=argtypes.positive_int, default=400, help="simulated readings per second"
    )
    p.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    p.add_argument(
        "--db",
        help="the collector's database (default: the demo's own file in the temporary "
        "directory, replaced by every run); must not exist",
    )
    p.add_argument(
        "--dashboard",
        type=int,
        nargs="?",
        const=8765,
        metavar="PORT",
        help="serve the dashboard on 127.0.0.1:PORT (default 8765; 0: any) while the demo runs "
        "and after it, until Ctrl-C",
    )
    p.set_defaults(func=cmd_demo)
