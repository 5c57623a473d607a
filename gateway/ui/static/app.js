// The knowledge console. Plain modern JavaScript, no build step and no dependencies: it
// talks to the gateway's public API only, with the key the user gives it (kept in
// sessionStorage, sent as a Bearer token). Text from documents is always inserted as
// text nodes, never as HTML. An admin may pick one project to work in: every API call
// then names it in the OpenAI-Project header, as the OpenAI SDKs do.
"use strict";

const KEY = "rwkv-rag-key";
const PROJECT = "rwkv-rag-project";
const $main = () => document.getElementById("main");
const PAGE = 50;

// -- DOM helpers -------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function show(...nodes) {
  $main().replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined));
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 3000);
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(ts) {
  return ts ? new Date(ts * 1000).toLocaleString() : "";
}

function fmt(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(3);
}

function confirmDialog(text, action = "Delete") {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = action;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

// -- the API -----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const project = sessionStorage.getItem(PROJECT);
  if (project) headers["OpenAI-Project"] = project;
  return headers;
}

async function api(path, { method = "GET", body, form } = {}) {
  const headers = authHeaders();
  let payload;
  if (form) payload = form;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { raw: text }; }
  if (!r.ok) {
    if (r.status === 401) { askKey(sessionStorage.getItem(KEY) ? "That key was rejected." : ""); }
    const err = data && data.error ? data.error : {};
    throw new ApiError(r.status, err.message || `HTTP ${r.status}`, err.param);
  }
  return data;
}

// Upload with progress (fetch cannot report upload progress).
function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 200) resolve(data);
      else reject(new ApiError(xhr.status, (data.error && data.error.message) || `HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload failed (network)"));
    const form = new FormData();
    form.append("purpose", "assistants");
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message || String(err));
}

// -- the key -----------------------------------------------------------------------------

function askKey(message) {
  stopPolling();
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(PROJECT);
  me = null;
  document.getElementById("whoami").hidden = true;
  document.getElementById("signout").hidden = true;
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const note = h("p", { class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "panel", onsubmit: async (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, input.value.trim());
      try {
        await api("/v1/models");
        document.getElementById("signout").hidden = false;
        route();
      } catch (err) {
        if (err.status !== 401) note.textContent = err.message;
      }
    } },
    h("h1", {}, "API key"),
    h("p", {}, "This gateway needs an API key. It is kept in this tab only (sessionStorage)."),
    h("label", { for: "api-key" }, "API key", input),
    h("p", {}, h("button", { type: "submit" }, "Use key")),
    note,
  );
  show(form);
  input.focus();
}

// -- who the key is (GET /v1/me) -------------------------------------------------------

let me = null;

async function whoami() {
  me = await api("/v1/me");
  const chosen = sessionStorage.getItem(PROJECT) || "";
  const admin = me.role === "admin";
  document.getElementById("project-name").textContent = admin && !chosen
    ? "All projects (admin)"
    : `Project: ${me.project}${admin ? " (admin)" : ""}`;
  const select = document.getElementById("project-select");
  const names = [...new Set([...(me.projects || []), ...(chosen ? [chosen] : [])])];
  select.replaceChildren(
    h("option", { value: "" }, "All projects"),
    ...names.map((p) => h("option", { value: p }, p)),
  );
  select.value = chosen;
  document.getElementById("project-switch").hidden = !admin;
  document.getElementById("whoami").hidden = false;
}

function switchProject(e) {
  const name = e.target.value;
  if (name) sessionStorage.setItem(PROJECT, name);
  else sessionStorage.removeItem(PROJECT);
  me = null;
  route();
}

// -- polling -----------------------------------------------------------------------------

let pollTimer = null;
function poll(fn, ms = 1000) {
  stopPolling();
  const tick = async () => {
    let again = false;
    try { again = await fn(); } catch { again = true; }
    if (again) pollTimer = setTimeout(tick, ms);
  };
  pollTimer = setTimeout(tick, ms);
}
function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

// -- pages -------------------------------------------------------------------------------

async function models() {
  return (await api("/v1/models")).data;
}

// What this gateway offers beyond the core API (web search needs a provider), read once.
let features = null;
function consoleConfig() {
  features ??= fetch("/ui/config.json").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  return features;
}

async function storesPage() {
  const list = await api(`/v1/vector_stores?limit=100`);
  const all = await models();
  const embedders = all.filter((m) => m.kind === "embedding");
  const name = h("input", { id: "new-store", required: true, maxlength: 256 });
  const model = h("select", { id: "new-model" },
    embedders.map((m) => h("option", { value: m.id }, m.id)));
  const note = h("p", { role: "alert", class: "error" });
  const form = h("form", { class: "inline panel", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const body = { name: name.value.trim() };
      if (model.value) body.embedding_model = model.value;
      const vs = await api("/v1/vector_stores", { method: "POST", body });
      toast(`Created ${vs.name}`);
      location.hash = `#/stores/${vs.id}`;
    } catch (err) { note.textContent = err.message; }
  } },
  h("label", { for: "new-store" }, "New store name", name),
  embedders.length ? h("label", { for: "new-model" }, "Embedding model", model) : null,
  h("button", { type: "submit" }, "Create store"), note);
  const rows = list.data.map((s) => {
    const c = s.file_counts;
    return h("tr", {},
      h("td", {}, h("a", { href: `#/stores/${s.id}` }, s.name || s.id)),
      h("td", {}, `${c.completed} completed, ${c.in_progress} in progress, ${c.failed} failed (${c.total})`),
      h("td", {}, String(s.chunk_count)),
      h("td", {}, s.embedding_model),
      h("td", {}, s.backend),
      h("td", {}, bytes(s.usage_bytes)),
      h("td", {}, s.status === "expired" ? "expired" : when(s.expires_at) || "never"));
  });
  show(
    h("h1", {}, "Stores"),
    form,
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "muted" }, `${rows.length} store(s)`),
          h("thead", {}, h("tr", {}, ["Name", "Files", "Chunks", "Embedding model", "Backend", "Size", "Expires"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, rows)))
      : h("p", {}, "No stores yet. Create one above."),
  );
}

