import { existsSync, readFileSync, rmSync } from "node:fs";
import { stateFile } from "./global-setup";

export default async function globalTeardown(): Promise<void> {
  if (!existsSync(stateFile)) return;
  const { pid, dataDir } = JSON.parse(readFileSync(stateFile, "utf8"));
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    // already gone
  }
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(stateFile, { force: true });
}
