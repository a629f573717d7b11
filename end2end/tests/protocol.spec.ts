// Part A of the wire contract, spoken by the official JavaScript socket.io-client (as the
// tutorial's own client uses it: default transports, polling first, then the upgrade).
import { test, expect } from "@playwright/test";
import { io, Socket } from "socket.io-client";

type Session = { sessionID: string; userID: string };
type Entry = { userID: string; username: string; connected: boolean; messages: unknown[] };

function once<T>(socket: Socket, event: string): Promise<T> {
  return new Promise((resolve) => socket.once(event, (payload: T) => resolve(payload)));
}

async function join(baseURL: string, auth: object) {
  const socket = io(baseURL, { auth, reconnection: false, forceNew: true });
  const session = once<Session>(socket, "session");
  const users = once<Entry[]>(socket, "users");
  return { socket, session: await session, users: await users };
}

test("the official client is refused with `invalid username` without a username", async ({ baseURL }) => {
  const socket = io(baseURL!, { auth: {}, reconnection: false, forceNew: true });
  const error = await once<Error>(socket, "connect_error");
  expect(error.message).toBe("invalid username");
  socket.close();
});

test("the official client signs in, resumes, and exchanges messages", async ({ baseURL }) => {
  const ada = await join(baseURL!, { username: "ada" });
  expect(ada.session.sessionID).not.toBe(ada.session.userID);
  const bob = await join(baseURL!, { username: "bob" });

  const received = once<{ content: string; from: string; to: string }>(bob.socket, "private message");
  ada.socket.emit("private message", { content: "hello from the tutorial client", to: bob.session.userID });
  expect(await received).toMatchObject({
    content: "hello from the tutorial client",
    from: ada.session.userID,
    to: bob.session.userID,
  });

  const gone = once<string>(bob.socket, "user disconnected");
  ada.socket.close();
  expect(await gone).toBe(ada.session.userID);

  const again = await join(baseURL!, { sessionID: ada.session.sessionID });
  expect(again.session.userID).toBe(ada.session.userID);
  const withBob = again.users.find((u) => u.userID === bob.session.userID)!;
  expect(withBob.messages).toHaveLength(1);
  again.socket.close();
  bob.socket.close();
});

test("acks carry the stored id, and a resend with the same clientId gets the same one", async ({ baseURL }) => {
  const ada = await join(baseURL!, { username: "ada" });
  const clientId = "2a0e9c55-7d55-4f5e-8f0e-3f1c1b9b8a77";
  const payload = { content: "once", to: ada.session.userID, clientId };
  const first = await ada.socket.timeout(5000).emitWithAck("private message", payload);
  const second = await ada.socket.timeout(5000).emitWithAck("private message", payload);
  expect(first.ok.id).toBeGreaterThan(0);
  expect(second).toEqual(first);
  ada.socket.close();
});
