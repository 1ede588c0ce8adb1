// The Tern dashboard's page: it renders each snapshot the server sends (`/events`) and,
// for an operator, asks for migrations, drains and policy changes (`/api/...`).
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const bytes = (b) => b < 1024 ? `${b} B` : b < 1 << 20 ? `${(b / 1024).toFixed(1)} KiB` : b < 1 << 30 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / (1 << 30)).toFixed(2)} GiB`;
const us = (t) => t < 1000 ? `${t} µs` : t < 1e6 ? `${(t / 1000).toFixed(1)} ms` : `${(t / 1e6).toFixed(2)} s`;

// Sizes a canvas's bitmap to its box (once it is in the page), then draws on it.
function fit(c, draw) {
  requestAnimationFrame(() => {
    const r = window.devicePixelRatio || 1;
    c.width = Math.max(1, Math.round(c.clientWidth * r));
    c.height = Math.max(1, Math.round(c.clientHeight * r));
    c.getContext("2d").setTransform(1, 0, 0, 1, 0, 0);
    c.getContext("2d").scale(r, r);
    draw();
  });
}

let snap = null;
let prev = null;           // the snapshot before, for rates
const history = {};        // node -> [{t, procs, util, runq}]
let sortKey = "pid", sortAsc = true, selected = null, operator = false, formReady = false;

function connect() {
  const es = new EventSource("/events");
  es.onmessage = (m) => { prev = snap; snap = JSON.parse(m.data); render(); };
  es.onerror = () => { $("#status").textContent = "dashboard unreachable: retrying"; $("#status").className = "status down"; };
}

function render() {
  const s = snap;
  const status = $("#status");
  if (!s.connected) {
    status.textContent = `not connected to the mesh: ${s.error || "connecting"}`;
    status.className = "status down";
    return;
  }
  status.textContent = `connected via node ${s.via}` + (s.errors && s.errors.length ? ` (${s.errors.join("; ")})` : "");
  status.className = "status up";
  $("#who").textContent = `${s.identity} (${s.role})`;
  setRole(s.role === "operator");
  for (const m of s.metrics) {
    const h = history[m.node] || (history[m.node] = []);
    h.push({ t: s.time_ms, procs: m.processes, util: m.utilization_pm / 1000, runq: m.run_queue_x100 / 100 });
    if (h.length > 120) h.shift();
  }
  renderNodes(s);
  renderMesh(s);
  renderInflight(s);
  renderProcs(s);
  renderReports(s);
  renderDecisions(s);
  if (operator) fillForm(s);
}

// An observer's page has no actions at all: they are taken out, not hidden.
function setRole(isOperator) {
  operator = isOperator;
  if (!isOperator) document.querySelectorAll(".op").forEach((e) => e.remove());
}

function renderNodes(s) {
  const box = $("#nodes");
  box.replaceChildren();
  for (const n of s.nodes) {
    const m = s.metrics.find((x) => x.node === n.name);
    const card = el("div", { class: `node ${n.status}`, "data-node": n.name },
      el("h3", {}, el("span", {}, n.name), el("span", { class: n.status === "up" ? "ok" : "bad" }, n.status)),
      el("div", { class: "quiet" }, n.addr),
      el("div", {}, `${n.processes} processes, ${n.migrations} migrating`),
      el("div", {}, m ? `run queue ${(m.run_queue_x100 / 100).toFixed(2)}, busy ${(m.utilization_pm / 10).toFixed(0)}%` + (m.accepting ? "" : ", drained") : ""));
    const c = el("canvas", { title: "processes (line) and utilization (fill) over the last two minutes" });
    card.append(c);
    fit(c, () => spark(c, history[n.name] || []));
    if (operator && n.status === "up") {
      const drained = m && !m.accepting;
      card.append(el("button", { type: "button", class: "op drain", onclick: () => act("/api/drain", { node: n.name, on: !drained }, drained ? `undrain ${n.name}` : `drain ${n.name}`) }, drained ? "undrain" : "drain"));
      card.addEventListener("dragover", (e) => { e.preventDefault(); card.classList.add("drop"); });
      card.addEventListener("dragleave", () => card.classList.remove("drop"));
      card.addEventListener("drop", (e) => { e.preventDefault(); card.classList.remove("drop"); migrate(e.dataTransfer.getData("text/plain"), n.name, ""); });
    }
    box.append(card);
  }
}

function spark(c, h) {
  const g = c.getContext("2d"), W = c.clientWidth, H = c.clientHeight;
  g.clearRect(0, 0, W, H);
  if (h.length < 2) return;
  const w = W / 119, max = Math.max(1, ...h.map((p) => p.procs));
  g.fillStyle = "#cfe0f3";
  h.forEach((p, i) => { const y = p.util * H; g.fillRect(i * w, H - y, w + 1, y); });
  g.strokeStyle = "#2f6db5"; g.lineWidth = 2; g.beginPath();
  h.forEach((p, i) => { const y = H - 2 - (p.procs / max) * (H - 4); i ? g.lineTo(i * w, y) : g.moveTo(i * w, y); });
  g.stroke();
}

// Bytes per second between two nodes, from the counters' change since the last snapshot.
function traffic(s) {
  const rate = {};
  if (!prev || !prev.metrics) return rate;
  const dt = (s.time_ms - prev.time_ms) / 1000;
  if (dt <= 0) return rate;
  for (const m of s.metrics) {
    const pm = prev.metrics.find((x) => x.node === m.node);
    if (!pm) continue;
    for (const p of m.peers) {
      const pp = pm.peers.find((x) => x.peer === p.peer);
      if (!pp) continue;
      const key = [m.node, p.peer].sort().join("|");
      rate[key] = (rate[key] || 0) + Math.max(0, p.bytes_out - pp.bytes_out) / dt;
    }
  }
  return rate;
}

function renderMesh(s) {
  const svg = $("#mesh"), ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const n = s.nodes.length, pos = {};
  s.nodes.forEach((node, i) => {
    const a = (2 * Math.PI * i) / n - Math.PI / 2;
    pos[node.name] = [160 + 90 * Math.cos(a), 120 + 85 * Math.sin(a)];
  });
  const mk = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); if (text !== undefined) e.textContent = text; svg.append(e); return e; };
  const rate = traffic(s);
  for (const [key, r] of Object.entries(rate)) {
    const [a, b] = key.split("|");
    if (!pos[a] || !pos[b]) continue;
    const w = Math.min(12, 1 + Math.log10(1 + r));
    mk("line", { x1: pos[a][0], y1: pos[a][1], x2: pos[b][0], y2: pos[b][1], stroke: "#2f6db5", "stroke-width": w, "stroke-opacity": 0.5 });
    mk("text", { x: (pos[a][0] + pos[b][0]) / 2, y: (pos[a][1] + pos[b][1]) / 2 - 4, fill: "#77756f" }, `${bytes(Math.round(r))}/s`);
  }
  for (const node of s.nodes) {
    const [x, y] = pos[node.name];
    mk("circle", { cx: x, cy: y, r: 22, fill: node.status === "up" ? "#fff" : "#eee", stroke: node.status === "up" ? "#2e8540" : "#b53a2f", "stroke-width": 2 });
    mk("text", { x, y: y + 4 }, node.name);
    mk("text", { x, y: y + 38, fill: "#77756f" }, `${node.processes} procs`);
  }
}

// Pages per pre-copy round as bars, the dirty set (in flight) as a line.
function roundsChart(c, rounds, total, dirty) {
  const g = c.getContext("2d"), W = c.clientWidth, H = c.clientHeight;
  g.clearRect(0, 0, W, H);
  const max = Math.max(1, total || 0, ...rounds);
  const w = W / Math.max(8, rounds.length + 1);
  g.fillStyle = "#2f6db5";
  rounds.forEach((p, i) => { const h = (p / max) * (H - 16); g.fillRect(i * w + 2, H - h, w - 4, h); });
  if (dirty !== undefined) {
    const y = H - (dirty / max) * (H - 16);
    g.strokeStyle = "#b53a2f"; g.setLineDash([4, 3]); g.beginPath(); g.moveTo(0, y); g.lineTo(W, y); g.stroke(); g.setLineDash([]);
  }
  g.fillStyle = "#77756f"; g.font = "11px sans-serif";
  g.fillText(`pages per round, of ${max}` + (dirty !== undefined ? ` (dashed: dirty set, ${dirty})` : ""), 4, 11);
}

function renderInflight(s) {
  const box = $("#inflight");
  const all = s.metrics.flatMap((m) => m.in_flight.map((l) => ({ ...l, from: m.node })));
  if (!all.length) { box.replaceChildren(el("p", { class: "quiet" }, "none")); return; }
  box.replaceChildren(...all.map((l) => {
    const c = el("canvas", { class: "chart" });
    const pct = l.total_pages ? Math.min(100, (100 * l.sent_pages) / l.total_pages) : 0;
    const d = el("div", { class: "mig inflight", "data-pid": l.pid },
      el("div", {}, `${l.pid}: ${l.from} → ${l.to}, ${l.mechanism}, `, el("b", { class: "phase" }, l.phase), ` (${(l.elapsed_ms / 1000).toFixed(1)} s)`),
      el("div", { class: "bar" }, el("div", { style: `width:${pct}%` })),
      el("div", { class: "quiet" }, `${l.sent_pages} of ${l.total_pages} pages sent, ${l.rounds.length} rounds, dirty set ${l.dirty_pages} pages` + (l.pages_served ? `, ${l.pages_served} pages served to faults` : "")),
      c);
    fit(c, () => roundsChart(c, l.rounds, l.total_pages, l.dirty_pages));
    return d;
  }));
}

function renderProcs(s) {
  const f = $("#filter").value.trim().toLowerCase();
  let rows = s.procs.filter((p) => !f || `${p.pid} ${p.function} ${p.node} ${p.status}`.toLowerCase().includes(f));
  $("#procs-count").textContent = s.procs_total > s.procs.length ? `the ${s.procs.length} busiest of ${s.procs_total}` : `${s.procs_total}`;
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const c = typeof x === "number" ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
    return sortAsc ? c : -c;
  });
  document.querySelectorAll("#procs th").forEach((th) => { th.classList.toggle("sorted", th.dataset.key === sortKey); th.classList.toggle("asc", sortAsc); });
  $("#procs tbody").replaceChildren(...rows.map((p) => {
    const tr = el("tr", { "data-pid": p.pid, "data-node": p.node, class: p.pid === selected ? "selected" : "" },
      el("td", {}, p.pid), el("td", {}, p.function || "—"), el("td", {}, p.node), el("td", {}, p.status), el("td", { class: "num" }, bytes(p.heap_bytes)),
      el("td", { class: "num" }, p.reductions_per_s.toLocaleString()), el("td", { class: "num" }, String(p.mailbox)));
    tr.addEventListener("click", () => { selected = p.pid; if (operator) $("#migrate-pid").value = p.pid; renderProcs(snap); });
    if (operator) {
      tr.draggable = true;
      tr.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", p.pid));
    }
    return tr;
  }));
}

function renderReports(s) {
  const all = s.metrics.flatMap((m) => m.reports);
  if (!all.length) return;
  const box = el("div", { class: "reports" });
  for (const r of all.slice(0, 24)) {
    const c = el("canvas", { class: "chart" });
    box.append(el("div", { class: `mig report ${r.ok ? "" : "failed"}`, "data-pid": r.pid },
      el("div", {}, el("b", {}, `${r.pid}`), ` ${r.from} → ${r.to}, ${r.mechanism}: `, el("span", { class: r.ok ? "ok outcome" : "bad outcome" }, r.outcome)),
      el("div", { class: "quiet" }, `frozen ${us(r.freeze_time_us)} (±${us(r.freeze_error_us)}), total ${us(r.total_time_us)}, ${bytes(r.bytes_sent)} sent, ${r.heap_pages} pages`),
      el("div", { class: "quiet" }, `faults ${r.page_faults}` + (r.page_faults ? ` (p50 ${us(r.fault_latency_p50_us)}, p99 ${us(r.fault_latency_p99_us)})` : "") + (r.stop_reason ? `, stopped: ${r.stop_reason}` : "")),
      c));
    fit(c, () => roundsChart(c, r.rounds.length ? r.rounds : [r.final_pages], r.heap_pages));
  }
  $("#reports").replaceChildren(box);
}

function renderDecisions(s) {
  const rows = [];
  for (const v of (s.policy && s.policy.nodes) || []) {
    for (const d of v.decisions) rows.push({ node: v.node, ...d });
  }
  rows.sort((a, b) => a.ago_ms - b.ago_ms);
  $("#decisions tbody").replaceChildren(...rows.slice(0, 30).map((d) => el("tr", {},
    el("td", {}, d.node), el("td", {}, `${(d.ago_ms / 1000).toFixed(1)} s`), el("td", {}, d.rule),
    el("td", {}, d.moved ? `${d.moved.pid} → ${d.moved.to}` : "—"), el("td", {}, d.why))));
}

function fillForm(s) {
  const to = $("#migrate-to");
  const names = s.nodes.filter((n) => n.status === "up").map((n) => n.name);
  if ([...to.options].map((o) => o.value).join() !== names.join()) {
    const keep = to.value;
    to.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(keep)) to.value = keep;
  }
  if (!formReady) {
    formReady = true;
    for (const m of s.mechanisms) $("#migrate-mech").append(el("option", { value: m }, m));
  }
}

async function act(url, body, what) {
  const out = operator ? $("#action-result") : null;
  if (out) out.textContent = `${what}…`;
  try {
    const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const j = await r.json();
    if (out) {
      out.textContent = j.ok ? `${what}: done` + (j.report && j.report.outcome ? ` (${j.report.outcome}, frozen ${us(j.report.freeze_time_us)})` : "") : `${what}: ${j.error || (j.report && j.report.outcome) || "failed"}`;
      out.className = j.ok ? "ok" : "bad";
    }
    return j;
  } catch (e) {
    if (out) { out.textContent = `${what}: ${e}`; out.className = "bad"; }
  }
}

function migrate(pid, to, mechanism) {
  if (!pid || !to) return;
  return act("/api/migrate", { pid, to, mechanism }, `migrate ${pid} to ${to}`);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("#procs th[data-key]").forEach((th) => th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortAsc = !sortAsc; else { sortKey = th.dataset.key; sortAsc = true; }
    if (snap) renderProcs(snap);
  }));
  $("#filter").addEventListener("input", () => snap && renderProcs(snap));
  const form = $("#migrate-form");
  if (form) form.addEventListener("submit", (e) => { e.preventDefault(); migrate($("#migrate-pid").value.trim(), $("#migrate-to").value, $("#migrate-mech").value); });
  const on = $("#policy-on"), off = $("#policy-off");
  if (on) on.addEventListener("click", () => act("/api/policy", { action: "on" }, "policy on"));
  if (off) off.addEventListener("click", () => act("/api/policy", { action: "off" }, "policy off"));
  connect();
});
