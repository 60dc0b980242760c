"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, watching a
running `edgectl demo --dashboard` (broker, collector, the agent under unix MicroPython, a
consent grant and a revocation mid-run). The page is opened while the demo runs and is never
reloaded, so what it shows at the end came over the live event stream. The checks read what
the page shows (cards, counts, drawn lines, tables) and compare it with the demo's database.

The same checks must catch a broken page: the page is loaded again with a script that drops
one channel from the stream, and once with one that hides the revocation from the page, and
each time the checks must report it. A screenshot is kept in build/test-artifacts/. The default
run watches a 4-second demo; `--slow` a 16-second one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.dashboard_rig import ARTIFACTS, PAGE_STATE, ROOT, browser_ready, close_browser, launch

DEVICE = "fridge-0001"
NAMES = {1: "cabinet_temp", 2: "freezer_temp", 3: "compressor_power", 4: "defrost_cycles",
         5: "door_opens", 6: "ice_maker_uses"}  # fmt: skip
UNITS = {1: "(°C)", 2: "(°C)", 3: "(W)", 4: "", 5: "", 6: ""}
GRANTED = (1, 2, 3, 4)  # essential, diagnostics: granted at the end of the demo
REVOKED = (5, 6)  # usage: granted at 20 %, revoked at 60 %

# a page that loses channel 3 on the way: the stream's readings arrive without it
DROP_CHANNEL_3 = """
const Orig = window.EventSource;
window.EventSource = class extends Orig {
  addEventListener(type, fn, opts) {
    if (type !== "readings") return super.addEventListener(type, fn, opts);
    return super.addEventListener(type, (e) => {
      const d = JSON.parse(e.data);
      delete d.channels["3"];
      fn({ data: JSON.stringify(d) });
    }, opts);
  }
};
"""
# a page that never hears of the revocation: device updates arrive with the receipt and ledger
# of consent v1
HIDE_REVOCATION = """
const Orig = window.EventSource;
window.EventSource = class extends Orig {
  addEventListener(type, fn, opts) {
    if (type !== "device") return super.addEventListener(type, fn, opts);
    return super.addEventListener(type, (e) => {
      const d = JSON.parse(e.data);
      d.ledger = d.ledger.filter((x) => x.version < 2);
      if (d.receipt) { d.receipt.version = 1; d.receipt.grants.usage = true; }
      fn({ data: JSON.stringify(d) });
    }, opts);
  }
};
"""


def page_problems(s: dict, stored: dict[int, int]) -> list[str]:  # the demo's device page
    """What is wrong with the device page, from its state (PAGE_STATE) and the number of
    readings the database holds per channel."""
    bad = []
    if s["title"] != f"device {DEVICE}":
        bad.append(f"title {s['title']!r}")
    if s["state"] not in ("online", "stopped"):
        bad.append(f"device state {s['state']!r}")
    for ch in GRANTED:
        c = s["cards"].get(str(ch))
        if c is None:
            bad.append(f"no chart for channel {ch}")
            continue
        if c["name"] != NAMES[ch] or c["unit"] != UNITS[ch]:
            bad.append(f"channel {ch} titled {c['name']!r} {c['unit']!r}")
        if not stored.get(ch) or c["points"] != stored[ch]:
            bad.append(f"channel {ch}: {c['points']} points shown, {stored.get(ch)} stored")
        if c["traced"] != c["points"] or c["drawn"] < 20:
            bad.append(f"channel {ch}: plotly has {c['traced']} points, line of {c['drawn']}")
        if c["consent"] != "granted":
            bad.append(f"channel {ch} consent {c['consent']!r}")
    for ch in REVOKED:
        c = s["cards"].get(str(ch))
        if c is None:
            bad.append(f"no card for revoked channel {ch}")
            continue
        if c["consent"] != "denied" or c["points"] != 0:
            bad.append(f"revoked channel {ch}: {c['consent']!r} with {c['points']} points")
        if "consent withdrawn (v2)" not in (c["note"] or "") or "erased" not in c["note"]:
            bad.append(f"revoked channel {ch} note {c['note']!r}")
    want = {"essential": "granted", "diagnostics": "granted", "usage": "denied"}
    if {k: s["grants"].get(k) for k in want} != want:
        bad.append(f"grants shown {s['grants']}")
    if not any(r[:3] == ["v2", "deny", "usage"] and r[5] == "erased" for r in s["ledger"]):
        bad.append(f"no v2 revocation of usage in the ledger {s['ledger'][:3]}")
    if not any(r[:3] == ["v1", "grant", "usage"] for r in s["ledger"]):
        bad.append("no v1 grant of usage in the ledger")
    receipt = s["receipt"] or ""
    if "receipt v2" not in receipt or '"usage": false' not in receipt or "purged" not in receipt:
        bad.append(f"receipt shown {receipt[:120]!r}")
    if s["collectors"] < 1:
        bad.append("no collector counters")
    return bad


