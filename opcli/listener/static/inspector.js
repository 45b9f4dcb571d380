// opcli inspector: the kept calls from /_opcli/calls, then each new line from /_opcli/events.
// Everything from the journal is put on the page as text (never as HTML), and nothing is loaded
// from anywhere but this listener.
"use strict";

const CAP = 500; // rows rendered at most: newest first; the filters reach the others
const KINDS = ["message_sent", "send_message", "user_info", "user_media", "unknown"];

const state = {
  lines: new Map(), // seq -> line (calls and callbacks)
  callbacks: new Map(), // trigger seq -> [callback lines]
  open: new Set(), // seqs whose details are shown
  lastSeq: 0,
  bodies: new Map(), // seq -> the <tbody> rendered for that call
  source: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// --- what a line says ---------------------------------------------------------------------------

function field(line, name) {
  const value = (line.fields || {})[name];
  return Array.isArray(value) ? value[value.length - 1] : value; // PHP reads the last one
}

// the site user and the bot, in each direction's own terms
function parties(line) {
  if (line.kind === "message_sent") return { user: field(line, "user_id"), bot: field(line, "contact_id"), dir: "in" };
  if (line.kind === "send_message") return { user: field(line, "contact_id"), bot: field(line, "user_id"), dir: "out" };
  return { user: field(line, "user_id"), bot: undefined, dir: "" };
}

function who(line) {
  const p = parties(line);
  const user = `user ${p.user ?? "?"}`;
  if (p.dir === "in") return `${user} \u2192 bot ${p.bot ?? "?"}`;
  if (p.dir === "out") return `bot ${p.bot ?? "?"} \u2192 ${user}`;
  return line.kind === "unknown" ? "" : user;
}

function messageOf(line) {
  const text = field(line, "message");
  return typeof text === "string" ? text : "";
}

function rejected(line) {
  if (line.event === "callback") return !line.ok;
  return line.status !== null && line.status >= 400 && !line.fault;
}

function clock(iso) {
  const t = new Date(iso);
  if (isNaN(t)) return iso || "";
  const two = (n) => String(n).padStart(2, "0");
  return `${two(t.getHours())}:${two(t.getMinutes())}:${two(t.getSeconds())}.${String(t.getMilliseconds()).padStart(3, "0")}`;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let n = bytes;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  return unit ? `${n.toFixed(1)} ${units[unit]}` : `${n} B`;
}

// --- filters and counters ------------------------------------------------------------------------

function filters() {
  return {
    kind: $("f-kind").value,
    status: $("f-status").value,
    user: $("f-user").value.trim(),
    text: $("f-text").value.trim().toLowerCase(),
  };
}

function matches(line, f) {
  if (f.kind && line.kind !== f.kind) return false;
  if (f.status === "rejected" && !rejected(line)) return false;
  if (f.status === "accepted" && rejected(line)) return false;
  if (f.user && String(parties(line).user ?? "") !== f.user) return false;
  if (f.text && !messageOf(line).toLowerCase().includes(f.text)) return false;
  return true;
}

function counters() {
  const counts = Object.fromEntries(KINDS.map((k) => [k, 0]));
  let bad = 0;
  let callbacks = 0;
  for (const line of state.lines.values()) {
    if (line.event === "callback") callbacks += 1;
    else counts[line.kind] = (counts[line.kind] || 0) + 1;
    if (rejected(line)) bad += 1;
  }
  const nav = $("counters");
  nav.replaceChildren(
    ...KINDS.map((kind) =>
      el("button", { type: "button", class: "count", "data-kind": kind, title: `show only ${kind}`,
        onclick: () => { $("f-kind").value = $("f-kind").value === kind ? "" : kind; render(); } },
        el("b", {}, counts[kind]), ` ${kind}`)),
    el("span", { class: "count", "data-kind": "callback" }, el("b", {}, callbacks), " callbacks"),
    el("button", { type: "button", class: "count bad", "data-kind": "rejected", title: "show only rejected",
      onclick: () => { $("f-status").value = $("f-status").value === "rejected" ? "" : "rejected"; render(); } },
      el("b", {}, bad), " rejected"),
  );
}

// --- rows --------------------------------------------------------------------------------------

function statusCell(line) {
  return el("td", { class: "c-status" }, el("span", { class: rejected(line) ? "badge bad" : "badge" }, line.status ?? "\u2014"));
}

function summaryRow(line) {
  const callback = line.event === "callback";
  let text = line.kind === "unknown" ? `${line.method} ${line.path}` : messageOf(line);
  if (!text && rejected(line)) text = line.error || (line.reply && line.reply.message) || ""; // why it was refused
  return el("tr", { class: `summary${rejected(line) ? " rejected" : ""}${callback ? " callback" : ""}`,
    tabindex: 0, "aria-expanded": state.open.has(line.seq) ? "true" : "false", "data-seq": line.seq },
    el("td", { class: "c-seq" }, line.seq),
    el("td", { class: "c-time", title: line.time }, clock(line.time)),
    el("td", { class: "c-kind", title: callback ? `callback of #${line.trigger}` : null },
      el("span", { class: `kind k-${line.kind}` }, callback ? `\u21b3 ${line.kind}` : line.kind)),
    el("td", { class: "c-who" }, who(line)),
    el("td", { class: "c-msg", title: text.length > 80 ? text.slice(0, 1000) : null }, text.replace(/\s+/g, " ").slice(0, 120)),
    el("td", { class: "c-count" }, (line.attaches || []).length || ""),
    el("td", { class: "c-count" }, (line.files || []).length || ""),
    statusCell(line),
    el("td", { class: "c-fault" }, line.fault ? el("span", { class: "badge fault" }, line.fault) : ""),
    el("td", { class: "c-ms" }, line.ms ?? ""),
  );
}

function section(title, ...content) {
  return el("section", {}, el("h3", {}, title), ...content);
}

function keyValues(obj) {
  const rows = Object.entries(obj || {}).map(([key, value]) =>
    el("tr", {}, el("th", {}, key), el("td", {}, Array.isArray(value) ? value.map((v) => el("div", {}, v)) : String(value))));
  return rows.length ? el("table", { class: "kv" }, rows) : el("p", { class: "none" }, "none");
}

function json(value) {
  return el("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

function link(url) {
  const safe = /^https?:\/\//i.test(url || "");
  return safe ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, url) : el("code", {}, String(url));
}

function details(line) {
  const parts = [];
  const meta = line.event === "callback"
    ? [`POST ${line.url}`, `triggered by #${line.trigger}`, line.ok ? "ok" : `not ok: ${line.error || "see findings"}`]
    : [`${line.method} ${line.path}`, line.content_type || "no content type",
       line.token_ok === null ? "token not read" : line.token_ok ? "token ok" : "token wrong or missing"];
  meta.push(line.time);
  if (line.forwarded_to) meta.push(`forwarded to ${line.forwarded_to} (${line.upstream_ms} ms)`);
  parts.push(el("p", { class: "meta" }, meta.join(" \u00b7 ")));
  parts.push(section("fields", keyValues(line.fields)));
  if ((line.attaches || []).length) {
    parts.push(section(`photos (${line.attaches.length})`, el("ol", { class: "photos" }, line.attaches.map((p) =>
      el("li", {}, link(p.file_url), p.big && p.big !== p.file_url ? el("span", { class: "big" }, " thumbnail ", link(p.big)) : "")))));
  }
  if ((line.files || []).length) {
    parts.push(section(`files (${line.files.length})`, el("table", { class: "files" },
      el("tr", {}, el("th", {}, "field"), el("th", {}, "filename"), el("th", {}, "size"), el("th", {}, "sha256"), el("th", {}, "")),
      line.files.map((f, k) => el("tr", {},
        el("td", {}, f.field), el("td", {}, f.filename ?? ""), el("td", {}, size(f.size)),
        el("td", { class: "hash" }, f.sha256 ?? ""),
        el("td", {}, f.saved_as ? el("a", { href: `calls/${line.seq}/files/${k}`, download: f.filename || "" }, "download") : "not saved"))))));
  }
  if ((line.warnings || []).length) parts.push(section("warnings", el("ul", { class: "warnings" }, line.warnings.map((w) => el("li", {}, w)))));
  if ((line.findings || []).length) {
    parts.push(section("findings", el("ul", { class: "warnings" }, line.findings.map((f) =>
      el("li", {}, `${f.level}${f.field ? ` ${f.field}` : ""}: ${f.text}`)))));
  }
  parts.push(section(`reply (${line.status ?? "none"})`, json(line.reply)));
  if (line.body) parts.push(section("saved body", keyValues(line.body)));
  const out = el("div", { class: "result", role: "status" });
  const canCurl = line.event === "callback" || line.kind !== "unknown";
  parts.push(el("div", { class: "actions" },
    canCurl ? el("button", { type: "button", class: "curl", onclick: () => copyCurl(line, out) }, "Copy as curl") : "",
    line.event === "call" && line.kind !== "unknown" ? el("button", { type: "button", class: "replay", onclick: () => replay(line, out) }, "Replay") : "",
  ), out);
  return el("div", { class: "details" }, parts);
}

function callTbody(line) {
  const body = el("tbody", { class: "entry", "data-seq": line.seq });
  fillTbody(body, line);
  return body;
}

function fillTbody(body, line) {
  const rows = [summaryRow(line)];
  if (state.open.has(line.seq)) rows.push(el("tr", { class: "open" }, el("td", { colspan: 10 }, details(line))));
  for (const cb of state.callbacks.get(line.seq) || []) {
    rows.push(summaryRow(cb));
    if (state.open.has(cb.seq)) rows.push(el("tr", { class: "open callback" }, el("td", { colspan: 10 }, details(cb))));
  }
  body.replaceChildren(...rows);
}

function toggle(seq) {
  if (state.open.has(seq)) state.open.delete(seq);
  else state.open.add(seq);
  const line = state.lines.get(seq);
  const top = line && line.event === "callback" && state.lines.has(line.trigger) ? line.trigger : seq;
  const body = state.bodies.get(top);
  if (body) fillTbody(body, state.lines.get(top));
}

// the calls (and orphan callbacks) to show, newest first, filters applied
function shown() {
  const f = filters();
  const lines = [];
  for (const line of state.lines.values()) {
    if (line.event === "callback" && state.lines.has(line.trigger)) continue; // shown under its trigger
    if (matches(line, f)) lines.push(line);
  }
  return lines.sort((a, b) => b.seq - a.seq);
}

function render() {
  pending = []; // all of them are drawn now
  clearTimeout(flushTimer);
  flushTimer = null;
  const lines = shown();
  const table = $("calls");
  state.bodies.clear();
  for (const old of table.querySelectorAll("tbody")) old.remove();
  for (const line of lines.slice(0, CAP)) {
    const body = callTbody(line);
    state.bodies.set(line.seq, body);
    table.append(body);
  }
  note(lines.length);
  counters();
}

function note(matching) {
  const total = state.lines.size;
  let text = "";
  if (!total) text = "No calls yet: point the panel or your site at this listener, or run opcli send.";
  else if (!matching) text = "No call matches the filters.";
  else if (matching > CAP) text = `Showing the newest ${CAP} of ${matching} matching calls; narrow the filters to see the others.`;
  $("note").textContent = text;
}

// --- new lines -----------------------------------------------------------------------------------

let pending = [];
let flushTimer = null;

function add(line) {
  if (!line || typeof line.seq !== "number" || state.lines.has(line.seq)) return;
  state.lines.set(line.seq, line);
  state.lastSeq = Math.max(state.lastSeq, line.seq);
  if (line.event === "callback") {
    if (!state.callbacks.has(line.trigger)) state.callbacks.set(line.trigger, []);
    state.callbacks.get(line.trigger).push(line);
  }
  pending.push(line);
  if (!flushTimer) flushTimer = setTimeout(flush, 30); // one repaint for a burst of lines
}

function flush() {
  flushTimer = null;
  const lines = pending;
  pending = [];
  if (lines.length > 50) return render();
  const f = filters();
  const table = $("calls");
  for (const line of lines) {
    if (line.event === "callback" && state.bodies.has(line.trigger)) {
      fillTbody(state.bodies.get(line.trigger), state.lines.get(line.trigger));
      continue;
    }
    if (line.event === "callback" && state.lines.has(line.trigger)) continue; // its trigger is filtered out
    if (!matches(line, f)) continue;
    const body = callTbody(line);
    state.bodies.set(line.seq, body);
    table.insertBefore(body, table.querySelector("tbody")); // newest first
  }
  const rendered = table.querySelectorAll("tbody");
  for (let k = rendered.length - 1; k >= CAP; k -= 1) {
    state.bodies.delete(Number(rendered[k].dataset.seq));
    rendered[k].remove();
  }
  note(shown().length);
  counters();
}

function forget() {
  state.lastSeq = 0; // forgotten here too, or a listener started afresh: its seq begins again
  state.lines.clear();
  state.callbacks.clear();
  state.open.clear();
  render();
}

// --- the server ----------------------------------------------------------------------------------

async function answer(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch (e) {
    return { status: 0, message: text || `HTTP ${response.status}` };
  }
}

async function load() {
  try {
    const response = await fetch("calls", { cache: "no-store" });
    const data = await answer(response);
    if (!response.ok) throw new Error(data.message || `HTTP ${response.status}`);
    for (const line of data.calls) add(line);
  } catch (e) {
    live("offline", `cannot load the calls: ${e.message}`);
  }
  render();
  follow();
}

function live(kind, text) {
  const badge = $("live");
  badge.className = `live ${kind}`;
  badge.textContent = text;
}

function follow() {
  // the browser resumes a dropped stream itself, sending Last-Event-ID; if it gives up, start anew
  const source = new EventSource(`events?after=${state.lastSeq}`);
  state.source = source;
  source.onopen = () => live("on", "live");
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      live("offline", "disconnected; retrying\u2026");
      setTimeout(() => { if (state.source === source) follow(); }, 2000);
    } else {
      live("offline", "reconnecting\u2026");
    }
  };
  const take = (event) => {
    try {
      add(JSON.parse(event.data));
    } catch (e) {
      // not a line: ignore it
    }
  };
  source.addEventListener("call", take);
  source.addEventListener("callback", take);
  source.addEventListener("clear", forget);
}

