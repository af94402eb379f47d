// ragsvc web page. No framework, no network resource but this service. Every piece of document text
// and every filename is put on the page with textContent, never as HTML, so nothing in them can run.
"use strict";

// With API keys on, the page's requests carry the sign-in cookie; once it is refused (revoked, or
// signed out elsewhere) go back to the sign-in form instead of showing errors.
const nativeFetch = window.fetch.bind(window);
window.fetch = async (...args) => {
  const resp = await nativeFetch(...args);
  if (resp.status === 401) window.location.assign("/login");
  return resp;
};

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const collection = () => $("collection").value.trim() || "default";

async function problemText(resp) {
  try {
    const body = await resp.json();
    return body.detail || body.title || `HTTP ${resp.status}`;
  } catch (_) {
    return `HTTP ${resp.status}`;
  }
}

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

// ---- readiness --------------------------------------------------------------------------------
async function pollReady() {
  const pill = $("ready");
  try {
    const resp = await fetch("/ready");
    if (resp.ok) {
      pill.textContent = "ready";
      pill.className = "pill ok";
      return;
    }
    pill.textContent = await problemText(resp);
  } catch (_) {
    pill.textContent = "service unreachable";
  }
  pill.className = "pill";
  setTimeout(pollReady, 3000);
}

// ---- documents --------------------------------------------------------------------------------
const rows = new Map(); // document id -> <tr>

function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function renderRow(doc) {
  let tr = rows.get(doc.id);
  if (!tr) {
    tr = el("tr", { "data-id": doc.id });
    rows.set(doc.id, tr);
    $("docs").tBodies[0].prepend(tr);
  }
  const status = el("td", { class: `state status-${doc.status}` });
  status.append(el("span", { class: "status", text: doc.stage ? `${doc.status}: ${doc.stage}` : doc.status }));
  if (doc.status === "processing" && doc.progress != null) {
    status.append(" ", el("progress", { max: "1", value: String(doc.progress) }));
  }
  if (doc.status === "failed" && doc.error) status.append(el("span", { class: "reason", text: doc.error }));
  const del = el("button", { class: "small", text: "Delete", title: "Delete this document" });
  del.addEventListener("click", () => deleteDoc(doc));
  // data-label names a number where the narrow layout (style.css) shows rows as cards without a header.
  tr.replaceChildren(
    el("td", { class: "file", text: doc.filename }),
    status,
    el("td", { class: "meta", "data-label": doc.pages === 1 ? "page" : "pages", text: doc.pages ?? "" }),
    el("td", { class: "meta", "data-label": doc.chunks === 1 ? "chunk" : "chunks", text: doc.chunks ?? "" }),
    el("td", { class: "meta", text: fmtSize(doc.size_bytes) }),
    el("td", { class: "meta", text: new Date(doc.created_at).toLocaleString() }),
    el("td", { class: "actions" }, del),
  );
  if (doc.status === "queued" || doc.status === "processing") setTimeout(() => refreshDoc(doc.id), 1000);
}

async function refreshDoc(id) {
  const resp = await fetch(`/v1/documents/${encodeURIComponent(id)}`);
  if (resp.ok) renderRow(await resp.json());
  else if (resp.status === 404) { rows.get(id)?.remove(); rows.delete(id); }
}

async function loadDocs() {
  rows.clear();
  $("docs").tBodies[0].replaceChildren();
  const resp = await fetch(`/v1/documents?collection=${encodeURIComponent(collection())}`);
  if (!resp.ok) return;
  for (const doc of (await resp.json()).documents) renderRow(doc);
}

async function loadCollections() {
  const resp = await fetch("/v1/collections");
  if (!resp.ok) return;
  const list = $("collections");
  list.replaceChildren(...(await resp.json()).collections.map((c) => el("option", { value: c.name })));
}

