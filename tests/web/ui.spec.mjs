// Drives the web UI in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core: submits a clip from the Submit tab, waits for its results,
// tries the Webcam tab with Chromium's fake camera, opens the job in History
// and checks that an annotated frame loads. Saves a screenshot of each tab.
//
// Run by tests/tests/web_ui.rs, with the environment:
//   WEB_URL      the web UI, e.g. http://127.0.0.1:27400/
//   CLIP         a video path as the workers see it
//   SHOTS_DIR    where the screenshots go
//   PW_NODE_DIR  the folder whose node_modules holds playwright-core
//   CHROMIUM     the browser (default /usr/bin/chromium)
// Prints one JSON line of findings; exits non-zero on the first failure.
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const WEB_URL = env("WEB_URL");
const CLIP = env("CLIP");
const SHOTS = env("SHOTS_DIR");
const require = createRequire(path.join(env("PW_NODE_DIR"), "noop.js"));
const { chromium } = require("playwright-core");

fs.mkdirSync(SHOTS, { recursive: true });
const found = {};
const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  // The closed network refuses Chromium's background connections: turn them off.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         // A fake camera (a test pattern) that needs no permission prompt.
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
});
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(["camera"], { origin: new URL(WEB_URL).origin });
  page = await context.newPage();
  page.on("pageerror", (e) => { found.page_errors = [...(found.page_errors || []), String(e)]; });
  page.setDefaultTimeout(30_000);
  await page.goto(WEB_URL);

  // Submit: the models come from /api/models; run colors only, every 2nd frame.
  await page.waitForSelector("input[name=model][value=colors]");
  for (const box of await page.$$("input[name=model]")) {
    if ((await box.getAttribute("value")) === "colors") await box.check(); else await box.uncheck();
  }
  await page.fill("#source", CLIP);
  await page.fill("#name", "ui clip");
  await page.fill("#frame-step", "2");
  const submitted = page.waitForResponse((r) => r.url().endsWith("/api/jobs") && r.request().method() === "POST");
  await page.click("#submit-btn");
  const resp = await submitted;
  if (resp.status() !== 201) throw new Error(`submission answered ${resp.status()}: ${await resp.text()}`);
  found.job = (await resp.json()).job_id;
  // Results appear live; the stream's end shows "Open in History".
  await page.waitForSelector("#results .result-row", { timeout: 120_000 });
  await page.waitForSelector("#open-history:not([hidden])", { timeout: 180_000 });
  found.submit_rows = await page.locator("#results .result-row").count();
  found.submit_status = await page.textContent("#status-line");
  if (!found.submit_status.startsWith("completed")) throw new Error(`job did not complete: ${found.submit_status}`);
  await page.waitForFunction(() => { const i = document.querySelector("#preview"); return i && i.complete && i.naturalWidth > 0; });
  await shot(page, "submit");

  // Webcam: Chromium's fake camera, a short recording, then a live job.
  await page.click("#tab-webcam");
  await page.click("#cam-start");
  await page.waitForFunction(() => document.querySelector("#cam-video").videoWidth > 0);
  await page.click("#cam-record");
  await page.waitForTimeout(1500);
  await page.click("#cam-stop");
  await page.waitForSelector("#cam-download:not([hidden])");
  found.recording = await page.textContent("#cam-status");
  await page.click("#cam-live");
  await page.waitForFunction(() => !document.querySelector("#cam-error").hidden || document.querySelector("#cam-status").textContent.startsWith("Live job"));
  found.live = (await page.isHidden("#cam-error")) ? await page.textContent("#cam-status") : await page.textContent("#cam-error");
  if (found.live.startsWith("Live job")) {
    // The camera is being sent; results are drawn over the video as they arrive.
    await page.waitForFunction(() => Number(document.querySelector("#cam-status").dataset.results || 0) >= 3, null, { timeout: 90_000 })
      .catch(() => {});
    found.live_results = Number((await page.getAttribute("#cam-status", "data-results")) || 0);
    found.live_status = await page.textContent("#cam-status");
    await shot(page, "webcam");
    await page.click("#cam-live-stop");
    await page.waitForFunction(() => document.querySelector("#cam-status").textContent.includes("stream ended"));
    if (!(await page.isHidden("#cam-error"))) found.live_error = await page.textContent("#cam-error");
  } else {
    await shot(page, "webcam");
  }

  // History: our video, its metrics and frame strip; a frame drawn large.
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
  await shot(page, "history");
  await page.click("#strip img.thumb >> nth=1");
  await page.waitForFunction(() => { const i = document.querySelector("#viewer-img"); return i.complete && i.naturalWidth > 0; });
  found.frame_width = await page.evaluate(() => document.querySelector("#viewer-img").naturalWidth);
  await page.waitForFunction(() => document.querySelector("#viewer-results").textContent.startsWith("colors:"));
  await shot(page, "history-frame");
  console.log(JSON.stringify(found));
} catch (e) {
  if (page) await shot(page, "failure").catch(() => {});
  console.error(`UI test failed: ${e.stack || e}\nfound so far: ${JSON.stringify(found)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
