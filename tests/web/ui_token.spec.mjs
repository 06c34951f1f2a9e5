// Drives the web UI in headless Chromium against a cluster with a tokens
// file (`[security] tokens_file`): the page says it needs a token on load and
// on submit, refuses a wrong one, and with a valid user token (typed into the
// header's Token control) submits a clip whose results arrive over the
// fetch-based event stream, shows its frames (fetched with the header) in
// History, and never puts the token in a URL. Forgetting the token brings the
// message back.
//
// Run by tests/tests/web_ui.rs, with the environment driver.mjs names and
//   PANOPTES_UI_TOKEN   a valid user token of that cluster
// Prints one JSON line of findings; exits non-zero on the first failure.
import { CLIP, env, launch, newPage, openFrame, openInHistory, shot, startLive, stopLive, submitClip, WEB_URL } from "./driver.mjs";

const TOKEN = env("PANOPTES_UI_TOKEN");
const found = {};
const browser = await launch();
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
  page = await newPage(browser, found);
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
  await submitClip(page, found, "token clip");
  // The preview picture: fetched with the header, shown from a blob: URL.
  await page.waitForFunction(() => { const i = document.querySelector("#preview"); return i && !i.hidden && i.complete && i.naturalWidth > 0; });
  await shot(page, "token-submit");

  // Webcam: a live job; the camera's pieces (POST) and the end (DELETE) go
  // with the header, its results over the event stream.
  await page.click("#tab-webcam");
  if (await startLive(page, found)) await stopLive(page, found);

  // History: the video, its frame strip and one frame large.
  await openInHistory(page, found);
  await openFrame(page, found);
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
