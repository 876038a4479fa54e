// Small, generic helpers around the Nix CLI shared by the steps: evaluate a target to its .drv,
// realise it, query a store path. Evaluation errors become InputErrors naming the file/attribute;
// build failures stay CommandFailed (exit 1: the build ran and failed).
import * as fs from "node:fs";
import * as path from "node:path";
import { CheckFailed, InputError } from "./step";
import { CommandFailed, run } from "./proc";
import { nix32Decode, nix32Encode } from "./storepath";

/** What to build: a non-flake Nix file plus attribute path, or a flake reference plus attribute. */
export interface NixTarget {
  file?: string;
  flake?: string;
  attribute: string;
}

export interface NixOptions {
  /** Run builders in the Nix sandbox (`--option sandbox true`); default true. */
  sandbox?: boolean;
  /** Turn substituters off, so nothing is downloaded (`--option substituters ""`). */
  offline?: boolean;
  /** Extra `--option name value` pairs. */
  options?: Record<string, string>;
  /** Label for streamed nix stderr lines. */
  label?: string;
}

/** Nix 2.8 ships flakes and `nix <command>` behind experimental features. */
export const EXPERIMENTAL = ["--extra-experimental-features", "nix-command flakes"];

export function nixOptionArgs(o: NixOptions = {}): string[] {
  const args: string[] = [];
  const opts: Record<string, string> = { ...(o.options ?? {}) };
  if (o.sandbox !== false) opts.sandbox = "true";
  if (o.offline) opts.substituters = "";
  for (const [k, v] of Object.entries(opts)) args.push("--option", k, v);
  return args;
}

export function describeTarget(t: NixTarget): string {
  return t.flake ? `${t.flake}#${t.attribute}` : `attribute '${t.attribute}' of ${t.file}`;
}

/** Checks the target's file exists (a clear exit-2 reason before Nix's own message). */
export function checkTarget(t: NixTarget): NixTarget {
  if (!t.attribute) throw new InputError("missing attribute (--attribute)");
  if (!!t.file === !!t.flake) throw new InputError("give exactly one of --file or --flake");
  if (t.file) {
    const file = path.resolve(t.file);
    if (!fs.existsSync(file)) throw new InputError(`Nix file not found: ${t.file}`);
    const entry = fs.statSync(file).isDirectory() ? path.join(file, "default.nix") : file;
    if (!fs.existsSync(entry)) throw new InputError(`Nix file not found: ${entry}`);
    return { ...t, file };
  }
  return t;
}

