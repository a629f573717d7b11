import { expect, Page, BrowserContext, Browser } from "@playwright/test";

/** Opens the app in `page` and signs in with `name`; resolves on the Chats page. */
export async function signIn(page: Page, name: string): Promise<void> {
  await page.goto("/signin");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();
  await expect(page.getByRole("list", { name: "Chats" })).toContainText(`${name} (you)`);
}

export async function userId(page: Page): Promise<string> {
  const stored = await page.evaluate(() => localStorage.getItem("tether.session"));
  return JSON.parse(stored!).userID;
}

export function personLink(page: Page, name: string) {
  return page.getByRole("list", { name: "Chats" }).getByRole("link", { name: new RegExp(`^${name}\\b`) });
}

/** Opens the conversation with `name` from the list of chats. */
export async function openChat(page: Page, name: string): Promise<void> {
  await personLink(page, name).click();
  await expect(page.getByRole("heading", { level: 1, name })).toBeVisible();
}

export async function send(page: Page, text: string): Promise<void> {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
  await expect(box).toHaveValue("");
}

export function messages(page: Page) {
  return page.getByRole("list", { name: "Messages" }).getByRole("listitem");
}

export async function newPerson(browser: Browser, baseURL: string | undefined, name: string) {
  const context: BrowserContext = await browser.newContext({ baseURL });
  const page = await context.newPage();
  await signIn(page, name);
  return { context, page };
}
