// Accessibility (issue 24, item 8): axe-core finds nothing on any page, in the light theme, the
// dark theme chosen here, and the dark theme the system asks for; the focus ring is visible on
// everything the keyboard reaches; a chosen dark theme is in the page before any script runs.
import { test, expect, Browser, Page } from "@playwright/test";
import AxeBuilder from "@axe-core/playwright";
import { messages, newPerson, openChat, personLink, send, signIn, userId } from "./helpers";

const unique = (name: string) => `${name}-${Math.random().toString(36).slice(2, 7)}`;

// WCAG 2.0, 2.1 and 2.2, levels A and AA.
const WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"];

type ThemeCase = { name: string; cookie?: "light" | "dark"; colorScheme: "light" | "dark" };
const THEMES: ThemeCase[] = [
  { name: "light", cookie: "light", colorScheme: "dark" },
  { name: "dark (chosen)", cookie: "dark", colorScheme: "light" },
  { name: "dark (the system's)", colorScheme: "dark" },
];

async function themedContext(browser: Browser, baseURL: string, theme: ThemeCase) {
  const context = await browser.newContext({ baseURL, colorScheme: theme.colorScheme });
  if (theme.cookie) await context.addCookies([{ name: "tether-theme", value: theme.cookie, url: baseURL }]);
  return context;
}