const STATUSES = ["", "in_progress", "completed", "failed", "cancelled"];

async function storePage(id, params) {
  const vs = await api(`/v1/vector_stores/${id}`);
  const status = params.get("status") || "";
  const after = params.get("after") || "";
  let q = `?limit=${PAGE}`;
  if (status) q += `&filter=${status}`;
  if (after) q += `&after=${encodeURIComponent(after)}`;
  const files = await api(`/v1/vector_stores/${id}/files${q}`);
  const jobs = await api(`/v1/vector_stores/${id}/jobs`).catch(() => ({ data: [] }));

  const settings = storeSettings(vs);
  const ingest = ingestPanel(vs, (await consoleConfig()).web_search);
  const filter = h("select", { id: "status-filter", onchange: (e) => {
    location.hash = `#/stores/${id}${e.target.value ? `?status=${e.target.value}` : ""}`;
  } }, STATUSES.map((s) => h("option", { value: s, selected: s === status }, s || "any status")));
  const table = filesTable(vs, files.data);
  const nav = h("p", {},
    after ? h("a", { href: `#/stores/${id}${status ? `?status=${status}` : ""}` }, "First page") : null,
    " ",
    files.has_more ? h("a", { href: `#/stores/${id}?${new URLSearchParams({ ...(status && { status }), after: files.last_id })}` }, "Next page") : null);
  show(
    h("p", {}, h("a", { href: "#/stores" }, "← Stores")),
    h("h1", {}, vs.name || vs.id),
    h("p", { class: "muted" }, `${vs.id} · ${vs.embedding_model} (${vs.dimensions}-d) · ${vs.backend} · ${vs.chunk_count} chunks · ${bytes(vs.usage_bytes)}`),
    settings,
    ingest,
    h("h2", {}, "Files"),
    h("div", { class: "row" }, h("label", { for: "status-filter" }, "Status", filter),
      h("a", { href: `#/search?store=${id}` }, "Search this store")),
    table,
    nav,
    jobs.data.length ? jobsTable(jobs.data) : null,
  );
  // Live status: refresh the rows while anything is still being ingested.
  if (files.data.some((f) => f.status === "in_progress")) {
    poll(async () => {
      const fresh = await api(`/v1/vector_stores/${id}/files${q}`);
      table.replaceWith(filesTable(vs, fresh.data, table));
      return fresh.data.some((f) => f.status === "in_progress");
    });
  }
}

