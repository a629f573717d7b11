// The socket.io private-messaging tutorial's server: in memory, nothing durable. The scale
// issue #9 compares Tether with; `scripts/bench-node.sh` runs tether-load against it.
// It adds what Tether's client needs to work at all: the ack `{ ok: { id, ts } }` of a
// `private message` (the client's outbox waits for it) and an empty `restore_state` answer.
// Usage: node tutorial-server.js [port]   (0 or absent: a free port)
const { createServer } = require("node:http");
const { randomUUID } = require("node:crypto");
const { Server } = require("socket.io");

const port = Number(process.argv[2] ?? 0);
const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"] });
const sessions = new Map(); // sessionID -> { userID, username, connected }
const messages = [];
let nextId = 1;

io.use((socket, next) => {
  const auth = socket.handshake.auth ?? {};
  const session = auth.sessionID && sessions.get(auth.sessionID);
  if (session) {
    Object.assign(socket, { sessionID: auth.sessionID, userID: session.userID, username: session.username });
    return next();
  }
  if (!auth.username) return next(new Error("invalid username"));
  Object.assign(socket, { sessionID: randomUUID(), userID: randomUUID(), username: auth.username });
  next();
});

io.on("connection", (socket) => {
  sessions.set(socket.sessionID, { userID: socket.userID, username: socket.username, connected: true });
  socket.emit("session", { sessionID: socket.sessionID, userID: socket.userID, username: socket.username });
  socket.join(socket.userID);
  const byPeer = new Map();
  for (const m of messages) {
    if (m.from !== socket.userID && m.to !== socket.userID) continue;
    const peer = m.from === socket.userID ? m.to : m.from;
    if (!byPeer.has(peer)) byPeer.set(peer, []);
    byPeer.get(peer).push(m);
  }
  const users = [];
  for (const s of sessions.values()) {
    users.push({ userID: s.userID, username: s.username, connected: s.connected, messages: byPeer.get(s.userID) ?? [] });
  }
  socket.emit("users", users);
  socket.broadcast.emit("user connected", { userID: socket.userID, username: socket.username, connected: true, messages: [] });

  socket.on("private message", ({ content, to, clientId }, ack) => {
    const message = { id: nextId++, ts: Date.now(), content, from: socket.userID, to, clientId };
    socket.to(to).to(socket.userID).emit("private message", message);
    messages.push(message);
    if (typeof ack === "function") ack({ ok: { id: message.id, ts: message.ts } });
  });
  socket.on("restore_state", (_request, ack) => {
    if (typeof ack === "function") ack({ ok: { messages: [], users: [], hasMore: false } });
  });
  socket.on("disconnect", async () => {
    const left = await io.in(socket.userID).fetchSockets();
    if (left.length === 0) {
      socket.broadcast.emit("user disconnected", socket.userID);
      const session = sessions.get(socket.sessionID);
      if (session) session.connected = false;
    }
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${httpServer.address().port}`);
});
