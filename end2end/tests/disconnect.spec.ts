import { test, expect, WebSocketRoute } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, personLink, send, signIn } from "./helpers";

// A DISCONNECT from the server does not say why (PROTOCOL.md, "Server disconnects"); the
// session may still exist, and then nobody may be signed out.

test("a socket disconnected for flooding keeps its session and comes back after the cooldown", async ({ browser }) => {
  test.setTimeout(60_000);
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", [
    "--messages-per-sec", "1",
    "--message-burst", "1",
    "--max-refused-requests", "3",
    "--abuse-cooldown-secs", "3",
  ]);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    // The page's sockets go through here unchanged; `toServer` is the current one's server side.
    let toServer: WebSocketRoute | undefined;
    await page.routeWebSocket(/\/socket\.io\//, (ws) => {
      toServer = ws.connectToServer();
    });
    await signIn(page, "ada");
    const session = await page.evaluate(() => localStorage.getItem("tether.session"));
    expect(session).not.toBeNull();
    const bob = await newPerson(browser, server.url, "bob");

    // Messages past the budget on the page's socket, as a runaway script would send them: the
    // server refuses them, then sends a DISCONNECT and bars the session for 3 s. The session
    // itself still exists.
    for (let i = 0; i < 8; i++) toServer!.send(`42${900 + i}["private message",{}]`);
    await expect(page.getByRole("status").filter({ hasText: "Reconnecting" })).toBeVisible();
    expect(await page.evaluate(() => localStorage.getItem("tether.session"))).toBe(session);

    // Refused (`too many requests`) until the cooldown ends, then back, still ada.
    await expect(page.getByRole("status").filter({ hasText: "Back online" })).toBeVisible({ timeout: 15_000 });
    expect(await page.evaluate(() => localStorage.getItem("tether.session"))).toBe(session);
    await openChat(page, "bob");
    await send(page, "after the cooldown");
    await expect(messages(page).filter({ hasText: "after the cooldown" })).toHaveAttribute("data-state", "sent");
    await openChat(bob.page, "ada");
    await expect(messages(bob.page).filter({ hasText: "after the cooldown" })).toHaveCount(1);
    await context.close();
    await bob.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

// Over `--max-sockets-per-user` a tab too many is refused at the handshake (or, when two
// handshakes race, accepted and then disconnected): it waits, signed in, for a socket.
test("a tab over the socket limit keeps the session, and connects once another tab closes", async ({ browser }) => {
  test.setTimeout(60_000);
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--max-sockets-per-user", "1"]);
  try {
    const ada = await newPerson(browser, server.url, "ada");
    const session = await ada.page.evaluate(() => localStorage.getItem("tether.session"));
    expect(session).not.toBeNull();
    const bob = await newPerson(browser, server.url, "bob");

    // Opened while the first tab holds the one socket allowed: the server turns it away.
    const second = await ada.context.newPage();
    let refused = 0;
    second.on("websocket", (ws) => ws.on("close", () => (refused += 1)));
    await second.goto("/");
    await expect(second.locator("html")).toHaveAttribute("data-hydrated", "true");
    await expect(second.getByRole("status").filter({ hasText: "Reconnecting" })).toBeVisible();
    // Refused again after its backoff, the session is still stored, and the first tab still works.
    await expect.poll(() => refused, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);
    expect(await second.evaluate(() => localStorage.getItem("tether.session"))).toBe(session);
    await openChat(ada.page, "bob");
    await send(ada.page, "still signed in");
    await expect(messages(ada.page).filter({ hasText: "still signed in" })).toHaveAttribute("data-state", "sent");
    await openChat(bob.page, "ada");
    await expect(messages(bob.page).filter({ hasText: "still signed in" })).toHaveCount(1);

    // The first tab goes away: the second gets the socket within its reconnect backoff (5 s at
    // most), still signed in.
    await ada.page.close();
    await expect(personLink(second, "ada")).toContainText("(you)", { timeout: 10_000 });
    await openChat(second, "bob");
    await expect(messages(second).filter({ hasText: "still signed in" })).toHaveCount(1);
    expect(await second.evaluate(() => localStorage.getItem("tether.session"))).toBe(session);
    await ada.context.close();
    await bob.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
