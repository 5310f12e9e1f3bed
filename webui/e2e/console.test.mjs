// The console end to end: Debian's Chromium (driven by playwright-core, never a downloaded
// browser) against real apid, probed, licensed, ingestd and packetd on loopback. Each step also writes a
// screenshot of its page to docs/screenshots/.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO, changePassword, launchBrowser, readText, signIn as login, startStack, step, totp } from "./harness.mjs";

const FIRST_PW = "first-boot-Secret-42";
const ADMIN_PW = "rookery-console-passphrase-9";
const VIEWER_PW = "viewer-reads-only-passphrase-3";
const SHOTS = join(REPO, "docs/screenshots");

let stack;
let browser;
let page;
let totpSecret;
/** Console messages about the Content Security Policy (a refused script or style). */
const cspViolations = [];

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true, animations: "disabled" });
}

const signIn = (username, password) => login(page, stack.base, username, password);

async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in" }).waitFor();
}

describe("web console", { timeout: 240_000 }, () => {
  before(async () => {
    mkdirSync(SHOTS, { recursive: true });
    stack = await startStack({ adminPassword: FIRST_PW });
    browser = await launchBrowser();
    page = browser.page;
    page.on("console", (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it("serves the console on a deep link, with its CSP and no inline code", async () => {
    const r = await page.goto(stack.base + "/config/probed");
    assert.equal(r.status(), 200);
    assert.match(r.headers()["content-security-policy"], /script-src 'self'/);
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await shot("login");
  });

  it("makes the one-time admin change the password first", async () => {
    await signIn("admin", FIRST_PW);
    await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
    await shot("password-change");
    await changePassword(page, FIRST_PW, ADMIN_PW);
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  });

  it("shows daemon health, the licence and probe status with sparklines", async () => {
    const daemons = page.getByRole("region", { name: "Daemons" });
    await daemons.getByRole("row", { name: /probed.*serving/ }).waitFor();
    await daemons.getByRole("row", { name: /licensed.*serving/ }).waitFor();
    await page.getByRole("region", { name: "Licence" }).getByText("release mode off").waitFor();
    const probes = page.getByRole("region", { name: "Probes" });
    await probes.getByRole("row", { name: /web.*ok/ }).waitFor();
    await probes.getByRole("row", { name: /closed-port.*refused/ }).waitFor();
    await probes.getByRole("img", { name: /web: last [1-9]\d* probe times/ }).waitFor();
    const escalations = page.getByRole("region", { name: "Recent escalations" });
    await escalations.getByText(/No tier change recorded|→/).first().waitFor();
    assert.equal(await escalations.getByRole("alert").count(), 0);
    await shot("dashboard");
  });

  it("shows a probe result appearing, its timing chart, and runs it now", async () => {
    await page.getByRole("link", { name: "Probes" }).click();
    await page.getByRole("button", { name: "web", exact: true }).click();
    await page.getByRole("heading", { name: "Target web" }).waitFor();
    await page.getByRole("img", { name: "Probe timing of web, per phase, in milliseconds" }).locator("canvas").first().waitFor();
    const before = await page.getByRole("region", { name: "Target web" }).getByRole("row").count();
    await page.getByRole("button", { name: "Run now" }).click();
    await page.getByRole("status").filter({ hasText: "Run now:" }).filter({ hasText: "ok" }).waitFor();
    assert.ok(before > 1, "results are listed");
    await page.getByLabel("Filter targets").fill("closed");
    await page.getByRole("button", { name: "web", exact: true }).waitFor({ state: "detached" });
    await page.getByLabel("Filter targets").fill("");
    await shot("probes");
  });

  it("starts a STAMP session, follows its live chart and shows the results", async () => {
    await page.getByRole("link", { name: "Packet tests" }).click();
    await page.getByRole("heading", { name: "Packet tests" }).waitFor();
    const form = page.getByRole("form", { name: "New session" });
    // A name is not an address: the form says which field is wrong and sends nothing.
    await form.getByLabel("Reflector address", { exact: true }).fill("reflector.example");
    await form.getByRole("button", { name: "Start session" }).click();
    await form.getByRole("alert").filter({ hasText: "Reflector address" }).waitFor();
    // 300 packets at 100/s: three seconds of live progress from packetd's userspace reflector.
    await form.getByLabel("Reflector address", { exact: true }).fill("127.0.0.1");
    await form.getByLabel("Port", { exact: true }).fill(String(stack.stampPort));
    await form.getByLabel("Packets", { exact: true }).fill("300");
    await form.getByLabel("Rate (packets/s)", { exact: true }).fill("100");
    await form.getByLabel("DSCP", { exact: true }).fill("46");
    await form.getByRole("button", { name: "Start session" }).click();
    const detail = page.getByRole("region", { name: /^Session #\d+$/ });
    await detail.waitFor();
    // The chart is drawn from the Server-Sent Events while the session runs.
    await detail.getByRole("status").filter({ hasText: "live" }).waitFor();
    await detail.getByRole("img", { name: /^Round-trip time of session \d+, in milliseconds$/ }).locator("canvas").first().waitFor();
    await detail.getByRole("heading", { name: "Results", exact: true }).waitFor({ timeout: 20_000 });
    const results = detail.getByRole("table", { name: /^Results of session \d+$/ });
    await results.getByRole("row", { name: /Loss 0 of 300 \(0 %\)/ }).waitFor();
    for (const k of ["RTT p50", "RTT p90", "RTT p99", "RTT max", "Jitter (RFC 3550)"]) {
      assert.match(await results.getByRole("row", { name: k, exact: false }).first().textContent(), /\d+(\.\d+)? (ns|µs|ms)/, k);
    }
    await results.getByRole("row", { name: /^Duplicates 0$/ }).waitFor();
    await results.getByRole("row", { name: /^Reordered 0 / }).waitFor();
    await detail.getByRole("status").filter({ hasText: "done" }).filter({ hasText: "received 300, lost 0" }).waitFor();
    await page.getByRole("region", { name: "Sessions" }).getByRole("row", { name: /127\.0\.0\.1.*done.*300.*300.*0 %/ }).waitFor();
    await shot("packet-tests");

    // A long session is stopped from its page; its results so far stay.
    await form.getByLabel("Packets", { exact: true }).fill("");
    await form.getByLabel("Duration (ms)", { exact: true }).fill("60000");
    await form.getByLabel("Rate (packets/s)", { exact: true }).fill("20");
    await form.getByRole("button", { name: "Start session" }).click();
    await detail.getByRole("status").filter({ hasText: "live" }).waitFor();
    await detail.getByRole("button", { name: "Stop session" }).click();
    await detail.getByRole("status").filter({ hasText: "stopped" }).waitFor();
    await detail.getByRole("heading", { name: "Results", exact: true }).waitFor();
    assert.equal(await detail.getByRole("button", { name: "Stop session" }).count(), 0);
  });

  it("finds a line sent by logger through full-text search on the logs page", async () => {
    const token = `e2e${Date.now().toString(36)}`;
    execFileSync("logger", [
      "--server", "127.0.0.1", "--port", String(stack.syslogPort), "--udp", "--rfc5424",
      "--tag", "e2e-app", "--priority", "daemon.err", `uplink flapped ${token} on eth0`,
    ]);
    await page.getByRole("link", { name: "Logs" }).click();
    await page.getByRole("heading", { name: "Logs" }).waitFor();
    await page.getByLabel("Full-text search").fill(token);
    await page.getByRole("button", { name: "Search" }).click();
    // The UDP datagram may still be in ingestd's write queue: search again until it is stored.
    const row = page.getByRole("row").filter({ hasText: token });
    for (let i = 0; i < 50 && (await row.count()) === 0; i++) {
      await page.waitForTimeout(200);
      await page.getByRole("button", { name: "Search" }).click();
    }
    await row.waitFor();
    assert.match(await row.textContent(), /e2e-app.*err.*3/);
    // A filter that excludes it (severity at most 2, crit) hides it; an FTS syntax error is shown.
    await page.getByLabel("Severity at most").selectOption("2");
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByRole("status").filter({ hasText: "0 records" }).waitFor();
    await page.getByLabel("Severity at most").selectOption("");
    await page.getByLabel("Full-text search").fill('"unterminated');
    await page.getByRole("button", { name: "Search" }).click();
    await page.getByRole("alert").filter({ hasText: "q:" }).waitFor();
    await page.getByLabel("Full-text search").fill(token);
    await page.getByRole("button", { name: "Search" }).click();
    await row.waitFor();
    await shot("logs");
  });

  it("charts a metric ingestd scraped from the daemons", async () => {
    await page.getByRole("link", { name: "Metrics" }).click();
    await page.getByLabel("Metric name").fill("up");
    await page.getByLabel("Range").selectOption("15");
    const status = page.getByRole("status").filter({ hasText: /[1-9]\d* series of up/ });
    // ingestd scrapes every second; the first scrape may not be stored yet.
    for (let i = 0; i < 50; i++) {
      await page.getByRole("button", { name: "Show" }).click();
      await page.getByRole("status").filter({ hasText: "series of up" }).waitFor();
      if ((await status.count()) > 0) break;
      await page.waitForTimeout(300);
    }
    await status.waitFor();
    await page.getByRole("checkbox", { name: /job="ingestd"/ }).waitFor();
    await page.getByRole("img", { name: "up over the last 15 minutes" }).locator("canvas").first().waitFor();
    await shot("metrics");
  });

  it("enrols TOTP, then signs in with the code", async () => {
    await page.getByRole("link", { name: "Account" }).click();
    await page.getByRole("button", { name: "Start enrolment" }).click();
    totpSecret = (await page.getByTestId("totp-secret").textContent()).trim();
    await page.getByLabel("Code from the app").fill(totp(totpSecret, step()));
    await page.getByRole("button", { name: "Confirm" }).click();
    await page.getByText("Two-factor sign-in is on").waitFor();
    await shot("account");
    await signOut();

    await signIn("admin", ADMIN_PW);
    await page.getByLabel("Authenticator code").waitFor();
    await shot("login-totp");
    await page.getByLabel("Authenticator code").fill("000000" === totp(totpSecret, step() + 1) ? "111111" : "000000");
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("alert").filter({ hasText: "invalid_totp" }).waitFor();
    // The enrolment spent this step's code; the next step's is accepted (one step of skew).
    await page.getByLabel("Authenticator code").fill(totp(totpSecret, step() + 1));
    await page.getByRole("button", { name: "Verify" }).click();
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
  });

  it("shows a config error at its line, then applies the fix", async () => {
    await page.goto(stack.base + "/config/probed");
    const editor = page.getByLabel("probed.toml", { exact: true });
    await editor.waitFor();
    const running = await editor.inputValue();
    assert.match(running, /name = "web"/);
    const broken = running.replace('interval = "1s"', 'interval = "sometimes"');
    const badLine = broken.split("\n").findIndex((l) => l.includes('"sometimes"')) + 1;
    await editor.fill(broken);
    await page.getByRole("button", { name: "Apply", exact: true }).click();
    const issues = page.locator("#config-issues");
    await issues.getByText(`line ${badLine}, column`).waitFor();
    assert.match(await issues.textContent(), /interval/);
    assert.equal(await page.locator(`.gutter [data-line="${badLine}"]`).getAttribute("class"), "bad");
    assert.equal(readText(stack.path("etc/probed.toml")), running, "a rejected file is not written");
    await shot("config-error");

    const fixed = running.replace('interval = "1s"', 'interval = "2s"');
    await editor.fill(fixed);
    await page.getByRole("button", { name: "Show changes" }).click();
    await page.getByLabel("edits against the running file").getByText('interval = "2s"').waitFor();
    await page.getByRole("button", { name: "Apply", exact: true }).click();
    await page.getByRole("status").filter({ hasText: "Applied" }).waitFor();
    assert.equal(readText(stack.path("etc/probed.toml")), fixed);
    await page.getByRole("button", { name: /^View #\d+$/ }).first().waitFor();
    await shot("config");
  });

  it("lets an admin manage users, API keys, the audit log and see the licence", async () => {
    await page.getByRole("link", { name: "Users" }).click();
    const form = page.getByRole("form", { name: "New user" });
    await form.getByLabel("Username").fill("vera");
    await form.getByLabel("Initial password").fill(VIEWER_PW);
    await form.getByLabel("Role").selectOption("viewer");
    await form.getByLabel("Must change the password at first sign-in").uncheck();
    await form.getByRole("button", { name: "Create user" }).click();
    await page.getByRole("row", { name: /vera/ }).waitFor();
    await shot("users");

    await page.getByRole("link", { name: "API keys" }).click();
    const keyForm = page.getByRole("form", { name: "New API key" });
    await keyForm.getByLabel("Name").fill("grafana");
    await keyForm.getByRole("button", { name: "Create key" }).click();
    await page.getByText(/^rk_/).waitFor();
    await page.getByRole("row", { name: /grafana/ }).waitFor();
    await shot("api-keys");

    await page.getByRole("link", { name: "Audit log" }).click();
    await page.getByRole("row", { name: /config\.probed\.apply/ }).first().waitFor();
    await page.getByLabel("Action").fill("login");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.getByRole("row", { name: /admin.*login.*success/ }).first().waitFor();
    await shot("audit");

    await page.getByRole("link", { name: "Licence" }).click();
    await page.getByRole("heading", { name: "Set the licence key" }).waitFor();
    await shot("licence");
    await signOut();
  });

  it("shows a viewer no edit control, and apid refuses the viewer's edit", async () => {
    // With the keyboard alone: the username field has the focus, Tab, Enter.
    await page.goto(stack.base + "/");
    await page.getByLabel("Username").waitFor();
    await page.keyboard.type("vera");
    await page.keyboard.press("Tab");
    await page.keyboard.type(VIEWER_PW);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Dashboard" }).waitFor();
    // Tab: the skip link, then the navigation (Dashboard, Probes); Enter follows the link.
    for (let i = 0; i < 3; i++) await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), "Probes");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Probes", exact: true }).waitFor();
    const nav = page.getByRole("navigation", { name: "Main" });
    assert.equal(await nav.getByRole("link", { name: "Users" }).count(), 0);
    assert.equal(await nav.getByRole("link", { name: "Audit log" }).count(), 0);

    await page.goto(stack.base + "/config/probed");
    const editor = page.getByLabel("probed.toml", { exact: true });
    await editor.waitFor();
    assert.equal(await editor.getAttribute("readonly"), "");
    assert.equal(await page.getByRole("button", { name: "Apply", exact: true }).count(), 0);
    assert.equal(await page.getByRole("button", { name: /^Restore/ }).count(), 0);
    await page.getByText("a maintainer or admin can change it").waitFor();
    await shot("config-viewer");

    await page.goto(stack.base + "/probes?target=web");
    await page.getByRole("heading", { name: "Target web" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Run now" }).count(), 0);

    // Packet tests: the viewer sees the sessions and results, but no start or stop control.
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Packet tests" }).click();
    await page.getByRole("heading", { name: "Packet tests" }).waitFor();
    await page.getByRole("region", { name: "Sessions" }).getByRole("row", { name: /127\.0\.0\.1.*done/ }).first().waitFor();
    assert.equal(await page.getByRole("form", { name: "New session" }).count(), 0);
    assert.equal(await page.getByRole("button", { name: "Start session" }).count(), 0);
    await page.getByRole("region", { name: "Sessions" }).getByRole("button", { name: /^#\d+$/ }).first().click();
    await page.getByRole("table", { name: /^Results of session \d+$/ }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Stop session" }).count(), 0);
    const refused = await page.evaluate(async () => {
      const r = await fetch("/api/v1/packet/sessions", {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": sessionStorage.getItem("rookery.csrf") ?? "" },
        body: JSON.stringify({ destination: "127.0.0.1", count: 1 }),
      });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error, "forbidden");

    // The server enforces it too: the same session, with its CSRF token, gets 403.
    const answer = await page.evaluate(async () => {
      const r = await fetch("/api/v1/config/probed", {
        method: "PUT",
        headers: { "content-type": "application/json", "x-csrf-token": sessionStorage.getItem("rookery.csrf") ?? "" },
        body: JSON.stringify({ text: "# viewer was here\n" }),
      });
      return { status: r.status, body: await r.json() };
    });
    assert.equal(answer.status, 403, JSON.stringify(answer.body));
    assert.equal(answer.body.error, "forbidden");
    assert.match(answer.body.message, /maintainer/);
    assert.doesNotMatch(readText(stack.path("etc/probed.toml")), /viewer was here/);
  });

  it("ran every page under the console's CSP without a violation", () => {
    assert.deepEqual(cspViolations, []);
  });
});