def wait_for_page(page, stored: dict[int, int], timeout: float = 30) -> list[str]:
    """The page's problems once it has settled (or the last ones seen at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        problems = page_problems(page.evaluate(PAGE_STATE), stored)
        if not problems or time.monotonic() > deadline:
            return problems
        page.wait_for_timeout(300)


class Demo:
    """`edgectl demo --dashboard 0 --json` in a subprocess, its output read by threads."""

    def __init__(self, db: str, seconds: int = 16) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "host_tools", "demo", "--seconds", str(seconds), "--json",
             "--db", db, "--dashboard", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        self.url: str | None = None
        self.summary: dict | None = None
        self.err: list[str] = []
        self.has_url = threading.Event()
        self.done = threading.Event()
        threading.Thread(target=self._stdout, daemon=True).start()
        threading.Thread(target=self._stderr, daemon=True).start()

    def _stderr(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.err.append(line)
            if line.startswith("dashboard: http://") and self.url is None:
                self.url = line.split()[1]
                self.has_url.set()
        self.has_url.set()

    def _stdout(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            if line.startswith("{"):
                self.summary = json.loads(line)
                self.done.set()
        self.done.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def stored_per_channel(db: str) -> dict[int, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = "SELECT channel, count(*) FROM readings WHERE device=? GROUP BY channel"
        return dict(con.execute(q, (DEVICE,)).fetchall())
    finally:
        con.close()


@pytest.mark.parametrize(
    "seconds",
    [pytest.param(4, id="4s"), pytest.param(16, marks=pytest.mark.slow, id="16s")],
)
def test_dashboard_shows_the_demo_live_in_chromium(tmp_path, seconds):
    why = browser_ready()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    db = str(tmp_path / "demo.sqlite")
    with sync_playwright() as p:
        demo = Demo(db, seconds)
        ctx = None
        try:
            ctx = launch(p)  # while the demo starts its broker and collector
            assert demo.has_url.wait(60) and demo.url, "".join(demo.err)[-2000:]
            errors: list[str] = []
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(demo.url + f"device/{DEVICE}")
            page.wait_for_selector('#charts .card[data-channel="1"]', timeout=30_000)
            # the demo runs on while the page watches (never reloaded); it ends by itself.
            # Meanwhile usage (channel 5) is granted, drawn, revoked and erased.
            usage_seen = 0
            deadline = time.monotonic() + 120
            while not demo.done.wait(0.5) and time.monotonic() < deadline:
                card = page.evaluate(PAGE_STATE)["cards"].get("5") or {}
                usage_seen = max(usage_seen, card.get("points", 0))
            assert demo.done.is_set() and demo.summary, "".join(demo.err)[-2000:]
            if seconds >= 16:  # usage is granted for 6 s: the page must have drawn it live
                assert usage_seen > 0, "the page never drew usage before its revocation"
            assert demo.summary["lost"] == 0 and demo.summary["consent_version"] == 2
            stored = stored_per_channel(db)
            assert set(stored) == set(GRANTED), stored  # usage was erased on revocation
            problems = wait_for_page(page, stored)
            os.makedirs(ARTIFACTS, exist_ok=True)
            shot = str(tmp_path / "dashboard-device.png")
            page.screenshot(path=shot, full_page=True)
            shutil.copy(shot, os.path.join(ARTIFACTS, "dashboard-device.png"))
            assert problems == [], problems
            assert errors == [], errors
            assert page.evaluate(PAGE_STATE)["live"] == "live"

            # the fleet page: the device, its state and the collector's counters
            fleet = ctx.new_page()
            fleet.goto(demo.url)
            row = fleet.wait_for_selector(f'#fleet tr[data-device="{DEVICE}"]')
            assert "stopped" in row.text_content()
            fleet.wait_for_selector("#collectors tr[data-collector]")
            fleet.screenshot(path=os.path.join(ARTIFACTS, "dashboard-fleet.png"))

            # the checks catch a page that drops a channel or misses the revocation
            for script, expect in (
                (DROP_CHANNEL_3, "channel 3: 0 points shown"),
                (HIDE_REVOCATION, "no v2 revocation of usage in the ledger"),
            ):
                broken = ctx.new_page()
                broken.add_init_script(script)
                broken.goto(demo.url + f"device/{DEVICE}")
                broken.wait_for_selector('#charts .card[data-channel="1"]')
                # once the stream's first messages are drawn (channel 1 complete, the ledger
                # shown), the checks must name what the script broke
                broken.wait_for_function(
                    "([n]) => document.querySelector('#charts .card[data-channel=\"1\"]')"
                    ".dataset.points == n && document.querySelector('#ledger tr[data-event]')",
                    arg=[stored[1]],
                    timeout=20_000,
                )
                got = page_problems(broken.evaluate(PAGE_STATE), stored)
                assert any(g.startswith(expect) for g in got), got
                broken.close()
        finally:
            code = demo.stop()
            if ctx is not None:
                close_browser(ctx)
    assert code == 0, "".join(demo.err)[-2000:]
