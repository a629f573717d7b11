import { test, expect, Page } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { signIn, personLink, newPerson, openChat, send, messages } from "./helpers";

test("under the reject tab policy a second tab offers \"Use here\", and the first can take it back", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--tab-policy", "reject"]);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const first = await context.newPage();
    await signIn(first, "ada");

    const second = await context.newPage();
    await second.goto("/");
    const conflict = second.getByRole("alert").filter({ hasText: "open in another tab" });
    await expect(conflict).toBeVisible();
    await conflict.getByRole("button", { name: "Use here" }).click();
    await expect(personLink(second, "ada")).toContainText("(you)");

    const moved = first.getByRole("alert").filter({ hasText: "moved to another tab" });
    await expect(moved).toBeVisible();
    // Still signed in: the session moved, it did not end.
    expect(await first.evaluate(() => localStorage.getItem("tether.session"))).not.toBeNull();
    await moved.getByRole("button", { name: "Use here" }).click();
    await expect(moved).toBeHidden();
    await expect(second.getByRole("alert").filter({ hasText: "moved to another tab" })).toBeVisible();
    await context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

/** The server's count of open Socket.IO connections, from /metrics. */
async function socketsConnected(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const match = /^tether_sockets_connected (\S+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

test("with the shared connection three tabs are one WebSocket, all get every message, and closing the first keeps the rest", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--shared-connection"]);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    // Sockets a page opens itself (the shared worker's are not the page's).
    let pageSockets = 0;
    context.on("page", (page) => page.on("websocket", () => pageSockets++));
    const tabs: Page[] = [];
    tabs.push(await context.newPage());
    await signIn(tabs[0], "ada");
    await expect.poll(() => socketsConnected(server.url)).toBe(1);
    for (let i = 0; i < 2; i++) {
      const tab = await context.newPage();
      await tab.goto("/");
      await expect(personLink(tab, "ada")).toContainText("(you)");
      tabs.push(tab);
    }
    const session = tabs[2].getByRole("link", { name: "Session" });
    await session.click();
    await expect(tabs[2].getByTestId("session-state")).toHaveText("Online");
    await expect(tabs[2].getByTestId("session-mode")).toHaveText("Shared by this browser's tabs");
    await tabs[2].goBack();
    expect(await socketsConnected(server.url)).toBe(1);
    expect(pageSockets).toBe(0);

    const bob = await newPerson(browser, server.url, "bob");
    await expect.poll(() => socketsConnected(server.url)).toBe(2);
    await openChat(bob.page, "ada");
    await send(bob.page, "hello every tab");
    for (const tab of tabs) {
      await openChat(tab, "bob");
      await expect(messages(tab).filter({ hasText: "hello every tab" })).toHaveCount(1);
    }

    // The tab that started the worker goes away; the connection stays for the other two.
    await tabs[0].close();
    await send(bob.page, "after the first tab closed");
    for (const tab of tabs.slice(1)) {
      await expect(messages(tab).filter({ hasText: "after the first tab closed" })).toHaveCount(1);
    }
    await send(tabs[1], "from the second tab");
    await expect(messages(bob.page).filter({ hasText: "from the second tab" })).toHaveCount(1);
    await expect(messages(tabs[2]).filter({ hasText: "from the second tab" })).toHaveCount(1);
    await expect(messages(tabs[1]).filter({ hasText: "from the second tab" })).not.toContainText(/failed|sending/i);

    // A tab opened now joins the worker's connection: it gets that connection's roster from
    // the worker and restores what came since, so it shows the whole conversation once.
    const late = await context.newPage();
    await late.goto("/");
    await openChat(late, "bob");
    for (const text of ["hello every tab", "after the first tab closed", "from the second tab"]) {
      await expect(messages(late).filter({ hasText: text })).toHaveCount(1);
    }
    expect(await socketsConnected(server.url)).toBe(2);
    expect(pageSockets).toBe(0);
    await bob.context.close();
    await context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

test("with the shared connection, a browser without SharedWorker falls back to a socket per tab", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--shared-connection"]);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    await context.addInitScript(() => {
      // As on Chrome for Android.
      delete (window as { SharedWorker?: unknown }).SharedWorker;
    });
    let pageSockets = 0;
    context.on("page", (page) => page.on("websocket", () => pageSockets++));
    const first = await context.newPage();
    await signIn(first, "ada");
    const second = await context.newPage();
    await second.goto("/");
    await expect(personLink(second, "ada")).toContainText("(you)");
    await expect.poll(() => socketsConnected(server.url)).toBe(2);
    expect(pageSockets).toBe(2);
    await second.getByRole("link", { name: "Session" }).click();
    await expect(second.getByTestId("session-mode")).toHaveText("This tab's own");
    await second.goBack();

    const bob = await newPerson(browser, server.url, "bob");
    await openChat(bob.page, "ada");
    await send(bob.page, "to both tabs");
    for (const tab of [first, second]) {
      await openChat(tab, "bob");
      await expect(messages(tab).filter({ hasText: "to both tabs" })).toHaveCount(1);
    }
    await bob.context.close();
    await context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
