// What a person sees of time, drafts, unread and notifications (issue 24, items 5 to 7).
import { test, expect, Browser, BrowserContext, Page } from "@playwright/test";
import { io, Socket } from "socket.io-client";
import { freshDataDir, removeDataDir, RunningServer, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, personLink, send, signIn, userId } from "./helpers";

const unique = (name: string) => `${name}-${Math.random().toString(36).slice(2, 7)}`;
const DAY_MS = 24 * 3600 * 1000;

/** A person on the official socket.io-client, writing to people in browsers. */
async function writer(baseURL: string, name: string) {
  const socket: Socket = io(baseURL, { auth: { username: name }, reconnection: false, forceNew: true });
  const session = await new Promise<{ userID: string }>((resolve) => socket.once("session", resolve));
  return {
    socket,
    id: session.userID,
    name,
    async say(to: string, content: string) {
      const ack = await socket.timeout(5000).emitWithAck("private message", { content, to });
      expect(ack.ok, JSON.stringify(ack)).toBeTruthy();
    },
  };
}

function composer(page: Page) {
  return page.getByRole("textbox", { name: "Message" });
}

function history(page: Page) {
  return page.getByRole("region", { name: "Message history" });
}

/** The day separators of the conversation shown (for the eye: screen readers hear each
 * message's full date instead). */
function days(page: Page) {
  return page.getByRole("list", { name: "Messages" }).locator("li.day");
}

function jumpButton(page: Page) {
  return page.getByRole("button", { name: /^Jump to latest/ });
}

