// Shared set-up for the rebuild/verify tests: the demo world, its closures, and closures broken on
// purpose (one byte of a source changed; one source left out), made with the real export parser.
import { findTool } from "../../pipeline/lib/proc";
import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileReader, parseExport, ExportedPath } from "../../pipeline/lib/nar";
import { descendants } from "../../pipeline/lib/lifetime";

export const ROOT = path.join(__dirname, "..", "..");
const BIN = path.join(ROOT, "bin", "supply-chain.js");

/** No binary cache on the host side either: this machine is offline (and retries cost seconds). */
export const ENV: NodeJS.ProcessEnv = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\n` };

export interface CliResult {
  code: number;
  json: any;
  stdout: string;
  stderr: string;
}

function parse(stdout: string): any {
  try {
    return JSON.parse(stdout);
  } catch {
    return undefined;
  }
}

export function cliSync(args: string[], env: NodeJS.ProcessEnv = ENV): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { env, encoding: "utf8", maxBuffer: 1 << 28 });
  return { code: r.status ?? -1, json: parse(r.stdout), stdout: r.stdout, stderr: r.stderr };
}

/** Async so ava can run other tests meanwhile (the builds are minutes of mostly waiting). */
export function cli(args: string[], env: NodeJS.ProcessEnv = ENV): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, json: parse(stdout), stdout, stderr }));
  });
}

/** Fails the test file up front, naming the package (pipeline/lib/host-tools.tsv), when a tool it needs is missing. */
export function requireTool(tool: string): void {
  findTool(tool);
}

export interface DemoWorld {
  dir: string;
  file: string;
  attribute: string;
  nonReproducibleAttribute: string;
  /** The same world as a flake, `path:<dir>` (its image at `#image`). */
  flake: string;
}

export async function demoWorld(prefix: string): Promise<DemoWorld> {
  for (const t of ["nix-build", "bwrap", "busybox"]) requireTool(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const r = await cli(["demo-world", path.join(dir, "world")]);
  if (r.code !== 0) throw new Error(`demo-world failed (${r.code}): ${r.stderr.slice(-2000)}`);
  return { dir, ...r.json };
}

export async function closureOf(w: DemoWorld, attribute: string, name: string): Promise<string> {
  const r = await cli(["closure", "--file", w.file, "--attribute", attribute, "--out", path.join(w.dir, name)]);
  if (r.code !== 0) throw new Error(`closure of ${attribute} failed (${r.code}): ${r.stderr.slice(-2000)}`);
  return r.json.closureFile;
}

export async function exportedPaths(closure: string): Promise<ExportedPath[]> {
  return parseExport(fileReader(closure), { entries: true });
}

/** Copies `closure` with one byte in the middle of one file of the source whose path matches. */
export async function tamperedCopy(closure: string, match: RegExp, to: string): Promise<{ path: string; file: string }> {
  const paths = await exportedPaths(closure);
  const victim = paths.find((p) => match.test(p.path));
  if (!victim) throw new Error(`no path matching ${match} in ${closure}`);
  const file = victim.entries!.find((e) => e.type === "regular" && e.size > 0);
  if (!file || file.type !== "regular") throw new Error(`${victim.path} has no regular file to tamper with`);
  const buf = fs.readFileSync(closure);
  buf[file.contentsOffset + Math.floor(file.size / 2)] ^= 0x01;
  fs.writeFileSync(to, buf);
  return { path: victim.path, file: file.path };
}

/** Copies `closure` leaving out the one source whose path matches (a well-formed export otherwise). */
export async function closureWithout(closure: string, match: RegExp, to: string): Promise<string> {
  const paths = await exportedPaths(closure);
  const i = paths.findIndex((p) => match.test(p.path));
  if (i < 0) throw new Error(`no path matching ${match} in ${closure}`);
  const buf = fs.readFileSync(closure);
  const start = paths[i].narStart - 8; // the u64 "1" that opens each entry
  const end = i + 1 < paths.length ? paths[i + 1].narStart - 8 : buf.length - 8; // the final u64 0 stays
  fs.writeFileSync(to, Buffer.concat([buf.subarray(0, start), buf.subarray(end)]));
  return paths[i].path;
}

export function rm(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Starts `supply-chain <args>` in its own process group, waits until Nix is building the kernel
 * layer (the middle of a real rebuild), then SIGKILLs the whole group: no handler gets to clean up.
 */
/**
 * The OOM killer's view of a rebuild: mid-build, only the step's bwrap gets SIGKILL, from outside the step.
 * Returns how the step itself then ended.
 */
export async function killIsolationMidBuild(args: string[], env: NodeJS.ProcessEnv = ENV): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = await startUntilBuilding(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], env);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const bwrap = descendants(child.pid!).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "bwrap";
    } catch {
      return false; // gone meanwhile
    }
  });
  if (bwrap.length === 0) throw new Error("the rebuild runs no bwrap");
  process.kill(bwrap[0], "SIGKILL");
  const code = await new Promise<number | null>((r) => child.on("close", r));
  return { code, stdout, stderr };
}

export async function killMidBuild(args: string[], env: NodeJS.ProcessEnv = ENV): Promise<void> {
  const child = await startUntilBuilding(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], env);
  process.kill(-child.pid!, "SIGKILL");
  await new Promise((r) => child.on("close", r));
}

function startUntilBuilding(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let seen = "";
  return new Promise<ChildProcess>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`never saw a build start: ${seen.slice(-2000)}`)), 300_000);
    child.stderr!.on("data", (d) => {
      seen += d;
      if (/building '\/nix\/store\/[^']*linux[^']*\.drv'/.test(seen)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
  });
}

/**
 * A killed `pulumi up` as the step sees it: the step runs under a shell (as the command provider
 * starts it) and only that shell is SIGKILLed mid-build. Returns the step's pid and every process
 * below it at that moment.
 */
export async function orphanMidBuild(args: string[], env: NodeJS.ProcessEnv = ENV): Promise<{ step: number; below: number[] }> {
  const quoted = [process.execPath, path.join(ROOT, "bin", "supply-chain.js"), ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const sh = await startUntilBuilding("sh", ["-c", `${quoted}; echo done`], env);
  const step = descendants(sh.pid!)[0];
  const below = descendants(step);
  process.kill(sh.pid!, "SIGKILL");
  return { step, below };
}

/**
 * The swap-the-closure attack at its exact moment: `fifo` becomes a named pipe whose Nth opening
 * reads `files[N]` (the last one for every later opening), as if the file were replaced between
 * two reads of the same path. `opens()` counts the readers served.
 */
export function swappingFile(fifo: string, files: string[]): { opens(): number; stop(): Promise<void> } {
  execFileSync("mkfifo", [fifo]);
  let served = 0;
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      const fh = await fs.promises.open(fifo, "w"); // waits for a reader
      if (stopping) {
        await fh.close();
        break;
      }
      const content = fs.readFileSync(files[Math.min(served, files.length - 1)]);
      served++;
      try {
        await fh.writeFile(content);
      } catch {
        // the reader went away early
      } finally {
        await fh.close();
      }
      // The reader still holds the pipe until it has read EOF: an open for writing now would join it
      // (and feed it the next file) instead of waiting for the next reader.
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return {
    opens: () => served,
    async stop() {
      stopping = true;
      // Unblock the writer waiting for a reader that never comes.
      const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      await loop;
      fs.closeSync(fd);
      fs.rmSync(fifo, { force: true });
    },
  };
}
