"""The dashboard page in Debian's headless Chromium (Playwright) over data the real collector code
stored: the device page shows every stored reading of every channel under its name and unit,
follows the collector live (late and re-sent batches included), and shows every string a device
sent as text, never as markup (docs/DASHBOARD.md 4). The demo, end to end, is in
tests/test_dashboard_browser.py (--slow)."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from host_tools.view.server import Server
from host_tools.view.query import SqliteView
from tests.dashboard_rig import (
    ARTIFACTS,
    PAGE_STATE,
    batch,
    browser_ready,
    close_browser,
    collector,
    fill,
    launch,
)

# Every string below reaches the page from a device (meta, status, receipt) or from a database
# another writer filled. Shown as text they are harmless; parsed as markup each would add an
# element with an event handler (which the page's CSP would then also have to stop).
HOSTILE = '<img src=x onerror="window.__xss=1">'
HOSTILE_META = {
    "format": 1,
    "form": "full",
    "channels": [
        [1, "temp" + HOSTILE, "essential", "°C<script>window.__xss=2</script>", 1],
        [2, "door", '"><svg onload="window.__xss=3">', "<b onmouseover=x>u</b>", 0],
    ],
}
HOSTILE_DEVICE = 'x"><img src=y onerror="window.__xss=4">'

# What the checks look for in a page: handlers on any element, images, CSP violations (an
# injected handler the policy stopped), and the hostile text shown literally.
INJECTION_STATE = """
() => ({
  handlers: [...document.querySelectorAll("*")].flatMap((e) =>
    [...e.attributes].filter((a) => a.name.startsWith("on")).map((a) => e.tagName + " " + a.name)),
  images: document.querySelectorAll("img").length,
  scripts: [...document.querySelectorAll("script")].map((s) => s.getAttribute("src")),
  violations: window.__violations || [],
  xss: window.__xss === undefined ? null : window.__xss,
  text: document.body.innerText,
})
"""
COUNT_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""
# a page that writes device strings as markup: the checks must report it
AS_MARKUP = """
const tc = Object.getOwnPropertyDescriptor(Node.prototype, "textContent");
Object.defineProperty(Node.prototype, "textContent", {
  configurable: true, get: tc.get,
  set(v) { if (this.nodeType === 1) this.innerHTML = v; else tc.set.call(this, v); },
});
"""


@pytest.fixture(scope="module")
def browser():
    why = browser_ready()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = launch(p)
        try:
            yield ctx
        finally:
            close_browser(ctx)


def _serve(db: str) -> Server:
    return Server(SqliteView(db), "127.0.0.1", 0).start()


def _until(page, check, timeout: float = 15):
    """Poll the page's state until check(state) is truthy; the last state either way."""
    deadline = time.monotonic() + timeout
    while True:
        s = page.evaluate(PAGE_STATE)
        if check(s) or time.monotonic() > deadline:
            return s
        page.wait_for_timeout(150)


def test_page_shows_the_store_and_follows_late_batches(browser, tmp_path):
    db = str(tmp_path / "c.sqlite")
    info = fill(db)  # channels 1 (essential) and 3 (diagnostics) stored, 2 (usage) revoked
    n, top, t0 = info["n"], info["last_seq"], info["t0"]
    srv = _serve(db)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(srv.url + "device/fridge-7")

        def shows(points: dict[str, int]):
            return lambda s: all(
                s["cards"].get(c, {}).get("points") == k for c, k in points.items()
            )

        s = _until(page, shows({"1": n, "3": n}))
        c1, c2, c3 = s["cards"]["1"], s["cards"]["2"], s["cards"]["3"]
        assert (c1["name"], c1["unit"], c1["points"], c1["traced"]) == (
            "cabinet_temp",
            "(°C)",
            n,
            n,
        )
        assert (c3["name"], c3["unit"], c3["points"]) == ("power", "(W)", n)
        assert c1["drawn"] > 8 and c3["drawn"] > 8  # plotly drew a line (a straight one here)
        assert (c2["name"], c2["consent"], c2["points"]) == ("door_opens", "denied", 0)
        assert c2["note"].startswith("consent withdrawn (v2)") and "erased" in c2["note"]
        assert s["grants"] == {"essential": "granted", "diagnostics": "granted", "usage": "denied"}
        assert any(r[:3] == ["v2", "deny", "usage"] and r[5] == "erased" for r in s["ledger"])

        # while the page is open: a batch of seqs top+5.., then the seqs below it arrive late
        # (another category's batch, a re-send after a reconnect)
        col = collector(db, client_id="live")
        try:
            ahead = [(top + 5 + i, t0 + (n + 5 + i) * 1000, 1, 2300 + i) for i in range(3)]
            col.feed("edge/fridge-7/t/essential", batch("fridge-7", "essential", ahead))
            _until(page, shows({"1": n + 3}))
            late3 = [
                (top + 1, t0 + (n + 1) * 1000, 3, 1500),
                (top + 2, t0 + (n + 2) * 1000, 3, 1501),
            ]
            col.feed("edge/fridge-7/t/diagnostics", batch("fridge-7", "diagnostics", late3))
            late1 = [
                (top + 3, t0 + (n + 3) * 1000, 1, 2290),
                (top + 4, t0 + (n + 4) * 1000, 1, 2291),
            ]
            col.feed("edge/fridge-7/t/essential", batch("fridge-7", "essential", late1))
        finally:
            col.stop()
        s = _until(page, shows({"1": n + 5, "3": n + 2}))
        assert s["cards"]["1"]["points"] == n + 5, s["cards"]["1"]
        assert s["cards"]["3"]["points"] == n + 2, s["cards"]["3"]
        assert s["cards"]["1"]["traced"] == n + 5 and s["cards"]["1"]["ordered"] is True
        os.makedirs(ARTIFACTS, exist_ok=True)
        page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-stored.png"), full_page=True)
        assert errors == []
    finally:
        page.close()
        srv.stop()


