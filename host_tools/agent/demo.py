"""`edgectl demo`: broker + collector + one agent under unix MicroPython, with a consent grant
and a revocation mid-run, a live table per category and a summary (issue 2)."""

from __future__ import annotations

import json
import sys
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


def _consent(col: Collector, version: int, grant: list[str], deny: list[str]) -> None:
    doc = {"version": version, "grant": grant, "deny": deny}
    # retained, so a device that was offline gets the latest (issue 5)
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


def run_demo(seconds: int = 12, rate: int = 400, live: bool = True, out=sys.stdout) -> dict:
    """Run the demo; returns the summary dict."""
    console = Console(file=out if live else sys.stderr, force_terminal=None)
    t_start = time.monotonic()
    events: list[str] = []
    with broker_mod.start() as b:
        events.append(f"broker: {b.kind} on {b.host}:{b.port}")
        col = Collector(b.host, b.port).start()
        # clear a retained consent document left from another run on this broker
        col.client.publish(f"edge/{DEVICE}/cmd/consent", b"", qos=1, retain=True)
        cfg = agent_config(
            "unix-sim",
            device_id=DEVICE,
            mqtt={"host": b.host, "port": b.port},
            sim={"enabled": True, "rate_hz": rate, "seconds": seconds},  # the simulated fridge
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
    }
    return summary


def cmd_demo(args) -> int:
    if args.seconds < 3:
        raise ToolError("--seconds must be at least 3 (the consent changes need time to show)")
    summary = run_demo(args.seconds, args.rate, live=not args.json)
    if args.json:
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
    return 0 if summary["lost"] == 0 else 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="broker + collector + agent, with a consent change mid-run")
    p.add_argument(
        "--seconds", type=argtypes.whole_seconds, default=12, help="sampling time (default 12)"
    )
    p.add_argument(
        "--rate", type=argtypes.positive_int, default=400, help="simulated readings per second"
    )
    p.add_argument("--json", action="store_true", help="last stdout line is one JSON object")
    p.set_defaults(func=cmd_demo)
