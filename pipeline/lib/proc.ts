// Child processes for steps: stdout captured, stderr streamed to ours (progress stays visible),
// a missing tool (not found on PATH, or failing to start) becomes an InputError naming the tool and
// the package that provides it.
import { spawn, SpawnOptions } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "./step";

/** Debian package that provides each host tool: host-tools.tsv beside this file, the map scripts/setup.sh installs from. */
export const TOOL_PACKAGES: Record<string, string> = Object.fromEntries(
  fs
    .readFileSync(path.join(__dirname, "host-tools.tsv"), "utf8")
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => l.split("\t").slice(0, 2)),
);

export class CommandFailed extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    super(`${command} failed (exit ${exitCode}): ${lastLines(stderr, 5) || lastLines(stdout, 5)}`);
  }
}

export function lastLines(text: string, n: number): string {
  return text.trimEnd().split("\n").slice(-n).join("\n");
}

export interface RunOptions extends SpawnOptions {
  /** Bytes written to the child's stdin. */
  input?: string | Buffer;
  /** Copy the child's stderr to ours as it arrives (default true). */
  streamStderr?: boolean;
  /** Prefix for streamed stderr lines. */
  label?: string;
  /** Don't throw on non-zero exit; the caller inspects `code`. */
  allowFailure?: boolean;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A full disk or quota, as a tool's own message says it (the C library's text for the errno). */
export function diskFullIn(output: string): { code: "ENOSPC" | "EDQUOT"; reason: string } | undefined {
  if (/No space left on device/.test(output)) return { code: "ENOSPC", reason: "no space left on device" };
  if (/Disk quota exceeded/.test(output)) return { code: "EDQUOT", reason: "disk quota exceeded" };
  return undefined;
}

export function missingTool(tool: string): InputError {
  const pkg = TOOL_PACKAGES[tool];
  return new InputError(`missing tool '${tool}' on PATH${pkg ? ` (install the Debian package ${pkg}, or run scripts/setup.sh)` : ""}`);
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const { input, streamStderr = true, label, allowFailure, ...spawnOpts } = opts;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...spawnOpts, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on("data", (d: Buffer) => out.push(d));
    child.stderr!.on("data", (d: Buffer) => {
      err.push(d);
      if (streamStderr) process.stderr.write(label ? prefixLines(d.toString(), label) : d);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      reject(e.code === "ENOENT" ? missingTool(cmd) : e);
    });
    child.on("close", (code) => {
      const result = { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (code !== 0 && !allowFailure) {
        reject(new CommandFailed([cmd, ...args].join(" ").slice(0, 200), code, result.stderr, result.stdout));
      } else resolve(result);
    });
    child.stdin!.on("error", () => undefined); // a child that exits early closes its stdin: not our error
    child.stdin!.end(input ?? undefined);
  });
}

function prefixLines(text: string, label: string): string {
  return text
    .split("\n")
    .map((l, i, all) => (i === all.length - 1 && l === "" ? "" : `  ${label}| ${l}\n`))
    .join("");
}

/** Throws a missing-tool InputError unless every tool is on PATH (findTool: the one way a tool is found). */
export async function requireTools(...tools: string[]): Promise<void> {
  for (const tool of tools) findTool(tool);
}

/** Absolute path of a tool on PATH (no shell: PATH may not even contain one), or a missing-tool error. */
export function findTool(tool: string, envPath = process.env.PATH ?? ""): string {
  for (const dir of envPath.split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, tool);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      /* next */
    }
  }
  throw missingTool(tool);
}
