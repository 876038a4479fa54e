// Shared by test/apps/writer.test.ts and bench/apps.ts: builds and starts the real db-writer
// binary and talks to it with a real TCP client.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { freePort } from "./ports";

export const repoRoot = path.resolve(__dirname, "..");
export const writerDir = path.join(repoRoot, "apps", "db-writer");
export const writerBinary = path.join(writerDir, "build", "db-writer");

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function newestSource(): number {
  let newest = 0;
  const visit = (p: string) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e));
    else newest = Math.max(newest, st.mtimeMs);
  };
  visit(path.join(writerDir, "src"));
  visit(path.join(writerDir, "CMakeLists.txt"));
  return newest;
}

/**
 * Builds the writer when the binary is missing or older than its sources (flock-serialised).
 * DB_WRITER_BIN points the tests and the benchmark at another build (e.g. the Nix package's).
 */
export function ensureWriterBuilt(): string {
  const override = process.env.DB_WRITER_BIN;
  if (override) {
    if (!fs.existsSync(override)) throw new Error(`DB_WRITER_BIN=${override} does not exist`);
    return override;
  }
  if (fs.existsSync(writerBinary) && fs.statSync(writerBinary).mtimeMs >= newestSource()) return writerBinary;
  const r = spawnSync("bash", [path.join(writerDir, "build.sh")], { encoding: "utf8" });
  if (r.status !== 0 || !fs.existsSync(writerBinary)) {
    throw new Error(`building db-writer failed (apps/db-writer/build.sh exit ${r.status}):\n${(r.stderr ?? "").slice(-4000)}`);
  }
  return writerBinary;
}

export interface Writer {
  port: number;
  proc: ChildProcess;
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after 20 s; resolves when gone. */
  stop(): Promise<void>;
}

export async function startWriter(databaseUrl: string, opts: { args?: string[]; env?: Record<string, string> } = {}): Promise<Writer> {
  const bin = ensureWriterBuilt();
  const port = await freePort();
  const proc = spawn(bin, [...(opts.args ?? []), String(port)], {
    env: { ...process.env, DATABASE_URL: databaseUrl, ...opts.env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let err = "";
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (d: string) => (err += d));
  const exited = new Promise<number | string>((resolve) => proc.on("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));
  let gone = false;
  void exited.then(() => (gone = true));
  const writer: Writer = {
    port,
    proc,
    stderr: () => err,
    exited,
    async stop() {
      if (gone) return;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(t);
    },
  };
  const deadline = Date.now() + 60_000;
  while (!/ready: listening/.test(err)) {
    if (gone) throw new Error(`db-writer exited before it was ready:\n${err}`);
    if (Date.now() > deadline) {
      await writer.stop();
      throw new Error(`db-writer not ready within 60 s:\n${err}`);
    }
    await sleep(50);
  }
  return writer;
}

/** A real TCP client that reads the writer's reply lines in order. */
export class LineClient {
  readonly replies: string[] = [];
  closed = false;
  private buf = "";
  private waiters: Array<() => void> = [];

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding("latin1"); // replies are ASCII; latin1 never mangles a byte
    socket.on("data", (chunk: string) => {
      this.buf += chunk;
      let nl: number;
      while ((nl = this.buf.indexOf("\n")) >= 0) {
        this.replies.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {
      /* surfaces as close */
    });
  }

  static connect(port: number): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.setNoDelay(true);
        resolve(new LineClient(s));
      });
      s.once("error", reject);
    });
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Writes raw bytes (a string is sent as UTF-8). */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (e) => (e ? reject(e) : resolve())));
  }

  sendLines(lines: string[]): Promise<void> {
    return this.write(lines.map((l) => `${l}\n`).join(""));
  }

  /** Waits until at least n replies arrived (or the connection closed, or the timeout hit). */
  async waitFor(n: number, timeoutMs = 60_000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.replies.length < n && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`got ${this.replies.length} of ${n} replies within ${timeoutMs} ms; last: ${JSON.stringify(this.replies.slice(-3))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.replies.slice(0, n);
  }

  /** Waits for the writer to close the connection. */
  async waitClosed(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`connection still open after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  close() {
    this.socket.destroy();
  }
}

/** The id of an `OK <id>` reply, or undefined for anything else. */
export function okId(reply: string): number | undefined {
  const m = /^OK (\d+)$/.exec(reply);
  return m ? Number(m[1]) : undefined;
}