function storeSettings(vs) {
  const name = h("input", { id: "store-name", value: vs.name || "", maxlength: 256 });
  const meta = h("textarea", { id: "store-meta", rows: 3 },
    Object.entries(vs.metadata || {}).map(([k, v]) => `${k}=${v}`).join("\n"));
  const days = h("input", { id: "store-expiry", type: "number", min: 1, max: 365,
    value: vs.expires_after ? vs.expires_after.days : "" });
  const note = h("p", { role: "alert", class: "error" });
  const save = async (e) => {
    e.preventDefault();
    const metadata = {};
    for (const line of meta.value.split("\n")) {
      const at = line.indexOf("=");
      if (at > 0) metadata[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const body = { name: name.value.trim() || null, metadata };
    body.expires_after = days.value ? { anchor: "last_active_at", days: Number(days.value) } : null;
    try {
      await api(`/v1/vector_stores/${vs.id}`, { method: "POST", body });
      toast("Saved");
      route();
    } catch (err) { note.textContent = err.message; }
  };
  const del = async () => {
    if (!(await confirmDialog(`Delete the store "${vs.name || vs.id}" and its chunks? Its files stay in /v1/files.`, "Delete store"))) return;
    await api(`/v1/vector_stores/${vs.id}`, { method: "DELETE" });
    toast("Store deleted");
    location.hash = "#/stores";
  };
  return h("details", { class: "panel" }, h("summary", {}, "Settings"),
    h("form", { onsubmit: save },
      h("div", { class: "row" },
        h("label", { for: "store-name" }, "Name", name),
        h("label", { for: "store-expiry" }, "Expire after idle days (empty: never)", days)),
      h("label", { for: "store-meta" }, "Metadata (key=value per line)", meta),
      h("div", { class: "row" }, h("button", { type: "submit" }, "Save settings"),
        h("button", { type: "button", class: "danger", onclick: del }, "Delete store")),
      note));
}

function fileRow(vs, f) {
  const attrs = Object.entries(f.attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  const err = f.last_error ? h("div", { class: "error" }, f.last_error.message) : null;
  const warn = (f.warnings || []).map((w) => h("div", { class: "muted" }, w));
  const ext = (f.filename || "").includes(".") ? f.filename.split(".").pop() : "";
  const editAttrs = async () => {
    const input = prompt("Attributes (key=value, comma separated)", attrs);
    if (input === null) return;
    const attributes = {};
    for (const part of input.split(",")) {
      const at = part.indexOf("=");
      if (at > 0) attributes[part.slice(0, at).trim()] = part.slice(at + 1).trim();
    }
    await api(`/v1/vector_stores/${vs.id}/files/${f.id}`, { method: "POST", body: { attributes } });
    toast("Attributes saved");
    route();
  };
  const reingest = async () => {
    await api(`/v1/vector_stores/${vs.id}/files/${f.id}`, { method: "DELETE" });
    await api(`/v1/vector_stores/${vs.id}/files`, { method: "POST", body: { file_id: f.id, attributes: f.attributes } });
    toast("Re-ingesting");
    route();
  };
  const remove = async () => {
    if (!(await confirmDialog(`Remove "${f.filename || f.id}" from this store?`, "Remove file"))) return;
    await api(`/v1/vector_stores/${vs.id}/files/${f.id}`, { method: "DELETE" });
    toast("File removed");
    route();
  };
  return h("tr", { "data-file": f.id },
    h("td", {}, h("a", { href: `#/stores/${vs.id}/files/${f.id}` }, f.filename || f.id)),
    h("td", {}, h("span", { class: `status-${f.status}` }, f.status.replace("_", " ")), err, warn),
    h("td", {}, attrs),
    h("td", {}, f.chunk_count === undefined ? "" : String(f.chunk_count)),
    h("td", {}, bytes(f.bytes)),
    h("td", {}, ext),
    h("td", {},
      h("button", { type: "button", class: "link", onclick: editAttrs, "aria-label": `Edit attributes of ${f.filename}` }, "Attributes"), " ",
      h("button", { type: "button", class: "link", onclick: reingest, "aria-label": `Re-ingest ${f.filename}` }, "Re-ingest"), " ",
      h("button", { type: "button", class: "link", onclick: remove, "aria-label": `Remove ${f.filename}` }, "Remove")));
}

function filesTable(vs, files) {
  if (!files.length) return h("p", { id: "files" }, "No files.");
  return h("div", { class: "table-wrap", id: "files" }, h("table", {},
    h("thead", {}, h("tr", {}, ["File", "Status", "Attributes", "Chunks", "Size", "Type", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, files.map((f) => fileRow(vs, f)))));
}

function jobsTable(jobs) {
  return h("section", {}, h("h2", {}, "Jobs"), h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Job", "Kind", "Status", "Progress", "Started"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, jobs.map((j) => h("tr", {},
      h("td", {}, j.id), h("td", {}, j.kind), h("td", {}, j.status, j.error ? h("div", { class: "error" }, j.error) : null),
      h("td", {}, h("progress", { max: j.total || 1, value: j.progress, "aria-label": `${j.kind} progress` }), ` ${j.progress}/${j.total}`),
      h("td", {}, when(j.created_at))))))));
}

