// Shared by the db-reader tests: build the real binary with cargo, run it on a free port, HTTP GET.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "../../support/ports";

export const repoRoot = path.resolve(__dirname, "..", "..");
export const readerManifest = path.join(repoRoot, "apps", "db-reader", "Cargo.toml");
export const readerBinary = path.join(repoRoot, "apps", "db-reader", "target", "release", "db_reader");

function cargo(): string {
  const onPath = spawnSync("sh", ["-c", "command -v cargo"], { encoding: "utf8" });
  if (onPath.status === 0) return onPath.stdout.trim();
  // rustup installs here without always putting it on a non-login shell's PATH
  const rustup = path.join(os.homedir(), ".cargo", "bin", "cargo");
  if (fs.existsSync(rustup)) return rustup;
  throw new Error("cargo not found: install Rust (rustup, or run scripts/setup.sh) to build apps/db-reader");
}

let built = false;
/** Runs the same `cargo build` as scripts/build-apps.sh: a no-op when up to date, so the tests never use a stale binary. */
export function buildReader(): string {
  if (built) return readerBinary;
  // cargo's own lock on target/ serialises concurrent test files building at once.
  const r = spawnSync(cargo(), ["build", "--release", "--locked", "--manifest-path", readerManifest], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`cargo build of apps/db-reader failed (exit ${r.status}):\n${r.stderr.slice(-4000)}`);
  if (!fs.existsSync(readerBinary)) throw new Error(`cargo build succeeded but ${readerBinary} is missing`);
  built = true;
  return readerBinary;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface Service {
  port: number;
  base: string;
  proc: ChildProcess;
  /** Everything the process wrote to stderr so far. */
  stderr(): string;
  /** Neither exited nor killed by a signal (a crash or an abort counts as not running). */
  running(): boolean;
  /** Resolves when the process has exited (immediately if it already has). */
  exited: Promise<Exit>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it exited. */
  stop(graceMs?: number): Promise<Exit>;
}

function connectOnce(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts `binary <port>` with `env` on a free port and waits until it accepts TCP connections. */
export async function startService(binary: string, env: Record<string, string>, name: string): Promise<Service> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = spawn(binary, [String(port)], { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    proc.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    // "close", not "exit": it fires after stderr is drained, so stderr() is complete once exited resolves.
    const exited = new Promise<Exit>((resolve) => proc.once("close", (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })));
    let done: Exit | undefined;
    void exited.then((e) => (done = e));
    const deadline = Date.now() + 20_000;
    while (!done && Date.now() < deadline && !(await connectOnce(port))) await sleep(50);
    if (done) {
      // Another test may have taken the port between freePort() and bind(): try a new one.
      if (attempt < 3 && /address already in use/i.test(err)) continue;
      throw new Error(`${name} exited before listening (${JSON.stringify(done)}):\n${err}`);
    }
    if (Date.now() >= deadline) {
      proc.kill("SIGKILL");
      throw new Error(`${name} did not listen on 127.0.0.1:${port} within 20 s:\n${err}`);
    }
    return {
      port,
      base: `http://127.0.0.1:${port}`,
      proc,
      stderr: () => err,
      running: () => done === undefined && proc.exitCode === null && proc.signalCode === null,
      exited,
      async stop(graceMs = 15_000) {
        if (done) return done;
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
        const e = await exited;
        clearTimeout(timer);
        return e;
      },
    };
  }
}

export function startReader(databaseUrl: string): Promise<Service> {
  return startService(buildReader(), { DATABASE_URL: databaseUrl }, "db_reader");
}

export interface HttpResult {
  status: number;
  contentType: string;
  body: string;
}

export async function get(url: string, timeoutMs = 30_000): Promise<HttpResult> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, contentType: res.headers.get("content-type") ?? "", body: await res.text() };
}

/** Polls `url` until it answers `status`, or throws with the last answer after `timeoutMs`. */
export async function waitForStatus(url: string, status: number, timeoutMs: number): Promise<HttpResult> {
  const deadline = Date.now() + timeoutMs;
  let last: HttpResult | string = "no answer";
  while (Date.now() < deadline) {
    try {
      last = await get(url, 5_000);
      if (last.status === status) return last;
    } catch (e) {
      last = String(e);
    }
    await sleep(200);
  }
  throw new Error(`${url} did not answer ${status} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

export const CREATE_TABLE =
  "CREATE TABLE IF NOT EXISTS testcounter(id SERIAL PRIMARY KEY, content TEXT NOT NULL, date TIMESTAMP NOT NULL DEFAULT now())";

/** A SQL string literal, for seeding from tests. */
export function lit(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
