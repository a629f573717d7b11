import { test, expect } from "@playwright/test";
import { io, Socket } from "socket.io-client";
import {
  freshDataDir,
  removeDataDir,
  RunningRedis,
  startRedis,
  startRoundRobin,
  startServer,
  stopServer,
  testRedisCluster,
} from "../server";
import { messages, newPerson, openChat, personLink, send } from "./helpers";

// Each scenario runs with its nodes on a standalone Redis and on a Redis Cluster of three
// primaries (the nodes are given one node's URL and learn the others).
const backings: { name: string; start: () => Promise<RunningRedis | undefined> }[] = [
  { name: "one Redis", start: startRedis },
  { name: "a Redis Cluster", start: async () => testRedisCluster() },
];

type Backing = (typeof backings)[number];

/** Two nodes on `backing`; undefined (the test skipped) without a cluster to run on. */
async function twoNodes(backing: Backing) {
  const redis = await backing.start();
  test.skip(!redis, "needs TETHER_TEST_REDIS_CLUSTER (scripts/test.sh starts the cluster)");
  if (!redis) return undefined;
  const dirs = [freshDataDir(), freshDataDir()];
  const args = ["--redis-url", redis.url, "--redis-prefix", redis.prefix];
  const nodes = [await startServer(dirs[0], "127.0.0.1:0", args), await startServer(dirs[1], "127.0.0.1:0", args)];
  const stop = async () => {
    for (const node of nodes) await stopServer(node);
    dirs.forEach(removeDataDir);
    await redis.stop();
  };
  return { nodes, stop };
}

for (const backing of backings) {
  test(`two nodes on ${backing.name}: people on different nodes see each other online and talk`, async ({ browser }) => {
    const two = await twoNodes(backing);
    if (!two) return;
    const { nodes } = two;
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
      await two.stop();
    }
  });

  // Part IV of the socket.io tutorial needs sticky sessions for long-polling; Tether does not:
  // a polling request that reaches a node other than its session's is forwarded there.
  test(`the official client with default transports works against two nodes on ${backing.name} behind a round-robin proxy`, async () => {
    const two = await twoNodes(backing);
    if (!two) return;
    const { nodes } = two;
    const proxy = await startRoundRobin(nodes.map((n) => n.url));
    const sockets: Socket[] = [];
    try {
      const join = async (username: string, transports?: string[]) => {
        const socket = io(proxy.url, { auth: { username }, reconnection: false, forceNew: true, ...(transports ? { transports } : {}) });
        sockets.push(socket);
        const session = await new Promise<{ sessionID: string; userID: string }>((resolve, reject) => {
          socket.once("session", resolve);
          socket.once("connect_error", reject);
        });
        return { socket, session };
      };
      // Default transports: polling first (every request to the next node), then the upgrade.
      const ada = await join("ada");
      if (ada.socket.io.engine.transport.name !== "websocket") {
        await new Promise((resolve) => ada.socket.io.engine.once("upgrade", resolve));
      }
      expect(ada.socket.io.engine.transport.name).toBe("websocket");
      // Polling only: every request of this session alternates between the nodes.
      const bob = await join("bob", ["polling"]);

      const toBob = new Promise<{ content: string }>((resolve) => bob.socket.once("private message", resolve));
      ada.socket.emit("private message", { content: "across the proxy", to: bob.session.userID });
      expect((await toBob).content).toBe("across the proxy");
      const toAda = new Promise<{ content: string }>((resolve) => ada.socket.once("private message", resolve));
      bob.socket.emit("private message", { content: "and back", to: ada.session.userID });
      expect((await toAda).content).toBe("and back");
      expect(bob.socket.io.engine.transport.name).toBe("polling");
      expect(proxy.served.every((n) => n > 2)).toBe(true);
    } finally {
      sockets.forEach((s) => s.close());
      await proxy.stop();
      await two.stop();
    }
  });
}
