// Front-end budget: gzip size of the release WASM + JS, and time to hydration in headless
// Chromium (from navigation start until the app marks <html data-hydrated>), median of runs.
// Usage (after `cargo leptos build --release`): node end2end/bench/frontend.mjs
import { chromium } from "@playwright/test";
import { readFileSync, mkdtempSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const pkg = path.join(root, "target", "site", "pkg");
const gz = (file) => gzipSync(readFileSync(path.join(pkg, file)), { level: 9 }).length;
const wasm = gz("tether.wasm");
const js = gz("tether.js");

const server = spawn(path.join(root, "target", "release", "tether"), [
  "--listen", "127.0.0.1:0", "--data-dir", mkdtempSync(path.join(tmpdir(), "tether-fe-")), "--log", "warn",
], { cwd: root, env: { ...process.env, LEPTOS_SITE_ROOT: path.join(root, "target", "site") }, stdio: ["ignore", "pipe", "inherit"] });
const url = await new Promise((resolve) => {
  createInterface({ input: server.stdout }).on("line", (line) => {
    const m = /^listening on (\S+)$/.exec(line);
    if (m) resolve(m[1]);
  });
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage();
const times = [];
for (let i = 0; i < 7; i++) {
  await page.goto(`${url}/signin`);
  await page.waitForFunction(() => document.documentElement.dataset.hydrated === "true");
  times.push(await page.evaluate(() => performance.now()));
}
await browser.close();
server.kill();
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
console.log(`| release WASM gzip | ${(wasm / 1024).toFixed(1)} KiB |`);
console.log(`| release JS gzip | ${(js / 1024).toFixed(1)} KiB |`);
console.log(`| WASM + JS gzip | ${((wasm + js) / 1024).toFixed(1)} KiB |`);
console.log(`| navigation start → hydrated (median of 7, warm cache) | ${median.toFixed(0)} ms |`);
process.exit(0);
