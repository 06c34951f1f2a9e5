// Panoptes web UI: three tabs over the HTTP API (/api/openapi.json).
// Plain browser JavaScript, no build step; served from the binary.
"use strict";

const $ = (sel) => document.querySelector(sel);

// ---------------------------------------------------------------- token
// With `[security] tokens_file` every API call needs `Authorization: Bearer
// TOKEN`. The page keeps the token in sessionStorage (gone with the tab) and
// sends it as that header on every request it makes; never in a URL.
const TOKEN_KEY = "panoptes.token";
let memoryToken = ""; // where sessionStorage is not available
function getToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (_) { return memoryToken; }
}
function setToken(t) {
  memoryToken = t;
  try {
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) { /* memoryToken it is */ }
}

const TOKEN_HINT = "`panoptes token --role user --name NAME` makes one";

/** Open the token control and put the cursor in it. */
function openTokenForm() {
  $("#token-form").hidden = false;
  $("#token-btn").setAttribute("aria-expanded", "true");
  $("#token-input").focus();
}

/** An API call answered 401 or 403: say what to do, open the token control.
 *  Nothing is retried: the user saves a token, and the page reloads its data once. */
function authProblem(status) {
  let msg;
  if (status === 403) {
    msg = "This token may not do that (403): use a token with the needed role. Click Token to change it.";
  } else if (getToken()) {
    msg = `The cluster refused this token (401): click Token and paste a valid one (${TOKEN_HINT}).`;
  } else {
    msg = `This cluster needs a token: click Token and paste one (${TOKEN_HINT}).`;
  }
  const box = $("#auth-message");
  box.textContent = msg;
  box.hidden = false;
  box.dataset.status = String(status);
  openTokenForm();
}

/** fetch, with `Authorization: Bearer TOKEN` when a token is set. Every
 *  request of the page goes through here. */
async function authFetch(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const token = getToken();
  if (token) headers.set("authorization", `Bearer ${token}`);
  const resp = await fetch(path, { ...opts, headers });
  if (resp.status === 401 || resp.status === 403) authProblem(resp.status);
  return resp;
}

/** The error of a refused response: Error(`STATUS: message from {"error"}`), with .status. */
async function responseError(resp) {
  const text = await resp.text().catch(() => "");
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  const msg = data && data.error ? data.error : text || resp.statusText;
  const err = new Error(`${resp.status}: ${msg}`);
  err.status = resp.status;
  return err;
}

/** Call the API; resolves to parsed JSON, throws Error(message from {"error"}). */
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await authFetch(path, opts);
  } catch (e) {
    throw new Error(`cannot reach the server (${e.message}); is the coordinator running?`);
  }
  if (!resp.ok) throw await responseError(resp);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  return data;
}

/** Server-sent events read with fetch (EventSource cannot send the token):
 *  `handlers` maps an event name to fn({type, data}); `onError(err, retrying)`
 *  hears of a refused request (no retry, as EventSource) or a lost connection
 *  (reconnects after a pause, as EventSource). Returns {close()}. */
function openEvents(path, handlers, onError = () => {}) {
  const ctrl = new AbortController();
  const src = { closed: false, close() { this.closed = true; ctrl.abort(); } };
  let retryMs = 3000;
  const dispatch = (type, data) => {
    const h = handlers[type || "message"];
    if (h && !src.closed) h({ type: type || "message", data });
  };
  const connect = async () => {
    let resp;
    try {
      resp = await authFetch(path, { headers: { accept: "text/event-stream" }, cache: "no-store", signal: ctrl.signal });
    } catch (e) {
      return lost(e);
    }
    if (!resp.ok) {
      if (!src.closed) onError(await responseError(resp), false);
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "", type = "", data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") { // a blank line ends one event
            if (data.length) dispatch(type, data.join("\n"));
            type = "";
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue; // a comment (keep-alive)
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let v = colon < 0 ? "" : line.slice(colon + 1);
          if (v.startsWith(" ")) v = v.slice(1);
          if (field === "event") type = v;
          else if (field === "data") data.push(v);
          else if (field === "retry" && /^\d+$/.test(v)) retryMs = Number(v);
        }
        if (src.closed) return;
      }
    } catch (e) {
      return lost(e);
    }
    lost(new Error("the stream closed"));
  };
  const lost = (e) => {
    if (src.closed) return;
    onError(e, true);
    setTimeout(() => { if (!src.closed) connect(); }, retryMs);
  };
  connect();
  return src;
}

