// Starts real daemons for the end-to-end tests: rookery-licensed, rookery-probed,
// rookery-ingestd, rookery-packetd and rookery-apid (built by cargo beforehand; ROOKERY_BIN_DIR, default ../target/debug), each
// with its own config in a fresh temp directory, on loopback only. apid serves webui/dist.
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const WEBUI = resolve(here, "..");
export const REPO = resolve(WEBUI, "..");

/** A port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** A UDP port free on 127.0.0.1 right now. */
export function freeUdpPort() {
  return new Promise((ok, fail) => {
    const s = createSocket("udp4");
    s.once("error", fail);
    s.bind(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** A TCP server that accepts and closes every connection (a target that is up). */
export function tcpUp() {
  return new Promise((ok, fail) => {
    const s = createServer((c) => c.end());
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => ok(s));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 100 ms until it returns a truthy value, at most `ms`. */
export async function waitFor(what, check, ms = 30_000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** GET over HTTPS without verifying the (self-signed) certificate; resolves status and body. */
export function httpsGet(url) {
  return new Promise((ok, fail) => {
    const req = request(url, { rejectUnauthorized: false, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => ok({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", fail);
    req.end();
  });
}

/** RFC 6238 TOTP (SHA-1, 30 s, 6 digits) of a base32 secret at a step. */
export function totp(secretB32, step) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const ch of secretB32.replace(/=+$/, "").toUpperCase()) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    bits += v.toString(2).padStart(5, "0");
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  const counter = Buffer.alloc(8);
  counter.writeBigInt64BE(BigInt(step));
  const h = createHmac("sha1", Buffer.from(bytes)).update(counter).digest();
  const off = h[h.length - 1] & 0x0f;
  const code = (h.readUInt32BE(off) & 0x7fffffff) % 1_000_000;
  return String(code).padStart(6, "0");
}

export const step = () => Math.floor(Date.now() / 1000 / 30);

/** The daemons, running until `stop()`. */
export async function startStack({ adminPassword, extraTargets = 0 }) {
  const bin = resolve(process.env.ROOKERY_BIN_DIR ?? join(REPO, "target/debug"));
  for (const b of ["rookery-apid", "rookery-probed", "rookery-licensed", "rookery-ingestd", "rookery-packetd"]) {
    if (!existsSync(join(bin, b))) {
      throw new Error(`${join(bin, b)} is missing: build it first (cargo build -p ${b} --bins) or set ROOKERY_BIN_DIR`);
    }
  }
  const dist = join(WEBUI, "dist");
  if (!existsSync(join(dist, "index.html"))) throw new Error(`${dist}/index.html is missing: run npm run build`);

  const dir = mkdtempSync(join(tmpdir(), "rookery-webui-e2e-"));
  const p = (s) => join(dir, s);
  for (const d of ["etc", "run", "tls", "state"]) mkdirSync(p(d), { recursive: true });
  const up = await tcpUp();
  const closedPort = await freePort();
  const apidPort = await freePort();
  const probedMetrics = await freePort();
  const licensedMetrics = await freePort();
  const apidMetrics = await freePort();
  const ingestdMetrics = await freePort();
  const syslogPort = await freeUdpPort();
  const packetdMetrics = await freePort();
  const stampPort = await freeUdpPort();

  writeFileSync(
    p("etc/licensed.toml"),
    `# licensed for the console's end-to-end test\n[grpc]\nsocket = "${p("run/licensed.sock")}"\n\n[metrics]\nlisten = "127.0.0.1:${licensedMetrics}"\n\n[state]\ndirectory = "${p("licensed-state")}"\n`,
  );
  writeFileSync(
    p("etc/probed.toml"),
    [
      "# probed for the console's end-to-end test",
      "[grpc]",
      `socket = "${p("run/probed.sock")}"`,
      "",
      "[metrics]",
      `listen = "127.0.0.1:${probedMetrics}"`,
      "",
      "[state]",
      `directory = "${p("probed-state")}"`,
      "",
      "[modules.tcp]",
      'prober = "tcp"',
      'timeout = "1s"',
      "",
      "[[targets]]",
      'name = "web"',
      'module = "tcp"',
      `address = "127.0.0.1:${up.address().port}"`,
      'interval = "1s"',
      "",
      "[[targets]]",
      'name = "closed-port"',
      'module = "tcp"',
      `address = "127.0.0.1:${closedPort}"`,
      'interval = "1s"',
      "",
      // Many more targets, probed rarely (start times spread over the hour), for scale tests.
      ...Array.from({ length: extraTargets }, (_, i) => {
        const n = String(i + 1).padStart(5, "0");
        return `[[targets]]\nname = "t${n}"\nmodule = "tcp"\naddress = "127.0.0.1:${closedPort}"\ninterval = "1h"\nlabels = { site = "site-${i % 50}" }\n`;
      }),
    ].join("\n"),
  );
  writeFileSync(
    p("etc/ingestd.toml"),
    [
      "# ingestd for the console's end-to-end test: syslog over UDP only; it scrapes the daemons",
      "[syslog]",
      `udp = ["127.0.0.1:${syslogPort}"]`,
      "tcp = []",
      "[http]",
      "listen = []",
      "[otlp]",
      "grpc = []",
      "http = []",
      "[scrape]",
      'interval = "1s"',
      'timeout = "1s"',
      "targets = [",
      ...[["ingestd", ingestdMetrics], ["probed", probedMetrics], ["licensed", licensedMetrics], ["apid", apidMetrics]].map(
        ([job, port]) => `  { job = "${job}", url = "http://127.0.0.1:${port}/metrics" },`,
      ),
      "]",
      "[forward]",
      `licensed-socket = "${p("run/licensed.sock")}"`,
      "[grpc]",
      `socket = "${p("run/ingestd.sock")}"`,
      "[metrics]",
      `listen = "127.0.0.1:${ingestdMetrics}"`,
      "[state]",
      `directory = "${p("ingestd-state")}"`,
      "",
    ].join("\n"),
  );
  writeFileSync(
    p("etc/packetd.toml"),
    [
      "# packetd for the console's end-to-end test: its userspace STAMP reflector on loopback",
      "# (no XDP, an unprivileged port), answering 127.0.0.0/8; sessions to it from the console",
      "[xdp]",
      'interfaces = ["lo"]',
      'mode = "userspace"',
      `stamp-port = ${stampPort}`,
      "echo-port = 0",
      'allow-sources = ["127.0.0.0/8"]',
      "[sessions]",
      "max-pps = 2000",
      "[grpc]",
      `socket = "${p("run/packetd.sock")}"`,
      "[metrics]",
      `listen = "127.0.0.1:${packetdMetrics}"`,
      "[state]",
      `directory = "${p("packetd-state")}"`,
      "",
    ].join("\n"),
  );
  writeFileSync(p("initial-admin"), `username=admin\npassword=${adminPassword}\n`);
  writeFileSync(
    p("apid.toml"),
    [
      "[http]",
      `listen = "127.0.0.1:${apidPort}"`,
      "redirect = false",
      "[tls]",
      `cert = "${p("tls/apid.crt")}"`,
      `key = "${p("tls/apid.key")}"`,
      "[auth]",
      `signing-key = "${p("state/token-signing.key")}"`,
      `initial-admin = "${p("initial-admin")}"`,
      "[daemons]",
      `run-dir = "${p("run")}"`,
      `config-dir = "${p("etc")}"`,
      "[webui]",
      `directory = "${dist}"`,
      "[grpc]",
      `socket = "${p("run/apid.sock")}"`,
      "[metrics]",
      `listen = "127.0.0.1:${apidMetrics}"`,
      "[state]",
      `directory = "${p("state")}"`,
      "",
    ].join("\n"),
  );

  const children = [];
  const start = (name, config) => {
    const log = p(`${name}.log`);
    writeFileSync(log, "");
    const child = spawn(join(bin, `rookery-${name}`), ["run", "--config", config], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", () => writeFileSync(log, out));
    children.push({ name, child, log: () => out });
    return child;
  };
  const stack = {
    dir,
    base: `https://localhost:${apidPort}`,
    syslogPort,
    stampPort,
    path: p,
    logs: () => children.map((c) => `----- ${c.name}\n${c.log()}`).join("\n"),
    async stop() {
      for (const c of children) if (c.child.exitCode === null) c.child.kill("SIGTERM");
      await Promise.all(
        children.map(
          (c) =>
            new Promise((r) => {
              if (c.child.exitCode !== null) return r();
              const t = setTimeout(() => {
                c.child.kill("SIGKILL");
                r();
              }, 15_000);
              c.child.on("exit", () => {
                clearTimeout(t);
                r();
              });
            }),
        ),
      );
      up.close();
      if (!process.env.ROOKERY_E2E_KEEP) rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    start("licensed", p("etc/licensed.toml"));
    start("probed", p("etc/probed.toml"));
    start("ingestd", p("etc/ingestd.toml"));
    start("packetd", p("etc/packetd.toml"));
    start("apid", p("apid.toml"));
    for (const c of children) {
      c.child.on("exit", (code) => {
        if (code !== 0 && code !== null) console.error(`rookery-${c.name} exited ${code}:\n${c.log()}`);
      });
    }
    await waitFor(
      "licensed, probed, ingestd and packetd sockets",
      () => ["licensed", "probed", "ingestd", "packetd"].every((d) => existsSync(p(`run/${d}.sock`))),
    );
    await waitFor("apid over HTTPS", async () => (await httpsGet(`${stack.base}/api/v1/openapi.json`)).status === 200);
  } catch (err) {
    console.error(stack.logs());
    await stack.stop();
    throw err;
  }
  return stack;
}

/** Debian's Chromium with a fresh profile, headless, never reaching out (see docs/webui.md). */
export async function launchBrowser() {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "rookery-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.ROOKERY_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1280, height: 860 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(15_000);
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (err) => console.error("page error:", err.message));
  return {
    context,
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Signs in through the sign-in page (no second factor). */
export async function signIn(page, base, username, password) {
  await page.goto(base + "/");
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** The forced password change of a first sign-in, through the console. */
export async function changePassword(page, current, next) {
  await page.getByRole("heading", { name: "Choose a new password" }).waitFor();
  await page.getByLabel("Current password").fill(current);
  await page.getByLabel("New password", { exact: true }).fill(next);
  await page.getByLabel("New password again").fill(next);
  await page.getByRole("button", { name: "Change password" }).click();
}

export function readText(path) {
  return readFileSync(path, "utf8");
}
