// Drives the Dashboard tab in headless Chromium while a live push runs
// (JOB: the live job, with alert rules, that tests/tests/web_ui.rs pushes a
// clip into in real time): the newest analysed frame, the alerts, the
// window chart and the tracks appear while the job runs, and stay once it
// has ended; the job's zone is listed and outlined on the frame, and the
// track says it entered it. Prints one JSON line of findings; exits non-zero on failure.
import { env, launch, newPage, shot, WEB_URL } from "./driver.mjs";

const JOB = env("JOB");
const found = {};
const browser = await launch();
let page;
const state = () => page.getAttribute("#dash-status", "data-state");
try {
  page = await newPage(browser, found);
  await page.goto(`${WEB_URL}#dashboard`);
  await page.fill("#dash-job", JOB);
  await page.selectOption("#dash-window", "1s");
  await page.click("#dash-form button[type=submit]");
  await page.waitForSelector("#dash:not([hidden])");
  // While the push runs: an alert, a bar of the chart, a track, a frame.
  await page.waitForFunction(() =>
    document.querySelectorAll("#dash-alerts li.alert").length >= 1 &&
    document.querySelectorAll("#dash-chart rect.bar").length >= 1 &&
    document.querySelectorAll("#dash-tracks li[data-track]").length >= 1 &&
    Number(document.querySelector("#dash-frame").dataset.frame ?? -1) >= 0, null, { timeout: 120_000 });
  found.state_while_shown = await state();
  found.alerts_while_running = await page.locator("#dash-alerts li.alert").count();
  await shot(page, "dashboard-running");
  // The job ends with the push; the dashboard stops refreshing once its alerts are final.
  await page.waitForFunction(() => document.querySelector("#dash-status").dataset.state === "completed", null, { timeout: 180_000 });
  await page.waitForTimeout(2500);
  found.final_state = await state();
  found.alerts = await page.locator("#dash-alerts li.alert").count();
  found.alert_text = await page.textContent("#dash-alerts li.alert");
  found.bars = await page.locator("#dash-chart rect.bar").count();
  found.tracks = await page.locator("#dash-tracks li[data-track]").count();
  found.track_text = await page.textContent("#dash-tracks li[data-track]");
  found.status_text = await page.textContent("#dash-status");
  found.frame = Number(await page.getAttribute("#dash-frame", "data-frame"));
  await page.waitForFunction(() => { const i = document.querySelector("#dash-frame"); return i.complete && i.naturalWidth > 0; });
  found.frame_width = await page.evaluate(() => document.querySelector("#dash-frame").naturalWidth);
  // The zone's outline on the frame: pixels of its colour (255, 214, 0; a PNG keeps them exact).
  found.zone_pixels = await page.evaluate(() => {
    const i = document.querySelector("#dash-frame");
    const c = document.createElement("canvas");
    c.width = i.naturalWidth;
    c.height = i.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(i, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let k = 0; k < d.length; k += 4) if (d[k] === 255 && d[k + 1] === 214 && d[k + 2] === 0) n++;
    return n;
  });
  found.error_shown = !(await page.isHidden("#dash-error"));
  await shot(page, "dashboard");
  console.log(JSON.stringify(found));
} catch (e) {
  if (page) await shot(page, "dashboard-failure").catch(() => {});
  console.error(`dashboard test failed: ${e.stack || e}\nfound so far: ${JSON.stringify(found)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
