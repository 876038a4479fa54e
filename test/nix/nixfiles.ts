// Helpers for the nix/ tests: the two nixpkgs pins, hash encodings, and running real nix tools.
import * as fs from "node:fs";
import * as path from "node:path";
import { run, RunResult } from "../../pipeline/lib/proc";

export const REPO = path.resolve(__dirname, "../..");

/** Runs a nix tool; never throws on a non-zero exit (a missing tool still throws InputError). */
export function nix(tool: string, args: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  return run(tool, args, { cwd: opts.cwd ?? REPO, allowFailure: true, streamStderr: false });
}

export const FLAKE_FEATURES = ["--extra-experimental-features", "nix-command flakes"];

// ---- hashes ------------------------------------------------------------------------------------

// Nix's base32: its own alphabet (no e o u t), least significant 5 bits printed last.
const NIX32 = "0123456789abcdfghijklmnpqrsvwxyz";

export function toNixBase32(bytes: Buffer): string {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    const c = (bytes[i] >> j) | (i + 1 < bytes.length ? bytes[i + 1] << (8 - j) : 0);
    out += NIX32[c & 0x1f];
  }
  return out;
}

export function fromNixBase32(s: string, size: number): Buffer {
  if (s.length !== Math.ceil((size * 8) / 5)) throw new Error(`base32 hash '${s}' has the wrong length for ${size} bytes`);
  const bytes = Buffer.alloc(size);
  for (let n = 0; n < s.length; n++) {
    const digit = NIX32.indexOf(s[s.length - n - 1]);
    if (digit < 0) throw new Error(`'${s[s.length - n - 1]}' is not a nix base32 digit in '${s}'`);
    const b = n * 5;
    const i = Math.floor(b / 8);
    const j = b % 8;
    bytes[i] |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < size) bytes[i + 1] |= carry;
    else if (carry) throw new Error(`base32 hash '${s}' overflows ${size} bytes`);
  }
  return bytes;
}

/** "sha256-<base64>" -> 32 bytes. */
export function fromSri(sri: string): Buffer {
  const m = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(sri);
  if (!m) throw new Error(`'${sri}' is not an SRI sha256 hash`);
  return Buffer.from(m[1], "base64");
}

// ---- the two pins --------------------------------------------------------------------------------

export interface FlakeLock {
  version: number;
  root: string;
  nodes: Record<string, { inputs?: Record<string, string | string[]>; locked?: Record<string, unknown>; original?: Record<string, unknown> }>;
}

export interface Sources {
  nixpkgs: { branch: string; rev: string; lastModified: number; url: string; sha256: string };
}

export function readPins(repo = REPO): { lock: FlakeLock; sources: Sources } {
  return {
    lock: JSON.parse(fs.readFileSync(path.join(repo, "flake.lock"), "utf8")) as FlakeLock,
    sources: JSON.parse(fs.readFileSync(path.join(repo, "nix/sources.json"), "utf8")) as Sources,
  };
}

/**
 * Every way flake.lock's nixpkgs and nix/sources.json's nixpkgs disagree, one line each naming
 * the field; empty when they pin the same tree. The NAR hashes are compared as bytes: the lock
 * has SRI base64, fetchTarball's sha256 is nix base32.
 */
export function comparePins(lock: FlakeLock, sources: Sources): string[] {
  const problems: string[] = [];
  if (lock.version !== 7) problems.push(`flake.lock: version ${lock.version}, expected 7`);
  const inputName = lock.nodes[lock.root]?.inputs?.nixpkgs;
  const node = typeof inputName === "string" ? lock.nodes[inputName] : undefined;
  if (!node?.locked || !node.original) return [...problems, "flake.lock: the root has no locked input 'nixpkgs'"];
  const locked = node.locked;
  const src = sources.nixpkgs;
  if (!src) return [...problems, "nix/sources.json: no 'nixpkgs' entry"];

  for (const [key, want] of [["type", "github"], ["owner", "NixOS"], ["repo", "nixpkgs"]] as const) {
    if (locked[key] !== want) problems.push(`flake.lock: locked.${key} is ${JSON.stringify(locked[key])}, expected ${want}`);
  }
  if (locked.rev !== src.rev) problems.push(`rev: flake.lock ${locked.rev} != nix/sources.json ${src.rev}`);
  if (locked.lastModified !== src.lastModified) {
    problems.push(`lastModified: flake.lock ${locked.lastModified} != nix/sources.json ${src.lastModified}`);
  }
  if (node.original.ref !== src.branch) problems.push(`branch: flake.lock original.ref ${node.original.ref} != nix/sources.json ${src.branch}`);
  const url = `https://github.com/NixOS/nixpkgs/archive/${src.rev}.tar.gz`;
  if (src.url !== url) problems.push(`url: nix/sources.json has ${src.url}, its rev means ${url}`);
  try {
    const narHash = fromSri(String(locked.narHash));
    const sha256 = fromNixBase32(src.sha256, 32);
    if (!narHash.equals(sha256)) {
      problems.push(
        `hash: flake.lock narHash ${locked.narHash} (= ${toNixBase32(narHash)}) != nix/sources.json sha256 ${src.sha256}`,
      );
    }
  } catch (e) {
    problems.push(`hash: ${(e as Error).message}`);
  }
  return problems;
}

// ---- files -------------------------------------------------------------------------------------

/** Every .nix file of the checkout that git would track (tracked, or new and not ignored). */
export async function repoNixFiles(repo = REPO): Promise<string[]> {
  const r = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.nix"], {
    cwd: repo,
    allowFailure: true,
    streamStderr: false,
  });
  if (r.code !== 0) throw new Error(`git ls-files failed in ${repo}: ${r.stderr.trim()}`);
  return r.stdout
    .split("\0")
    .filter((f) => f !== "" && fs.existsSync(path.join(repo, f)))
    .sort();
}

/** `nix-instantiate --parse` on each file (4 at a time); the failures, each naming its file. */
export async function parseNixFiles(files: string[], cwd = REPO): Promise<{ file: string; error: string }[]> {
  const failures: { file: string; error: string }[] = [];
  const queue = [...files];
  const worker = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const r = await nix("nix-instantiate", ["--parse", file], { cwd });
      if (r.code !== 0) failures.push({ file, error: r.stderr.trim() });
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  return failures.sort((a, b) => a.file.localeCompare(b.file));
}
