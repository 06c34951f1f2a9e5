// Drives the web UI in headless Chromium (Debian's /usr/bin/chromium) with
// playwright-core: submits a clip from the Submit tab, waits for its results,
// tries the Webcam tab with Chromium's fake camera, opens the job in History
// and checks that an annotated frame loads. Saves a screenshot of each tab.
//
// Run by tests/tests/web_ui.rs, with the environment driver.mjs names.
// Prints one JSON line of findings; exits non-zero on the first failure.
import { launch, newPage, openFrame, openInHistory, shot, startLive, stopLive, submitClip, WEB_URL } from "./driver.mjs";

const found = {};
const browser = await launch();
let page;
try {
  page = await newPage(browser, found);
  await page.goto(WEB_URL);

  // Submit: the models come from /api/models; run colors only, every 2nd frame.
  // Results appear live; the stream's end shows "Open in History".
  await submitClip(page, found, "ui clip");
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
  // The camera is sent as a live job; results are drawn over the video as they arrive.
  if (await startLive(page, found)) {
    found.live_status = await page.textContent("#cam-status");
    await shot(page, "webcam");
    await stopLive(page, found);
  } else {
    await shot(page, "webcam");
  }

  // History: our video, its metrics and frame strip; a frame drawn large.
  await openInHistory(page, found);
  await shot(page, "history");
  await openFrame(page, found);
  await shot(page, "history-frame");
  console.log(JSON.stringify(found));
} catch (e) {
  if (page) await shot(page, "failure").catch(() => {});
  console.error(`UI test failed: ${e.stack || e}\nfound so far: ${JSON.stringify(found)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