async function copyCurl(line, out) {
  out.replaceChildren("\u2026");
  try {
    const response = await fetch(`calls/${line.seq}/curl`, { cache: "no-store" });
    const text = (await response.text()).trim();
    if (!response.ok) throw new Error(JSON.parse(text).message);
    const pre = el("pre", { class: "curl-text" }, text);
    out.replaceChildren(pre);
    try {
      await navigator.clipboard.writeText(text);
      out.append(el("p", { class: "ok" }, "Copied. The command reads the token from $OPCLI_TOKEN."));
    } catch (e) {
      window.getSelection().selectAllChildren(pre);
      out.append(el("p", {}, "Selected: copy it with Ctrl+C. The command reads the token from $OPCLI_TOKEN."));
    }
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, `Copy as curl failed: ${e.message}`));
  }
}

async function replay(line, out) {
  out.replaceChildren("replaying\u2026");
  try {
    const response = await fetch(`calls/${line.seq}/replay`, { method: "POST" });
    const data = await answer(response);
    if (!response.ok || typeof data.seq !== "number") throw new Error(data.message || `HTTP ${response.status}`);
    add(data);
    out.replaceChildren(el("p", { class: "ok" }, `Replayed as #${data.seq}: HTTP ${data.status}`), json(data));
  } catch (e) {
    out.replaceChildren(el("p", { class: "error" }, `Replay failed: ${e.message}`));
  }
}

async function clearAll() {
  const response = await fetch("calls", { method: "DELETE" });
  if (response.ok) forget();
}

// --- wiring --------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["f-kind", "f-status"]) $(id).addEventListener("change", render);
  for (const id of ["f-user", "f-text"]) {
    for (const type of ["input", "change"]) $(id).addEventListener(type, render);
  }
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("clear").addEventListener("click", clearAll);
  const table = $("calls");
  const activate = (event) => {
    const row = event.target.closest("tr.summary");
    if (row && !event.target.closest("a, button")) toggle(Number(row.dataset.seq));
  };
  table.addEventListener("click", activate);
  table.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      activate(event);
    }
  });
  load();
});
