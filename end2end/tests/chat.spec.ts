import { test, expect } from "@playwright/test";
import { messages, newPerson, openChat, personLink, send, signIn, storeSession, userId } from "./helpers";

const unique = (name: string) => `${name}-${Math.random().toString(36).slice(2, 7)}`;

test("signed in, a reload keeps the same user", async ({ page }) => {
  const name = unique("ada");
  await signIn(page, name);
  const before = await userId(page);
  await page.reload();
  await expect(page.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();
  await expect(personLink(page, name)).toContainText("(you)");
  expect(await userId(page)).toBe(before);
});

test("two people exchange messages both ways", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const bob = await newPerson(browser, baseURL, bobName);

  await openChat(ada.page, bobName);
  await expect(ada.page, "a conversation is titled after the person").toHaveTitle(`${bobName} · Tether`);
  await send(ada.page, "Hello Bob");
  await expect(messages(ada.page).filter({ hasText: "Hello Bob" })).toHaveAttribute("data-state", "sent");

  await expect(personLink(bob.page, adaName)).toContainText("1 unread");
  await openChat(bob.page, adaName);
  await expect(messages(bob.page).filter({ hasText: "Hello Bob" })).toBeVisible();
  await send(bob.page, "Hi Ada\nsecond line");
  await expect(messages(ada.page).filter({ hasText: "Hi Ada" })).toBeVisible();
  await expect(messages(ada.page)).toHaveCount(2);
  await expect(messages(bob.page)).toHaveCount(2);
  await ada.context.close();
  await bob.context.close();
});

test("two tabs of one person share messages, and the peer lists that person once", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const adaTab2 = await ada.context.newPage();
  await adaTab2.goto("/");
  await expect(personLink(adaTab2, adaName)).toContainText("(you)");
  const bob = await newPerson(browser, baseURL, bobName);

  await expect(personLink(ada.page, bobName)).toBeVisible();
  await openChat(ada.page, bobName);
  await expect(personLink(adaTab2, bobName)).toBeVisible();
  await openChat(adaTab2, bobName);
  await send(ada.page, "from tab one");
  await expect(messages(adaTab2).filter({ hasText: "from tab one" })).toBeVisible();
  await expect(messages(adaTab2)).toHaveCount(1);
  await expect(personLink(bob.page, adaName)).toHaveCount(1);
  await ada.context.close();
  await bob.context.close();
});

test("navigating across every route keeps exactly one WebSocket", async ({ page }) => {
  const sockets: string[] = [];
  const urls: string[] = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  page.on("request", (request) => urls.push(request.url()));
  const name = unique("nav");
  await signIn(page, name);
  const nav = page.getByRole("navigation", { name: "Main" });
  await nav.getByRole("link", { name: "Session" }).click();
  await expect(page.getByTestId("session-state")).toHaveText("Online");
  await nav.getByRole("link", { name: "About" }).click();
  await nav.getByRole("link", { name: "Chats" }).click();
  await openChat(page, name);
  await expect(page).toHaveTitle(`${name} (you) · Tether`);
  await nav.getByRole("link", { name: "Session" }).click();
  await expect(page).toHaveTitle("Your session · Tether");
  await nav.getByRole("link", { name: "Chats" }).click();
  await expect(personLink(page, name)).toBeVisible();
  await expect(page).toHaveTitle("Chats · Tether");
  expect(sockets.filter((u) => u.includes("/socket.io/"))).toHaveLength(1);
  // The session id travels only inside the handshake, never in a URL.
  const sessionId = JSON.parse((await page.evaluate(() => localStorage.getItem("tether.session")))!).sessionID;
  expect(urls.concat(sockets).filter((u) => u.includes(sessionId))).toEqual([]);
});

test("closing one of two tabs keeps a person online; closing both shows offline", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const adaTab2 = await ada.context.newPage();
  await adaTab2.goto("/");
  await expect(personLink(adaTab2, adaName)).toBeVisible();
  const bob = await newPerson(browser, baseURL, bobName);
  const adaAtBob = personLink(bob.page, adaName);
  await expect(adaAtBob).toContainText("online");

  await adaTab2.close();
  // Bob's view is refreshed by a round trip: a message from Bob to himself is acked after
  // any presence change the server had queued for him.
  await openChat(bob.page, bobName);
  await send(bob.page, "note");
  await expect(messages(bob.page).filter({ hasText: "note" })).toHaveAttribute("data-state", "sent");
  await bob.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
  await expect(adaAtBob).toContainText("online");
  await expect(adaAtBob).not.toContainText("offline");

  await ada.page.close();
  await expect(adaAtBob).toContainText("offline");
  await ada.context.close();
  await bob.context.close();
});

