import { writeFileSync } from "node:fs";
import path from "node:path";
import { freshDataDir, startServer } from "./server";

export const stateFile = path.join(__dirname, "test-results", ".server.json");

// One server for the whole run, on a free port (never assume 3000 is free). Workers learn its
// address through the environment, which Playwright passes on from global setup.
export default async function globalSetup(): Promise<void> {
  if (process.env.TETHER_BASE_URL) return; // a server the caller started
  const server = await startServer(freshDataDir());
  process.env.TETHER_BASE_URL = server.url;
  require("node:fs").mkdirSync(path.dirname(stateFile), { recursive: true });
  writeFileSync(stateFile, JSON.stringify({ pid: server.child.pid, dataDir: server.dataDir }));
  server.child.unref();
}
