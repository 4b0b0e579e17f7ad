// The waitline wallboard's script (served at /wallboard/app.js; see wallboard.html).
"use strict";
// Everything comes from the API of the key's tenant: the page holds no data of its own
// beyond what that key may read.
const KEY = "waitline.wallboard.key";
const PAGE = 250;               // the API's largest page
const FLUSH_MS = 250;           // changed queues are read again at most this often
const REFRESH_MS = 30000;       // a full read now and then, in case the stream missed a beat
const SPARK_SECS = 3600;        // the sparkline spans the last hour
const SAMPLE_MS = 10000;        // one sample of every queue's length this often

const queues = new Map();       // name -> {info, calls, card, samples: [[ms, size]]}
const dirty = new Set();
let key = sessionStorage.getItem(KEY);
let streamAbort = null;
let clockSkewMs = 0;            // server time minus browser time, from the Date header

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // text, never markup: names come from clients
  return e;
}
function now() { return Date.now() + clockSkewMs; }
function duration(secs) {
  if (secs === null || secs === undefined || !isFinite(secs)) return "\u2013";
  secs = Math.max(0, Math.floor(secs));
  const h = Math.floor(secs / 3600), m = Math.floor(secs / 60) % 60, s = secs % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}
function percent(x) { return x === null || x === undefined ? "\u2013" : `${Math.round(x * 100)}%`; }

class AuthError extends Error {}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
  const date = res.headers.get("Date");
  if (date) clockSkewMs = Date.parse(date) - Date.now();
  if (res.status === 401) throw new AuthError("That key was not accepted.");
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

async function allPages(path) {
  const out = [];
  for (let page = 1; ; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const body = await api(`${path}${sep}page[number]=${page}&page[size]=${PAGE}`);
    if (!body) return null;
    out.push(...body.data);
    if (page >= body.meta.total_pages) return out;
  }
}

async function readQueue(name) {
  const enc = encodeURIComponent(name);
  const [info, calls] = await Promise.all([api(`/v2/queues/${enc}`), allPages(`/v2/queues/${enc}/calls`)]);
  if (!info) { drop(name); return; }
  upsert(info.data, calls || []);
}

async function readAll() {
  const list = await allPages("/v2/queues");
  const seen = new Set(list.map((q) => q.name));
  for (const name of [...queues.keys()]) if (!seen.has(name)) drop(name);
  await Promise.all(list.map((q) => readQueue(q.name)));
  render();
}

function upsert(info, calls) {
  let q = queues.get(info.name);
  if (!q) {
    q = { info, calls, card: null, samples: [] };
    queues.set(info.name, q);
  }
  q.info = info;
  q.calls = calls;
  q.readAt = now();
  sample(q);
  draw(q);
}

function drop(name) {
  const q = queues.get(name);
  if (q && q.card) q.card.remove();
  queues.delete(name);
  render();
}

function sample(q) {
  const t = now();
  const last = q.samples[q.samples.length - 1];
  if (last && t - last[0] < 1000) last[1] = q.info.current_size;
  else q.samples.push([t, q.info.current_size]);
  while (q.samples.length && q.samples[0][0] < t - SPARK_SECS * 1000) q.samples.shift();
}

// The queue's length over the last hour: the server's per-minute history when it sends one,
// else what this page sampled since it opened.
function sparkPoints(q) {
  const hist = q.info.length_last_hour;
  if (Array.isArray(hist) && hist.length) return hist.map((v, i) => [i, v]);
  return q.samples.map(([t, v]) => [(t - (now() - SPARK_SECS * 1000)) / 1000, v]);
}

function sparkline(q) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 300 44");
  svg.setAttribute("preserveAspectRatio", "none");
  const pts = sparkPoints(q);
  if (pts.length) {
    const xs = pts.map((p) => p[0]);
    const x0 = Math.min(...xs), x1 = Math.max(x0 + 1, Math.max(...xs));
    const top = Math.max(1, ...pts.map((p) => p[1]));
    const xy = pts.map(([x, v]) => [((x - x0) / (x1 - x0)) * 300, 42 - (v / top) * 40]);
    const d = xy.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
    const area = document.createElementNS(svg.namespaceURI, "path");
    area.setAttribute("class", "area");
    area.setAttribute("d", `${d}L${xy[xy.length - 1][0].toFixed(1)},44L${xy[0][0].toFixed(1)},44Z`);
    const line = document.createElementNS(svg.namespaceURI, "path");
    line.setAttribute("d", d);
    svg.append(area, line);
  }
  return svg;
}

function figure(label, value, cls, small) {
  const f = el("div", `figure${small ? " small" : ""}`);
  const v = el("div", `value ${cls || ""}`, value);
  f.append(v, el("div", "label", label));
  return [f, v];
}

function waitClass(secs, target) {
  if (secs >= target * 3) return "bad";
  if (secs >= target) return "warn";
  return "";
}