/** The page behaves as if its tab were in the background (or back in front). */
async function setHidden(page: Page, hidden: boolean) {
  await page.evaluate((hidden) => {
    if (hidden) {
      Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    } else {
      delete (document as any).hidden;
      delete (document as any).visibilityState;
    }
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

/** Records every notification the pages of `context` create, and every permission request. */
async function recordNotifications(context: BrowserContext) {
  await context.addInitScript(() => {
    const w = window as any;
    const Real = w.Notification;
    w.__notifications = [];
    w.__permissionRequests = 0;
    class Recorded extends Real {
      constructor(title: string, options?: NotificationOptions) {
        super(title, options);
        w.__notifications.push({ title, body: options?.body, tag: options?.tag, notification: this });
      }
      static requestPermission(callback?: (p: string) => void) {
        w.__permissionRequests += 1;
        return Real.requestPermission(callback);
      }
    }
    w.Notification = Recorded;
  });
}

async function notificationsShown(page: Page) {
  return page.evaluate(() =>
    (window as any).__notifications.map(({ title, body, tag }: any) => ({ title, body, tag })),
  );
}

async function personWithNotifications(browser: Browser, baseURL: string | undefined, name: string, grant = true) {
  const context = await browser.newContext({ baseURL });
  if (grant) await context.grantPermissions(["notifications"]);
  await recordNotifications(context);
  const page = await context.newPage();
  await signIn(page, name);
  return { context, page };
}

async function turnOnNotifications(page: Page) {
  await page.goto("/settings");
  const setting = page.getByRole("checkbox", { name: /Notify me of new messages/ });
  await setting.check();
  await expect(setting).toBeChecked();
}

test.describe("days and times", () => {
  test("messages sit under their day, and each says who wrote it and when in full", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await newPerson(browser, baseURL, bobName);
    await openChat(bob.page, adaName);
    await send(bob.page, "morning ada");
    await openChat(ada.page, bobName);
    await send(ada.page, "morning bob");

    await expect(days(ada.page)).toHaveText(["Today"]);
    await expect(messages(ada.page), "a day's separator is not a message").toHaveCount(2);

    const theirs = messages(ada.page).filter({ hasText: "morning ada" });
    const time = theirs.locator("time");
    const datetime = (await time.getAttribute("datetime"))!;
    expect(Math.abs(Date.parse(datetime) - Date.now())).toBeLessThan(60_000);
    const full = await ada.page.evaluate(
      (d) => new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" }).format(new Date(d)),
      datetime,
    );
    await expect(time, "the full date and time on hover").toHaveAttribute("title", full);
    // What a screen reader reads: the sender, the message, then the full time.
    const read = await theirs.ariaSnapshot();
    expect(read.indexOf(bobName)).toBeGreaterThanOrEqual(0);
    expect(read.indexOf(bobName)).toBeLessThan(read.indexOf("morning ada"));
    expect(read.indexOf("morning ada")).toBeLessThan(read.indexOf(full));
    const mine = await messages(ada.page).filter({ hasText: "morning bob" }).ariaSnapshot();
    expect(mine).toContain("You");
    await ada.context.close();
    await bob.context.close();
  });

  test("a day later they are yesterday's, and later still named by their date", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await newPerson(browser, baseURL, bobName);
    await openChat(bob.page, adaName);
    await send(bob.page, "said on day one");
    await openChat(ada.page, bobName);
    await expect(days(ada.page)).toHaveText(["Today"]);
    const datetime = (await messages(ada.page).first().locator("time").getAttribute("datetime"))!;
    const sent = Date.parse(datetime);

    await ada.page.clock.setFixedTime(sent + DAY_MS);
    await ada.page.reload();
    await expect(days(ada.page)).toHaveText(["Yesterday"]);

    await ada.page.clock.setFixedTime(sent + 3 * DAY_MS);
    await ada.page.reload();
    const named = await ada.page.evaluate((t) => {
      const sameYear = new Date(t).getFullYear() === new Date().getFullYear();
      const options: Intl.DateTimeFormatOptions = { weekday: "long", month: "long", day: "numeric" };
      if (!sameYear) options.year = "numeric";
      return new Intl.DateTimeFormat(undefined, options).format(new Date(t));
    }, sent);
    await expect(days(ada.page)).toHaveText([named]);
    await ada.context.close();
    await bob.context.close();
  });

  test("an open page turns today into yesterday at the viewer's midnight, in their time zone", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const bob = await newPerson(browser, baseURL, bobName);
    // Nine hours east of the machine's UTC, with no daylight saving: a day counted in UTC, or
    // with the offset the wrong way round, ends at the wrong time.
    const context = await browser.newContext({ baseURL, timezoneId: "Asia/Tokyo" });
    const page = await context.newPage();
    await signIn(page, adaName);
    await openChat(bob.page, adaName);
    await send(bob.page, "said before midnight");
    // Ada's clock, five seconds before the next midnight in Tokyo (the message is from today).
    const midnight = await page.evaluate(() => new Date().setHours(24, 0, 0, 0));
    await page.clock.install({ time: midnight - 5_000 });
    await page.reload();
    await openChat(page, bobName);
    const when = personLink(page, bobName).locator("time.when");
    await expect(days(page)).toHaveText(["Today"]);
    await expect(when).toHaveText(/^\d\d:\d\d$/);

    // Nothing else happens: no message, no reload, no focus; only the clock passes midnight.
    await page.clock.fastForward(10_000);
    await expect(days(page)).toHaveText(["Yesterday"]);
    await expect(when, "the list's time is a date once it is not today").toHaveText(/^\d{1,2} [A-Z][a-z]{2}$/);
    await context.close();
    await bob.context.close();
  });
});

