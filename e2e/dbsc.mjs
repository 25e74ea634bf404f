// Device Bound Session Credentials in real Chromium: signs in on `sessionkit serve --dbsc` and
// reports what the browser did (registration, bound cookie, refresh), step by step. It is an
// experiment, not a pass/fail test: on platforms where Chromium has no DBSC key provider it
// prints why nothing happened.
//
// Usage: node e2e/dbsc.mjs BASE_URL [BOUND_LIFETIME_SECONDS]
//   BASE_URL: http://localhost:PORT (a secure context, so the __Host- cookies stick), or an
//   https:// front for the demo with DBSC_INSECURE=1 for a self-signed certificate.
// Env: CHROMIUM (default /usr/bin/chromium); DBSC_FEATURES overrides --enable-features.
// Exit code 0 when Chromium registered and refreshed, 3 when it never registered, 1 on error.

import { chromium } from "playwright-core";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, lifetimeArg] = process.argv.slice(2);
const lifetime = Number(lifetimeArg || "5");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
// DeviceBoundSessions turns the standard (W3C) DBSC on; the software-key feature replaces
// the TPM-backed key provider, which Linux builds lack, by a software one meant for manual
// testing. The refresh quota would throttle our short test lifetimes.
const features =
  process.env.DBSC_FEATURES ||
  "DeviceBoundSessions,EnableBoundSessionCredentialsSoftwareKeysForManualTesting";

const profile = mkdtempSync(join(tmpdir(), "sessionkit-dbsc-"));
// chrome://flags entries, as the profile's Local State stores them (DBSC_LABS, comma
// separated, e.g. "enable-standard-device-bound-session-credentials@2").
if (process.env.DBSC_LABS) {
  writeFileSync(
    join(profile, "Local State"),
    JSON.stringify({ browser: { enabled_labs_experiments: process.env.DBSC_LABS.split(",") } }),
  );
}
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    `--enable-features=${features}`,
    "--disable-features=DeviceBoundSessionsRefreshQuota",
    ...(process.env.DBSC_NETLOG ? [`--log-net-log=${process.env.DBSC_NETLOG}`, "--net-log-capture-mode=Everything"] : []),
    "--enable-logging=stderr",
    "--vmodule=*device_bound*=2,*unexportable*=2",
  ],
  // DBSC_INSECURE=1: accept a self-signed certificate (a local TLS front for the demo).
  ignoreHTTPSErrors: process.env.DBSC_INSECURE === "1",
  timeout: 60_000,
});

const seen = [];
context.on("request", (r) => {
  const u = new URL(r.url());
  if (u.pathname.startsWith("/dbsc/")) {
    const h = r.headers();
    seen.push(`${r.method()} ${u.pathname} proof=${"secure-session-response" in h} id=${h["sec-secure-session-id"] ?? "-"}`);
  }
});
context.on("response", (r) => {
  const u = new URL(r.url());
  if (u.pathname.startsWith("/dbsc/")) seen.push(`  -> ${r.status()} ${u.pathname}`);
});

const cookies = async () =>
  Object.fromEntries((await context.cookies(base)).map((c) => [c.name, c.value.slice(0, 8)]));

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  // DevTools reports DBSC events (registration, refresh, termination, and why they failed).
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  try {
    await cdp.send("Network.enableDeviceBoundSessions", { enable: true });
    cdp.on("Network.deviceBoundSessionEventOccurred", (e) =>
      seen.push(`devtools event: ${JSON.stringify(e)}`),
    );
    cdp.on("Network.deviceBoundSessionsAdded", (e) =>
      seen.push(`devtools sessions added: ${JSON.stringify(e)}`),
    );
  } catch (e) {
    seen.push(`devtools: no DBSC domain (${e.message})`);
  }
  await page.goto(`${base}/`);
  await page.fill("#username", "chromium");
  const login = page.waitForResponse((r) => r.url().endsWith("/login"));
  await page.click("#login");
  const lr = await login;
  console.log(`login: ${lr.status()} registration header: ${lr.headers()["secure-session-registration"] ?? "(none)"}`);
  await page.waitForLoadState();
  // Registration is asynchronous: give the browser time.
  await page.waitForTimeout(3_000);
  console.log(`cookies after login: ${JSON.stringify(await cookies())}`);
  const registered = seen.some((s) => s.includes("POST /dbsc/register"));
  console.log(`registration requests: ${registered ? "yes" : "none"}`);
  await page.waitForTimeout((lifetime + 1) * 1_000);
  const who = await page.goto(`${base}/whoami`);
  console.log(`after the bound cookie's lifetime: /whoami ${who.status()} ${(await who.text()).trim()}`);
  console.log(`cookies now: ${JSON.stringify(await cookies())}`);
  console.log("DBSC traffic:\n" + (seen.length ? seen.join("\n") : "(none)"));
  const refreshed = seen.some((s) => s.includes("200 /dbsc/refresh"));
  await context.close();
  process.exit(registered && refreshed ? 0 : registered ? 1 : 3);
} catch (e) {
  console.error(e);
  await context.close();
  process.exit(1);
}