function draw(q) {
  const info = q.info, today = info.today || null;
  const card = q.card || el("section", "queue");
  card.dataset.queue = info.name;
  card.replaceChildren();
  card.append(el("h2", "", info.name));
  const figs = el("div", "figures");
  const [waiting] = figure("waiting", String(info.current_size), "", false);
  waiting.dataset.figure = "waiting";
  const [longest, longestValue] = figure("longest wait", "", "", false);
  longest.dataset.figure = "longest";
  q.longestValue = longestValue;
  const [estimate] = figure("estimated wait", duration(info.estimated_wait_time_secs), "", false);
  estimate.dataset.figure = "estimated";
  const sl = today ? today.service_level : null;
  const [level] = figure(`service level today (${info.service_level_secs} s)`, percent(sl),
    sl === null || sl === undefined ? "" : sl >= 0.8 ? "ok" : sl >= 0.6 ? "warn" : "bad", true);
  level.dataset.figure = "service-level";
  const [abandoned] = figure("abandoned today", today ? String(today.hangup) : "\u2013", "", true);
  abandoned.dataset.figure = "abandoned";
  const [answered] = figure("answered today", today ? String(today.bridged) : "\u2013", "", true);
  answered.dataset.figure = "answered";
  figs.append(waiting, longest, estimate, level, abandoned, answered);
  card.append(figs, sparkline(q));
  const list = el("ol", "callers");
  q.waitCells = [];
  for (const c of q.calls) {
    const li = el("li", c.is_alive === false ? "dead" : "");
    li.dataset.call = c.call_control_id;
    li.append(el("span", "pos", String(c.queue_position)), el("span", "who", c.from || c.call_control_id),
      el("span", "prio", c.priority ? `P${c.priority}` : ""));
    const wait = el("span", "wait");
    li.append(wait);
    list.append(li);
    q.waitCells.push([wait, Date.parse(c.enqueued_at)]);
  }
  card.append(list);
  q.card = card;
  tick(q);
}

// Waits move every second without asking the server: they are read from `enqueued_at`.
function tick(q) {
  const t = now();
  let oldest = null;
  for (const [cell, at] of q.waitCells) {
    const secs = (t - at) / 1000;
    cell.textContent = duration(secs);
    cell.className = `wait ${waitClass(secs, q.info.service_level_secs)}`;
    oldest = oldest === null ? secs : Math.max(oldest, secs);
  }
  if (q.longestValue) {
    q.longestValue.textContent = q.info.current_size ? duration(oldest) : "0:00";
    q.longestValue.className = `value ${oldest === null ? "" : waitClass(oldest, q.info.service_level_secs)}`;
  }
}

function render() {
  const board = $("board");
  const names = [...queues.keys()].sort((a, b) => a.localeCompare(b));
  names.forEach((name, i) => {
    const card = queues.get(name).card;
    if (card && board.children[i] !== card) board.insertBefore(card, board.children[i] || null);
  });
  $("empty").hidden = names.length > 0;
}

async function flush() {
  const names = [...dirty];
  dirty.clear();
  await Promise.all(names.map((n) => readQueue(n).catch(onError)));
  if (names.length) render();
}

// The event stream, read with fetch: EventSource cannot send the Authorization header.
async function follow() {
  while (key) {
    streamAbort = new AbortController();
    try {
      const res = await fetch("/v2/events", { headers: { Authorization: `Bearer ${key}` }, signal: streamAbort.signal });
      if (res.status === 401) throw new AuthError("That key was not accepted.");
      if (!res.ok || !res.body) throw new Error(`event stream: HTTP ${res.status}`);
      status("live", "live");
      await readAll();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          onMessage(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
      throw new Error("event stream ended");
    } catch (e) {
      if (e instanceof AuthError) return signOut(e.message);
      if (!key) return;
      status("down", "reconnecting\u2026");
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function onMessage(text) {
  const data = text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
  if (!data) return;
  let env;
  try { env = JSON.parse(data); } catch { return; }
  const event = env.data || {};
  const queue = event.payload && event.payload.queue;
  if (!queue) return;
  if (event.event_type === "queue.deleted") drop(queue);
  else dirty.add(queue);
}

function status(cls, text) {
  const s = $("status");
  s.className = cls;
  s.textContent = text;
}

function onError(e) {
  if (e instanceof AuthError) signOut(e.message);
  else status("down", String(e.message || e));
}

function signOut(message) {
  key = null;
  sessionStorage.removeItem(KEY);
  if (streamAbort) streamAbort.abort();
  queues.clear();
  $("board").replaceChildren();
  $("board").hidden = true;
  $("empty").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  status("", "not connected");
  $("key").focus();
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  follow();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  key = $("key").value.trim();
  $("key").value = "";
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  start();
});
$("signout").addEventListener("click", () => signOut(""));

setInterval(() => { if (dirty.size) flush(); }, FLUSH_MS);
setInterval(() => {
  $("clock").textContent = new Date(now()).toLocaleTimeString();
  for (const q of queues.values()) tick(q);
}, 1000);
setInterval(() => { for (const q of queues.values()) sample(q); }, SAMPLE_MS);
setInterval(() => { if (key) readAll().catch(onError); }, REFRESH_MS);

if (key) start(); else signOut("");
