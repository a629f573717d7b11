// Proof of possession (issue #25, item 3): a session is bound to a non-extractable key in its
// browser's IndexedDB, and every handshake signs that connection's Engine.IO sid with it. The
// session id copied into another browser (what a script that read localStorage could take away)
// is refused there with a clear message, and the browser it belongs to stays connected. Both with
// a tab's own connection and with the SharedWorker's.
import { test, expect, Browser } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, send, storeSession } from "./helpers";

const REFUSED = "This browser can no longer prove this session is its own. Sign in again.";

async function copiedSessionIsRefused(browser: Browser, baseURL: string) {
  const ada = await newPerson(browser, baseURL, "ada");
  const bob = await newPerson(browser, baseURL, "bob");
  // The key was made non-extractable.
  const extractable = await ada.page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const r = indexedDB.open("tether");
        r.onerror = () => reject(r.error);
        r.onsuccess = () => {
          const get = r.result.transaction("keys").objectStore("keys").get("pop");
          get.onsuccess = () => resolve(get.result.privateKey.extractable);
          get.onerror = () => reject(get.error);
        };
      }),
  );
  expect(extractable).toBe(false);

  const session = await ada.page.evaluate(() => localStorage.getItem("tether.session"));
  const elsewhere = await browser.newContext({ baseURL });
  const page = await elsewhere.newPage();
  await storeSession(page, session!);
  await page.goto("/");
  await expect(page).toHaveURL(/\/signin$/);
  await expect(page.getByText(REFUSED)).toBeVisible();
  expect(await page.evaluate(() => localStorage.getItem("tether.session"))).toBeNull();

  // The browser the session belongs to is still connected and still chats, both ways.
  await openChat(ada.page, "bob");
  await send(ada.page, "still mine");
  await expect(messages(ada.page).filter({ hasText: "still mine" })).toHaveAttribute("data-state", "sent");
  await openChat(bob.page, "ada");
  await expect(messages(bob.page).filter({ hasText: "still mine" })).toHaveCount(1);
  await send(bob.page, "got it");
  await expect(messages(ada.page).filter({ hasText: "got it" })).toHaveCount(1);
  // And a reload there resumes the same session (its key proves it again).
  await ada.page.reload();
  await expect(messages(ada.page).filter({ hasText: "got it" })).toHaveCount(1);
  expect(await ada.page.evaluate(() => localStorage.getItem("tether.session"))).toBe(session);

  for (const c of [ada.context, bob.context, elsewhere]) await c.close();
}

for (const shared of [false, true]) {
  test(`a session id copied into another browser is refused there, and its own browser stays connected${shared ? " (shared connection)" : ""}`, async ({ browser }) => {
    test.setTimeout(60_000);
    const dataDir = freshDataDir();
    const server = await startServer(dataDir, "127.0.0.1:0", shared ? ["--shared-connection"] : []);
    try {
      await copiedSessionIsRefused(browser, server.url);
    } finally {
      await stopServer(server);
      removeDataDir(dataDir);
    }
  });
}
