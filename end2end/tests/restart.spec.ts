import { test, expect } from "@playwright/test";
import { freshDataDir, removeDataDir, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, send } from "./helpers";

test("after a server restart the page reconnects, keeps the session, and delivers a message typed while down exactly once", async ({ browser }) => {
  test.setTimeout(60_000);
  const dataDir = freshDataDir();
  let server = await startServer(dataDir);
  const port = new URL(server.url).port;
  try {
    const ada = await newPerson(browser, server.url, "ada");
    const bob = await newPerson(browser, server.url, "bob");
    await openChat(ada.page, "bob");
    await openChat(bob.page, "ada");

    await stopServer(server);
    await expect(ada.page.getByRole("status").filter({ hasText: "Reconnecting" })).toBeVisible();
    await send(ada.page, "typed while the server was down");
    await expect(messages(ada.page).filter({ hasText: "typed while the server was down" })).toHaveAttribute(
      "data-state",
      "pending",
    );

    server = await startServer(dataDir, `127.0.0.1:${port}`);
    await expect(messages(ada.page).filter({ hasText: "typed while the server was down" })).toHaveAttribute(
      "data-state",
      "sent",
      { timeout: 15_000 },
    );
    await expect(messages(bob.page).filter({ hasText: "typed while the server was down" })).toHaveCount(1, {
      timeout: 15_000,
    });
    await ada.page.reload();
    await expect(messages(ada.page).filter({ hasText: "typed while the server was down" })).toHaveCount(1);
    await expect(ada.page.getByRole("heading", { level: 1, name: "bob" })).toBeVisible();
    await ada.context.close();
    await bob.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});

test("with the shared connection the worker reconnects after a restart and every tab catches up", async ({ browser }) => {
  test.setTimeout(60_000);
  const dataDir = freshDataDir();
  let server = await startServer(dataDir, "127.0.0.1:0", ["--shared-connection"]);
  const port = new URL(server.url).port;
  try {
    const ada = await newPerson(browser, server.url, "ada");
    const second = await ada.context.newPage();
    await second.goto("/");
    const bob = await newPerson(browser, server.url, "bob");
    await openChat(ada.page, "bob");
    await openChat(second, "bob");
    await openChat(bob.page, "ada");

    await stopServer(server);
    for (const tab of [ada.page, second]) {
      await expect(tab.getByRole("status").filter({ hasText: "Reconnecting" })).toBeVisible();
    }
    await send(second, "queued in the second tab");

    server = await startServer(dataDir, `127.0.0.1:${port}`, ["--shared-connection"]);
    await expect(messages(second).filter({ hasText: "queued in the second tab" })).toHaveAttribute("data-state", "sent", {
      timeout: 15_000,
    });
    await send(bob.page, "after the restart");
    for (const tab of [ada.page, second]) {
      await expect(messages(tab).filter({ hasText: "after the restart" })).toHaveCount(1);
      await expect(messages(tab).filter({ hasText: "queued in the second tab" })).toHaveCount(1);
    }
    await expect(messages(bob.page).filter({ hasText: "queued in the second tab" })).toHaveCount(1);
    await ada.context.close();
    await bob.context.close();
  } finally {
    await stopServer(server);
    removeDataDir(dataDir);
  }
});