async function expectNoViolations(page: Page, what: string) {
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  const results = await new AxeBuilder({ page }).withTags(WCAG_AA).analyze();
  const found = results.violations.map((v) => ({
    rule: v.id,
    impact: v.impact,
    nodes: v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`),
  }));
  expect(found, `axe on ${what}`).toEqual([]);
}

/** The relative luminance contrast of two `rgb(…)` colours (WCAG 2.2). */
function contrast(a: string, b: string): number {
  const lum = (css: string) => {
    const [r, g, b] = css.match(/[\d.]+/g)!.slice(0, 3).map(Number).map((c) => {
      const s = c / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

for (const theme of THEMES) {
  test(`axe finds nothing on any page, ${theme.name} theme`, async ({ browser, baseURL }) => {
    test.setTimeout(60_000);
    const bobName = unique("bob");
    const bob = await newPerson(browser, baseURL, bobName);
    const context = await themedContext(browser, baseURL!, theme);
    const page = await context.newPage();

    await page.goto("/signin");
    await expectNoViolations(page, "sign-in");
    await page.getByRole("button", { name: "Continue" }).click();
    await expect(page.getByRole("alert")).not.toBeEmpty();
    await expectNoViolations(page, "sign-in with an error");

    const adaName = unique("ada");
    await signIn(page, adaName);
    await expectNoViolations(page, "the conversations");

    await openChat(bob.page, adaName);
    await send(bob.page, "hello from bob");
    await openChat(page, bobName);
    await send(page, "hello from ada");
    await expect(messages(page)).toHaveCount(2);
    await page.getByRole("textbox", { name: "Message" }).fill("a draft");
    await expectNoViolations(page, "a conversation");

    for (const path of ["/settings", "/session", "/about", "/no-such-page"]) {
      await page.goto(path);
      await expectNoViolations(page, path);
    }
    await context.close();
    await bob.context.close();
  });
}

for (const theme of THEMES) {
  test(`the focus ring shows on everything the keyboard reaches, ${theme.name} theme`, async ({ browser, baseURL }) => {
    const context = await themedContext(browser, baseURL!, theme);
    const page = await context.newPage();
    await signIn(page, unique("ada"));
    await page.goto(`/chat/${await userId(page)}`);
    await send(page, "a note to self");
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const seen = new Set<string>();
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press("Tab");
      const ring = await page.evaluate(() => {
        const el = document.activeElement as HTMLElement | null;
        if (!el || el === document.body) return null;
        const style = getComputedStyle(el);
        return {
          what: `${el.tagName.toLowerCase()} ${el.getAttribute("aria-label") ?? el.textContent?.trim().slice(0, 30)}`,
          style: style.outlineStyle,
          width: parseFloat(style.outlineWidth),
          color: style.outlineColor,
        };
      });
      if (!ring || seen.has(ring.what)) continue;
      seen.add(ring.what);
      expect(ring.style, ring.what).toBe("solid");
      expect(ring.width, ring.what).toBeGreaterThanOrEqual(2);
      expect(contrast(ring.color, background), `${ring.what}: ring ${ring.color} on ${background}`).toBeGreaterThanOrEqual(3);
    }
    // The page's links, the theme toggle, the message history and the composer at least.
    expect(seen.size).toBeGreaterThanOrEqual(6);
    await context.close();
  });
}

test("a chosen dark theme is in the page as served, before any script", async ({ browser, baseURL }) => {
  const context = await browser.newContext({ baseURL, colorScheme: "light", javaScriptEnabled: false });
  await context.addCookies([{ name: "tether-theme", value: "dark", url: baseURL! }]);
  const page = await context.newPage();
  const response = await page.goto("/about");
  await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
  expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe("rgb(21, 23, 26)");
  // The policy is as strict as before: no inline script, hashed or not.
  const headers = response!.headers();
  const scriptSrc = headers["content-security-policy"].split(";").find((d) => d.trim().startsWith("script-src"))!;
  expect(scriptSrc).not.toMatch(/unsafe-inline|sha256-/);
  expect(headers["vary"]).toMatch(/cookie/i);
  await context.close();
});

test("the theme toggle's choice is what the server renders next time", async ({ page }) => {
  await page.emulateMedia({ colorScheme: "light" });
  await page.goto("/about");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  const toggle = page.getByRole("button", { name: "Dark theme" });
  await expect(toggle).toHaveAttribute("aria-pressed", "false");
  await toggle.click();
  await expect(page.locator("html")).toHaveAttribute("data-theme", "dark");
  const served = await (await page.request.get("/about")).text();
  expect(served).toMatch(/<html[^>]*data-theme="dark"/);
  await page.reload();
  await expect(page.getByRole("button", { name: "Dark theme" })).toHaveAttribute("aria-pressed", "true");
  await page.getByRole("button", { name: "Dark theme" }).click();
  expect(await (await page.request.get("/about")).text()).toMatch(/<html[^>]*data-theme="light"/);
});

test("each of my messages says in words whether it is sending, sent, seen or not sent", async ({ browser, baseURL }) => {
  const [adaName, bobName] = [unique("ada"), unique("bob")];
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  // While `holding`, the messages this page sends never reach the server (no ack: "Sending").
  let holding = false;
  await page.routeWebSocket(/\/socket\.io\//, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      if (!(holding && typeof m === "string" && m.includes('"private message"'))) server.send(m);
    });
  });
  await signIn(page, adaName);
  const bob = await newPerson(browser, baseURL, bobName);
  await openChat(page, bobName);
  // What a screen reader reads of a message (the accessibility tree: not colours, not what is
  // hidden from it).
  const read = (text: string) => messages(page).filter({ hasText: text }).ariaSnapshot();

  holding = true;
  await send(page, "on its way");
  await expect.poll(() => read("on its way")).toContain("Sending…");
  await expect(personLink(page, bobName)).toContainText("Sending: on its way");
  holding = false;
  // The outbox is kept: after a reload it goes out, and is acknowledged.
  await page.reload();
  await expect.poll(() => read("on its way"), { timeout: 15_000 }).toMatch(/\bSent\b/);

  // Read by Bob: "Seen" with the full date and time (the clock alone is hidden from it).
  await openChat(bob.page, adaName);
  await expect(messages(bob.page).filter({ hasText: "on its way" })).toHaveCount(1);
  await expect.poll(() => read("on its way")).toMatch(/Seen \w+day, /);

  // Refused by the server (nobody has this address): not sent, with what to do about it.
  await page.goto("/chat/00000000-0000-4000-8000-000000000000");
  await send(page, "to nobody");
  await expect.poll(() => read("to nobody")).toMatch(/Not sent: .+/);
  const snapshot = await read("to nobody");
  expect(snapshot).toContain('button "Retry"');
  expect(snapshot).toContain('button "Discard"');
  await expect(page.getByRole("list", { name: "Chats" }).getByRole("listitem").filter({ hasText: "to nobody" })).toContainText(
    "Not sent: to nobody",
  );
  await context.close();
  await bob.context.close();
});
