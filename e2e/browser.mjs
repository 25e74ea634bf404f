// Browser end-to-end test of the sessionkit demo: drives headless Debian Chromium through
// visit -> count -> login -> your sessions (/devices) -> logout, checks the cookie flags the
// browser itself stored, and saves a screenshot of the sessions page.
//
// Usage: node e2e/browser.mjs BASE_URL SCREENSHOT_PATH
//   BASE_URL must be http://localhost:PORT: the __Host- cookie is Secure, and localhost is a
//   secure context, so the browser keeps it over plain HTTP.
// Env: CHROMIUM (default /usr/bin/chromium).
// Exit code 0 when every check passed, 1 otherwise.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, shot] = process.argv.slice(2);
if (!base || !shot) {
  console.error("usage: node browser.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const COOKIE = "__Host-id";

let checks = 0;
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  checks++;
  console.log(`ok - ${what}`);
}

const profile = mkdtempSync(join(tmpdir(), "sessionkit-e2e-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 900, height: 640 },
  timeout: 60_000,
});

async function sessionCookie() {
  return (await context.cookies(base)).find((c) => c.name === COOKIE);
}

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);

  // 1. First visit: a session exists (the page carries a CSRF token), nothing counted yet.
  let resp = await page.goto(`${base}/`);
  check(resp.status() === 200, "home page loads");
  check((await page.textContent("#count")).trim() === "0", "fresh session counts 0");
  const anon = await sessionCookie();
  check(anon !== undefined, `browser stored the ${COOKIE} cookie`);
  check(anon.httpOnly === true, "cookie is HttpOnly");
  check(anon.secure === true, "cookie is Secure");
  check(anon.sameSite === "Lax", `cookie is SameSite=Lax (got ${anon.sameSite})`);
  check(anon.path === "/", "cookie Path=/ (__Host- rule)");
  check(!anon.domain.startsWith("."), "cookie is host-only, no Domain (__Host- rule)");
  check(anon.expires > Date.now() / 1000, "cookie has a future expiry");
  const jsCookies = await page.evaluate(() => document.cookie);
  check(!jsCookies.includes(COOKIE), "page scripts cannot read the session cookie");

  // 2. Count visits.
  for (const n of [1, 2, 3]) {
    resp = await page.goto(`${base}/count`);
    check((await resp.text()).trim() === String(n), `/count says ${n}`);
  }
  await page.goto(`${base}/`);
  check((await page.textContent("#count")).trim() === "3", "home page shows 3 visits");

  // 3. Log in through the form: the ID changes, the data stays.
  await page.fill("#username", "alice");
  await Promise.all([page.waitForURL(`${base}/`), page.click("#login")]);
  check((await page.textContent("#user")).trim() === "alice", "signed in as alice");
  check((await page.textContent("#count")).trim() === "3", "count survives login");
  check(
    (await page.textContent(".flash.success")).trim() === "Signed in as alice",
    "the login's flash message is shown after its redirect",
  );
  await page.reload();
  check((await page.locator(".flash").count()) === 0, "a flash message is shown only once");
  const authed = await sessionCookie();
  check(authed && authed.value !== anon.value, "login issued a new session ID");
  check(authed.httpOnly && authed.secure && authed.sameSite === "Lax", "new cookie keeps its flags");

  // 4. See your sessions.
  await page.click("text=Your sessions");
  await page.waitForURL(`${base}/devices`);
  const rows = await page.locator("tr.session").count();
  check(rows === 1, `one session listed (got ${rows})`);
  check(
    (await page.locator("tr.session").first().textContent()).includes("this session"),
    "the listed session is marked as this one",
  );
  const row = await page.locator("tr.session").first().textContent();
  check(/Linux/.test(row) && row.includes("127.0.0.0/24"), `the device is named by system and network (${row.trim().split("\n")[0]})`);
  check(!(await page.content()).includes(authed.value), "the page never shows the session ID");
  await page.screenshot({ path: shot, fullPage: true });
  check(true, `screenshot saved to ${shot}`);

  // 5. Log out: the session is gone server side and the browser dropped the cookie.
  await page.goto(`${base}/`);
  await Promise.all([page.waitForURL(`${base}/?signed-out`), page.click("#logout")]);
  check(await page.isVisible("#user-anon"), "signed out");
  check((await page.textContent(".flash")).trim() === "Signed out", "the logout says so");
  check((await page.textContent("#count")).trim() === "0", "count is back to 0 after logout");
  const after = await sessionCookie();
  check(!after || after.value !== authed.value, "the old session cookie is gone");
  resp = await page.goto(`${base}/whoami`);
  check((await resp.text()) === "", "/whoami is anonymous after logout");

  console.log(`e2e: ${checks} passed, 0 failed`);
} catch (e) {
  console.error(`e2e: FAILED after ${checks} checks: ${e.message}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
