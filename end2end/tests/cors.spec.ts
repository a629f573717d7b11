// The socket.io tutorial's setup: the page on one origin, Tether on another, the official
// socket.io-client with its default transports (polling first, then the upgrade). Tether is
// started with `--allowed-origins <the page's origin>`; a third origin is not allowed.
import { test, expect, Page } from "@playwright/test";
import { createServer, Server } from "node:http";
import { AddressInfo } from "node:net";
import { readFileSync } from "node:fs";
import path from "node:path";
import { freshDataDir, removeDataDir, RunningServer, startServer, stopServer } from "../server";

const page = readFileSync(path.join(__dirname, "..", "fixtures", "cors-page.html"));
// Served by the page's own origin: nothing from a CDN.
const client = readFileSync(
  path.join(__dirname, "..", "node_modules", "socket.io-client", "dist", "socket.io.min.js"),
);

/** A static origin serving the page and the client, on 127.0.0.1 and a port of its own. */
async function pageOrigin(): Promise<{ origin: string; server: Server }> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://page");
    if (url.pathname === "/") {
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(page);
    } else if (url.pathname === "/socket.io.min.js") {
      res.writeHead(200, { "Content-Type": "text/javascript; charset=utf-8" }).end(client);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, server };
}

type State = {
  session: { sessionID: string; userID: string } | null;
  users: unknown[] | null;
  received: { content: string; from: string; to: string }[];
  errors: string[];
  connected: boolean;
  firstTransport: string | null;
  upgradedTo: string | null;
};

function state(p: Page): Promise<State> {
  return p.evaluate(() => (window as unknown as { state: State }).state);
}

let tether: RunningServer;
let allowed: { origin: string; server: Server };
let foreign: { origin: string; server: Server };

test.beforeAll(async () => {
  allowed = await pageOrigin();
  foreign = await pageOrigin();
  tether = await startServer(freshDataDir(), "127.0.0.1:0", ["--allowed-origins", allowed.origin]);
});

test.afterAll(async () => {
  if (tether) {
    await stopServer(tether);
    removeDataDir(tether.dataDir);
  }
  for (const origin of [allowed, foreign]) {
    if (origin) await new Promise((resolve) => origin.server.close(resolve));
  }
});

/** Opens the page on `origin` as `username`, watching the responses Tether gives it. */
async function openAs(p: Page, origin: string, username: string) {
  const polls: { origin: string | null; status: number }[] = [];
  p.on("response", (response) => {
    const url = response.url();
    if (url.startsWith(`${tether.url}/socket.io/`) && url.includes("transport=polling")) {
      polls.push({ origin: response.headers()["access-control-allow-origin"] ?? null, status: response.status() });
    }
  });
  const websockets: string[] = [];
  p.on("websocket", (ws) => websockets.push(ws.url()));
  const query = new URLSearchParams({ server: tether.url, username });
  await p.goto(`${origin}/?${query}`);
  return { polls, websockets };
}

test("a page on an allowed second origin connects over polling, upgrades, and exchanges messages", async ({
  browser,
}) => {
  expect(new URL(allowed.origin).origin).not.toBe(new URL(tether.url).origin);
  const ada = await browser.newPage();
  const bob = await browser.newPage();
  const adaNet = await openAs(ada, allowed.origin, "ada");
  const bobNet = await openAs(bob, allowed.origin, "bob");

  for (const p of [ada, bob]) {
    await expect(p.getByRole("status")).toHaveText("connected");
    await expect.poll(async () => (await state(p)).session?.userID ?? null).not.toBeNull();
    await expect.poll(async () => (await state(p)).users).not.toBeNull();
    // Polling first, as the client's defaults say, then the upgrade to websocket.
    await expect.poll(async () => (await state(p)).upgradedTo).toBe("websocket");
    expect((await state(p)).firstTransport).toBe("polling");
    expect(await p.evaluate(() => (window as any).socket.io.engine.transport.name)).toBe("websocket");
    expect((await state(p)).errors).toEqual([]);
  }
  for (const net of [adaNet, bobNet]) {
    expect(net.polls.length).toBeGreaterThan(0);
    for (const poll of net.polls) expect(poll).toEqual({ origin: allowed.origin, status: 200 });
    expect(net.websockets.some((url) => url.startsWith(tether.url.replace(/^http/, "ws")))).toBe(true);
  }

  const adaId = (await state(ada)).session!.userID;
  const bobId = (await state(bob)).session!.userID;
  await ada.evaluate(([to]) => (window as any).sendTo(to, "hello across origins"), [bobId]);
  await expect
    .poll(async () => (await state(bob)).received)
    .toContainEqual(expect.objectContaining({ content: "hello across origins", from: adaId, to: bobId }));

  // A request that needs a preflight (a header of its own) is let through by the browser too.
  const answer = await ada.evaluate(async (url) => {
    const response = await fetch(`${url}/socket.io/?EIO=4&transport=polling`, {
      headers: { "X-Requested-With": "cors-spec" },
    });
    return { status: response.status, body: await response.text() };
  }, tether.url);
  expect(answer.status).toBe(200);
  expect(answer.body).toMatch(/^0\{"sid":/);

  await ada.close();
  await bob.close();
});

test("a page on an origin not allowed never connects, and Tether answers it 403 without CORS", async ({
  browser,
  request,
}) => {
  const eve = await browser.newPage();
  await openAs(eve, foreign.origin, "eve");
  await expect(eve.getByRole("status")).toHaveText(/^connect_error/);
  const seen = await state(eve);
  expect(seen.connected).toBe(false);
  expect(seen.session).toBeNull();
  const blocked = await eve.evaluate(async (url) => {
    try {
      await fetch(`${url}/socket.io/?EIO=4&transport=polling`);
      return "read";
    } catch (error) {
      return (error as Error).name;
    }
  }, tether.url);
  expect(blocked).toBe("TypeError");
  await eve.close();

  // What the browser was not allowed to read: 403, and no header that would let it.
  const polling = `${tether.url}/socket.io/?EIO=4&transport=polling`;
  for (const method of ["GET", "OPTIONS"]) {
    const response = await request.fetch(polling, {
      method,
      headers: {
        Origin: foreign.origin,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-requested-with",
      },
    });
    expect(response.status(), method).toBe(403);
    const cors = Object.keys(response.headers()).filter((name) => name.startsWith("access-control-"));
    expect(cors, method).toEqual([]);
  }
  // The allowed origin, by the same direct request, is answered with itself.
  const ok = await request.fetch(polling, { headers: { Origin: allowed.origin } });
  expect(ok.status()).toBe(200);
  expect(ok.headers()["access-control-allow-origin"]).toBe(allowed.origin);
});
