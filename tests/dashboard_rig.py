"""Shared by the dashboard, plot and export tests: a collector database written by the real
collector code (`Collector.feed`, no broker), and the browser launch for Debian's chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from edge import codec
from host_tools.backend.collect import Collector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "build", "test-artifacts")  # screenshots the tests keep
CHROMIUM = "/usr/bin/chromium"
# without the background-networking switches Chromium tries to reach its own services, which
# this sandbox refuses; a fresh profile per launch keeps runs independent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
META = {
    "format": 1,
    "form": "full",
    "channels": [
        [1, "cabinet_temp", "essential", "°C", 2],
        [2, "door_opens", "usage", None, 0],
        [3, "power", "diagnostics", "W", 1],
    ],
}


class _NoSource:
    """The collector's source when messages are fed in-process: nothing to acknowledge."""

    client = None

    def send(self, device, suffix, payload) -> None:
        pass

    def ack(self, token) -> None:
        pass

    def stop(self) -> None:
        pass


def batch(device: str, category: str, rows: list[tuple[int, int, int, int]], boot=None) -> bytes:
    """A binary batch (docs/FORMAT.md 3) of (seq, ts, channel, value) rows; boot-relative
    stamps when boot is given."""
    head = codec.batch_header_len(device, category)
    w = codec.BatchWriter(device, head + codec.ENTRY_LEN * len(rows))
    flags = codec.FLAG_CLOCK_UNSYNCED if boot is not None else 0
    w.start(category, boot or 0, flags)
    for seq, ts, ch, v in rows:
        assert w.add(seq, ts, boot or 0, flags, ch, v)
    return bytes(w.finish())


def collector(db: str, client_id: str | None = "test-collector") -> Collector:
    return Collector(db_path=db, source=_NoSource(), client_id=client_id)


def fill(
    db: str, device: str = "fridge-7", t0: int = 1_700_000_000_000, n: int = 30, col=None
) -> dict:
    """A database as the collector leaves it: meta, status, a receipt granting usage and
    diagnostics, n readings of each of three channels, then a receipt revoking usage. col:
    what to feed instead of a collector on the SQLite file db (feed(topic, payload), stop())."""
    col = col or collector(db)
    try:
        p = f"edge/{device}"
        col.feed(f"{p}/meta", json.dumps(META).encode())
        col.feed(f"{p}/status", json.dumps(_status(device, 10)).encode())
        grant = {"device": device, "version": 1, "seq": 1, "source": "mqtt",
                 "grants": {"essential": True, "usage": True, "diagnostics": True}}  # fmt: skip
        col.feed(f"{p}/consent/receipt", json.dumps(grant).encode())
        seq = 1
        for cat, ch, base in (("essential", 1, 2150), ("usage", 2, 0), ("diagnostics", 3, 1200)):
            rows = [(seq + i, t0 + i * 1000, ch, base + i) for i in range(n)]
            col.feed(f"{p}/t/{cat}", batch(device, cat, rows))
            seq += n
        revoke = dict(grant, version=2, seq=seq, grants={**grant["grants"], "usage": False},
                      purged={"usage": 3})  # fmt: skip
        col.feed(f"{p}/consent/receipt", json.dumps(revoke).encode())
        col.feed(f"{p}/status", json.dumps(_status(device, 0)).encode())
    finally:
        col.stop()
    return {"device": device, "t0": t0, "n": n, "last_seq": seq - 1}


def _status(device: str, depth: int) -> dict:
    return {"state": "online", "device": device, "boot": 1, "uptime_ms": 5000,
            "heap_free": 100_000, "store_depth": depth, "reconnects": 1,
            "drops": {"consent": {"usage": 4}, "quota": {"essential": 1}},
            "clock": {"synced": False}}  # fmt: skip


def browser_ready() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[test]')"
    return None


def launch(p):
    """A headless Chromium context with a fresh profile; close it with close_browser()."""
    profile = tempfile.mkdtemp(prefix="edge-chromium-")
    ctx = p.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1400, "height": 1000},
    )
    ctx._edge_profile = profile
    return ctx


def close_browser(ctx) -> None:
    profile = getattr(ctx, "_edge_profile", None)
    ctx.close()
    if profile:
        shutil.rmtree(profile, ignore_errors=True)


# Everything the checks read from the page, in one evaluation.
PAGE_STATE = """
() => {
  const text = (n) => (n ? n.textContent.trim() : null);
  const cards = {};
  for (const c of document.querySelectorAll("#charts .card")) {
    const gd = c.querySelector(".chart");
    const line = gd.querySelector(".scatterlayer .trace path.js-line");
    cards[c.dataset.channel] = {
      points: Number(c.dataset.points),
      traced: gd.data && gd.data[0] ? gd.data[0].x.length : -1,
      ordered: gd.data && gd.data[0] ? [...gd.data[0].x].every((x, i, a) => i === 0 || a[i - 1] <= x) : null,
      drawn: line ? (line.getAttribute("d") || "").length : 0,
      name: text(c.querySelector(".name")),
      unit: text(c.querySelector(".unit")),
      consent: c.dataset.consent || null,
      note: text(c.querySelector(".note")),
    };
  }
  const grants = {};
  for (const r of document.querySelectorAll("#grants tr[data-category]")) {
    grants[r.dataset.category] = text(r.querySelector(".badge"));
  }
  const ledger = [...document.querySelectorAll("#ledger tr[data-event]")].map((r) =>
    [...r.querySelectorAll("td")].map((td) => td.textContent.trim()));
  return {
    title: text(document.getElementById("title")),
    state: text(document.querySelector("#device-head .badge")),
    cards, grants, ledger,
    receipt: text(document.getElementById("receipt")),
    live: text(document.getElementById("live")),
    collectors: document.querySelectorAll("#collectors tr[data-collector]").length,
  };
}
"""