// Upload, then attach, then watch the ingestion: one progress bar per file.
async function ingestFile(vs, file, list) {
  const bar = h("progress", { max: 100, value: 0, "aria-label": `${file.name} progress` });
  const state = h("span", {}, "uploading");
  list.append(h("li", { "data-upload": file.name }, `${file.name} `, bar, " ", state));
  try {
    const f = await upload(file, (p) => { bar.value = Math.round(p * 50); });
    bar.value = 50;
    state.textContent = "ingesting";
    await api(`/v1/vector_stores/${vs.id}/files`, { method: "POST", body: { file_id: f.id } });
    for (;;) {
      const sf = await api(`/v1/vector_stores/${vs.id}/files/${f.id}`);
      if (sf.status !== "in_progress") {
        bar.value = 100;
        state.textContent = sf.status === "completed" ? "completed" : `${sf.status}: ${sf.last_error ? sf.last_error.message : ""}`;
        state.className = `status-${sf.status}`;
        return;
      }
      bar.value = Math.min(95, bar.value + 5);
      await new Promise((r) => setTimeout(r, 500));
    }
  } catch (err) {
    state.textContent = `failed: ${err.message}`;
    state.className = "status-failed";
  }
}

function ingestPanel(vs, web) {
  const list = h("ul", { id: "uploads", "aria-label": "Uploads" });
  const done = async (jobs) => { await Promise.all(jobs); route(); };
  const picker = h("input", { id: "file-picker", type: "file", multiple: true, onchange: (e) => {
    stopPolling();
    done([...e.target.files].map((f) => ingestFile(vs, f, list)));
  } });
  const drop = h("div", { class: "drop", ondragover: (e) => { e.preventDefault(); drop.classList.add("over"); },
    ondragleave: () => drop.classList.remove("over"),
    ondrop: (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      stopPolling();
      done([...e.dataTransfer.files].map((f) => ingestFile(vs, f, list)));
    } },
  "Drop files here, or ", h("label", { for: "file-picker", class: "check" }, "choose files", picker));
  const text = h("textarea", { id: "paste-text", rows: 3 });
  const title = h("input", { id: "paste-title", value: "pasted.txt" });
  const url = h("input", { id: "add-url", type: "url", placeholder: "https://…" });
  // Off unless a provider is configured: the form stays visible, disabled, naming the settings.
  const webOn = Boolean(web && web.enabled);
  const webHint = webOn ? null : h("p", { id: "web-search-off", class: "muted" },
    "Web search is off on this gateway. To turn it on, set ",
    ...((web && web.settings) || ["knowledge.web_search.provider", "knowledge.web_search.url"])
      .flatMap((name, i) => [i ? " and " : "", h("code", {}, name)]),
    ".");
  const query = h("input", { id: "web-query", disabled: !webOn, "aria-describedby": webOn ? null : "web-search-off" });
  const note = h("p", { role: "alert", class: "error" });
  const pasted = async (e) => {
    e.preventDefault();
    if (!text.value.trim()) return;
    const file = new File([text.value], title.value.trim() || "pasted.txt", { type: "text/plain" });
    await ingestFile(vs, file, list);
    text.value = "";
    route();
  };
  const fetchUrl = async (e) => {
    e.preventDefault();
    try {
      await api(`/v1/vector_stores/${vs.id}/urls`, { method: "POST", body: { url: url.value } });
      toast("Fetching the page");
      route();
    } catch (err) { note.textContent = err.message; }
  };
  const search = async (e) => {
    e.preventDefault();
    try {
      const job = await api(`/v1/vector_stores/${vs.id}/web_search`, { method: "POST", body: { query: query.value } });
      toast(`Web search started (${job.id})`);
      route();
    } catch (err) { note.textContent = err.message; }
  };
  return h("details", { class: "panel", open: true }, h("summary", {}, "Ingest"),
    drop, list,
    h("form", { onsubmit: pasted },
      h("label", { for: "paste-text" }, "Paste text", text),
      h("div", { class: "row" }, h("label", { for: "paste-title" }, "File name", title),
        h("button", { type: "submit" }, "Add text"))),
    h("form", { class: "inline", onsubmit: fetchUrl },
      h("label", { for: "add-url" }, "Web page URL", url), h("button", { type: "submit" }, "Add URL")),
    h("form", { class: "inline", onsubmit: search },
      h("label", { for: "web-query" }, "Web search", query),
      h("button", { type: "submit", disabled: !webOn }, "Search and ingest")),
    webHint,
    note);
}

