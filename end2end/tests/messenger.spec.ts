// The messenger (issue 24, items 1–4): conversations by latest activity with previews and
// unread counts, unread kept by the server and followed by every tab, browser and node, read
// receipts ("Seen") with their setting, typing indicators, and the directory search.
import { test, expect, Browser, Page } from "@playwright/test";
import { freshDataDir, removeDataDir, startRedis, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, personLink, send, signIn, storeSession } from "./helpers";

const unique = (name: string) => `${name}-${Math.random().toString(36).slice(2, 7)}`;

function chats(page: Page) {
  return page.getByRole("list", { name: "Chats" }).getByRole("listitem");
}

/** Sends `text` and waits for the server's ack. */
async function sendStored(page: Page, text: string): Promise<void> {
  await send(page, text);
  await expect(messages(page).filter({ hasText: text.split("\n")[0] }).last()).toHaveAttribute("data-state", "sent");
}

/** A new browser (no local state) signed in to the session `from` holds: as if signed in on
 * another device with the same session. A session is bound to its browser's key (issue #25), so
 * `from` must have signed in holding the test key (`newPerson(…, { testKey: true })`), which this
 * browser gets too. */
async function sameSessionElsewhere(browser: Browser, baseURL: string | undefined, from: Page) {
  const session = await from.evaluate(() => localStorage.getItem("tether.session"));
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  await storeSession(page, session!, { testKey: true });
  await page.goto("/");
  await expect(page.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();
  return { context, page };
}

/** A request from `page` the server answers (a search for nobody): whatever the server sent the
 * page before that answer has arrived by the time this returns. */
async function roundTrip(page: Page): Promise<void> {
  const search = page.getByRole("searchbox", { name: "Search people by name" });
  await search.fill(unique("nobody"));
  await expect(page.getByRole("status").filter({ hasText: "Nobody has that name." })).toBeVisible();
  await search.press("Escape");
  await expect(search).toHaveValue("");
}

/** Types into the open conversation's composer until `note` shows that the peer sees it
 * (typing is passed on at most every 3 s, by the client and the server alike). */
async function typeUntilSeen(page: Page, note: ReturnType<Page["locator"]>): Promise<void> {
  const box = page.getByRole("textbox", { name: "Message" });
  await expect(async () => {
    await box.press("x");
    await expect(note).toBeVisible({ timeout: 500 });
  }).toPass({ timeout: 10_000, intervals: [250] });
}

async function setReadReceipts(page: Page, on: boolean): Promise<void> {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Settings" }).click();
  const toggle = page.getByRole("checkbox", { name: "Send read receipts" });
  await expect(toggle).toBeEnabled();
  await toggle.setChecked(on);
  await expect(toggle).toBeChecked({ checked: on });
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
}

test("conversations are listed by latest activity with the last message, its time and the unread count", async ({ browser, baseURL }) => {
  const [adaName, bobName, cidName] = [unique("ada"), unique("bob"), unique("cid")];
  const ada = await newPerson(browser, baseURL, adaName);
  const bob = await newPerson(browser, baseURL, bobName);
  const cid = await newPerson(browser, baseURL, cidName);

  await openChat(bob.page, adaName);
  await sendStored(bob.page, "hello from bob");
  await openChat(cid.page, adaName);
  await sendStored(cid.page, `a long message from cid ${"that goes on and on ".repeat(20)}\nand a second line`);

  const rows = chats(ada.page);
  await expect(rows.nth(0)).toContainText(cidName);
  await expect(rows.nth(0)).toContainText("a long message from cid");
  await expect(rows.nth(0)).toContainText("1 unread");
  await expect(rows.nth(1)).toContainText(bobName);
  await expect(rows.nth(1)).toContainText("hello from bob");
  await expect(rows.nth(1)).toContainText("1 unread");
  // People without a conversation come after, the viewer among them.
  await expect(rows.nth(2)).toContainText(`${adaName} (you)`);
  await expect(rows.nth(2)).toContainText("No messages yet");
  // The time of the last message, and its preview on one line, cut with an ellipsis.
  await expect(rows.nth(0).locator("time")).toHaveText(/^\d\d:\d\d$/);
  const preview = rows.nth(0).locator(".preview");
  expect(await preview.evaluate((el) => getComputedStyle(el).textOverflow)).toBe("ellipsis");
  expect(await preview.evaluate((el) => el.scrollWidth > el.clientWidth)).toBe(true);
  expect(await preview.evaluate((el) => el.getBoundingClientRect().height)).toBeLessThan(30);
  // The badge shows the number; a screen reader hears "1 unread".
  const badge = rows.nth(0).locator(".unread");
  await expect(badge).toHaveText("1 unread");
  await expect(badge.locator(".sr-only")).toHaveText(" unread");

  // A reply moves the conversation to the top, read.
  await openChat(ada.page, bobName);
  await sendStored(ada.page, "reply to bob");
  await expect(rows.nth(0)).toContainText(bobName);
  await expect(rows.nth(0)).toContainText("You: reply to bob");
  await expect(rows.nth(0)).not.toContainText("unread");
  await expect(rows.nth(1)).toContainText(cidName);
  // And a new message from someone else moves theirs up.
  await sendStored(cid.page, "cid again");
  await expect(rows.nth(0)).toContainText("cid again");
  await expect(rows.nth(0)).toContainText(cidName);

  // The keyboard: down from the search box into the list, arrows between rows, Enter opens.
  await ada.page.getByRole("searchbox", { name: "Search people by name" }).focus();
  await ada.page.keyboard.press("ArrowDown");
  await expect(personLink(ada.page, cidName)).toBeFocused();
  await ada.page.keyboard.press("ArrowDown");
  await expect(personLink(ada.page, bobName)).toBeFocused();
  await ada.page.keyboard.press("End");
  await expect(rows.last().getByRole("link")).toBeFocused();
  await ada.page.keyboard.press("Home");
  await expect(personLink(ada.page, cidName)).toBeFocused();
  await ada.page.keyboard.press("ArrowDown");
  await ada.page.keyboard.press("ArrowUp");
  await expect(personLink(ada.page, cidName)).toBeFocused();
  await ada.page.keyboard.press("Enter");
  await expect(ada.page.getByRole("heading", { level: 1, name: cidName })).toBeVisible();
  await expect(messages(ada.page).filter({ hasText: "cid again" })).toHaveCount(1);
  await expect(personLink(ada.page, cidName)).not.toContainText("unread");
  for (const p of [ada, bob, cid]) await p.context.close();
});

test("on a wide screen the list and the conversation are side by side; on a phone one at a time", async ({ browser, baseURL }) => {
  const name = unique("ada");
  const ada = await newPerson(browser, baseURL, name);
  await openChat(ada.page, name);
  await expect(ada.page.getByRole("list", { name: "Chats" })).toBeVisible();
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();

  await ada.page.setViewportSize({ width: 390, height: 800 });
  await expect(ada.page.getByRole("list", { name: "Chats" })).toBeHidden();
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();
  await ada.page.getByRole("link", { name: "← Chats" }).click();
  await expect(ada.page.getByRole("list", { name: "Chats" })).toBeVisible();
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeHidden();
  await ada.context.close();
});

/** Bob writes twice to Ada; every page of Ada's shows 2 unread; reading in `reader` clears
 * them everywhere, and a browser signed in afterwards sees the same. */
async function unreadFollowsTheReader(browser: Browser, baseURL: string, shared: boolean) {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName, { testKey: true });
  const tab2 = await ada.context.newPage();
  await tab2.goto("/");
  await expect(personLink(tab2, adaName)).toContainText("(you)");
  if (shared) {
    await tab2.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Session" }).click();
    await expect(tab2.getByTestId("session-mode")).toHaveText("Shared by this browser's tabs");
    await tab2.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
  }
  const device2 = await sameSessionElsewhere(browser, baseURL, ada.page);
  const bob = await newPerson(browser, baseURL, bobName);
  await openChat(bob.page, adaName);
  await sendStored(bob.page, "one");
  await sendStored(bob.page, "two");
  for (const page of [ada.page, tab2, device2.page]) {
    await expect(personLink(page, bobName)).toContainText("2 unread");
  }
  // A browser signed in now gets the count from the server (it holds no read markers).
  const device3 = await sameSessionElsewhere(browser, baseURL, ada.page);
  await expect(personLink(device3.page, bobName)).toContainText("2 unread");

  await openChat(ada.page, bobName);
  await expect(messages(ada.page).filter({ hasText: "two" })).toHaveCount(1);
  for (const page of [tab2, device2.page, device3.page]) {
    await expect(personLink(page, bobName)).toContainText("two");
    await expect(personLink(page, bobName)).not.toContainText("unread");
  }
  // Still read after a reload, and in a browser signed in later still.
  await device2.page.reload();
  await expect(personLink(device2.page, bobName)).toContainText("two");
  await expect(personLink(device2.page, bobName)).not.toContainText("unread");
  const device4 = await sameSessionElsewhere(browser, baseURL, ada.page);
  await expect(personLink(device4.page, bobName)).toContainText("two");
  await expect(personLink(device4.page, bobName)).not.toContainText("unread");
  for (const c of [ada.context, device2.context, device3.context, device4.context, bob.context]) await c.close();
}

