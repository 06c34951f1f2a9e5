// Drives the web UI in headless Chromium against a cluster with a tokens
// file (`[security] tokens_file`): the page says it needs a token on load and
// on submit, refuses a wrong one, and with a valid user token (typed into the
// header's Token control) submits a clip whose results arrive over the
// fetch-based event stream, shows its frames (fetched with the header) in
// History, and never puts the token in a URL. Forgetting the token brings the
// message back.
//
// Run by tests/tests/web_ui.rs, with the environment:
//   WEB_URL             the web UI, e.g. http://127.0.0.1:27400/
//   CLIP                a video path as the workers see it
//   SHOTS_DIR           where the screenshots go (token-*.png)
//   PW_NODE_DIR         the folder whose node_modules holds playwright-core
//   CHROMIUM            the browser (default /usr/bin/chromium)
//   PANOPTES_UI_TOKEN   a valid user token of that cluster
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
const TOKEN = env("PANOPTES_UI_TOKEN");
const require = createRequire(path.join(env("PW_NODE_DIR"), "noop.js"));
const { chromium } = require("playwright-core");

fs.mkdirSync(SHOTS, { recursive: true });
const found = {};
const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync",
         // A fake camera (a test pattern) that needs no permission prompt.
         "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
});
const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const check = (ok, what) => { if (!ok) throw new Error(`${what}; found so far: ${JSON.stringify(found)}`); };

/** Wait until #auth-message is shown and contains `text`, with the token control open. */
async function expectAuthMessage(page, text, what) {
  await page.waitForFunction((t) => {
    const m = document.querySelector("#auth-message");
    return m && !m.hidden && m.textContent.includes(t);
  }, text, { timeout: 30_000 }).catch(async () => {
    throw new Error(`${what}: the page did not say "${text}" (it says: ${JSON.stringify(await page.textContent("#auth-message"))})`);
  });
  check(await page.isVisible("#token-input"), `${what}: the token control is not open`);
  return page.textContent("#auth-message");
}

