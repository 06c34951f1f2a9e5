// Panoptes web UI, the Dashboard tab (issue 18): loaded after app.js, whose
// helpers ($, api, setImage, el, frameUrl, showError) it uses.
"use strict";

// One job over time (issue 18): the newest analysed frame, the alerts its
// rules recorded, its results in windows of stream time and its tracked
// objects, each read from the HTTP API; refreshed every 2 s while it runs.
let dashJob = null;
let dashTimer = null;
let dashBusy = false;

function stopDashboard() {
  if (dashTimer) clearInterval(dashTimer);
  dashTimer = null;
}

$("#dash-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  openDashboard($("#dash-job").value.trim());
});
$("#dash-window").addEventListener("change", () => { if (dashJob) refreshDashboard(); });

function openDashboard(job) {
  stopDashboard();
  dashJob = job;
  $("#dash-job").value = job;
  $("#dash").hidden = true;
  refreshDashboard();
  dashTimer = setInterval(refreshDashboard, 2000);
}

const enc = encodeURIComponent;
// The chart and the tracks read the newest this many frames of a job, so a
// stream of days costs a refresh no more than a short clip does.
const RECENT_FRAMES = 3000;

async function refreshDashboard() {
  const job = dashJob;
  if (!job || dashBusy) return;
  dashBusy = true;
  try {
    const s = await api("GET", `/api/jobs/${enc(job)}`);
    showError($("#dash-error"), null);
    $("#dash").hidden = false;
    $("#dash-title").textContent = `${s.name} (${s.job_id})`;
    const st = $("#dash-status");
    st.dataset.state = s.state;
    st.textContent = `${s.state} · ${s.frames_done} frame(s) analysed · ${s.tracks} track(s) · ${s.alerts} alert(s)` +
      (s.rules.length ? ` · rules: ${s.rules.join("; ")}` : " · no alert rules (submit --rule)") +
      (s.zones.length ? ` · zones: ${s.zones.map((z) => z.zone.split("=")[0] + (z.from_frame ? ` (from frame ${z.from_frame})` : "")).join(", ")}` : "");
    const newest = Math.max(0, (s.frames_done - 1) * s.frame_step);
    const from = Math.max(0, newest - RECENT_FRAMES * s.frame_step);
    if (s.pictures && s.frames_done > 0) {
      const img = $("#dash-frame");
      img.onframe = (n) => { $("#dash-frame-caption").textContent = `frame ${n}, the newest with a stored picture`; img.dataset.frame = String(n); };
      setImage(img, frameUrl(job, (s.frames_done - 1) * s.frame_step, true));
    } else if (!s.pictures) {
      $("#dash-frame-caption").textContent = "this job keeps no pictures (--no-frames)";
    }
    const [alerts, stats] = await Promise.all([
      api("GET", `/api/jobs/${enc(job)}/alerts`),
      api("GET", `/api/jobs/${enc(job)}/stats?window=${enc($("#dash-window").value)}&from_frame=${from}`),
    ]);
    drawAlerts(alerts);
    drawChart(stats.windows, from);
    if (s.models.includes("objects")) drawTracks(job, (await api("GET", `/api/jobs/${enc(job)}/tracks?from_frame=${from}`)).tracks);
    // Finished, its alerts final: nothing more comes.
    if (["completed", "failed", "cancelled"].includes(s.state) && s.alerts_up_to_date) stopDashboard();
  } catch (e) {
    showError($("#dash-error"), e);
    if (e.status === 404 || e.status === 400) stopDashboard();
  } finally {
    dashBusy = false;
  }
}

function drawAlerts(r) {
  const ul = $("#dash-alerts");
  ul.replaceChildren(...r.alerts.map((a) => el("li", { className: "alert", title: a.id },
    el("b", {}, a.rule), ` at ${a.time.toFixed(2)} s (frame ${a.frame}): ${a.detail}`)));
  if (!r.alerts.length) ul.append(el("li", { className: "none" }, "no alerts yet"));
  if (r.dropped) ul.append(el("li", {}, `${r.dropped} more past the per-job limit`));
}

/** Bars, one per window: the detections of every label (or faces, or analysed frames). */
function drawChart(windows, from) {
  const svg = $("#dash-chart");
  const NS = "http://www.w3.org/2000/svg";
  const W = 520, H = 160, pad = 18;
  const value = (w) => {
    const dets = Object.values(w.objects).reduce((n, l) => n + l.detections, 0);
    return dets || w.faces.faces || 0;
  };
  const shown = windows.filter((w) => !w.late).slice(-60);
  const max = Math.max(1, ...shown.map(value));
  const bw = (W - 2 * pad) / Math.max(shown.length, 1);
  const kids = [];
  shown.forEach((w, i) => {
    const h = ((H - 2 * pad) * value(w)) / max;
    const r = document.createElementNS(NS, "rect");
    r.setAttribute("class", "bar");
    r.setAttribute("x", String(pad + i * bw + 1));
    r.setAttribute("y", String(H - pad - h));
    r.setAttribute("width", String(Math.max(bw - 2, 1)));
    r.setAttribute("height", String(h));
    const labels = Object.entries(w.objects).map(([l, s]) => `${l} ${s.detections} (${s.tracks ?? "?"} tracks)`).join(", ");
    const t = document.createElementNS(NS, "title");
    t.textContent = `${w.start}–${w.end} s: ${w.frames} frame(s)${labels ? "; " + labels : ""}${w.dominant_color ? "; colour " + w.dominant_color.color : ""}`;
    r.append(t);
    kids.push(r);
  });
  const axis = document.createElementNS(NS, "text");
  axis.setAttribute("x", String(pad));
  axis.setAttribute("y", String(H - 4));
  axis.textContent = shown.length ? `${shown[0].start} s … ${shown[shown.length - 1].end} s` : "no analysed frames yet";
  kids.push(axis);
  svg.replaceChildren(...kids);
  $("#dash-chart-legend").textContent = `detections per ${$("#dash-window").value} of stream time (most ${max})` + (from ? `, from frame ${from}` : "");
}

function drawTracks(job, tracks) {
  const ul = $("#dash-tracks");
  const have = new Map([...ul.children].map((li) => [li.dataset.track, li]));
  const items = tracks.map((t) => {
    const key = `${t.track_id}:${t.last_frame}:${t.zones.join(",")}`;
    const old = have.get(String(t.track_id));
    if (old && old.dataset.key === key) return old; // unchanged: keep its picture
    const mid = t.path[Math.floor(t.path.length / 2)][0];
    const img = el("img", { alt: `track ${t.track_id}` });
    setImage(img, frameUrl(job, mid, true));
    const li = el("li", {}, img, el("div", {}, el("b", {}, `#${t.track_id} ${t.label}`),
      ` ${t.first_time.toFixed(1)}–${t.last_time.toFixed(1)} s, ${t.frames} frame(s), best ${t.best_score.toFixed(2)}` +
      (t.zones.length ? `, entered ${t.zones.join(", ")}` : "")));
    li.dataset.track = String(t.track_id);
    li.dataset.key = key;
    return li;
  });
  ul.replaceChildren(...items);
  if (!tracks.length) ul.append(el("li", {}, "no tracks yet"));
}