test("an offline recipient sees the messages on return", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  // Bob goes offline (his browser keeps his session, and the key it is bound to).
  const bob = await newPerson(browser, baseURL, bobName);
  await bob.page.close();

  const ada = await newPerson(browser, baseURL, adaName);
  await openChat(ada.page, bobName);
  await send(ada.page, "while you were away");
  await expect(messages(ada.page).filter({ hasText: "while you were away" })).toHaveAttribute("data-state", "sent");

  const page = await bob.context.newPage();
  await page.goto("/");
  await expect(personLink(page, adaName)).toContainText("1 unread");
  await openChat(page, adaName);
  await expect(messages(page).filter({ hasText: "while you were away" })).toHaveCount(1);
  await ada.context.close();
  await bob.context.close();
});

test("a focused person keeps the focus when their presence and unread count change", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const ada = await newPerson(browser, baseURL, adaName);
  const bob = await newPerson(browser, baseURL, bobName);
  const bobAtAda = personLink(ada.page, bobName);
  await expect(bobAtAda).toContainText("online");
  // A keyboard user has moved to Bob's entry.
  await bobAtAda.focus();
  await expect(bobAtAda).toBeFocused();

  await openChat(bob.page, adaName);
  await send(bob.page, "ping");
  await expect(bobAtAda).toContainText("1 unread");
  await expect(bobAtAda).toBeFocused();

  await bob.context.close();
  await expect(bobAtAda).toContainText("offline");
  await expect(bobAtAda).toBeFocused();
  await ada.context.close();
});

test("a stale session lands on sign-in without an error loop", async ({ page }) => {
  const sockets: string[] = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  // The page's clock is the test's: its timers can be run ahead instead of waited for.
  await page.clock.install();
  await storeSession(
    page,
    JSON.stringify({ sessionID: "stale", userID: "00000000-0000-4000-8000-000000000000", username: "ghost" }),
  );
  await page.goto("/");
  await expect(page).toHaveURL(/\/signin$/);
  await expect(page.getByLabel("Your name")).toBeVisible();
  expect(await page.evaluate(() => localStorage.getItem("tether.session"))).toBeNull();
  // No reconnect loop: the one refused socket is all there is, even once every timer the page
  // set for the next minute (a reconnect's backoff is a few seconds) has run.
  await page.clock.runFor(60_000);
  await expect(page.getByLabel("Your name")).toBeVisible();
  expect(sockets).toHaveLength(1);
});

test("signing out in one tab signs out every tab of the session", async ({ browser, baseURL }) => {
  const name = unique("ada");
  const ada = await newPerson(browser, baseURL, name);
  const tab2 = await ada.context.newPage();
  await tab2.goto("/session");
  await expect(tab2.getByTestId("session-tabs")).toHaveText("2");
  await ada.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Session" }).click();
  await expect(ada.page.getByTestId("session-tabs")).toHaveText("2");
  await ada.page.getByRole("button", { name: "Sign out", exact: true }).click();
  await expect(ada.page).toHaveURL(/\/signin$/, { timeout: 1000 });
  // The other tab's socket gets a DISCONNECT that does not say why: it asks again after its
  // reconnect backoff (at most 1.5 s the first time) and is refused.
  await expect(tab2).toHaveURL(/\/signin$/, { timeout: 3000 });
  expect(await tab2.evaluate(() => localStorage.getItem("tether.session"))).toBeNull();
  await ada.context.close();
});

test("the chat pages hydrate without warnings or errors in the console", async ({ browser, baseURL }) => {
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") problems.push(msg.text());
  });
  page.on("pageerror", (err) => problems.push(err.message));
  const name = unique("quiet");
  await signIn(page, name);
  await openChat(page, name);
  await send(page, "hello me");
  for (const path of ["/", "/session", "/about", `/chat/${await userId(page)}`]) {
    await page.goto(path);
    await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  }
  await expect(messages(page).filter({ hasText: "hello me" })).toHaveCount(1);
  expect(problems, problems.join("\n")).toEqual([]);
  await context.close();
});
