import { test, expect } from "@playwright/test";
import { freshDataDir, removeDataDir, startRedis, startServer, stopServer } from "../server";
import { messages, newPerson, openChat, personLink, send } from "./helpers";

test("two nodes on one Redis: people on different nodes see each other online and talk", async ({ browser }) => {
  const redis = await startRedis();
  const dirs = [freshDataDir(), freshDataDir()];
  const args = ["--redis-url", redis.url, "--redis-prefix", redis.prefix];
  const nodes = [await startServer(dirs[0], "127.0.0.1:0", args), await startServer(dirs[1], "127.0.0.1:0", args)];
  try {
    const ada = await newPerson(browser, nodes[0].url, "ada");
    const bob = await newPerson(browser, nodes[1].url, "bob");
    await expect(personLink(ada.page, "bob")).toContainText("online");
    await expect(personLink(bob.page, "ada")).toContainText("online");

    await openChat(bob.page, "ada");
    await send(bob.page, "from node two");
    await openChat(ada.page, "bob");
    await expect(messages(ada.page).filter({ hasText: "from node two" })).toHaveCount(1);
    await send(ada.page, "from node one");
    await expect(messages(bob.page).filter({ hasText: "from node one" })).toHaveCount(1);
    await expect(messages(ada.page).filter({ hasText: "from node one" })).toHaveAttribute("data-state", "sent");

    await ada.page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Chats" }).click();
    await expect(personLink(ada.page, "bob")).toContainText("online");
    await bob.context.close();
    await expect(personLink(ada.page, "bob")).toContainText("offline");
    await ada.context.close();
  } finally {
    for (const node of nodes) await stopServer(node);
    dirs.forEach(removeDataDir);
    await redis.stop();
  }
});