let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.grantPermissions(["camera"], { origin: new URL(WEB_URL).origin });
  page = await context.newPage();
  page.on("pageerror", (e) => { found.page_errors = [...(found.page_errors || []), String(e)]; });
  page.setDefaultTimeout(30_000);
  // Every API request: its URL and whether it carried the token.
  const requests = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith("/api/")) requests.push({ url: r.url(), method: r.method(), auth: r.headers()["authorization"] || "" });
  });
  await page.goto(WEB_URL);

  // On load: /api/models answers 401, the page says it needs a token and
  // opens the control with the cursor in it.
  found.load_message = await expectAuthMessage(page, "needs a token", "on load");
  check(found.load_message.includes("panoptes token --role user"), `the message does not say how to make a token: ${found.load_message}`);
  found.focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
  check(found.focused === "token-input", `the token input is not focused (${found.focused})`);
  await shot(page, "token-needed");

  // Submitting without a token: 401, same message, no retries.
  await page.fill("#source", CLIP);
  const refused = page.waitForResponse((r) => r.url().endsWith("/api/jobs") && r.request().method() === "POST");
  await page.click("#submit-btn");
  found.submit_without_token = (await refused).status();
  check(found.submit_without_token === 401, `submitting without a token answered ${found.submit_without_token}, not 401`);
  await expectAuthMessage(page, "needs a token", "on submit");
  await page.waitForTimeout(1500);
  const posts = requests.filter((r) => r.method === "POST" && r.url.endsWith("/api/jobs")).length;
  check(posts === 1, `the page sent ${posts} submissions for one click (it must not retry)`);

  // A wrong token is refused, and the page says so.
  await page.fill("#token-input", "not-a-token");
  await page.click("#token-save");
  await expectAuthMessage(page, "refused this token", "with a wrong token");

  // The valid token (pasted the way `panoptes token` prints it): the models load.
  await page.fill("#token-input", `token: ${TOKEN}`);
  await page.click("#token-save");
  await page.waitForSelector("input[name=model][value=colors]");
  check(await page.isHidden("#auth-message"), "the token message is still shown with a valid token");
  check((await page.evaluate(() => sessionStorage.getItem("panoptes.token"))) === TOKEN, "the token is not in sessionStorage");
  check((await page.evaluate(() => localStorage.length)) === 0, "the page wrote to localStorage");
  found.token_button = await page.textContent("#token-btn");
  const withToken = requests.length;

  // Submit: results arrive over the event stream (fetch, with the header).
  for (const box of await page.$$("input[name=model]")) {
    if ((await box.getAttribute("value")) === "colors") await box.check(); else await box.uncheck();
  }
  await page.fill("#source", CLIP);
  await page.fill("#name", "token clip");
  await page.fill("#frame-step", "2");
  const submitted = page.waitForResponse((r) => r.url().endsWith("/api/jobs") && r.request().method() === "POST");
  await page.click("#submit-btn");
  const resp = await submitted;
  if (resp.status() !== 201) throw new Error(`submission with the token answered ${resp.status()}: ${await resp.text()}`);
  found.job = (await resp.json()).job_id;
  await page.waitForSelector("#results .result-row", { timeout: 120_000 });
  await page.waitForSelector("#open-history:not([hidden])", { timeout: 180_000 });
  found.submit_rows = await page.locator("#results .result-row").count();
  found.submit_status = await page.textContent("#status-line");
  check(found.submit_status.startsWith("completed"), `job did not complete: ${found.submit_status}`);
  // The preview picture: fetched with the header, shown from a blob: URL.
  await page.waitForFunction(() => { const i = document.querySelector("#preview"); return i && !i.hidden && i.complete && i.naturalWidth > 0; });
  await shot(page, "token-submit");

  // Webcam: a live job; the camera's pieces (POST) and the end (DELETE) go
  // with the header, its results over the event stream.
  await page.click("#tab-webcam");
  await page.click("#cam-live");
  await page.waitForFunction(() => !document.querySelector("#cam-error").hidden || document.querySelector("#cam-status").textContent.startsWith("Live job"));
  found.live = (await page.isHidden("#cam-error")) ? await page.textContent("#cam-status") : await page.textContent("#cam-error");
  if (found.live.startsWith("Live job")) {
    await page.waitForFunction(() => Number(document.querySelector("#cam-status").dataset.results || 0) >= 3, null, { timeout: 90_000 })
      .catch(() => {});
    found.live_results = Number((await page.getAttribute("#cam-status", "data-results")) || 0);
    await page.click("#cam-live-stop");
    await page.waitForFunction(() => document.querySelector("#cam-status").textContent.includes("stream ended"));
    if (!(await page.isHidden("#cam-error"))) found.live_error = await page.textContent("#cam-error");
  }

  // History: the video, its frame strip and one frame large.
  await page.click("#tab-history");
  const item = `#videos li.video[data-job="${found.job}"]`;
  await page.waitForSelector(item);
  await page.click(item);
  await page.waitForSelector("#metrics tr");
  await page.waitForSelector("#strip img.thumb");
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll("#strip img.thumb")].slice(0, 3);
    return imgs.length === 3 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  });
  found.thumbs = await page.locator("#strip img.thumb").count();
  await page.click("#strip img.thumb >> nth=1");
  await page.waitForFunction(() => { const i = document.querySelector("#viewer-img"); return i.complete && i.naturalWidth > 0; });
  found.frame_width = await page.evaluate(() => document.querySelector("#viewer-img").naturalWidth);
  await page.waitForFunction(() => document.querySelector("#viewer-results").textContent.startsWith("colors:"));
  await shot(page, "token-history");
  await page.click("#viewer-close");

  // Every API request since the token was saved carried it; none put it in a URL.
  const after = requests.slice(withToken);
  found.api_requests = after.length;
  const streams = after.filter((r) => r.url.includes("/results/stream"));
  check(streams.length >= 1, "no results stream was requested");
  const bare = after.filter((r) => r.auth !== `Bearer ${TOKEN}`).map((r) => `${r.method} ${r.url}`);
  check(bare.length === 0, `requests without the token: ${bare.join(", ")}`);
  const leaked = requests.filter((r) => r.url.includes(TOKEN)).map((r) => r.url);
  check(leaked.length === 0, `the token is in a URL: ${leaked.join(", ")}`);

  // Forget: the token is gone and the page asks for one again.
  if (await page.isHidden("#token-form")) await page.click("#token-btn");
  await page.click("#token-forget");
  check((await page.evaluate(() => sessionStorage.getItem("panoptes.token"))) === null, "Forget left the token in sessionStorage");
  await expectAuthMessage(page, "needs a token", "after Forget");
  console.log(JSON.stringify(found));
} catch (e) {
  if (page) await shot(page, "token-failure").catch(() => {});
  console.error(`UI token test failed: ${e.stack || e}\nfound so far: ${JSON.stringify(found)}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