/** Show the API picture at `url` in `img`. Without a token the browser loads
 *  it itself; with one it is fetched with the header and shown from a blob:
 *  URL (an <img> cannot send headers). A failure fires the img's "error". */
/**
 * Load a picture through fetch (with the token, when one is set) and show it.
 * A frame asked for with ?nearest=1 may be drawn from another frame: the
 * answer's x-frame header says which, and img.onframe(n) hears it.
 */
async function setImage(img, url) {
  const seq = (img.loadSeq = (img.loadSeq || 0) + 1);
  const failed = () => { if (seq === img.loadSeq) img.dispatchEvent(new Event("error")); };
  let blob, drawn;
  try {
    const resp = await authFetch(url);
    if (!resp.ok) return failed();
    drawn = resp.headers.get("x-frame");
    blob = await resp.blob();
  } catch (_) {
    return failed();
  }
  if (seq !== img.loadSeq) return; // a newer picture was asked for meanwhile
  if (drawn !== null && img.onframe) img.onframe(Number(drawn));
  const obj = URL.createObjectURL(blob);
  const done = () => URL.revokeObjectURL(obj); // the decoded picture stays
  img.addEventListener("load", done, { once: true });
  img.addEventListener("error", done, { once: true });
  img.src = obj;
}

/** Thumbnails load when scrolled into view (as loading="lazy" would). */
const lazyImages = "IntersectionObserver" in window
  ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      lazyImages.unobserve(e.target);
      setImage(e.target, e.target.dataset.src);
    }
  }, { rootMargin: "200px" })
  : null;
function setImageLazy(img, url) {
  img.dataset.src = url;
  if (lazyImages) lazyImages.observe(img); else setImage(img, url);
}

