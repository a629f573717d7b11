import { test, expect } from "@playwright/test";

test("the page arrives server-rendered, before any script runs", async ({ browser, baseURL }) => {
  const context = await browser.newContext({ javaScriptEnabled: false, baseURL });
  const page = await context.newPage();
  await page.goto("/signin");
  await expect(page).toHaveTitle("Sign in · Tether");
  await expect(page.getByRole("heading", { level: 1, name: "Tether" })).toBeVisible();
  await expect(page.getByRole("navigation", { name: "Main" })).toBeVisible();
  await expect(page.getByLabel("Your name")).toBeVisible();
  await context.close();
});

test("the page hydrates: an interactive control responds", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (msg) => {
    if (msg.type() === "error" || msg.type() === "warning") errors.push(msg.text());
  });
  page.on("pageerror", (err) => errors.push(err.message));
  await page.goto("/signin");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  const toggle = page.getByRole("button", { name: "Dark theme" });
  const before = await toggle.getAttribute("aria-pressed");
  await toggle.click();
  await expect(toggle).not.toHaveAttribute("aria-pressed", before!);
  await expect(page.locator("html")).toHaveAttribute("data-theme", /light|dark/);
  expect(errors, errors.join("\n")).toEqual([]);
});

test("navigating between routes happens without a document reload", async ({ page }) => {
  await page.goto("/about");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  let documentLoads = 0;
  page.on("load", () => (documentLoads += 1));
  await page.evaluate(() => ((window as unknown as { __tether_marker: number }).__tether_marker = 42));

  const nav = page.getByRole("navigation", { name: "Main" });
  // Screen readers hear of in-app navigation (a page load they announce themselves).
  const announcer = page.getByTestId("page-announcer");
  await expect(announcer).toHaveText("");
  // Without a session, Chats sends you to sign-in: both client-side.
  await nav.getByRole("link", { name: "Chats" }).click();
  await expect(page).toHaveURL(/\/signin$/);
  await expect(page.getByLabel("Your name")).toBeVisible();
  await expect(nav.getByRole("link", { name: "About" })).not.toHaveAttribute("aria-current");
  await nav.getByRole("link", { name: "About" }).click();
  await expect(page).toHaveURL(/\/about$/);
  await expect(page.getByRole("heading", { level: 1, name: "About Tether" })).toBeVisible();
  await expect(page).toHaveTitle("About · Tether");
  await expect(announcer).toHaveText("About");
  // The current page's link says so, and only that one.
  await expect(nav.getByRole("link", { name: "About" })).toHaveAttribute("aria-current", "page");
  await expect(nav.locator("[aria-current]")).toHaveCount(1);

  // Following the link to the page already shown adds no history entry, and the browser's
  // history steps between the pages in the app as well.
  await nav.getByRole("link", { name: "About" }).click();
  await page.goBack();
  await expect(page).toHaveURL(/\/signin$/);
  await expect(page.getByLabel("Your name")).toBeVisible();
  await expect(page).toHaveTitle("Sign in · Tether");
  await page.goForward();
  await expect(page.getByRole("heading", { level: 1, name: "About Tether" })).toBeVisible();
  await expect(nav.getByRole("link", { name: "About" })).toHaveAttribute("aria-current", "page");
  // A link to a part of the page is left to the browser: the skip link moves to the content.
  await page.getByRole("link", { name: "Skip to content" }).focus();
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/\/about#main$/);
  await expect(page.getByRole("heading", { level: 1, name: "About Tether" })).toBeVisible();

  const marker = await page.evaluate(() => (window as unknown as { __tether_marker?: number }).__tether_marker);
  expect(marker, "the window survived: no document reload").toBe(42);
  expect(documentLoads).toBe(0);
});

test("a deep link renders on the server and then hydrates", async ({ page, request }) => {
  const response = await request.get("/about");
  expect(response.status()).toBe(200);
  expect(await response.text()).toContain("About Tether");
  await page.goto("/about");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  await expect(page.getByRole("heading", { level: 1, name: "About Tether" })).toBeVisible();
});

test("pages carry a strict CSP and still hydrate under it", async ({ page }) => {
  const violations: string[] = [];
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  const response = await page.goto("/signin");
  const csp = response!.headers()["content-security-policy"];
  expect(csp).toContain("script-src 'self' 'nonce-");
  expect(csp).not.toContain("unsafe-inline");
  expect(csp).not.toContain("'unsafe-eval'");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  // Injected inline script is blocked.
  const ran = await page.evaluate(() => {
    const s = document.createElement("script");
    s.textContent = "window.__injected = true";
    document.body.appendChild(s);
    return (window as unknown as { __injected?: boolean }).__injected === true;
  });
  expect(ran).toBe(false);
  expect(violations.length).toBeGreaterThan(0);
});