test.describe("a long conversation", () => {
  // A server of its own: conversations that open with a short roster page, and a sender
  // allowed to write a long conversation at once.
  let server: RunningServer;
  let dataDir: string;
  test.beforeAll(async () => {
    dataDir = freshDataDir();
    server = await startServer(dataDir, "127.0.0.1:0", [
      "--roster-messages-per-peer",
      "10",
      "--messages-per-sec",
      "1000",
      "--message-burst",
      "1000",
    ]);
  });
  test.afterAll(async () => {
    await stopServer(server);
    removeDataDir(dataDir);
  });

  async function longConversation(browser: Browser, count: number) {
    const ada = await newPerson(browser, server.url, unique("ada"));
    const bob = await writer(server.url, unique("bob"));
    const adaId = await userId(ada.page);
    for (let i = 1; i <= count; i++) await bob.say(adaId, `message ${String(i).padStart(3, "0")}`);
    await ada.page.goto(`/chat/${bob.id}`);
    await expect(messages(ada.page).last()).toContainText(`message ${String(count).padStart(3, "0")}`);
    await expect(messages(ada.page).last()).toBeInViewport();
    return { ada, bob, adaId };
  }

  test("loading older messages keeps the reader's place", async ({ browser }) => {
    const { ada, bob } = await longConversation(browser, 130);
    const page = ada.page;
    // The first page of history is loaded on opening (the view stays at the newest).
    await expect(page.getByRole("button", { name: "Load older messages" })).toBeVisible();
    await expect.poll(() => messages(page).count()).toBeGreaterThan(10);
    const oldest = (await messages(page).first().innerText()).match(/message \d{3}/)![0];
    const anchor = messages(page).filter({ hasText: oldest });

    // Scrolled to the top: older messages load above, and what the reader looked at stays put.
    const before = await history(page).evaluate((el, text) => {
      el.scrollTop = 0;
      const li = [...el.querySelectorAll("li")].find((li) => li.textContent!.includes(text))!;
      return li.getBoundingClientRect().top;
    }, oldest);
    await expect(messages(page).first()).not.toContainText(oldest);
    await expect(messages(page).first()).toContainText("message 0");
    const after = await anchor.evaluate((li) => li.getBoundingClientRect().top);
    expect(Math.abs(after - before)).toBeLessThanOrEqual(2);
    await expect(anchor).toBeInViewport();
    bob.socket.close();
    await ada.context.close();
  });

  test("scrolled up, new messages wait below a Jump to latest button that counts them", async ({ browser }) => {
    const { ada, bob, adaId } = await longConversation(browser, 40);
    const page = ada.page;
    await expect(jumpButton(page), "at the newest there is nothing to jump to").toHaveCount(0);
    await history(page).evaluate((el) => {
      el.scrollTop = 0;
    });
    await expect(jumpButton(page)).toHaveText("Jump to latest");

    await bob.say(adaId, "new one");
    await bob.say(adaId, "new two");
    await expect(page.getByRole("button", { name: "Jump to latest (2 new messages)" })).toBeVisible();
    await expect(messages(page).filter({ hasText: "new two" }), "the reader's place is kept").not.toBeInViewport();

    await jumpButton(page).click();
    await expect(messages(page).filter({ hasText: "new two" })).toBeInViewport();
    await expect(jumpButton(page)).toHaveCount(0);
    await expect(history(page), "the keyboard stays in the messages").toBeFocused();

    // At the newest, the view follows what arrives.
    await bob.say(adaId, "new three");
    await expect(messages(page).filter({ hasText: "new three" })).toBeInViewport();
    await expect(jumpButton(page)).toHaveCount(0);
    bob.socket.close();
    await ada.context.close();
  });

  test("only what the reader has seen is read: scrolled up, new messages stay unread", async ({ browser }) => {
    const { ada, bob, adaId } = await longConversation(browser, 40);
    const page = ada.page;
    await expect(page).not.toHaveTitle(/^\(/);
    await history(page).evaluate((el) => {
      el.scrollTop = 0;
    });
    await expect(jumpButton(page)).toHaveText("Jump to latest");
    await bob.say(adaId, "new one");
    await bob.say(adaId, "new two");
    await expect(page.getByRole("button", { name: "Jump to latest (2 new messages)" })).toBeVisible();
    await expect(page, "not looked at: still unread").toHaveTitle(/^\(2\) /);
    await jumpButton(page).click();
    await expect(page).not.toHaveTitle(/^\(/);

    // Scrolling down by hand reads them too.
    await history(page).evaluate((el) => {
      el.scrollTop = 0;
    });
    await expect(jumpButton(page)).toBeVisible();
    await bob.say(adaId, "new three");
    await expect(page.getByRole("button", { name: "Jump to latest (1 new message)" })).toBeVisible();
    await expect(page).toHaveTitle(/^\(1\) /);
    await history(page).evaluate((el) => {
      el.scrollTop = el.scrollHeight;
    });
    await expect(page).not.toHaveTitle(/^\(/);
    bob.socket.close();
    await ada.context.close();
  });
});

test.describe("drafts", () => {
  test("a draft survives a reload and a trip elsewhere, and is gone once sent", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await newPerson(browser, baseURL, bobName);
    const page = ada.page;
    await openChat(page, bobName);
    await composer(page).fill("half a thought");
    await page.reload();
    await expect(composer(page)).toHaveValue("half a thought");

    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "About" }).click();
    await page.goBack();
    await expect(composer(page)).toHaveValue("half a thought");

    // Another conversation has its own draft.
    await page.goto(`/chat/${await userId(page)}`);
    await expect(composer(page)).toHaveValue("");
    await composer(page).fill("note to self");
    await page.goBack();
    await expect(composer(page)).toHaveValue("half a thought");

    await composer(page).press("Enter");
    await expect(messages(page).filter({ hasText: "half a thought" })).toBeVisible();
    await expect(composer(page)).toHaveValue("");
    await page.reload();
    await expect(messages(page).filter({ hasText: "half a thought" })).toBeVisible();
    await expect(composer(page)).toHaveValue("");
    await ada.context.close();
    await bob.context.close();
  });

  test("a draft the full storage refuses is kept in the tab, and the person is told", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await newPerson(browser, baseURL, bobName);
    const page = ada.page;
    // The browser's storage is full for drafts (the quota error every browser throws).
    await page.addInitScript(() => {
      const real = Storage.prototype.setItem;
      Storage.prototype.setItem = function (key: string, value: string) {
        if (key.startsWith("tether.draft.")) throw new DOMException("full", "QuotaExceededError");
        return real.call(this, key, value);
      };
    });
    await page.reload();
    await openChat(page, bobName);
    await composer(page).fill("too much to keep");
    await expect(page.getByRole("status").filter({ hasText: "storage is full" })).toBeVisible();
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "About" }).click();
    await page.goBack();
    await expect(composer(page)).toHaveValue("too much to keep");
    await composer(page).press("Enter");
    await expect(messages(page).filter({ hasText: "too much to keep" })).toBeVisible();
    await expect(page.getByRole("status").filter({ hasText: "storage is full" })).toHaveCount(0);
    await ada.context.close();
    await bob.context.close();
  });

  test("two tabs show the same draft as it is typed, and both clear when it is sent", async ({ browser, baseURL }) => {
    const [adaName, bobName] = [unique("ada"), unique("bob")];
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await newPerson(browser, baseURL, bobName);
    const second = await ada.context.newPage();
    await second.goto("/");
    await openChat(ada.page, bobName);
    await openChat(second, bobName);

    await composer(ada.page).fill("typed in the first tab");
    await expect(composer(second)).toHaveValue("typed in the first tab");
    await composer(second).fill("finished in the second");
    await expect(composer(ada.page)).toHaveValue("finished in the second");
    await composer(second).press("Enter");
    await expect(composer(ada.page)).toHaveValue("");
    await expect(messages(ada.page).filter({ hasText: "finished in the second" })).toBeVisible();
    await ada.context.close();
    await bob.context.close();
  });
});

