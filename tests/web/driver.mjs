// What the browser drivers (ui.spec.mjs, ui_token.spec.mjs) share: their
// environment, headless Chromium with playwright-core, screenshots, and the
// steps both take on the page (submit a clip with `colors`, open it in
// History). Run by tests/tests/web_ui.rs, with the environment:
//   WEB_URL      the web UI, e.g. http://127.0.0.1:27400/
//   CLIP         a video path as the workers see it
//   SHOTS_DIR    where the screenshots go
//   PW_NODE_DIR  the folder whose node_modules holds playwright-core
//   CHROMIUM     the browser (default /usr/bin/chromium)
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

/** The environment variable `k` (or `d`); an error when neither is set. */
export const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
export const WEB_URL = env("WEB_URL");
export const CLIP = env("CLIP");
const SHOTS = env("SHOTS_DIR");
fs.mkdirSync(SHOTS, { recursive: true });

/** Headless Chromium, with a fake camera that needs no permission prompt. */
export async function launch() {
  const require = createRequire(path.join(env("PW_NODE_DIR"), "noop.js"));
  const { chromium } = require("playwright-core");
  return chromium.launch({
    executablePath: env("CHROMIUM", "/usr/bin/chromium"),
    headless: true,
    // The closed network refuses Chromium's background connections: turn them off.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           // A fake camera (a test pattern) that needs no permission prompt.
           "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
  });
}

/** A full-page screenshot SHOTS_DIR/NAME.png. */
export const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

/** A page of the web UI allowed the camera, whose errors go to `found.page_errors`. */
export async function newPage(browser, found) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(["camera"], { origin: new URL(WEB_URL).origin });
  const page = await context.newPage();
  page.on("pageerror", (e) => { found.page_errors = [...(found.page_errors || []), String(e)]; });
  page.setDefaultTimeout(30_000);
  return page;
}

/** Submit CLIP as `name` with `colors` only, every 2nd frame, and wait for
 *  its results and its end (the stream's end shows "Open in History"). */
export async function submitClip(page, found, name) {
  await page.waitForSelector("input[name=model][value=colors]");
  for (const box of await page.$$("input[name=model]")) {
    if ((await box.getAttribute("value")) === "colors") await box.check(); else await box.uncheck();
  }
  await page.fill("#source", CLIP);
  await page.fill("#name", name);
  await page.fill("#frame-step", "2");
  const submitted = page.waitForResponse((r) => r.url().endsWith("/api/jobs") && r.request().method() === "POST");
  await page.click("#submit-btn");
  const resp = await submitted;
  if (resp.status() !== 201) throw new Error(`submission answered ${resp.status()}: ${await resp.text()}`);
  found.job = (await resp.json()).job_id;
  await page.waitForSelector("#results .result-row", { timeout: 120_000 });
  await page.waitForSelector("#open-history:not([hidden])", { timeout: 180_000 });
  found.submit_rows = await page.locator("#results .result-row").count();
  found.submit_status = await page.textContent("#status-line");
  if (!found.submit_status.startsWith("completed")) throw new Error(`job did not complete: ${found.submit_status}`);
}

/** Webcam tab: start a live job from the camera (`found.live`: its status,
 *  or the error where the cluster offers no live ingest); when it started,
 *  wait (bounded) for 3 results drawn over the video (`found.live_results`).
 *  Whether it started. */
export async function startLive(page, found) {
  await page.click("#cam-live");
  await page.waitForFunction(() => !document.querySelector("#cam-error").hidden || document.querySelector("#cam-status").textContent.startsWith("Live job"));
  found.live = (await page.isHidden("#cam-error")) ? await page.textContent("#cam-status") : await page.textContent("#cam-error");
  if (!found.live.startsWith("Live job")) return false;
  await page.waitForFunction(() => Number(document.querySelector("#cam-status").dataset.results || 0) >= 3, null, { timeout: 90_000 })
    .catch(() => {});
  found.live_results = Number((await page.getAttribute("#cam-status", "data-results")) || 0);
  return true;
}

/** Webcam tab: end the live job; an error shown goes to `found.live_error`. */
export async function stopLive(page, found) {
  await page.click("#cam-live-stop");
  await page.waitForFunction(() => document.querySelector("#cam-status").textContent.includes("stream ended"));
  if (!(await page.isHidden("#cam-error"))) found.live_error = await page.textContent("#cam-error");
}

/** History: open `found.job`, its metrics and frame strip (the first
 *  thumbnails, on screen, loaded). */
export async function openInHistory(page, found) {
  await page.click("#tab-history");
  const item = `#videos li.video[data-job="${found.job}"]`;
  await page.waitForSelector(item);
  await page.click(item);
  await page.waitForSelector("#metrics tr");
  await page.waitForSelector("#strip img.thumb");
  // The strip scrolls and loads lazily: the first thumbnails are on screen.
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("#strip img.thumb")].slice(0, 3);
    return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  });
  found.thumbs = await page.locator("#strip img.thumb").count();
}

/** History: the strip's second frame drawn large, with its results. */
export async function openFrame(page, found) {
  await page.click("#strip img.thumb >> nth=1");
  await page.waitForFunction(() => { const i = document.querySelector("#viewer-img"); return i.complete && i.naturalWidth > 0; });
  found.frame_width = await page.evaluate(() => document.querySelector("#viewer-img").naturalWidth);
  await page.waitForFunction(() => document.querySelector("#viewer-results").textContent.startsWith("colors:"));
}
