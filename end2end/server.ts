// Starts the built Tether server on a free port with its own data directory, and stops it.
// Used by the global setup and by tests that restart the server themselves.
import { spawn, ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { AddressInfo, connect, createServer } from "node:net";

export const repoRoot = path.resolve(__dirname, "..");

export function serverBinary(): string {
  return process.env.TETHER_SERVER_BIN ?? path.join(repoRoot, "target", "release", "tether");
}

export interface RunningServer {
  url: string;
  dataDir: string;
  child: ChildProcess;
}

export function freshDataDir(): string {
  return mkdtempSync(path.join(tmpdir(), "tether-e2e-"));
}

/** Starts the server and resolves once it prints the address it listens on. */
export async function startServer(
  dataDir: string,
  listen = "127.0.0.1:0",
  extraArgs: string[] = [],
): Promise<RunningServer> {
  // The release artifact as an operator runs it: from a directory of its own, with no site
  // beside it (the site is embedded in the binary). A debug binary (TETHER_SERVER_BIN) has no
  // embedded site; TETHER_E2E_SITE_ROOT points it at one.
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith("LEPTOS_")) delete env[name];
  }
  if (process.env.TETHER_E2E_SITE_ROOT) env.LEPTOS_SITE_ROOT = process.env.TETHER_E2E_SITE_ROOT;
  const child = spawn(serverBinary(), ["--listen", listen, "--data-dir", dataDir, ...extraArgs], {
    cwd: dataDir,
    env: {
      ...env,
      TETHER_LOG: process.env.TETHER_LOG ?? "warn",
      // Every test signs up from 127.0.0.1, well past the per-address default (10 a minute);
      // environment, so a test's own flags still win.
      TETHER_SIGNUPS_PER_IP_PER_MIN: process.env.TETHER_SIGNUPS_PER_IP_PER_MIN ?? "100000",
      TETHER_SIGNUP_BURST_PER_IP: process.env.TETHER_SIGNUP_BURST_PER_IP ?? "100000",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start within 20 s")), 20_000);
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      const match = /^listening on (http:\/\/\S+)$/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening`));
    });
  });
  return { url, dataDir, child };
}

/** Stops the server (SIGTERM, or SIGKILL when `hard`) and waits for it to exit. */
export async function stopServer(server: RunningServer, hard = false): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill(hard ? "SIGKILL" : "SIGTERM");
  await exited;
}

export function removeDataDir(dataDir: string): void {
  rmSync(dataDir, { recursive: true, force: true });
}

export interface RunningRedis {
  url: string;
  /** Key and channel prefix of this test, so tests sharing one Redis never meet. */
  prefix: string;
  stop: () => Promise<void>;
}

function newPrefix(): string {
  return `e2e-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The Redis Cluster `scripts/test.sh` started (TETHER_TEST_REDIS_CLUSTER, its nodes' URLs
 * separated by commas): a node is given the first and learns the others. Undefined outside
 * test.sh. */
export function testRedisCluster(): RunningRedis | undefined {
  const urls = process.env.TETHER_TEST_REDIS_CLUSTER;
  if (!urls) return undefined;
  return { url: urls.split(",")[0], prefix: newPrefix(), stop: async () => {} };
}

/** The Redis `scripts/test.sh` started (TETHER_TEST_REDIS_URL), else a throwaway redis-server. */
export async function startRedis(): Promise<RunningRedis> {
  const prefix = newPrefix();
  if (process.env.TETHER_TEST_REDIS_URL) {
    return { url: process.env.TETHER_TEST_REDIS_URL, prefix, stop: async () => {} };
  }
  const port = await new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `redis://127.0.0.1:${port}/`,
    prefix,
    stop: async () => {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

export interface RoundRobin {
  url: string;
  /** Requests (and upgrades) each target was sent, in the order of `targets`. */
  served: number[];
  stop: () => Promise<void>;
}

/**
 * A load balancer without sticky sessions: each HTTP request, and each WebSocket upgrade, goes
 * to the next of `targets` in turn (as nginx's default round-robin does), whatever session it
 * belongs to.
 */
export async function startRoundRobin(targets: string[]): Promise<RoundRobin> {
  const http = await import("node:http");
  const ends = targets.map((t) => new URL(t));
  const served = ends.map(() => 0);
  let next = 0;
  const pick = () => {
    const i = next++ % ends.length;
    served[i]++;
    return ends[i];
  };
  const server = http.createServer((req, res) => {
    const to = pick();
    const upstream = http.request(
      { host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(upstream);
  });
  server.on("upgrade", (req, socket, head) => {
    const to = pick();
    const upstream = connect(Number(to.port), to.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(lines.join("\r\n") + "\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    const close = () => {
      upstream.destroy();
      socket.destroy();
    };
    upstream.on("error", close);
    socket.on("error", close);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    served,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
