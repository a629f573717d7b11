import { expect, Page, BrowserContext, Browser } from "@playwright/test";

/** A P-256 key (test data, not a secret) that a test's browsers can all hold, as if one key were
 * synced between them: a session is bound to its browser's key (issue #25), so "the same session
 * in another browser" needs the same key there. */
const TEST_KEY = {
  kty: "EC",
  crv: "P-256",
  x: "b4KpzZoe0ni2II_6tI6-qyH9Pjazaf_u-NPYD2zh8h8",
  y: "Cjrf8ieyF6fJQm3ZF3PRkbThLhseZ_NJ_d1ojFerfSE",
  d: "FhpeCmfERXh_M3PVO5bcPE2EtM16jAytWYGIEJ98ZSk",
};

/** Puts {@link TEST_KEY} where app/js/identity.js keeps this origin's key (IndexedDB `tether`,
 * store `keys`, record `pop`), imported non-extractable as the app makes its own. Call it on a
 * page of the origin before the app first connects there (it makes its key then). */
export async function holdTestKey(page: Page): Promise<void> {
  await page.evaluate(async (jwk) => {
    const algorithm = { name: "ECDSA", namedCurve: "P-256" };
    const privateKey = await crypto.subtle.importKey("jwk", jwk, algorithm, false, ["sign"]);
    const { d: _, ...publicJwk } = jwk;
    const publicKey = await crypto.subtle.importKey("jwk", publicJwk, algorithm, true, ["verify"]);
    const publicRaw = await crypto.subtle.exportKey("raw", publicKey);
    const db: IDBDatabase = await new Promise((resolve, reject) => {
      const r = indexedDB.open("tether", 1);
      r.onupgradeneeded = () => r.result.createObjectStore("keys");
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    await new Promise((resolve, reject) => {
      const tx = db.transaction("keys", "readwrite");
      tx.objectStore("keys").put({ privateKey, publicRaw }, "pop");
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    db.close();
  }, TEST_KEY);
}

/** Stores `session` (the `tether.session` entry's JSON) in `page`'s origin, from a page of the
 * app that has hydrated and connects with nothing: a page still hydrating when the entry appears
 * would connect with it too (`goto` resolves on `load`, and hydration can come after it). The
 * next `goto` is the page that uses it. With `testKey`, the origin holds {@link TEST_KEY} first. */
export async function storeSession(page: Page, session: string, opts: { testKey?: boolean } = {}): Promise<void> {
  await page.goto("/about");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  if (opts.testKey) await holdTestKey(page);
  await page.evaluate((s) => localStorage.setItem("tether.session", s), session);
}

/** Opens the app in `page` and signs in with `name`; resolves on the Chats page. With
 * `testKey`, the browser holds {@link TEST_KEY} (see {@link holdTestKey}). */
export async function signIn(page: Page, name: string, opts: { testKey?: boolean } = {}): Promise<void> {
  await page.goto("/signin");
  await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
  if (opts.testKey) await holdTestKey(page);
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

export async function newPerson(browser: Browser, baseURL: string | undefined, name: string, opts: { testKey?: boolean } = {}) {
  const context: BrowserContext = await browser.newContext({ baseURL });
  const page = await context.newPage();
  await signIn(page, name, opts);
  return { context, page };
}