test.describe("unread and notifications", () => {
  test("the tab's title counts unread messages", async ({ browser, baseURL }) => {
    const adaName = unique("ada");
    const ada = await newPerson(browser, baseURL, adaName);
    const bob = await writer(baseURL!, unique("bob"));
    const adaId = await userId(ada.page);
    await expect(ada.page).not.toHaveTitle(/^\(/);
    for (const text of ["one", "two", "three"]) await bob.say(adaId, text);
    await expect(ada.page).toHaveTitle(/^\(3\) .* · Tether$/);
    await ada.page.goto(`/chat/${bob.id}`);
    await expect(messages(ada.page).filter({ hasText: "three" })).toBeVisible();
    await expect(ada.page).toHaveTitle(`${bob.name} · Tether`);
    bob.socket.close();
    await ada.context.close();
  });

  test("in the background, a message raises a notification that opens its conversation", async ({ browser, baseURL }) => {
    const ada = await personWithNotifications(browser, baseURL, unique("ada"));
    const bob = await writer(baseURL!, unique("bob"));
    const adaId = await userId(ada.page);
    await turnOnNotifications(ada.page);
    await ada.page.goto("/");

    await bob.say(adaId, "while you were out");
    await expect(ada.page.getByRole("main").getByText("while you were out")).toBeVisible();
    expect(await notificationsShown(ada.page), "none while the tab is in front").toEqual([]);

    await setHidden(ada.page, true);
    await bob.say(adaId, "ping\nfrom bob");
    await expect.poll(() => notificationsShown(ada.page)).toEqual([
      { title: bob.name, body: "ping from bob", tag: expect.stringMatching(/^tether-message-\d+$/) },
    ]);

    await ada.page.evaluate(() => (window as any).__notifications[0].notification.dispatchEvent(new Event("click")));
    await expect(ada.page).toHaveURL(new RegExp(`/chat/${bob.id}$`));
    await expect(ada.page.getByRole("heading", { level: 1, name: bob.name })).toBeVisible();
    await expect(messages(ada.page).filter({ hasText: "from bob" })).toBeVisible();
    bob.socket.close();
    await ada.context.close();
  });

  test("a notification names a sender who is not in the roster", async ({ browser }) => {
    const dataDir = freshDataDir();
    // Beyond one user, presence goes to contacts only: Ada never hears of Bob before he writes.
    const server = await startServer(dataDir, "127.0.0.1:0", ["--roster-full-max", "1"]);
    try {
      const adaName = unique("ada");
      const ada = await personWithNotifications(browser, server.url, adaName);
      const adaId = await userId(ada.page);
      await turnOnNotifications(ada.page);
      await ada.page.goto("/");
      // Connected again (its roster came) before Bob writes: a message that arrives while the
      // page is still connecting (proving possession takes a signature) comes in the roster,
      // which notifies nothing.
      await expect(personLink(ada.page, adaName)).toContainText("(you)");
      const bob = await writer(server.url, unique("bob"));
      await setHidden(ada.page, true);
      await bob.say(adaId, "hello stranger");
      await expect.poll(() => notificationsShown(ada.page)).toEqual([
        { title: bob.name, body: "hello stranger", tag: expect.stringMatching(/^tether-message-\d+$/) },
      ]);
      bob.socket.close();
      await ada.context.close();
    } finally {
      await stopServer(server);
      removeDataDir(dataDir);
    }
  });

  test("the permission is asked only from the setting's click", async ({ browser, baseURL }) => {
    const ada = await personWithNotifications(browser, baseURL, unique("ada"), false);
    await ada.page.goto("/settings");
    await expect(ada.page.getByRole("checkbox", { name: /Notify me of new messages/ })).not.toBeChecked();
    expect(await ada.page.evaluate(() => (window as any).__permissionRequests)).toBe(0);
    await ada.page.getByRole("checkbox", { name: /Notify me of new messages/ }).click();
    await expect.poll(() => ada.page.evaluate(() => (window as any).__permissionRequests)).toBe(1);
    await ada.context.close();
  });

  test("no notification for one's own messages, written in another tab", async ({ browser, baseURL }) => {
    const ada = await personWithNotifications(browser, baseURL, unique("ada"));
    const bob = await writer(baseURL!, unique("bob"));
    const adaId = await userId(ada.page);
    await turnOnNotifications(ada.page);
    await ada.page.goto("/");
    const other = await ada.context.newPage();
    await other.goto(`/chat/${bob.id}`);
    await expect(other.getByRole("heading", { level: 1, name: bob.name })).toBeVisible();
    await setHidden(ada.page, true);

    await send(other, "written in my other tab");
    await expect(ada.page.getByRole("main").getByText("written in my other tab")).toBeVisible();
    // Bob's, after it, does: so the one before had its chance.
    await bob.say(adaId, "from bob, after mine");
    await expect.poll(() => notificationsShown(ada.page)).toHaveLength(1);
    expect((await notificationsShown(ada.page))[0].body).toBe("from bob, after mine");
    bob.socket.close();
    await ada.context.close();
  });

  test("no notification once they are turned off", async ({ browser, baseURL }) => {
    const ada = await personWithNotifications(browser, baseURL, unique("ada"));
    const bob = await writer(baseURL!, unique("bob"));
    const adaId = await userId(ada.page);
    await turnOnNotifications(ada.page);
    await ada.page.getByRole("checkbox", { name: /Notify me of new messages/ }).uncheck();
    await ada.page.reload();
    await expect(ada.page.getByRole("checkbox", { name: /Notify me of new messages/ })).not.toBeChecked();
    await ada.page.goto("/");
    await setHidden(ada.page, true);
    await bob.say(adaId, "while notifications are off");
    await expect(ada.page.getByRole("main").getByText("while notifications are off")).toBeVisible();
    expect(await notificationsShown(ada.page)).toEqual([]);
    bob.socket.close();
    await ada.context.close();
  });
});
