// Bytes on the wire for a first visit and a repeat visit, in Chromium, against the release
// artifact (the site embedded and precompressed). Chromium talks to Tether through a TCP
// proxy here that counts every byte each way, so the count is what crosses the network:
// headers, bodies as encoded, the worker's fetches, the socket.
// Usage (after `cargo leptos build --release --precompress`): node end2end/bench/wire.mjs
import { chromium } from "@playwright/test";
import { cpSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.env.TETHER_SERVER_BIN ?? path.join(root, "target", "release", "tether");

// Counts per connection kind: a connection that asks for a WebSocket upgrade is the socket;
// every other one carries pages and files.
const count = { httpDown: 0, httpUp: 0, wsDown: 0, wsUp: 0, requests: 0, encodings: new Map() };
const reset = () => Object.assign(count, { httpDown: 0, httpUp: 0, wsDown: 0, wsUp: 0, requests: 0, encodings: new Map() });
let upstream;
const proxy = net.createServer((client) => {
  const server = net.connect(upstream.port, upstream.host);
  let ws = false;
  client.on("data", (chunk) => {
    const text = chunk.toString("latin1");
    if (/^(GET|HEAD|POST) /m.test(text)) count.requests += (text.match(/^(GET|HEAD|POST) /gm) || []).length;
    if (/^upgrade: websocket/im.test(text)) ws = true;
    if (ws) count.wsUp += chunk.length;
    else count.httpUp += chunk.length;
    server.write(chunk);
  });
  server.on("data", (chunk) => {
    if (ws) count.wsDown += chunk.length;
    else {
      count.httpDown += chunk.length;
      for (const m of chunk.toString("latin1").matchAll(/^content-encoding: (\S+)/gim)) {
        count.encodings.set(m[1], (count.encodings.get(m[1]) ?? 0) + 1);
      }
    }
    client.write(chunk);
  });
  const end = () => { client.destroy(); server.destroy(); };
  client.on("close", end); server.on("close", end);
  client.on("error", end); server.on("error", end);
});
await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${proxy.address().port}`;

// Tether as built (site embedded, precompressed, hashed names), and beside it the reference:
// the same site served from disk the way earlier builds did (no .br/.gz files, no cache
// policy, unhashed names).
async function measure(siteRoot) {
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith("LEPTOS_")) delete env[name];
  if (siteRoot) env.LEPTOS_SITE_ROOT = siteRoot;
  const dataDir = mkdtempSync(path.join(tmpdir(), "tether-wire-"));
  const tether = spawn(binary, ["--listen", "127.0.0.1:0", "--data-dir", dataDir, "--public-origin", origin, "--log", "warn"], {
    cwd: dataDir, env, stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise((resolve) => {
    createInterface({ input: tether.stdout }).on("line", (line) => {
      const m = /^listening on (\S+)$/.exec(line);
      if (m) resolve(new URL(m[1]));
    });
  });
  upstream = { host: url.hostname, port: Number(url.port) };

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const context = await browser.newContext();
  const rows = [];
  const visit = async (name, go) => {
    reset();
    const page = await context.newPage();
    await go(page);
    await page.waitForFunction(() => document.documentElement.dataset.hydrated === "true");
    // The socket connects after hydration; give it and any late fetch a moment.
    await page.waitForTimeout(1500);
    row(name);
    return page;
  };
  const row = (name) => rows.push({ name, ...count, encodings: [...count.encodings].map(([k, v]) => `${k}×${v}`).join(" ") || "none" });
  const first = await visit("first visit (empty cache), sign-in page", (page) => page.goto(`${origin}/signin`));
  // Sign in there: the visits after this one have a session, so they open the socket.
  reset();
  await first.getByLabel("Your name").fill("wire");
  await first.getByRole("button", { name: "Continue" }).click();
  await first.getByRole("heading", { level: 1, name: "People" }).waitFor();
  await first.waitForTimeout(1500);
  row("signing in (socket opens, session and roster arrive)");
  await first.close();
  const again = await visit("repeat visit (new tab, within the page's minute), signed in", (page) => page.goto(`${origin}/`));
  reset();
  await again.reload();
  await again.waitForFunction(() => document.documentElement.dataset.hydrated === "true");
  await again.waitForTimeout(1500);
  row("reload (revalidates the page and stable names), signed in");

  await browser.close();
  tether.kill();
  await new Promise((resolve) => tether.once("exit", resolve));
  return rows;
}

const reference = mkdtempSync(path.join(tmpdir(), "tether-wire-site-"));
cpSync(path.join(root, "target", "site"), reference, { recursive: true, filter: (f) => !/\.(br|gz)$/.test(f) });
const results = [["Tether (embedded artifact)", await measure(null)], ["reference: same site from disk, uncompressed", await measure(reference)]];
proxy.close();
const kib = (n) => (n / 1024).toFixed(1);
console.log("| server | visit | requests | pages + files ↓ | ↑ | socket ↓ | ↑ | encodings |");
console.log("|---|---|---|---|---|---|---|---|");
for (const [server, rows] of results) {
  for (const r of rows) {
    console.log(`| ${server} | ${r.name} | ${r.requests} | ${kib(r.httpDown)} KiB | ${kib(r.httpUp)} KiB | ${kib(r.wsDown)} KiB | ${kib(r.wsUp)} KiB | ${r.encodings} |`);
  }
}
const total = (rows) => rows.reduce((sum, r) => sum + r.httpDown + r.wsDown, 0);
const [ours, theirs] = results.map(([, rows]) => rows);
for (let i = 0; i < ours.length; i++) {
  console.log(`ratio ${ours[i].name}: ${((ours[i].httpDown + ours[i].wsDown) / (theirs[i].httpDown + theirs[i].wsDown)).toFixed(3)}`);
}
console.log(`ratio all visits: ${(total(ours) / total(theirs)).toFixed(3)}`);
process.exit(0);
