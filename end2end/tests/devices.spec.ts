import { test, expect } from "@playwright/test";
import { createHash, randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { newPerson } from "./helpers";

// Devices (issue #25, slice 1): the session page lists every session of the name, and revoking
// one signs that browser out at once. The second session is written into the server's SQLite
// store (its row and its secret's, as a passkey sign-in makes them; passkeys.spec.ts makes one
// over the wire) and opened in a second browser context.
test("revoking another device from the session page signs that browser out", async ({ browser }) => {
  test.setTimeout(60_000);
  const dataDir = freshDataDir();
  const server = await startServer(dataDir);
  try {
    const ada = await newPerson(browser, server.url, "ada");
    const userID = JSON.parse((await ada.page.evaluate(() => localStorage.getItem("tether.session")))!).userID;

    // The other device: a session of ada's, labelled as a phone would be.
    const secret = randomUUID();
    const digest = createHash("sha256").update(secret).digest("hex");
    const now = Date.now();
    execFileSync("sqlite3", [
      path.join(dataDir, "tether.db"),
      `PRAGMA busy_timeout = 5000; INSERT INTO sessions (session_digest, user_id, created_at, last_seen_at, device) VALUES ('${digest}', '${userID}', ${now}, ${now}, 'Safari on iOS'); INSERT INTO session_secrets (digest, session_digest, issued_at) VALUES ('${digest}', '${digest}', ${now});`,
    ]);
    const phone = await browser.newContext({ baseURL: server.url });
    await phone.addInitScript(
      ([sessionID, userID]) => {
        // Once: later loads of this tab must find what the page left there.
        if (!sessionStorage.getItem("seeded")) {
          sessionStorage.setItem("seeded", "1");
          localStorage.setItem("tether.session", JSON.stringify({ sessionID, userID, username: "ada" }));
        }
      },
      [secret, userID],
    );
    const phonePage = await phone.newPage();
    await phonePage.goto("/");
    await expect(phonePage.getByRole("heading", { level: 1, name: "Chats" })).toBeVisible();
    // Only a handshake the server accepted lists the account as "you" (the page shows "Chats"
    // from localStorage before it connects): the phone is signed in, not on its way out.
    await expect(phonePage.getByRole("list", { name: "Chats" })).toContainText("ada (you)");

    await ada.page.goto("/session");
    const devices = ada.page.getByTestId("device");
    await expect(devices).toHaveCount(2);
    await expect(devices.filter({ hasText: "This device" })).toHaveCount(1);
    const other = devices.filter({ hasText: "Safari on iOS" });
    await expect(other).not.toContainText("This device");
    // When it was first and last seen: made at `now`, seen again at the phone's handshake.
    await expect(other).toContainText("First seen");
    await expect(other).toContainText("last seen");
    const [first, last] = await other
      .locator("time")
      .evaluateAll((times) => times.map((t) => Date.parse(t.getAttribute("datetime") ?? "")));
    expect(first).toBe(now);
    expect(last).toBeGreaterThanOrEqual(now);

    // Keyboard: focus the row's button, ask, then confirm.
    const revoke = other.getByRole("button", { name: "Revoke Safari on iOS" });
    await revoke.focus();
    await ada.page.keyboard.press("Enter");
    await expect(other.getByRole("button", { name: "Cancel" })).toBeVisible();
    await other.getByRole("button", { name: "Confirm: Revoke Safari on iOS" }).press("Enter");

    await expect(phonePage).toHaveURL(/\/signin$/, { timeout: 3000 });
    expect(await phonePage.evaluate(() => localStorage.getItem("tether.session"))).toBeNull();
    await expect(devices).toHaveCount(1);
    await expect(devices).toContainText("This device");
    await expect(ada.page.getByTestId("session-state")).toHaveText("Online");
    await phone.close();
    await ada.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