async function deleteDoc(doc) {
  if (!confirm(`Delete "${doc.filename}" and everything indexed from it?`)) return;
  const resp = await fetch(`/v1/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
  if (resp.ok || resp.status === 404) { rows.get(doc.id)?.remove(); rows.delete(doc.id); }
  else showError($("upload-error"), await problemText(resp));
}

// A file's path is its identity in the collection. From a chosen folder: the path below that folder
// (as `ragsvc ingest FOLDER` sends it), so "docs/guide/README.md" goes up as "guide/README.md".
const SUFFIXES = [".pdf", ".docx", ".pptx", ".html", ".htm", ".eml", ".md", ".markdown", ".txt"];
const pathOf = (f) => f.webkitRelativePath ? f.webkitRelativePath.split("/").slice(1).join("/") : f.name;
const inFolder = (f) => SUFFIXES.some((s) => f.name.toLowerCase().endsWith(s))
  && !pathOf(f).split("/").some((part) => part.startsWith("."));

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  form.append("collection", collection());
  for (const f of files) form.append("files", f, pathOf(f));
  showError($("upload-error"), "");
  const resp = await fetch("/v1/documents", { method: "POST", body: form });
  if (!resp.ok) return showError($("upload-error"), await problemText(resp));
  for (const doc of (await resp.json()).documents) renderRow(doc);
  loadCollections();
}

// ---- asking -----------------------------------------------------------------------------------
let current = null; // the final answer, for citation lookups

function showPassage(n) {
  const pop = $("passage-pop");
  const p = current?.passages.find((x) => x.n === n);
  if (!p) return;
  const where = [p.filename, p.page ? `page ${p.page}${p.page_label ? ` (printed ${p.page_label})` : ""}` : null,
                 p.heading_path || null].filter(Boolean).join(" · ");
  pop.replaceChildren(el("div", { class: "where", text: `[${n}] ${where}` }), el("div", { text: p.text }));
  pop.hidden = false;
}

function renderAnswer(final) {
  const answer = $("answer");
  const supported = new Map(final.citations.map((c) => [c.n, c.supported]));
  answer.replaceChildren();
  // Split on markers; text goes in as text nodes, markers become buttons that reveal their passage.
  for (const part of final.answer.split(/(\[\d+\])/)) {
    const m = part.match(/^\[(\d+)\]$/);
    if (m) {
      const n = Number(m[1]);
      const b = el("button", { class: supported.get(n) === false ? "cite unsupported" : "cite", text: `[${n}]`,
                               title: "Show the passage", "data-n": String(n) });
      b.addEventListener("click", () => showPassage(n));
      b.addEventListener("mouseenter", () => showPassage(n));
      answer.append(b);
    } else {
      answer.append(document.createTextNode(part));
    }
  }
  const sources = $("sources");
  sources.replaceChildren(...final.citations.map((c) => {
    const li = el("li", { value: String(c.n) });
    const link = el("a", { href: "#", text: c.filename });
    link.addEventListener("click", (e) => { e.preventDefault(); showPassage(c.n); });
    li.append(link, c.page ? `, page ${c.page}` : "", c.supported ? "" : " (not supported by its passage)",
              c.inferred ? " (attributed)" : "");
    return li;
  }));
  $("sources-title").hidden = final.citations.length === 0;
  // A non-answer lists the closest passages instead, so a person can judge what the documents do say.
  const related = final.answered ? [] : (final.related || []);
  $("related").replaceChildren(...related.map((r) => {
    const li = el("li");
    li.append(el("strong", { text: r.filename }), r.page ? `, page ${r.page}` : "",
              el("div", { class: "snippet", text: r.text.length > 300 ? `${r.text.slice(0, 300)}…` : r.text }));
    return li;
  }));
  $("related-title").hidden = related.length === 0;
  const t = final.timings;
  $("stats").textContent = `${final.model} · ${final.usage.prompt_tokens} prompt + ${final.usage.completion_tokens} ` +
    `completion tokens · ${(t.total_ms / 1000).toFixed(1)} s` + (t.first_token_ms ? ` · first token ${(t.first_token_ms / 1000).toFixed(2)} s` : "");
  if (final.reasoning) {
    $("reasoning").textContent = final.reasoning;
    $("reasoning-panel").hidden = false;
  }
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  const button = $("ask-button");
  button.disabled = true;
  showError($("error"), "");
  $("result").hidden = false;
  $("answer").replaceChildren();
  $("sources").replaceChildren();
  $("sources-title").hidden = true;
  $("related").replaceChildren();
  $("related-title").hidden = true;
  $("passage-pop").hidden = true;
  $("reasoning-panel").hidden = true;
  $("reasoning").textContent = "";
  $("stats").textContent = "";
  $("mode-line").textContent = "retrieving…";
  current = null;
  try {
    const resp = await fetch("/v1/ask", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ question, mode: $("mode").value, collection: collection(), stream: true,
                             include_reasoning: $("show-reasoning").checked }),
    });
    if (!resp.ok) throw new Error(await problemText(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // SSE lines may end in \r\n (Litestar's default) or \n: normalise before splitting events.
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (err) {
    showError($("error"), err.message || String(err));
    $("mode-line").textContent = "";
  } finally {
    button.disabled = false;
  }
}

function handleEvent(block) {
  let name = "message";
  let data = "";
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const payload = JSON.parse(data);
  if (name === "retrieval") {
    $("mode-line").textContent = `mode ${payload.mode} — ${payload.mode_reason} · ${payload.passages.length} passages`;
  } else if (name === "answer") {
    $("answer").append(document.createTextNode(payload.delta));
  } else if (name === "reasoning") {
    $("reasoning-panel").hidden = false;
    $("reasoning").append(document.createTextNode(payload.delta));
  } else if (name === "final") {
    current = payload;
    if (!payload.answered) $("mode-line").textContent = `mode ${payload.mode} — ${payload.mode_reason}`;
    renderAnswer(payload);
  } else if (name === "error") {
    showError($("error"), payload.detail);
  }
}

// ---- wiring -----------------------------------------------------------------------------------
$("ask-form").addEventListener("submit", ask);
$("files").addEventListener("change", (e) => upload([...e.target.files]));
$("folder").addEventListener("change", (e) => upload([...e.target.files].filter(inFolder)));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); upload([...e.dataTransfer.files]); });
$("collection").addEventListener("change", loadDocs);
pollReady();
loadCollections();
loadDocs();