async function chunksPage(vsId, fileId, params) {
  const [vs, sf] = await Promise.all([api(`/v1/vector_stores/${vsId}`), api(`/v1/vector_stores/${vsId}/files/${fileId}`)]);
  const after = params.get("after");
  const page = await api(`/v1/vector_stores/${vsId}/files/${fileId}/chunks?limit=100${after ? `&after=${after}` : ""}`);
  const focus = params.get("chunk");
  const items = page.data.map((c) => {
    const where = [c.page !== null && c.page !== undefined ? `page ${c.page}` : "",
      c.sheet ? `sheet ${c.sheet}` : "", c.row !== null && c.row !== undefined ? `row ${c.row}` : "",
      c.heading ? c.heading : ""].filter(Boolean).join(" · ");
    return h("article", { class: "chunk", id: `chunk-${c.id}`, tabindex: -1, "aria-label": `Chunk ${c.position + 1}` },
      h("div", { class: "muted" }, `#${c.position + 1} · chunk ${c.id} · ${c.token_count} tokens${where ? " · " + where : ""}`),
      h("pre", {}, c.text));
  });
  show(
    h("p", {}, h("a", { href: `#/stores/${vsId}` }, `← ${vs.name || vs.id}`)),
    h("h1", {}, `Chunks of ${sf.filename || fileId}`),
    h("p", { class: "muted" }, `${sf.status} · ${sf.chunk_count ?? page.data.length} chunks`),
    items.length ? items : h("p", {}, "No chunks."),
    page.has_more ? h("p", {}, h("a", { href: `#/stores/${vsId}/files/${fileId}?after=${page.next_after}` }, "More chunks")) : null,
  );
  if (focus) {
    const el = document.getElementById(`chunk-${focus}`);
    if (el) { el.style.outline = "3px solid #ffbf47"; el.focus(); el.scrollIntoView(); }
  }
}