test("unread counts follow the reader: tabs and other browsers of the session clear when one reads", async ({ browser, baseURL }) => {
  await unreadFollowsTheReader(browser, baseURL!, false);
});

test("unread counts follow the reader with the shared connection too", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--shared-connection"]);
  try {
    await unreadFollowsTheReader(browser, server.url, true);
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

test("\"Seen\" shows when the recipient read, and not when either side turns read receipts off", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const bob = await newPerson(browser, baseURL, bobName, { testKey: true });
  // Bob's other browser: its unread count is the server's, cleared when the server takes a read.
  const bobElsewhere = await sameSessionElsewhere(browser, baseURL, bob.page);
  await openChat(ada.page, bobName);
  await sendStored(ada.page, "first");
  await expect(messages(ada.page).filter({ hasText: "first" })).toContainText("Sent");
  await openChat(bob.page, adaName);
  await expect(messages(bob.page).filter({ hasText: "first" })).toHaveCount(1);
  const first = messages(ada.page).filter({ hasText: "first" });
  await expect(first).toContainText(/Seen \d\d:\d\d/);
  // "Seen" moves to the newest message read.
  await sendStored(ada.page, "second");
  const second = messages(ada.page).filter({ hasText: "second" });
  await expect(second).toContainText(/Seen \d\d:\d\d/);
  await expect(first).not.toContainText("Seen");

  // Bob turns receipts off: what he reads now is not shown to Ada.
  await setReadReceipts(bob.page, false);
  await sendStored(ada.page, "third");
  await expect(personLink(bobElsewhere.page, adaName)).toContainText("1 unread");
  await openChat(bob.page, adaName);
  await expect(messages(bob.page).filter({ hasText: "third" })).toHaveCount(1);
  await expect(personLink(bob.page, adaName)).not.toContainText("unread");
  // The server took Bob's read (it tells his other browser, then would tell Ada), and anything
  // it sent Ada before answering her next request has arrived.
  await expect(personLink(bobElsewhere.page, adaName)).not.toContainText("unread");
  await roundTrip(ada.page);
  const third = messages(ada.page).filter({ hasText: "third" });
  await expect(third).toContainText("Sent");
  await expect(third).not.toContainText("Seen");

  // Bob on again, Ada off: Ada sees no receipts at all, not even the old ones.
  await setReadReceipts(bob.page, true);
  await setReadReceipts(ada.page, false);
  await openChat(ada.page, bobName);
  await expect(messages(ada.page).filter({ hasText: "second" })).toHaveCount(1);
  await expect(messages(ada.page).filter({ hasText: "Seen" })).toHaveCount(0);
  await sendStored(ada.page, "fourth");
  await expect(personLink(bobElsewhere.page, adaName)).toContainText("1 unread");
  await openChat(bob.page, adaName);
  await expect(messages(bob.page).filter({ hasText: "fourth" })).toHaveCount(1);
  await expect(personLink(bobElsewhere.page, adaName)).not.toContainText("unread");
  await roundTrip(ada.page);
  await expect(messages(ada.page).filter({ hasText: "Seen" })).toHaveCount(0);
  // Both on: the receipt shows again.
  await setReadReceipts(ada.page, true);
  await openChat(ada.page, bobName);
  await sendStored(ada.page, "fifth");
  await expect(messages(ada.page).filter({ hasText: "fifth" })).toContainText(/Seen \d\d:\d\d/);
  await ada.context.close();
  await bob.context.close();
  await bobElsewhere.context.close();
});

test("\"… is typing\" shows in the conversation and the list, and goes when the message comes or typing stops", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const bob = await newPerson(browser, baseURL, bobName);
  await openChat(ada.page, bobName);
  await openChat(bob.page, adaName);
  const box = ada.page.getByRole("textbox", { name: "Message" });
  const note = bob.page.locator(".conversation-header").getByText(`${adaName} is typing…`);
  // Typing is passed on as a volatile packet, at most every 3 s: the first can be dropped
  // while Bob's connection still carries his sign-in's answers, so type until he sees it.
  await typeUntilSeen(ada.page, note);
  await expect(personLink(bob.page, adaName)).toContainText("typing…");
  // The message ends it at once.
  await box.fill("hello");
  await box.press("Enter");
  await expect(messages(bob.page).filter({ hasText: "hello" })).toHaveCount(1);
  await expect(note).toBeHidden({ timeout: 1000 });
  await expect(personLink(bob.page, adaName)).not.toContainText("typing");
  // Typing that stops goes away by itself, a few seconds later. (A new one is passed on 3 s
  // after the last, by the client and the server alike.)
  await typeUntilSeen(ada.page, note);
  const shown = Date.now();
  await expect(note).toBeHidden({ timeout: 9000 });
  expect(Date.now() - shown).toBeGreaterThan(3000);
  await ada.context.close();
  await bob.context.close();
});

