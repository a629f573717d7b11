// Part A of the wire contract, spoken by the official JavaScript socket.io-client (as the
// tutorial's own client uses it: default transports, polling first, then the upgrade).
import { test, expect } from "@playwright/test";
import { io, Socket } from "socket.io-client";
import { webcrypto } from "node:crypto";

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

/** The official client proving possession (issue #25): its `auth` function runs after OPEN, with
 * the Engine.IO sid in `socket.io.engine.id`, and signs `tether-pop-1:` + sid with the key. */
function proving(baseURL: string, auth: object, keys: webcrypto.CryptoKeyPair): Socket {
  const b64url = (bytes: ArrayBuffer) => Buffer.from(bytes).toString("base64url");
  const socket: Socket = io(baseURL, {
    reconnection: false,
    forceNew: true,
    auth: (send) => {
      const sid = socket.io.engine.id;
      void (async () => {
        const signed = await webcrypto.subtle.sign(
          { name: "ECDSA", hash: "SHA-256" },
          keys.privateKey,
          new TextEncoder().encode(`tether-pop-1:${sid}`),
        );
        const popKey = await webcrypto.subtle.exportKey("raw", keys.publicKey);
        send({ ...auth, pop: b64url(signed), popKey: b64url(popKey) });
      })();
    },
  });
  return socket;
}

test("the official client can prove possession, and a copy of its session id alone is refused", async ({ baseURL }) => {
  const keys = (await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
    "sign",
    "verify",
  ])) as webcrypto.CryptoKeyPair;
  const first = proving(baseURL!, { username: "ada" }, keys);
  const session = await once<Session>(first, "session");

  const copy = io(baseURL!, { auth: { sessionID: session.sessionID }, reconnection: false, forceNew: true });
  expect((await once<Error>(copy, "connect_error")).message).toBe("proof required");
  copy.close();

  const again = proving(baseURL!, { sessionID: session.sessionID }, keys);
  expect((await once<Session>(again, "session")).userID).toBe(session.userID);
  first.close();
  again.close();
});