function showError(el, err) {
  el.textContent = err ? String(err.message || err) : "";
  el.hidden = !err;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

// A job keeps a picture per --pictures-every of stream time (1 s by default),
// not of every frame: `nearest` draws the nearest frame that has one.
const frameUrl = (job, n, nearest = false) => `/api/jobs/${encodeURIComponent(job)}/frames/${n}.png${nearest ? "?nearest=1" : ""}`;

// ---------------------------------------------------------------- tabs
const tabs = ["submit", "webcam", "history", "dashboard"];
function showTab(name) {
  for (const t of tabs) {
    $(`#tab-${t}`).setAttribute("aria-selected", String(t === name));
    $(`#panel-${t}`).hidden = t !== name;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (name === "history") loadHistory();
  if (name !== "dashboard" && window.stopDashboard) window.stopDashboard(); // dashboard.js
}
for (const t of tabs) $(`#tab-${t}`).addEventListener("click", () => showTab(t));

// ---------------------------------------------------------------- results, as text
/** A one-line summary of one model's results on one frame. */
function summarize(model, results) {
  const span = el("span");
  if (!Array.isArray(results)) {
    span.textContent = results && results.error ? `error: ${results.error}` : JSON.stringify(results);
    span.className = "error";
    return span;
  }
  if (results.length === 0) {
    span.textContent = "—";
    return span;
  }
  if (results[0].color !== undefined) {
    for (const c of results) {
      span.append(el("span", { className: "swatch", title: c.color, style: `background:${c.color}` }));
      span.append(`${c.color} ${(c.fraction * 100).toFixed(0)}%  `);
    }
    return span;
  }
  if (results[0].emotion !== undefined) {
    span.textContent = results.map((f) => `face: ${f.emotion}, ${f.gender}${f.joy ? " (joy)" : ""}`).join("; ");
    return span;
  }
  if (results[0].label !== undefined) {
    span.textContent = results.map((o) => `${o.label} ${Number(o.score).toFixed(2)}`).join(", ");
    return span;
  }
  span.textContent = JSON.stringify(results);
  return span;
}

// ---------------------------------------------------------------- models
let modelList = [];
function renderModelChecks(container, prefix) {
  container.textContent = "";
  modelList.forEach((m, i) => {
    const box = el("input", { type: "checkbox", name: `${prefix}model`, value: m.name, checked: i === 0 || m.name === "colors" });
    container.append(el("label", { title: `${m.family}: ${m.files.join(", ")}` }, box, m.name));
  });
}
const checkedModels = (prefix) => [...document.querySelectorAll(`input[name=${prefix}model]:checked`)].map((b) => b.value);

async function loadModels() {
  try {
    modelList = await api("GET", "/api/models");
    renderModelChecks($("#models"), "");
    showError($("#submit-error"), null);
  } catch (e) {
    $("#models").textContent = "";
    showError($("#submit-error"), e);
  }
}

// ---------------------------------------------------------------- Submit
let events = null; // the event stream of the job being watched ({close()})

$("#submit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError($("#submit-error"), null);
  const body = {
    source: $("#source").value.trim(),
    name: $("#name").value.trim(),
    models: checkedModels(""),
    frame_step: Number($("#frame-step").value || 1),
  };
  $("#submit-btn").disabled = true;
  try {
    const { job_id } = await api("POST", "/api/jobs", body);
    watchJob(job_id);
  } catch (e) {
    showError($("#submit-error"), e);
  } finally {
    $("#submit-btn").disabled = false;
  }
});

function statusText(s) {
  const total = s.frames_total ? ` of ${s.frames_total}` : "";
  const err = s.error ? ` — ${s.error}` : "";
  return `${s.state}: ${s.frames_done}${total} frames analysed${err}`;
}

/** Follow a job: progress and results from the server-sent events. */
function watchJob(job) {
  if (events) events.close();
  $("#job").hidden = false;
  $("#job-title").textContent = job;
  $("#open-history").hidden = true;
  $("#preview").hidden = true;
  const tbody = $("#results tbody");
  tbody.textContent = "";
  let lastPreview = 0;
  const setStatus = (s) => {
    $("#job-title").textContent = `${s.name || job} (${job})`;
    $("#status-line").textContent = statusText(s);
    $("#progress").max = Math.max(1, s.frames_total);
    $("#progress").value = s.frames_done;
  };
  const stream = openEvents(`/api/jobs/${encodeURIComponent(job)}/results/stream`, {
    status: (e) => setStatus(JSON.parse(e.data)),
    result: (e) => {
      const r = JSON.parse(e.data);
      const row = el("tr", { className: "result-row" },
        el("td", {}, String(r.frame)), el("td", {}, `${Number(r.timestamp).toFixed(2)}s`),
        el("td", {}, r.model), el("td", {}, summarize(r.model, r.results)));
      tbody.prepend(row);
      while (tbody.rows.length > 300) tbody.deleteRow(-1); // keep the page light
      // The latest frame drawn with its results, at most every second.
      const now = Date.now();
      if (now - lastPreview > 1000) {
        lastPreview = now;
        setImage($("#preview"), frameUrl(job, r.frame, true));
        $("#preview").hidden = false;
      }
    },
    end: (e) => {
      const s = JSON.parse(e.data);
      setStatus(s);
      stream.close();
      if (events === stream) events = null;
      $("#open-history").hidden = false;
      $("#open-history").onclick = () => { showTab("history"); openVideo(job); };
    },
    failure: (e) => showError($("#submit-error"), JSON.parse(e.data).error),
  }, (err, retrying) => {
    if (events !== stream) return;
    if (retrying) {
      // Reconnecting by itself (as EventSource did); say so.
      $("#status-line").textContent += " (connection lost, reconnecting…)";
    } else {
      events = null;
      showError($("#submit-error"), `cannot follow job ${job}: ${err.message}`);
    }
  });
  events = stream;
}

// ---------------------------------------------------------------- Webcam
let camStream = null, recorder = null, chunks = [];

$("#cam-start").addEventListener("click", async () => {
  showError($("#cam-error"), null);
  try {
    camStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $("#cam-video").srcObject = camStream;
    $("#cam-status").textContent = "Camera on.";
    $("#cam-record").disabled = false;
  } catch (e) {
    showError($("#cam-error"), `cannot open the camera: ${e.message}`);
  }
});

$("#cam-record").addEventListener("click", () => {
  chunks = [];
  recorder = new MediaRecorder(camStream);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = () => {
    const blob = new Blob(chunks, { type: recorder.mimeType || "video/webm" });
    const a = $("#cam-download");
    a.href = URL.createObjectURL(blob);
    a.hidden = false;
    $("#cam-status").textContent = `Recorded ${(blob.size / 1024).toFixed(0)} KiB.`;
  };
  recorder.start(1000);
  $("#cam-status").textContent = "Recording…";
  $("#cam-record").disabled = true;
  $("#cam-stop").disabled = false;
});

$("#cam-stop").addEventListener("click", () => {
  if (recorder && recorder.state !== "inactive") recorder.stop();
  $("#cam-record").disabled = false;
  $("#cam-stop").disabled = true;
});

/** Ask the cluster for a live job, send the camera to it (WebM pieces,
 *  relayed by the server to the job's RTMP URL) and draw its results over
 *  the video as they arrive. */
let live = null; // {job, recorder, sending, events, results}

$("#cam-live").addEventListener("click", async () => {
  showError($("#cam-error"), null);
  const models = checkedModels("").length ? checkedModels("") : modelList.slice(0, 1).map((m) => m.name);
  let endpoint;
  try {
    endpoint = await api("POST", "/api/live", { models, name: "webcam", frame_step: 1 });
  } catch (e) {
    const hint = e.status === 501 ? "\nLive analysis is not available in this cluster; you can still record and download." : "";
    showError($("#cam-error"), `cannot start a live job: ${e.message}${hint}`);
    return;
  }
  if (!camStream) {
    try {
      camStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      $("#cam-video").srcObject = camStream;
      $("#cam-record").disabled = false;
    } catch (e) {
      showError($("#cam-error"), `cannot open the camera: ${e.message}`);
      return;
    }
  }
  const job = endpoint.job_id;
  const media = `/api/live/${encodeURIComponent(job)}/media`;
  live = { job, results: 0, sending: Promise.resolve(), recorder: new MediaRecorder(camStream, { mimeType: "video/webm" }) };
  $("#cam-status").textContent = `Live job ${job} (${endpoint.rtmp_url}): sending the camera…`;
  // Pieces go one after the other, in order.
  live.recorder.ondataavailable = (e) => {
    if (!e.data.size) return;
    const l = live;
    l.sending = l.sending.then(() => authFetch(media, { method: "POST", body: e.data })).then(async (r) => {
      if (!r.ok) throw new Error((await r.json().catch(() => ({}))).error || r.statusText);
    }).catch((err) => { showError($("#cam-error"), `the live stream stopped: ${err.message}`); l.recorder.state !== "inactive" && l.recorder.stop(); });
  };
  live.recorder.start(500);
  $("#cam-live").disabled = true;
  $("#cam-live-stop").disabled = false;
  followLive(job);
});

$("#cam-live-stop").addEventListener("click", async () => {
  if (!live) return;
  const l = live;
  if (l.recorder.state !== "inactive") l.recorder.stop();
  $("#cam-live-stop").disabled = true;
  $("#cam-live").disabled = false;
  // After the last piece went out, end the stream.
  await new Promise((r) => setTimeout(r, 100));
  await l.sending;
  await authFetch(`/api/live/${encodeURIComponent(l.job)}/media`, { method: "DELETE" }).catch(() => {});
  l.ended = true;
  $("#cam-status").textContent = `Live job ${l.job}: ${l.results} results; stream ended.`;
});

function followLive(job) {
  const canvas = $("#cam-overlay"), video = $("#cam-video");
  const es = openEvents(`/api/jobs/${encodeURIComponent(job)}/results/stream`, {
    result: (e) => drawLive(e),
    end: () => es.close(),
  }, (err, retrying) => {
    if (!retrying) showError($("#cam-error"), `cannot follow live job ${job}: ${err.message}`);
  });
  function drawLive(e) {
    const r = JSON.parse(e.data);
    if (live && live.job === job) {
      live.results += 1;
      // Results of frames already sent go on arriving after the stream ended.
      const ended = live.ended ? "; stream ended" : "";
      $("#cam-status").textContent = `Live job ${job}: ${live.results} results (frame ${r.frame}, ${r.model})${ended}.`;
      $("#cam-status").dataset.results = String(live.results);
    }
    if (!Array.isArray(r.results)) return;
    canvas.width = video.videoWidth || 640;
    canvas.height = video.videoHeight || 480;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    g.lineWidth = 3;
    g.font = "16px sans-serif";
    let y = 20;
    for (const o of r.results) {
      if (o.color) { // a palette: swatches down the left side
        g.fillStyle = o.color;
        g.fillRect(4, y, 24, 18);
        y += 22;
        continue;
      }
      if (!o.box) continue;
      const [x, by, w, h] = o.box;
      g.strokeStyle = g.fillStyle = o.emotion !== undefined ? "#ffcc00" : "#22dd66";
      g.strokeRect(x, by, w, h);
      g.fillText(o.label || o.emotion || "", x + 3, by + 16);
    }
  }
}

// ---------------------------------------------------------------- History
let selectedJob = null;

async function loadHistory() {
  showError($("#history-error"), null);
  let videos;
  try {
    videos = await api("GET", "/api/videos");
  } catch (e) {
    showError($("#history-error"), e);
    return;
  }
  const ul = $("#videos");
  ul.textContent = "";
  if (videos.length === 0) ul.append(el("li", { className: "muted" }, "No finished video yet."));
  for (const v of videos) {
    const when = v.finished_at_ms ? new Date(v.finished_at_ms).toLocaleString() : "";
    const li = el("li", { className: "video" }, el("strong", {}, v.name || v.job_id),
      el("small", {}, `${v.job_id} · ${v.state} · ${v.frames} frames · ${when}`));
    li.dataset.job = v.job_id;
    if (v.job_id === selectedJob) li.classList.add("selected");
    li.addEventListener("click", () => openVideo(v.job_id));
    ul.append(li);
  }
}

/** A video's metrics and frame strip. */
async function openVideo(job) {
  selectedJob = job;
  for (const li of document.querySelectorAll("#videos li")) li.classList.toggle("selected", li.dataset.job === job);
  showError($("#history-error"), null);
  let s, m;
  try {
    [s, m] = await Promise.all([api("GET", `/api/jobs/${encodeURIComponent(job)}`), api("GET", `/api/jobs/${encodeURIComponent(job)}/metrics`)]);
  } catch (e) {
    showError($("#history-error"), e);
    return;
  }
  $("#video-detail").hidden = false;
  $("#detail-title").textContent = `${s.name} (${job}): ${s.state}`;
  $("#detail-source").textContent = `${s.source} · models ${s.models.join(", ")} · every ${s.frame_step} frame(s) · ${!s.pictures ? "no pictures" : s.pictures_every_ms ? `a picture per ${s.pictures_every_ms / 1000} s` : "a picture per frame"}${s.error ? " · " + s.error : ""}`;
  const rows = [
    ["frames analysed", `${s.frames_done} of ${s.frames_total}`],
    ["frames extracted", m.frames_extracted],
    ["wall time", `${m.wall_time_s.toFixed(2)} s`],
    ["frames per second", m.frames_per_s.toFixed(1)],
    ["decode (ingest) time", `${m.ingest_time_s.toFixed(2)} s`],
    ["resize time", `${m.resize_time_s.toFixed(2)} s`],
    ...Object.entries(m.inference_time_s).map(([k, v]) => [`inference: ${k}`, `${v.toFixed(2)} s`]),
    ["queue wait", `${m.queue_wait_s.toFixed(2)} s`],
    ["errors", m.errors],
    ["frames dropped", m.frames_dropped],
  ];
  const table = $("#metrics");
  table.textContent = "";
  for (const [k, v] of rows) table.append(el("tr", {}, el("th", {}, k), el("td", {}, String(v))));
  // The strip: up to 24 frames evenly spread, each drawn from the nearest
  // frame with a stored picture (captioned with that frame).
  const strip = $("#strip");
  strip.textContent = "";
  const count = s.frames_done;
  const step = Math.max(1, s.frame_step);
  const shown = Math.min(count, 24);
  for (let i = 0; i < shown; i++) {
    const n = Math.floor((i * count) / shown) * step;
    const img = el("img", { className: "thumb", alt: `frame ${n}` });
    const caption = el("figcaption", {}, `#${n}`);
    img.dataset.frame = String(n);
    img.onframe = (drawn) => {
      img.dataset.frame = String(drawn);
      img.alt = `frame ${drawn}`;
      caption.textContent = `#${drawn}`;
    };
    img.addEventListener("click", () => viewFrame(job, Number(img.dataset.frame)));
    img.addEventListener("error", () => { img.title = s.pictures ? "no stored picture near this frame" : "this job keeps no pictures"; });
    setImageLazy(img, frameUrl(job, n, true));
    strip.append(el("figure", {}, img, caption));
  }
}

/** One frame, large, with its results. */
async function viewFrame(job, n) {
  $("#viewer").hidden = false;
  setImage($("#viewer-img"), frameUrl(job, n));
  $("#viewer-results").textContent = "loading…";
  try {
    const rows = await api("GET", `/api/jobs/${encodeURIComponent(job)}/frames/${n}`);
    $("#viewer-results").textContent = rows.map((r) => `${r.model}: ${JSON.stringify(r.results)}`).join("\n");
  } catch (e) {
    $("#viewer-results").textContent = e.message;
  }
}
$("#viewer-close").addEventListener("click", () => { $("#viewer").hidden = true; });
$("#viewer").addEventListener("click", (e) => { if (e.target.id === "viewer") $("#viewer").hidden = true; });
$("#history-refresh").addEventListener("click", loadHistory);

// ---------------------------------------------------------------- the token control
function showTokenState() {
  const set = Boolean(getToken());
  $("#token-btn").textContent = set ? "Token ✓" : "Token";
  $("#token-btn").title = set ? "a token is set for this tab" : "no token set";
  $("#token-forget").disabled = !set;
}
$("#token-btn").addEventListener("click", () => {
  if ($("#token-form").hidden) openTokenForm();
  else {
    $("#token-form").hidden = true;
    $("#token-btn").setAttribute("aria-expanded", "false");
  }
});
/** After the token changed: load the page's data again, once. */
function tokenChanged() {
  showTokenState();
  $("#auth-message").hidden = true;
  $("#token-input").value = "";
  $("#token-form").hidden = true;
  $("#token-btn").setAttribute("aria-expanded", "false");
  loadModels();
  if (!$("#panel-history").hidden) loadHistory();
}
$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  // Accept what `panoptes token` prints ("token: …") or a whole "Bearer …".
  const t = $("#token-input").value.trim().replace(/^token:\s*/i, "").replace(/^bearer\s+/i, "");
  if (!t) return $("#token-input").focus();
  if (/[^\x21-\x7e]/.test(t)) {
    const box = $("#auth-message");
    box.textContent = "A token is one word of printable characters: paste it again.";
    box.hidden = false;
    return $("#token-input").focus();
  }
  setToken(t);
  tokenChanged();
});
$("#token-forget").addEventListener("click", () => {
  setToken("");
  tokenChanged();
});

// ---------------------------------------------------------------- start
showTokenState();
loadModels();
showTab(tabs.includes(location.hash.slice(1)) ? location.hash.slice(1) : "submit");