def _hostile_db(db: str) -> None:
    """A device that sends markup in every string it controls, through the real collector; and
    a row with a hostile device id written by another tool (the collector refuses such ids)."""
    col = collector(db)
    try:
        p = "edge/evil-1"
        col.feed(f"{p}/meta", json.dumps(HOSTILE_META).encode())
        status = {"state": HOSTILE, "broker": HOSTILE, "reset_cause": HOSTILE,
                  "store_backend": HOSTILE, "store_depth": 1, "clock": {"synced": False}}  # fmt: skip
        col.feed(f"{p}/status", json.dumps(status).encode())
        grants = {"essential": True, "<i onclick=x>c</i>": False, HOSTILE: True}
        receipt = {"device": "evil-1", "version": 1, "seq": 1, "source": HOSTILE,
                   "grants": grants, "purged": {HOSTILE: 2}}  # fmt: skip
        col.feed(f"{p}/consent/receipt", json.dumps(receipt).encode())
        rows = [(s, 1_700_000_000_000 + s * 1000, 1 + s % 2, s) for s in range(1, 9)]
        col.feed(f"{p}/t/essential", batch("evil-1", "essential", rows))
        col.feed(f"edge/{HOSTILE_DEVICE}/status", b'{"state": "online"}')  # refused: bad_topic
        assert col.stats(gaps=False)["refused_by_reason"].get("bad_topic") == 1
    finally:
        col.stop()
    con = sqlite3.connect(db)
    with con:
        con.execute(
            "INSERT INTO readings VALUES (?, 1, 1700000000000, NULL, 'essential', 1, 5, 0)",
            (HOSTILE_DEVICE,),
        )
    con.close()


def _injection_problems(page) -> list[str]:
    s = page.evaluate(INJECTION_STATE)
    bad = []
    if s["handlers"]:
        bad.append(f"event handler attributes in the page: {s['handlers'][:5]}")
    if s["images"]:
        bad.append(f"{s['images']} img elements")
    if s["scripts"] != ["/static/plotly.min.js", "/static/dashboard.js"]:
        bad.append(f"scripts {s['scripts']}")
    if s["violations"]:
        bad.append(f"CSP violations {s['violations']}")
    if s["xss"] is not None:
        bad.append(f"injected script ran ({s['xss']})")
    return bad


def test_device_strings_are_shown_as_text(browser, tmp_path):
    db = str(tmp_path / "evil.sqlite")
    _hostile_db(db)
    srv = _serve(db)
    try:
        for script, must_fail in ((None, False), (AS_MARKUP, True)):
            page = browser.new_page()
            page.add_init_script(COUNT_VIOLATIONS)
            if script:
                page.add_init_script(script)
            page.goto(srv.url)
            page.wait_for_selector('#fleet tr[data-device="evil-1"]')
            page.wait_for_function(
                "document.querySelectorAll('#fleet tr[data-device]').length == 2"
            )
            fleet = _injection_problems(page)
            fleet_text = page.evaluate(INJECTION_STATE)["text"]
            page.goto(srv.url + "device/evil-1")
            page.wait_for_selector('#charts .card[data-channel="2"] .category .badge')
            page.wait_for_selector("#ledger tr[data-event]")
            page.wait_for_timeout(300)  # the last render of the stream's first messages
            device = _injection_problems(page)
            text = page.evaluate(INJECTION_STATE)["text"]
            page.close()
            if must_fail:
                # the same checks on a page that writes strings as markup: they must see it
                assert fleet and device, (fleet, device)
                continue
            assert fleet == [] and device == [], (fleet, device)
            # shown, literally: the hostile device id on the fleet page, every string on the
            # device page (channel name and unit, category, state, receipt source and grants)
            assert HOSTILE_DEVICE in fleet_text
            for shown in ("temp" + HOSTILE, "°C<script>window.__xss=2</script>",
                          '"><svg onload="window.__xss=3">', "<i onclick=x>c</i>"):  # fmt: skip
                assert shown in text, shown
            assert text.count(HOSTILE) >= 4, text
    finally:
        srv.stop()
