// The edge dashboard (docs/DASHBOARD.md): the fleet page and the device page, drawn from one
// Server-Sent Events stream (/api/events). Everything a device sent is shown as text
// (textContent), never parsed as markup; charts get numbers only.
"use strict";

const MAX_POINTS = 20000; // per channel chart; older points scroll out
const HEALTH_FIELDS = [
  ["state", "state"], ["boot", "boot"], ["uptime_ms", "uptime"], ["reset_cause", "reset cause"],
  ["heap_free", "heap free (bytes)"], ["store_depth", "store depth"],
  ["oldest_unsent_age_ms", "oldest unsent"], ["reconnects", "reconnects"],
  ["flash_writes", "flash writes"], ["sampled", "sampled"], ["acked", "acked"],
  ["consent_version", "consent version"], ["store_backend", "store backend"],
];
const COUNTERS = [
  ["messages", "messages"], ["batches", "batches"], ["unique", "stored"],
  ["duplicates", "duplicates"], ["refused", "refused (consent)"], ["rejected", "rejected"],
  ["conflicts", "seq conflicts"], ["acks_sent", "acks sent"],
];

// --- small helpers ------------------------------------------------------------------------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else e.setAttribute(k, String(v));
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
function fmtTime(ms) {
  if (typeof ms !== "number") return "-";
  const d = new Date(ms);
  return d.toLocaleString(undefined, { hour12: false });
}
function fmtAgo(ms, now) {
  if (typeof ms !== "number") return "-";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
// "12 s ago", kept current by a timer (the page and the server share this machine's clock)
function ago(tag, ms) {
  return el(tag, { class: "ago", "data-ms": ms, title: fmtTime(ms), text: fmtAgo(ms, Date.now()) });
}
setInterval(() => {
  for (const n of document.querySelectorAll(".ago[data-ms]")) {
    n.textContent = fmtAgo(Number(n.dataset.ms), Date.now());
  }
}, 1000);
function fmtDuration(ms) {
  if (typeof ms !== "number") return "-";
  const s = Math.round(ms / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function num(x) { return typeof x === "number" ? x.toLocaleString("en") : "-"; }
function badge(text) {
  const t = typeof text === "string" && text ? text : "unknown";
  return el("span", { class: "badge " + t.replace(/[^a-z]/g, ""), text: t });
}
function table(headers, rows, attrs) {
  const t = el("table", attrs || {});
  const tr = el("tr");
  for (const h of headers) tr.append(el("th", { class: h.num ? "num" : null, text: h.label }));
  t.append(el("thead", {}, tr));
  const body = el("tbody");
  for (const r of rows) body.append(r);
  t.append(body);
  return t;
}
function cell(v, cls) { return el("td", { class: cls }, v instanceof Node ? v : String(v)); }

// --- page skeletons ------------------------------------------------------------------------
const deviceMatch = location.pathname.match(/^\/device\/([A-Za-z0-9_-]{1,64})$/);
const DEVICE = deviceMatch ? deviceMatch[1] : null;
const main = document.getElementById("main");
const charts = new Map(); // channel -> {card, div, points, meta}
let lastDevice = null;

function buildFleetPage() {
  document.title = "edge fleet";
  main.append(
    el("h2", { text: "Devices" }), el("div", { id: "brokers", class: "muted" }),
    el("section", { id: "fleet", "data-testid": "fleet" }),
    el("h2", { text: "Collectors" }), el("section", { id: "collectors" }),
  );
}

function buildDevicePage() {
  document.title = "edge " + DEVICE;
  document.getElementById("title").textContent = "device " + DEVICE;
  main.append(
    el("div", { id: "nodata", class: "empty" }),
    el("section", { id: "device-head", class: "facts", "data-testid": "device-head" }),
    el("h2", { text: "Channels" }),
    el("div", { id: "unplaced", class: "muted" }),
    el("section", { id: "charts", class: "grid", "data-testid": "charts" }),
    el("h2", { text: "Consent" }),
    el("section", { class: "cols" },
      el("div", {}, el("h3", { text: "Enforced now (latest receipt)" }),
        el("div", { id: "grants", "data-testid": "grants" }),
        el("div", { id: "receipt", "data-testid": "receipt" })),
      el("div", {}, el("h3", { text: "Consent ledger" }),
        el("div", { id: "ledger", "data-testid": "ledger" }))),
    el("h2", { text: "Health" }),
    el("section", { class: "cols" },
      el("div", { id: "status", "data-testid": "status" }),
      el("div", { class: "card" }, el("div", { id: "health-chart", class: "chart" }))),
    el("h3", { text: "Status history (newest first)" }),
    el("section", { id: "health" }),
    el("h2", { text: "Collectors" }), el("section", { id: "collectors" }),
  );
}

// --- fleet -----------------------------------------------------------------------------------
function renderFleet(doc) {
  const node = document.getElementById("fleet");
  if (!node) return;
  const rows = doc.devices.map((d) => {
    const tr = el("tr", { "data-device": d.device });
    tr.append(
      cell(el("a", { href: "/device/" + encodeURIComponent(d.device), text: d.device })),
      cell(badge(d.state)),
      ago("td", d.last_seen_ms),
      cell(num(d.store_depth), "num"), cell(num(d.lost), "num"), cell(num(d.withheld), "num"),
      cell(num(d.last_seq), "num"),
      cell(d.consent_version === null ? "-" : "v" + d.consent_version),
      cell(fmtDuration(d.uptime_ms), "num"),
    );
    return tr;
  });
  clear(node).append(rows.length ? table([
    { label: "device" }, { label: "state" }, { label: "last seen" },
    { label: "store depth", num: 1 }, { label: "readings lost", num: 1 },
    { label: "withheld (consent)", num: 1 },
    { label: "last seq", num: 1 }, { label: "consent" }, { label: "uptime", num: 1 },
  ], rows) : el("div", { class: "empty", text: "No device has sent anything yet." }));
}

function renderCollectors(list) {
  const node = document.getElementById("collectors");
  if (!node) return;
  const brokers = document.getElementById("brokers");
  if (brokers) {
    const names = [...new Set(list.map((c) => c.broker).filter((b) => typeof b === "string"))];
    brokers.textContent = names.length ? "broker: " + names.join(", ") : "";
  }
  const rows = list.map((c) => {
    const s = c.stats || {};
    const reasons = Object.entries(s.refused_by_reason || {})
      .map(([k, v]) => k + " " + v).join(", ");
    const tr = el("tr", { "data-collector": c.client_id });
    tr.append(cell(c.client_id || "-"), cell(c.broker || "-"),
      ago("td", c.updated_ms));
    for (const [k] of COUNTERS) tr.append(cell(num(s[k]), "num"));
    tr.append(cell(reasons || "-"));
    return tr;
  });
  clear(node).append(rows.length ? table(
    [{ label: "client id" }, { label: "broker" }, { label: "updated" }]
      .concat(COUNTERS.map(([, label]) => ({ label, num: 1 })))
      .concat([{ label: "refusals and notes by reason" }]), rows, { "data-testid": "collector-table" })
    : el("div", { class: "empty", text: "No collector counters in this database yet." }));
}

// --- device ----------------------------------------------------------------------------------
function grantOf(receipt, category) {
  const g = receipt && receipt.grants;
  if (!g || typeof g !== "object" || !(category in g)) return category === "essential" ? "granted" : "denied";
  return g[category] === true ? "granted" : "denied";
}

function renderHead(d) {
  const node = clear(document.getElementById("device-head"));
  const fact = (label, value) => el("div", {}, el("span", { class: "label", text: label }), value);
  node.append(
    fact("state", badge(d.state)),
    fact("last seen", ago("b", d.last_seen_ms)),
    fact("first seen", el("b", { text: fmtTime(d.first_seen_ms) })),
    fact("last seq stored", el("b", { text: num(d.last_seq) })),
    fact("store depth", el("b", { text: num(d.status.store_depth) })),
    fact("readings lost (store, quota)", el("b", { text: num(d.lost) })),
  );
}

function ensureChart(meta) {
  const key = String(meta.channel);
  let c = charts.get(key);
  if (c) {
    c.meta = meta;
    c.name.textContent = meta.name;
    c.unit.textContent = meta.unit ? "(" + meta.unit + ")" : "";
    return c;
  }
  const name = el("h3", { class: "name", text: meta.name });
  const unit = el("span", { class: "unit", text: meta.unit ? "(" + meta.unit + ")" : "" });
  const cat = el("span", { class: "category" });
  const points = el("span", { class: "points", "data-testid": "points", text: "0 points" });
  const note = el("div", { class: "note" });
  const div = el("div", { class: "chart" });
  const card = el("div", { class: "card", "data-channel": key, "data-points": "0" },
    el("div", { class: "head" }, name, unit, cat, points), note, div);
  const list = document.getElementById("charts");
  // keep cards in channel order
  const after = [...list.children].find((n) => Number(n.dataset.channel) > meta.channel);
  list.insertBefore(card, after || null);
  Plotly.newPlot(div, [{ x: [], y: [], type: "scatter", mode: "lines", line: { width: 1.5 },
    hovertemplate: "%{y}<extra></extra>" }], {
    margin: { l: 50, r: 10, t: 6, b: 30 }, xaxis: { type: "date" },
    yaxis: { zeroline: false }, showlegend: false,
  }, { displayModeBar: false, responsive: true, staticPlot: false });
  c = { card, div, name, unit, cat, points, note, count: 0, meta, xs: [], ys: [] };
  charts.set(key, c);
  return c;
}

function setCount(c, n) {
  c.count = n;
  c.card.dataset.points = String(n);
  c.points.textContent = num(n) + (n === 1 ? " point" : " points");
}

// Points of one channel stay in time order: a late batch (another category's, or one re-sent
// after a reconnect) brings seqs below those drawn, so those are merged in, not appended.
function addPoints(c, xs, ys) {
  const sorted = xs.every((x, i) => i === 0 || xs[i - 1] <= x);
  if (sorted && (c.xs.length === 0 || c.xs[c.xs.length - 1] <= xs[0])) {
    for (let i = 0; i < xs.length; i++) { c.xs.push(xs[i]); c.ys.push(ys[i]); }
    const over = c.xs.length - MAX_POINTS;
    if (over > 0) { c.xs.splice(0, over); c.ys.splice(0, over); }
    Plotly.extendTraces(c.div, { x: [xs.map((ms) => new Date(ms))], y: [ys] }, [0], MAX_POINTS);
  } else {
    const pts = c.xs.map((x, i) => [x, c.ys[i]]);
    for (let i = 0; i < xs.length; i++) pts.push([xs[i], ys[i]]);
    pts.sort((a, b) => a[0] - b[0]);
    const keep = pts.slice(Math.max(0, pts.length - MAX_POINTS));
    c.xs = keep.map((p) => p[0]);
    c.ys = keep.map((p) => p[1]);
    Plotly.restyle(c.div, { x: [c.xs.map((ms) => new Date(ms))], y: [c.ys.slice()] }, [0]);
  }
  setCount(c, c.xs.length);
}

function onReadings(doc) {
  if (doc.reset) for (const c of charts.values()) {
    c.xs = [];
    c.ys = [];
    Plotly.restyle(c.div, { x: [[]], y: [[]] }, [0]);
    setCount(c, 0);
  }
  for (const [ch, s] of Object.entries(doc.channels)) {
    const meta = (lastDevice && lastDevice.channels.find((m) => String(m.channel) === ch))
      || { channel: Number(ch), name: "channel " + ch, unit: "", category: null };
    addPoints(ensureChart(meta), s.x, s.y);
  }
  const un = document.getElementById("unplaced");
  if (un && doc.reset) un.textContent = "";
  if (un && doc.unplaced) {
    un.textContent = doc.unplaced + " readings have a boot-relative time that no clock sync " +
      "maps to wall-clock time; they are not drawn.";
  }
  refreshNotes();
}

function refreshNotes() {
  if (!lastDevice) return;
  for (const c of charts.values()) {
    const cat = c.meta.category;
    clear(c.cat);
    c.note.textContent = "";
    if (!cat) continue;
    const state = grantOf(lastDevice.receipt, cat);
    c.cat.append(el("span", { class: "muted", text: cat + " " }), badge(state));
    c.card.dataset.category = cat;
    c.card.dataset.consent = state;
    if (state === "granted" && c.count === 0) c.note.textContent = "no readings stored yet";
    if (state === "denied") {
      const erased = lastDevice.ledger.filter((e) => e.category === cat && e.event === "deny");
      const last = erased[erased.length - 1];
      c.note.textContent = last
        ? "consent withdrawn (v" + last.version + "): " + num(last.readings) + " stored readings " + last.action
        : "no consent: nothing of this category is stored";
    }
  }
}

function renderConsent(d) {
  const r = d.receipt;
  const cats = new Set(Object.keys((r && r.grants) || {}));
  for (const ch of d.channels) if (ch.category) cats.add(ch.category);
  cats.add("essential");
  const ordered = [...cats].sort((a, b) => (a !== "essential") - (b !== "essential") || a.localeCompare(b));
  const purged = (r && r.purged) || {};
  const total = (r && r.purged_total) || {};
  clear(document.getElementById("grants")).append(table(
    [{ label: "category" }, { label: "state" }, { label: "purged on the device", num: 1 }],
    ordered.map((cat) => el("tr", { "data-category": cat }, cell(cat), cell(badge(grantOf(r, cat))),
      cell(num(total[cat] !== undefined ? total[cat] : purged[cat]), "num")))));
  const rn = clear(document.getElementById("receipt"));
  if (!r) {
    rn.append(el("div", { class: "empty", text: "No receipt yet: only essential readings are stored (default deny)." }));
  } else {
    rn.append(el("p", {},
      el("b", { text: "receipt v" + r.version }), " from seq " + num(r.seq) +
      ", source " + (r.source || "-") + ", received " + fmtTime(d.receipt_ms) +
      (r.sig ? ", signed" : "")),
      el("pre", { "data-testid": "receipt-json", text: JSON.stringify(r, null, 1) }));
  }
  const rows = [...d.ledger].reverse().map((e) => el("tr", {
    "data-event": e.event, "data-category": e.category, "data-version": e.version,
  }, cell("v" + e.version), cell(e.event), cell(e.category), cell(num(e.seq), "num"),
  cell(num(e.readings), "num"), cell(e.action), cell(fmtTime(e.at_ms))));
  clear(document.getElementById("ledger")).append(rows.length ? table([
    { label: "version" }, { label: "event" }, { label: "category" }, { label: "from seq", num: 1 },
    { label: "readings", num: 1 }, { label: "action" }, { label: "recorded" },
  ], rows) : el("div", { class: "empty", text: "No consent event recorded yet." }));
}

function renderHealth(d) {
  const s = d.status || {};
  const rows = HEALTH_FIELDS.filter(([k]) => k in s).map(([k, label]) => {
    let v = s[k];
    if (k === "uptime_ms" || k === "oldest_unsent_age_ms") v = fmtDuration(v);
    else if (typeof v === "number") v = num(v);
    else if (v === null || v === undefined) v = "-";
    return el("tr", {}, cell(label), cell(typeof v === "object" ? JSON.stringify(v) : v));
  });
  if (s.drops && typeof s.drops === "object") {
    rows.push(el("tr", {}, cell("drops"), cell(JSON.stringify(s.drops))));
  }
  clear(document.getElementById("status")).append(rows.length
    ? table([{ label: "latest status" }, { label: fmtTime(d.status_ms) }], rows)
    : el("div", { class: "empty", text: "No status received yet." }));
  const h = d.health;
  const x = h.map((r) => new Date(r.at_ms));
  Plotly.react("health-chart", [
    { x, y: h.map((r) => r.store_depth), name: "store depth", type: "scatter", mode: "lines+markers" },
    { x, y: h.map((r) => r.heap_free), name: "heap free", yaxis: "y2", type: "scatter", mode: "lines" },
  ], {
    margin: { l: 50, r: 60, t: 6, b: 30 }, xaxis: { type: "date" },
    yaxis: { title: { text: "store depth" }, rangemode: "tozero" },
    yaxis2: { title: { text: "heap free" }, overlaying: "y", side: "right" },
    legend: { orientation: "h", y: 1.15 },
  }, { displayModeBar: false, responsive: true });
  const recent = h.slice(-12).reverse().map((r) => el("tr", {},
    cell(fmtTime(r.at_ms)), cell(badge(r.state)), cell(fmtDuration(r.uptime_ms), "num"),
    cell(num(r.heap_free), "num"), cell(num(r.store_depth), "num"), cell(num(r.reconnects), "num"),
    cell(num(r.drops), "num"), cell(r.reset_cause || "-")));
  clear(document.getElementById("health")).append(recent.length ? table([
    { label: "received" }, { label: "state" }, { label: "uptime", num: 1 },
    { label: "heap free", num: 1 }, { label: "store depth", num: 1 },
    { label: "reconnects", num: 1 }, { label: "drops", num: 1 }, { label: "reset cause" },
  ], recent) : el("div", { class: "empty", text: "No status history yet." }));
}

function onDevice(d) {
  lastDevice = d;
  renderHead(d);
  for (const meta of d.channels) ensureChart(meta);
  renderConsent(d);
  renderHealth(d);
  renderCollectors(d.collectors);
  refreshNotes();
}

// --- the stream --------------------------------------------------------------------------------
function setLive(on) {
  const n = document.getElementById("live");
  n.textContent = on ? "live" : "reconnecting";
  n.className = "live" + (on ? "" : " off");
}

function connect() {
  const es = new EventSource("/api/events" + (DEVICE ? "?device=" + encodeURIComponent(DEVICE) : ""));
  es.addEventListener("open", () => setLive(true));
  es.addEventListener("error", () => setLive(false));
  es.addEventListener("fleet", (e) => {
    const doc = JSON.parse(e.data);
    renderFleet(doc);
    if (!DEVICE) renderCollectors(doc.collectors);
    else {
      const known = doc.devices.some((d) => d.device === DEVICE);
      document.getElementById("nodata").textContent = known ? ""
        : "No data from device " + DEVICE + " in this database (yet).";
    }
  });
  es.addEventListener("problem", (e) => {
    const n = document.getElementById("live");
    n.textContent = "error: " + JSON.parse(e.data).error;
    n.className = "live off";
  });
  es.addEventListener("device", (e) => onDevice(JSON.parse(e.data)));
  es.addEventListener("readings", (e) => onReadings(JSON.parse(e.data)));
}

if (DEVICE) buildDevicePage(); else buildFleetPage();
connect();
