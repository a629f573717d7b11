// Rotation (issue #25, item 4): a session's secret rotates on a schedule, also while its tabs
// stay connected. Every tab (each with its own connection, or all behind the SharedWorker's)
// follows the new secret without reconnecting, messages keep flowing both ways, and a reload
// resumes the same account with the newest secret and its proof of possession.
import { test, expect, Page } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, send, userId } from "./helpers";

const stored = (page: Page) => page.evaluate(() => localStorage.getItem("tether.session"));

/** A counter's value from the server's /metrics (0 before its first count). */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return match ? Number(match[1]) : 0;
}

for (const shared of [false, true]) {
  test(`a session that stays connected follows two rotations in every tab, and messages keep flowing${shared ? " (shared connection)" : ""}`, async ({ browser }) => {
    test.setTimeout(60_000);
    const dataDir = freshDataDir();
    // Due after two seconds; connected sessions are refreshed (and rotated when due) every two
    // seconds (three times per idle time: 6 s leaves a loaded machine room before expiry).
    // Tether's client binds its sessions to a key, so they rotate while connected. (Rotating
    // every 2 s is past the default 16 per 120 s grace window.)
    const server = await startServer(dataDir, "127.0.0.1:0", [
      "--session-rotate-secs", "2",
      "--session-idle-secs", "6",
      "--session-rotate-reissues", "1000",
      ...(shared ? ["--shared-connection"] : []),
    ]);
    try {
      const ada = await newPerson(browser, server.url, "ada");
      const bob = await newPerson(browser, server.url, "bob");
      const second = await ada.context.newPage();
      let pageSockets = 0;
      for (const page of [ada.page, second]) page.on("websocket", () => pageSockets++);
      await second.goto("/");
      await openChat(second, "bob");
      const me = await userId(ada.page);
      const opened = pageSockets;

      // Two rotations while connected: the stored secret changes twice.
      const seen = new Set([await stored(ada.page)]);
      await expect
        .poll(async () => {
          seen.add(await stored(ada.page));
          return seen.size;
        }, { timeout: 20_000 })
        .toBeGreaterThanOrEqual(3);
      // No tab reconnected to follow them (with the shared connection no page opens a socket;
      // the API tests show the worker's kind of connection is not reconnected either), and the
      // server counted the rotations.
      expect(pageSockets, "no tab reconnected to follow them").toBe(opened);
      expect(await metric(server.url, "tether_session_rotations_total")).toBeGreaterThanOrEqual(2);

      // Messages keep flowing, from both tabs and to them.
      await openChat(ada.page, "bob");
      await send(ada.page, "after the rotations");
      await expect(messages(ada.page).filter({ hasText: "after the rotations" })).toHaveAttribute("data-state", "sent");
      await send(second, "from the other tab");
      await expect(messages(second).filter({ hasText: "from the other tab" })).toHaveAttribute("data-state", "sent");
      await openChat(bob.page, "ada");
      await expect(messages(bob.page).filter({ hasText: "from the other tab" })).toHaveCount(1);
      await send(bob.page, "still you?");
      await expect(messages(ada.page).filter({ hasText: "still you?" })).toHaveCount(1);
      await expect(messages(second).filter({ hasText: "still you?" })).toHaveCount(1);

      // A reload resumes the same account with the newest secret (it proves possession again).
      await second.reload();
      await expect(messages(second).filter({ hasText: "still you?" })).toHaveCount(1);
      expect(await userId(second)).toBe(me);
      await expect(second).not.toHaveURL(/\/signin$/);

      for (const c of [ada.context, bob.context]) await c.close();
    } finally {
      await stopServer(server);
      removeDataDir(dataDir);
    }
  });
}