async function searchPage(params) {
  const stores = (await api("/v1/vector_stores?limit=100")).data;
  const store = h("select", { id: "search-store" }, stores.map((s) => h("option", { value: s.id, selected: s.id === params.get("store") }, s.name || s.id)));
  const query = h("input", { id: "search-query", required: true, size: 40 });
  const filters = h("textarea", { id: "search-filters", rows: 2, placeholder: '{"type": "eq", "key": "team", "value": "support"}' });
  const k = h("input", { id: "search-k", type: "number", min: 1, max: 50, value: 10 });
  const threshold = h("input", { id: "search-threshold", type: "number", min: 0, max: 1, step: 0.05, value: 0 });
  const rerank = h("input", { id: "search-rerank", type: "checkbox", checked: true });
  const mode = h("select", { id: "search-mode" }, ["hybrid", "dense", "keyword", "sparse"].map((m) => h("option", { value: m }, m)));
  const out = h("section", { id: "results", "aria-live": "polite" });
  const run = async (e) => {
    e.preventDefault();
    out.replaceChildren(h("p", {}, "Searching…"));
    try {
      const body = { query: query.value, max_num_results: Number(k.value), mode: mode.value,
        ranking_options: { score_threshold: Number(threshold.value), ...(rerank.checked ? {} : { ranker: "none" }) } };
      if (filters.value.trim()) body.filters = JSON.parse(filters.value);
      const res = await api(`/v1/vector_stores/${store.value}/search`, { method: "POST", body });
      out.replaceChildren(h("h2", {}, `${res.data.length} result(s)`), ...res.data.map((r, i) => {
        const s = r.scores || {};
        return h("article", { class: "hit", "aria-label": `Result ${i + 1}` },
          h("div", {}, h("strong", {}, `${i + 1}. `), h("a", { href: `#/stores/${store.value}/files/${r.file_id}?chunk=${r.chunk_id}` }, r.filename),
            h("span", { class: "muted" }, ` · chunk ${r.chunk_id}${r.page !== null && r.page !== undefined ? ` · page ${r.page}` : ""}${r.heading ? ` · ${r.heading}` : ""}`)),
          h("div", { class: "scores" }, h("span", {}, "score ", h("b", {}, fmt(r.score))),
            h("span", {}, `dense ${fmt(s.dense)}`), h("span", {}, `keyword ${fmt(s.keyword)}`),
            h("span", {}, `fused ${fmt(s.fused)}`), h("span", {}, `rerank ${fmt(s.rerank)}`)),
          h("pre", {}, r.content.map((c) => c.text).join("\n")));
      }));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  show(h("h1", {}, "Retrieval playground"),
    stores.length ? h("form", { class: "panel", onsubmit: run },
      h("div", { class: "row" }, h("label", { for: "search-store" }, "Store", store),
        h("label", { for: "search-query" }, "Query", query)),
      h("label", { for: "search-filters" }, "Filters (JSON, optional)", filters),
      h("div", { class: "row" }, h("label", { for: "search-k" }, "Top k", k),
        h("label", { for: "search-threshold" }, "Score threshold", threshold),
        h("label", { for: "search-mode" }, "Mode", mode),
        h("label", { class: "check", for: "search-rerank" }, rerank, "Rerank"),
        h("button", { type: "submit" }, "Search"))) : h("p", {}, "Create a store first."),
    out);
}

// -- chat --------------------------------------------------------------------------------

const chatState = { messages: [] };

function snippet(kind, body) {
  const origin = location.origin;
  // The same project as the console's calls (an admin that picked one).
  const project = sessionStorage.getItem(PROJECT);
  if (kind === "curl") {
    const narrow = project ? `  -H "OpenAI-Project: ${project}" \\\n` : "";
    return `curl ${origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $RWKV_RAG_KEY" \\\n${narrow}  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(body).replaceAll("'", "'\\''")}'`;
  }
  const extra = {};
  for (const k of ["state"]) if (body[k]) extra[k] = body[k];
  return [
    "from openai import OpenAI",
    `client = OpenAI(base_url="${origin}/v1", api_key="..."${project ? `, project=${JSON.stringify(project)}` : ""})`,
    "reply = client.chat.completions.create(",
    `    model=${JSON.stringify(body.model)},`,
    `    messages=${JSON.stringify(body.messages)},`,
    `    max_tokens=${body.max_tokens},`,
    Object.keys(extra).length ? `    extra_body=${JSON.stringify(extra)},` : null,
    ")",
    "print(reply.choices[0].message.content)",
  ].filter(Boolean).join("\n");
}

function withCitations(text, citations) {
  // "[n]" markers become links to the cited chunk.
  const byIndex = new Map((citations || []).map((c) => [c.index, c]));
  const out = [];
  let last = 0;
  for (const m of text.matchAll(/\[(\d+)\]/g)) {
    const c = byIndex.get(Number(m[1]));
    if (!c) continue;
    out.push(text.slice(last, m.index));
    out.push(h("a", { href: `#/stores/${c.vector_store_id}/files/${c.file_id}?chunk=${c.chunk_id}`, title: c.filename }, m[0]));
    last = m.index + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function citationList(citations) {
  if (!citations || !citations.length) return null;
  return h("ol", { class: "muted", "aria-label": "Sources" }, citations.map((c) =>
    h("li", { value: c.index }, h("a", { href: `#/stores/${c.vector_store_id}/files/${c.file_id}?chunk=${c.chunk_id}` }, c.filename), ` · score ${fmt(c.score)}`)));
}

async function chatPage() {
  const all = await models();
  const chat = all.filter((m) => m.kind === "chat");
  const model = h("select", { id: "chat-model" }, chat.map((m) =>
    h("option", { value: m.id }, m.engine === "rag-profile" ? `${m.id} (knowledge profile)` : m.id)));
  const stateSel = h("select", { id: "chat-state" });
  const fillStates = () => {
    const m = chat.find((x) => x.id === model.value);
    const states = (m && m.details && m.details.states) || [];
    stateSel.replaceChildren(h("option", { value: "" }, "none"), ...states.map((s) => h("option", { value: s }, s)));
    stateSel.disabled = !states.length;
  };
  model.addEventListener("change", fillStates);
  fillStates();
  const maxTokens = h("input", { id: "chat-max", type: "number", min: 1, max: 4096, value: 200 });
  const input = h("textarea", { id: "chat-input", rows: 2, required: true });
  const log = h("div", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
  const code = h("pre", { id: "chat-snippet", hidden: true });
  const body = () => {
    const b = { model: model.value, messages: chatState.messages.map(({ role, content }) => ({ role, content })), max_tokens: Number(maxTokens.value), stream: true };
    if (stateSel.value) b.state = stateSel.value;
    return b;
  };
  const render = () => {
    log.replaceChildren(...chatState.messages.map((m) => h("div", { class: `msg ${m.role}`, "aria-label": m.role === "user" ? "You" : "Assistant" },
      m.role === "assistant" ? withCitations(m.content, m.citations) : m.content,
      m.role === "assistant" ? citationList(m.citations) : null)));
  };
  const send = async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    chatState.messages.push({ role: "user", content: text });
    input.value = "";
    const reply = { role: "assistant", content: "", citations: [] };
    const req = body();
    chatState.messages.push(reply);
    render();
    try {
      const r = await fetch("/v1/chat/completions", { method: "POST", headers: { ...authHeaders(), "Content-Type": "application/json" }, body: JSON.stringify(req) });
      if (!r.ok) {
        const err = await r.json().catch(() => ({}));
        if (r.status === 401) askKey("That key was rejected.");
        throw new Error((err.error && err.error.message) || `HTTP ${r.status}`);
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, at);
          buf = buf.slice(at + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.citations) reply.citations = chunk.citations;
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) reply.content += delta.content;
          }
        }
        render();
      }
    } catch (err) {
      chatState.messages.pop();
      render();
      log.append(errorBox(err));
      return;
    }
    render();
  };
  const copy = (kind) => async () => {
    const req = body();
    req.stream = false;
    code.textContent = snippet(kind, req);
    code.hidden = false;
    try { await navigator.clipboard.writeText(code.textContent); toast("Copied"); } catch { /* shown instead */ }
  };
  show(h("h1", {}, "Chat playground"),
    h("form", { class: "panel", onsubmit: send },
      h("div", { class: "row" }, h("label", { for: "chat-model" }, "Model or profile", model),
        h("label", { for: "chat-state" }, "State", stateSel),
        h("label", { for: "chat-max" }, "Max tokens", maxTokens)),
      h("label", { for: "chat-input" }, "Message", input),
      h("div", { class: "row" }, h("button", { type: "submit" }, "Send"),
        h("button", { type: "button", class: "secondary", onclick: () => { chatState.messages = []; render(); } }, "Clear"),
        h("button", { type: "button", class: "secondary", onclick: copy("curl") }, "Copy as curl"),
        h("button", { type: "button", class: "secondary", onclick: copy("python") }, "Copy as Python"))),
    log, code);
  render();
}