test("the search finds anyone in the directory by name, outside the roster too, and starts a conversation", async ({ browser }) => {
  const dataDir = freshDataDir();
  // A roster of at most one beyond which only contacts and online people are listed.
  const server = await startServer(dataDir, "127.0.0.1:0", ["--roster-full-max", "1"]);
  try {
    // Zoe goes offline (her browser keeps her session, and the key it is bound to).
    const zoe = await newPerson(browser, server.url, "zoe");
    await zoe.page.close();
    const ada = await newPerson(browser, server.url, "ada");
    await expect(personLink(ada.page, "zoe")).toHaveCount(0);

    const search = ada.page.getByRole("searchbox", { name: "Search people by name" });
    await search.fill("nobody-by-this-name");
    await expect(ada.page.getByRole("status").filter({ hasText: "Nobody has that name." })).toBeVisible();
    await search.fill("ZO");
    const results = ada.page.getByRole("list", { name: "Search results" });
    await expect(results.getByRole("link", { name: /^zoe\b/ })).toBeVisible();
    await expect(results.getByRole("link", { name: /^zoe\b/ })).toContainText("offline");
    await results.getByRole("link", { name: /^zoe\b/ }).click();
    await expect(ada.page.getByRole("heading", { level: 1, name: "zoe" })).toBeVisible();
    await expect(search).toHaveValue("");
    await sendStored(ada.page, "found you");
    await expect(chats(ada.page).nth(0)).toContainText("zoe");
    await expect(chats(ada.page).nth(0)).toContainText("You: found you");

    const page = await zoe.context.newPage();
    await page.goto("/");
    await expect(personLink(page, "ada")).toContainText("1 unread");
    await expect(personLink(page, "ada")).toContainText("found you");
    await zoe.context.close();
    await ada.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

test("across two nodes: unread clears on every node, Seen and typing reach the other node", async ({ browser }) => {
  const redis = await startRedis();
  const dirs = [freshDataDir(), freshDataDir()];
  const args = ["--redis-url", redis.url, "--redis-prefix", redis.prefix];
  const nodes = [await startServer(dirs[0], "127.0.0.1:0", args), await startServer(dirs[1], "127.0.0.1:0", args)];
  try {
    const ada = await newPerson(browser, nodes[0].url, "ada", { testKey: true });
    const adaElsewhere = await sameSessionElsewhere(browser, nodes[1].url, ada.page);
    const bob = await newPerson(browser, nodes[1].url, "bob");
    await openChat(bob.page, "ada");
    await sendStored(bob.page, "across nodes");
    await expect(personLink(ada.page, "bob")).toContainText("1 unread");
    await expect(personLink(adaElsewhere.page, "bob")).toContainText("1 unread");

    await openChat(ada.page, "bob");
    await expect(personLink(adaElsewhere.page, "bob")).not.toContainText("unread");
    await expect(messages(bob.page).filter({ hasText: "across nodes" })).toHaveCount(1);
    await sendStored(ada.page, "seen across nodes?");
    await expect(messages(ada.page).filter({ hasText: "seen across nodes?" })).toContainText(/Seen \d\d:\d\d/);

    // Bob's last typing went with his message: a new one is passed on 3 s after it.
    // (Each socket's copy is volatile: type until both of ada's see it.)
    const bobsBox = bob.page.getByRole("textbox", { name: "Message" });
    await expect(async () => {
      await bobsBox.press("x");
      await expect(ada.page.locator(".conversation-header").getByText("bob is typing…")).toBeVisible({ timeout: 500 });
      await expect(personLink(adaElsewhere.page, "bob")).toContainText("typing…", { timeout: 500 });
    }).toPass({ timeout: 15_000, intervals: [250] });
    for (const c of [ada.context, adaElsewhere.context, bob.context]) await c.close();
  } finally {
    for (const node of nodes) await stopServer(node);
    dirs.forEach(removeDataDir);
    await redis.stop();
  }
});

test("a read-receipts change the server refuses is not applied, and the page says so", async ({ browser, baseURL }) => {
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  // The server's answer to a settings change is replaced by a refusal; everything else passes.
  await page.routeWebSocket(/\/socket\.io\//, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const change = typeof m === "string" ? m.match(/^42(\d+)\["settings",\{"readReceipts"/) : null;
      if (change) ws.send(`43${change[1]}[{"error":{"code":"rate_limited","message":"Too many changes."}}]`);
      else server.send(m);
    });
  });
  await signIn(page, unique("ada"));
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Settings" }).click();
  const toggle = page.getByRole("checkbox", { name: "Send read receipts" });
  await expect(toggle).toBeEnabled();
  await expect(toggle).toBeChecked();
  await toggle.click();
  await expect(page.getByRole("alert")).toHaveText("Read receipts were not changed: Too many changes.");
  await expect(toggle, "back where the server has it").toBeChecked();
  await expect(toggle).toBeEnabled();
  // Still on after a reload: the server never changed it.
  await page.reload();
  await expect(toggle).toBeEnabled();
  await expect(toggle).toBeChecked();
  await context.close();
});
