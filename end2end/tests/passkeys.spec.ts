import { test, expect, Browser, BrowserContext, CDPSession, Page } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { openChat, personLink, send, signIn, userId } from "./helpers";

// Passkeys (issue #25, slice 4), with Chromium's virtual authenticator (CDP WebAuthn domain):
// ada protects her name on the session page; another browser, holding the same passkey (copied
// across, as a synced passkey is), signs in with it and gets her userID, her conversation and
// its unread count back; a third browser cannot sign up as "Ada". Browsers refuse IP addresses
// as RP ids, so every page is at http://localhost:<port>, which the server allows for a
// loopback bind and makes its RP id.

interface Device {
  context: BrowserContext;
  page: Page;
  cdp: CDPSession;
  authenticatorId: string;
}

async function deviceWithAuthenticator(browser: Browser, baseURL: string): Promise<Device> {
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { context, page, cdp, authenticatorId };
}

test("a passkey protects the name and signs in on another device with the account's conversations", async ({ browser }) => {
  test.setTimeout(90_000);
  const dataDir = freshDataDir();
  // On by default; the flag says so anyway, as an operator may.
  const server = await startServer(dataDir, "127.0.0.1:0", ["--passkeys"]);
  const baseURL = server.url.replace("127.0.0.1", "localhost");
  try {
    const laptop = await deviceWithAuthenticator(browser, baseURL);
    await signIn(laptop.page, "ada");
    const adaId = await userId(laptop.page);

    // Bob writes to ada; she does not open it.
    const bobContext = await browser.newContext({ baseURL });
    const bob = await bobContext.newPage();
    await signIn(bob, "bob");
    await openChat(bob, "ada");
    await send(bob, "are you there?");
    await expect(personLink(laptop.page, "bob")).toContainText("1 unread");

    // Protect the name.
    await laptop.page.goto("/session");
    await expect(laptop.page.locator("html")).toHaveAttribute("data-hydrated", "true");
    await laptop.page.getByTestId("protect-name").click();
    await expect(laptop.page.getByTestId("protect-status")).toHaveText("Your name is protected by a passkey.");
    const { credentials } = await laptop.cdp.send("WebAuthn.getCredentials", {
      authenticatorId: laptop.authenticatorId,
    });
    expect(credentials).toHaveLength(1);
    // Bob, connected all along, sees ada's row marked at once (review finding 3b): she is the
    // name's protected holder, not a newer account that took it. So does ada's own row.
    await expect(personLink(bob, "ada").locator(".protected-mark")).toBeVisible();
    await expect(personLink(bob, "ada")).toHaveAccessibleName(/^ada ?, protected by a passkey ?,/);
    await expect(personLink(bob, "bob")).not.toHaveAccessibleName(/protected/);
    await laptop.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
    await expect(personLink(laptop.page, "ada").locator(".protected-mark")).toBeVisible();

    // Another device holding the same passkey signs in with it.
    const phone = await deviceWithAuthenticator(browser, baseURL);
    await phone.cdp.send("WebAuthn.addCredential", {
      authenticatorId: phone.authenticatorId,
      credential: credentials[0],
    });
    await phone.page.goto("/signin");
    await expect(phone.page.locator("html")).toHaveAttribute("data-hydrated", "true");
    await phone.page.getByLabel("Your name").fill("Ada");
    await phone.page.getByRole("button", { name: "Sign in with a passkey" }).click();
    await expect(phone.page.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();
    expect(await userId(phone.page)).toBe(adaId);
    await expect(phone.page.getByRole("list", { name: "Chats" })).toContainText("ada (you)");
    await expect(personLink(phone.page, "bob")).toContainText("1 unread");
    await expect(personLink(phone.page, "bob")).toContainText("are you there?");

    // Whoever connects from now on sees it in the roster too.
    await bob.reload();
    await expect(personLink(bob, "ada").locator(".protected-mark")).toBeVisible();

    // The laptop's session page lists the phone as another device.
    await laptop.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Session" }).click();
    await expect(laptop.page.getByTestId("device")).toHaveCount(2);

    // Nobody else can sign up as ada, in any case.
    const thief = await browser.newContext({ baseURL });
    const thiefPage = await thief.newPage();
    await thiefPage.goto("/signin");
    await expect(thiefPage.locator("html")).toHaveAttribute("data-hydrated", "true");
    await thiefPage.getByLabel("Your name").fill("ADA");
    await thiefPage.getByRole("button", { name: "Continue" }).click();
    await expect(thiefPage.getByRole("alert").filter({ hasText: "protected by a passkey" })).toBeVisible();
    await expect(thiefPage).toHaveURL(/\/signin$/);

    // A passkey sign-in for a name nobody protected says so.
    await thiefPage.getByLabel("Your name").fill("nobody");
    await thiefPage.getByRole("button", { name: "Sign in with a passkey" }).click();
    await expect(thiefPage.getByRole("alert").filter({ hasText: "No passkey protects that name." })).toBeVisible();

    // The phone's session page lists the account's passkey too.
    await phone.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Session" }).click();
    await expect(phone.page.getByTestId("passkey")).toHaveCount(1);

    // The laptop lists the passkey (added in this browser, used once since) and removes it:
    // it was the last, so the name is given up, and a sign-up with it is let in again.
    const passkey = laptop.page.getByTestId("passkey");
    await expect(passkey).toHaveCount(1);
    // The browser label is the one the devices list shows (Playwright's Chromium reports a
    // Windows user agent), so it is read, not assumed.
    await expect(passkey).toContainText(/Passkey added in Chrome on \w+/);
    const label = ((await passkey.locator("strong").textContent()) ?? "").replace("Passkey added in ", "");
    await expect(passkey).toContainText("last used");
    await passkey.getByRole("button", { name: `Remove the passkey added in ${label}` }).click();
    await expect(laptop.page.getByTestId("last-passkey-warning")).toBeVisible();
    await passkey.getByRole("button", { name: `Confirm: Remove the passkey added in ${label}` }).click();
    await expect(laptop.page.getByTestId("passkey")).toHaveCount(0);
    await expect(laptop.page.getByTestId("protect-status")).toHaveText("Your name is not protected.");
    await expect(laptop.page.getByTestId("protect-name")).toHaveText("Protect your name with a passkey");
    // The mark goes at once, for bob (connected all along), on the phone (the account's other
    // device) and in the laptop's own list.
    await expect(personLink(bob, "ada")).toBeVisible();
    await expect(personLink(bob, "ada").locator(".protected-mark")).toHaveCount(0);
    await expect(personLink(bob, "ada")).not.toHaveAccessibleName(/protected/);
    // The phone's session page follows (the news reaches every socket of the account).
    await expect(phone.page.getByTestId("passkey")).toHaveCount(0);
    await expect(phone.page.getByTestId("protect-status")).toHaveText("Your name is not protected.");
    await phone.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
    await expect(personLink(phone.page, "ada")).toBeVisible();
    await expect(personLink(phone.page, "ada").locator(".protected-mark")).toHaveCount(0);
    await laptop.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
    await expect(personLink(laptop.page, "ada")).toBeVisible();
    await expect(personLink(laptop.page, "ada").locator(".protected-mark")).toHaveCount(0);
    await thiefPage.getByLabel("Your name").fill("ADA");
    await thiefPage.getByRole("button", { name: "Continue" }).click();
    await expect(thiefPage.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();

    await Promise.all([laptop.context.close(), phone.context.close(), bobContext.close(), thief.close()]);
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

test("a page at an address passkeys cannot use does not offer them", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--passkeys"]);
  try {
    // Browsers refuse an IP address as a relying party: at http://127.0.0.1 neither button shows.
    const context = await browser.newContext({ baseURL: server.url });
    const page = await context.newPage();
    await page.goto("/signin");
    await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByRole("button", { name: "Continue" })).toBeVisible();
    await expect(page.getByRole("button", { name: "Sign in with a passkey" })).toHaveCount(0);
    await signIn(page, "ada");
    await page.goto("/session");
    await expect(page.locator("html")).toHaveAttribute("data-hydrated", "true");
    await expect(page.getByTestId("device")).toHaveCount(1);
    await expect(page.getByTestId("protect-name")).toHaveCount(0);
    // The same server at http://localhost offers them.
    const local = await browser.newContext({ baseURL: server.url.replace("127.0.0.1", "localhost") });
    const localPage = await local.newPage();
    await localPage.goto("/signin");
    await expect(localPage.locator("html")).toHaveAttribute("data-hydrated", "true");
    await expect(localPage.getByRole("button", { name: "Sign in with a passkey" })).toBeVisible();
    await Promise.all([context.close(), local.close()]);
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