// -- models and health -------------------------------------------------------------------

function metricLines(text, names) {
  const out = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    if (names.some((n) => line.startsWith(n))) out.push(line);
  }
  return out;
}

function servedOn(m) {
  const d = m.details || {};
  if (d.upstreams) {  // a remote model: its upstreams and their health
    const up = d.upstreams.filter((u) => u.healthy).length;
    const each = d.upstreams.map((u) => `${u.url} ${u.healthy ? "up" : "down"}, ${u.in_flight} in flight`);
    return `${up}/${d.upstreams.length} upstreams up: ${each.join("; ")}`;
  }
  return d.device || d.strategy || (m.engine === "rag-profile" ? `profile of ${d.model}` : "");
}

async function modelsPage() {
  const [list, health, metrics, stores] = await Promise.all([
    models(),
    fetch("/health").then((r) => r.json()),
    fetch("/metrics", { headers: authHeaders() }).then((r) => (r.ok ? r.text() : "")),
    api("/v1/vector_stores?limit=100"),
  ]);
  const jobs = (await Promise.all(stores.data.map((s) => api(`/v1/vector_stores/${s.id}/jobs`).then((j) => j.data).catch(() => [])))).flat();
  const rows = list.map((m) => {
    const hm = (health.models || {})[m.id] || {};
    return h("tr", {}, h("td", {}, m.id), h("td", {}, m.kind || ""), h("td", {}, m.engine || ""),
      h("td", { class: "long" }, servedOn(m)),
      h("td", {}, m.engine === "rag-profile" ? "" : hm.healthy ? "healthy" : hm.status || m.status || ""));
  });
  const figures = metricLines(metrics, ["rwkv_rag_prefix_cache_", "rwkv_rag_batch_size_sum", "rwkv_rag_batch_size_count", "rwkv_rag_queue_depth", "rwkv_rag_kb_", "rwkv_rag_upstream_requests", "rwkv_rag_upstream_errors", "rwkv_rag_upstream_in_flight", "rwkv_rag_remote_affinity"]);
  show(h("h1", {}, "Models and health"),
    h("p", {}, `Gateway: ${health.status}`),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Model", "Kind", "Engine", "Served on", "Health"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))),
    h("h2", {}, "Prefix cache, batching, queues and upstreams (/metrics)"),
    figures.length ? h("pre", { id: "metrics" }, figures.join("\n")) : h("p", {}, "No figures yet."),
    jobs.length ? jobsTable(jobs) : h("p", {}, "No re-embed or web-search jobs."));
}

