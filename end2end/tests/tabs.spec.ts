import { test, expect } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { signIn, personLink } from "./helpers";

test("under the reject tab policy a second tab offers \"Use here\", and the first can take it back", async ({ browser }) => {
  const dataDir = freshDataDir();
  const server = await startServer(dataDir, "127.0.0.1:0", ["--tab-policy", "reject"]);
  try {
    const context = await browser.newContext({ baseURL: server.url });
    const first = await context.newPage();
    await signIn(first, "ada");

    const second = await context.newPage();
    await second.goto("/");
    const conflict = second.getByRole("alert").filter({ hasText: "open in another tab" });
    await expect(conflict).toBeVisible();
    await conflict.getByRole("button", { name: "Use here" }).click();
    await expect(personLink(second, "ada")).toContainText("(you)");

    const moved = first.getByRole("alert").filter({ hasText: "moved to another tab" });
    await expect(moved).toBeVisible();
    // Still signed in: the session moved, it did not end.
    expect(await first.evaluate(() => localStorage.getItem("tether.session"))).not.toBeNull();
    await moved.getByRole("button", { name: "Use here" }).click();
    await expect(moved).toBeHidden();
    await expect(second.getByRole("alert").filter({ hasText: "moved to another tab" })).toBeVisible();
    await context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
