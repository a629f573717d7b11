// The release artifact as operators run it: one binary, started from a directory of its own
// with no site beside it (server.ts), serving the site it carries: precompressed by
// Accept-Encoding, the app's files under hashed names cached for good, pages briefly.
import { execFileSync } from "node:child_process";
import { test, expect } from "@playwright/test";
import { serverBinary } from "../server";

const IMMUTABLE = "public, max-age=31536000, immutable";

async function assetPaths(request: import("@playwright/test").APIRequestContext) {
  const html = await (await request.get("/signin")).text();
  const pkg = /data-pkg="([^"]+)"/.exec(html)?.[1];
  expect(pkg, "the page names its build").toMatch(/^\/pkg\/tether\.[0-9a-f]{16}$/);
  for (const ext of ["js", "wasm", "css"]) expect(html).toContain(`${pkg}.${ext}`);
  return { js: `${pkg}.js`, wasm: `${pkg}.wasm`, css: `${pkg}.css` };
}

test("tether --version says what it is: version, commit, the site it carries", () => {
  const out = execFileSync(serverBinary(), ["--version"], { encoding: "utf8" });
  expect(out).toMatch(/^tether \d+\.\d+\.\d+\n/);
  expect(out).toMatch(/^site: embedded: \d+ files, build [0-9a-f]{16}, precompressed \(br, gzip\)$/m);
  expect(out).toMatch(/^profile: release$/m);
});

test("the app's files are hashed, immutable and precompressed by Accept-Encoding", async ({ request }) => {
  const paths = await assetPaths(request);
  const sizes: Record<string, number> = {};
  for (const encoding of ["br", "gzip", "identity"]) {
    const response = await request.get(paths.wasm, { headers: { "accept-encoding": encoding } });
    expect(response.status()).toBe(200);
    const headers = response.headers();
    expect(headers["cache-control"]).toBe(IMMUTABLE);
    expect(headers["content-type"]).toBe("application/wasm");
    expect(headers["vary"]).toBe("Accept-Encoding");
    expect(headers["content-encoding"]).toBe(encoding === "identity" ? undefined : encoding);
    sizes[encoding] = Number(headers["content-length"]);
    // What arrives decodes to the module itself.
    const body = await response.body();
    expect(body.subarray(0, 4).toString("hex")).toBe("0061736d");
  }
  expect(sizes.br).toBeLessThan(sizes.gzip);
  expect(sizes.gzip).toBeLessThan(sizes.identity / 2);
  for (const path of [paths.js, paths.css]) {
    const response = await request.get(path, { headers: { "accept-encoding": "gzip, deflate, br" } });
    expect(response.headers()["cache-control"]).toBe(IMMUTABLE);
    expect(response.headers()["content-encoding"]).toBe("br");
  }
});

test("stable names are revalidated with an ETag; pages are cached a minute, privately", async ({ request }) => {
  const worker = await request.get("/tether-worker.js", { headers: { "accept-encoding": "gzip" } });
  expect(worker.status()).toBe(200);
  expect(worker.headers()["cache-control"]).toBe("no-cache");
  const etag = worker.headers()["etag"];
  expect(etag).toMatch(/^"[0-9a-f]{16}(-gz|-br)?"$/);
  const again = await request.get("/tether-worker.js", {
    headers: { "accept-encoding": "gzip", "if-none-match": etag },
  });
  expect(again.status()).toBe(304);
  expect(await again.body()).toHaveLength(0);

  const page = await request.get("/signin", { headers: { "accept-encoding": "gzip, deflate, br" } });
  expect(page.headers()["cache-control"]).toBe("private, max-age=60");
  // Pages are rendered per request and gzipped on the way out; what arrives decodes to the page.
  expect(page.headers()["content-encoding"]).toBe("gzip");
  expect(await page.text()).toContain("<h1>Tether</h1>");
  const missing = await request.get("/pkg/tether.0000000000000000.wasm");
  expect(missing.status()).toBe(404);
  expect(missing.headers()["content-type"]).toMatch(/^text\/html/);
});

test("a first visit loads the build's hashed files, brotli-compressed, and hydrates", async ({ page }) => {
  const encodings = new Map<string, string | undefined>();
  page.on("response", async (response) => {
    const url = new URL(response.url());
    if (url.pathname.startsWith("/pkg/")) {
      encodings.set(url.pathname, (await response.allHeaders())["content-encoding"]);
    }
  });
  await page.goto("/signin");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  const names = [...encodings.keys()];
  expect(names.some((n) => /^\/pkg\/tether\.[0-9a-f]{16}\.wasm$/.test(n)), names.join(", ")).toBe(true);
  expect(names.some((n) => /^\/pkg\/tether\.[0-9a-f]{16}\.js$/.test(n)), names.join(", ")).toBe(true);
  for (const [name, encoding] of encodings) expect(encoding, name).toMatch(/^(br|gzip)$/);
});