// -- routing -----------------------------------------------------------------------------

async function route() {
  stopPolling();
  const [path, query] = (location.hash.slice(1) || "/stores").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("header nav a")) {
    a.toggleAttribute("aria-current", false);
    if (a.getAttribute("href") === `#/${parts[0]}`) a.setAttribute("aria-current", "page");
  }
  try {
    if (!me) await whoami();
    if (parts[0] === "stores" && parts.length === 1) await storesPage();
    else if (parts[0] === "stores" && parts.length === 2) await storePage(parts[1], params);
    else if (parts[0] === "stores" && parts[2] === "files" && parts[3]) await chunksPage(parts[1], parts[3], params);
    else if (parts[0] === "search") await searchPage(params);
    else if (parts[0] === "chat") await chatPage();
    else if (parts[0] === "models") await modelsPage();
    else show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/stores" }, "Go to stores")));
    document.title = `${document.querySelector("main h1")?.textContent || "Console"} · rwkv-rag console`;
  } catch (err) {
    if (err.status === 401) return; // the key prompt is showing
    show(h("h1", {}, "Something went wrong"), errorBox(err));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => askKey(""));
  document.getElementById("project-select").addEventListener("change", switchProject);
  // The skip link focuses the content without touching the hash (the router's).
  document.querySelector(".skip").addEventListener("click", (e) => {
    e.preventDefault();
    $main().focus();
  });
  document.getElementById("signout").hidden = !sessionStorage.getItem(KEY);
  route();
});