/** Turns a Nix evaluation error into a one-line InputError naming the file and attribute. */
export function evalError(t: NixTarget, stderr: string): InputError {
  const errLine = stderr.split("\n").find((l) => l.startsWith("error:"))?.replace(/^error:\s*/, "") ?? "";
  const missing = /attribute '([^']+)' in selection path '([^']+)' not found/.exec(errLine);
  if (missing) return new InputError(`unknown attribute '${missing[2]}' in ${t.file ?? t.flake} ('${missing[1]}' not found)`);
  const flakeMissing = /flake '([^']+)' does not provide attribute '([^']+)'/.exec(errLine);
  if (flakeMissing) return new InputError(`unknown attribute '${t.attribute}' in flake ${flakeMissing[1]} (tried '${flakeMissing[2]}')`);
  if (/does not evaluate to a derivation/.test(errLine) || /expected a derivation/.test(errLine))
    return new InputError(`${describeTarget(t)} is not a derivation`);
  const at = /\bat (\/[^\s:]+):(\d+):(\d+)/.exec(stderr);
  const where = at ? ` (at ${at[1]}:${at[2]}:${at[3]})` : "";
  return new InputError(`cannot evaluate ${describeTarget(t)}: ${errLine || stderr.trim().split("\n").pop()}${where}`);
}

/** Evaluates the target to its store derivation path, without building anything. */
export async function instantiate(t: NixTarget, o: NixOptions = {}): Promise<string> {
  t = checkTarget(t);
  const args = t.flake
    ? [...EXPERIMENTAL, "eval", "--raw", `${t.flake}#${t.attribute}.drvPath`, ...nixOptionArgs({ ...o, sandbox: false })]
    : [t.file!, "-A", t.attribute, ...nixOptionArgs({ ...o, sandbox: false })];
  const res = await run(t.flake ? "nix" : "nix-instantiate", args, { allowFailure: true, streamStderr: false });
  if (res.code !== 0) throw evalError(t, res.stderr);
  const drvs = res.stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  if (drvs.length !== 1 || !drvs[0].endsWith(".drv"))
    throw new InputError(`${describeTarget(t)} must be exactly one derivation (got ${drvs.length ? drvs.join(", ") : "none"})`);
  return drvs[0];
}

/** Builds (or fetches) a derivation; returns its output paths in the order nix-store prints them. */
export async function realise(drvPath: string, o: NixOptions = {}, extraArgs: string[] = []): Promise<string[]> {
  const res = await run("nix-store", ["--realise", drvPath, ...nixOptionArgs(o), ...extraArgs], { label: o.label ?? "nix" });
  const printed = res.stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  // With --add-root nix-store prints the roots (symlinks), not the store paths.
  return extraArgs.includes("--add-root") ? printed.map((p) => fs.readlinkSync(p)) : printed;
}

/**
 * One-line reason for a failed `nix-store --realise`: a source the sandboxed fetcher cannot reach is
 * missing input (exit 2); a builder that failed is a failed build (exit 1) naming the derivation.
 */
export function explainBuildFailure(e: unknown, drvPath: string): unknown {
  if (!(e instanceof CommandFailed)) return e;
  const url = /unable to download '([^']+)'(?:: ([^\n]*))?/.exec(e.stderr);
  if (url) {
    if (url[1].startsWith("file://") && !fs.existsSync(decodeURIComponent(new URL(url[1]).pathname)))
      return new InputError(`source ${url[1]} cannot be fetched: the file does not exist on this machine${url[2] ? ` (nix: ${url[2].trim()})` : ""}`);
    const hint = url[1].startsWith("file://")
      ? "the sandboxed fetcher cannot read file:// URLs: realise the source first (demo world: rerun `supply-chain demo-world` on its directory)"
      : "no network? realise the source first or import it from a closure";
    return new InputError(`source ${url[1]} is not in the Nix store and cannot be fetched: ${hint}`);
  }
  const builder = /error: builder for '([^']+)' failed[^\n]*/.exec(e.stderr);
  if (builder) return new CheckFailed(`build of ${drvPath} failed: ${builder[0].replace(/^error:\s*/, "")} (log above)`);
  const first = /error: ([^\n]+)/.exec(e.stderr);
  return new CheckFailed(`build of ${drvPath} failed: ${first ? first[1] : `nix-store exit ${e.exitCode}`}`);
}

export interface PathInfo {
  path: string;
  /** `sha256:<base32>` as printed by `nix-store -q --hash`. */
  narHash: string;
  narSize: number;
}

/** NAR hash and size of a valid store path, from the store's database. */
export async function pathInfo(storePath: string): Promise<PathInfo> {
  const [hash, size] = await Promise.all([
    run("nix-store", ["--query", "--hash", storePath], { streamStderr: false }),
    run("nix-store", ["--query", "--size", storePath], { streamStderr: false }),
  ]);
  return { path: storePath, narHash: hash.stdout.trim(), narSize: Number(size.stdout.trim()) };
}

/** Nix base32 → hex, for any hash length (store path arithmetic has the one codec: storepath.ts). */
export function nix32ToHex(s: string): string {
  return nix32Decode(s, Math.floor((s.length * 5) / 8)).toString("hex");
}

export function hexToNix32(hex: string): string {
  return nix32Encode(Buffer.from(hex, "hex"));
}

/** `sha256:<base32>` → hex digest. */
export function narHashHex(narHash: string): string {
  const [algo, value] = narHash.split(":");
  if (algo !== "sha256" || !value) throw new Error(`unexpected hash format '${narHash}'`);
  return value.length === 64 ? value : nix32ToHex(value);
}
