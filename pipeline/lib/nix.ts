// The Nix adapter: every step runs Nix for a target through here. One target type and its command-line
// options, one validator, one evaluation-error formatter; evaluation (to a .drv, or to the whole
// derivation graph), realisation, path info, Nix's version. Evaluation errors become InputErrors naming
// the target; build failures stay CommandFailed (exit 1: the build ran and failed).
// The graph model and its JSON parsing are derivation.ts; parsing .drv files is drv-file.ts.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { DerivationGraph, DumpStreamParser, findRoot, parseDerivationDump } from "./derivation";
import { drvFilesUnreadable, readDerivationGraph } from "./drv-file";
import { CheckFailed, InputError, log, OptionSpec } from "./step";
import { CommandFailed, missingTool, run } from "./proc";
import { nix32Decode, nix32Encode } from "./storepath";

/**
 * What to evaluate: a Nix file (or a directory with default.nix) and an attribute path, or a flake
 * reference with its attribute, `REF#ATTR` (what the manifest records and REBUILD_SCRIPT evaluates).
 */
export type NixTarget = { file: string; attribute: string; flake?: never } | { flake: string; file?: never; attribute?: never };

/** The target options of every step that takes a target; `targetFrom` reads them. */
export const TARGET_OPTIONS: Record<"file" | "attribute" | "flake", OptionSpec> = {
  file: { type: "string", description: "the reviewed Nix file (or a directory with default.nix), with --attribute" },
  attribute: { type: "string", description: "attribute path of --file (or of a --flake REF without #ATTR), e.g. image" },
  flake: {
    type: "string",
    description: "flake reference with its attribute, REF#ATTR (e.g. path:/checkout#image), instead of --file (Nix 2.8: flakes enabled per call)",
  },
};

/** The values of TARGET_OPTIONS (a NixTarget is one too). */
export type TargetOptions = { file?: string; attribute?: string; flake?: string };

/** The target the options name: `--file F --attribute A`, `--flake REF#ATTR`, or `--flake REF --attribute A`. */
export function targetFrom(values: TargetOptions): NixTarget {
  const { file, attribute, flake } = values;
  if (flake !== undefined && !flake.includes("#") && attribute && file === undefined) return validateTarget({ flake: `${flake}#${attribute}` });
  return validateTarget({ file, attribute, flake } as NixTarget);
}

/**
 * Checks a target (also one a library caller built): exactly one of a flake with its attribute or a file
 * with an attribute, and the file exists. Returns it with only those fields, so `t.flake === undefined`
 * tells the two apart.
 */
export function validateTarget(t: NixTarget): NixTarget {
  const { file, attribute, flake } = t as { file?: string; attribute?: string; flake?: string };
  if (flake !== undefined) {
    if (file !== undefined) throw new InputError("give either --flake or --file with --attribute, not both");
    if (!flake.includes("#")) throw new InputError(`missing --attribute for --flake ${flake} (or --flake ${flake}#ATTR)`);
    if (attribute !== undefined) throw new InputError(`--flake ${flake} already names an attribute: drop --attribute ${attribute}`);
    return { flake };
  }
  if (!file) throw new InputError("missing --file (or --flake)");
  if (!attribute) throw new InputError(`missing --attribute for ${file}`);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new InputError(`Nix file not found: ${file}`);
  }
  if (st.isDirectory() && !fs.existsSync(path.join(file, "default.nix"))) throw new InputError(`${file} is a directory without default.nix`);
  return { file, attribute };
}

export function describeTarget(t: NixTarget): string {
  return t.flake !== undefined ? `flake ${t.flake}` : `attribute '${t.attribute}' of ${t.file}`;
}

/** Nix's first error message in its stderr (the line after a bare `error:` header on newer Nix), else its last line. */
export function nixError(stderr: string, code: number | null): string {
  const lines = stderr.split("\n").filter((l) => l.trim());
  const first = lines.find((l) => /error:\s*\S/.test(l));
  return first ? first.replace(/^.*?error:\s*/, "").trim() : (lines[lines.length - 1]?.trim() ?? `exit ${code}`);
}

/** A failed evaluation of the target as a one-line InputError naming it (an unknown attribute, not a derivation, Nix's error and where). */
export function evaluationError(t: NixTarget, stderr: string, code: number | null = null): InputError {
  const missing = /attribute '([^']+)' in selection path '([^']+)' not found/.exec(stderr);
  if (missing) return new InputError(`unknown attribute '${missing[2]}' in ${t.file ?? t.flake} ('${missing[1]}' not found)`);
  const flakeMissing = /flake '([^']+)' does not provide attribute '([^']+)'/.exec(stderr);
  if (flakeMissing && t.flake) return new InputError(`unknown attribute '${t.flake.slice(t.flake.indexOf("#") + 1)}' in flake ${flakeMissing[1]} (tried '${flakeMissing[2]}')`);
  if (/does not evaluate to a derivation|expected a derivation|is not a derivation/.test(stderr)) return new InputError(`${describeTarget(t)} is not a derivation`);
  const at = /\bat (\/[^\s:]+):(\d+):(\d+)/.exec(stderr);
  return new InputError(`cannot evaluate ${describeTarget(t)}: ${nixError(stderr, code)}${at ? ` (at ${at[1]}:${at[2]}:${at[3]})` : ""}`);
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
  const opts: Record<string, string> = { ...o.options };
  if (o.sandbox !== false) opts.sandbox = "true";
  if (o.offline) opts.substituters = "";
  for (const [k, v] of Object.entries(opts)) args.push("--option", k, v);
  return args;
}

/** `nix <command>` arguments naming the target as an installable, with the features it needs. */
function installable(t: NixTarget): { features: string[]; target: string[] } {
  return t.flake !== undefined
    ? { features: EXPERIMENTAL, target: [t.flake] }
    : { features: ["--extra-experimental-features", "nix-command"], target: ["--file", path.resolve(t.file), t.attribute] };
}

/** Non-empty lines of a command's output, trimmed (store paths, one per line). */
function lines(stdout: string): string[] {
  return stdout.split("\n").map((l) => l.trim()).filter(Boolean);
}

function exactlyOneDrv(t: NixTarget, drvs: string[]): string {
  if (drvs.length !== 1 || !drvs[0].endsWith(".drv")) throw new InputError(`${describeTarget(t)} must be exactly one derivation (got ${drvs.length ? drvs.join(", ") : "none"})`);
  return drvs[0];
}

/** Evaluates the target to its store derivation path, without building anything. */
export async function instantiate(t: NixTarget, o: NixOptions = {}): Promise<string> {
  t = validateTarget(t);
  const opts = nixOptionArgs({ ...o, sandbox: false });
  if (t.file !== undefined) return exactlyOneDrv(t, await instantiateMany(t, o));
  const res = await run("nix", [...EXPERIMENTAL, "eval", "--raw", `${t.flake}.drvPath`, ...opts], { allowFailure: true, streamStderr: false });
  if (res.code !== 0) throw evaluationError(t, res.stderr, res.code);
  return exactlyOneDrv(t, lines(res.stdout));
}

/** The store derivation of every derivation a file's attribute holds (one, or a list or set of them). */
export async function instantiateMany(t: { file: string; attribute: string }, o: NixOptions = {}): Promise<string[]> {
  const res = await run("nix-instantiate", [path.resolve(t.file), "-A", t.attribute, ...nixOptionArgs({ ...o, sandbox: false })], { allowFailure: true, streamStderr: false });
  if (res.code !== 0) throw evaluationError(t, res.stderr, res.code);
  return lines(res.stdout);
}

/** Builds (or fetches) a derivation; returns its output paths in the order nix-store prints them. */
/** `env`: variables added to the child's environment only (this process's stays as it is). */
export async function realise(drvPath: string | string[], o: NixOptions = {}, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<string[]> {
  const res = await run("nix-store", ["--realise", ...[drvPath].flat(), ...nixOptionArgs(o), ...extraArgs], {
    label: o.label ?? "nix",
    ...(Object.keys(env).length ? { env: { ...process.env, ...env } } : {}),
  });
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

/** Paths per nix-store call: one process for thousands of paths, and well under the kernel's argument limits. */
const PATHS_PER_CALL = 1000;

async function inChunks<T>(paths: string[], f: (chunk: string[]) => Promise<T[]>): Promise<T[]> {
  const out: T[] = [];
  for (let i = 0; i < paths.length; i += PATHS_PER_CALL) out.push(...(await f(paths.slice(i, i + PATHS_PER_CALL))));
  return out;
}

/** The paths that are not valid in the store (one `nix-store --check-validity --print-invalid` per thousand, not one per path). */
export async function invalidPaths(paths: string[]): Promise<string[]> {
  return inChunks(paths, async (chunk) => lines((await run("nix-store", ["--check-validity", "--print-invalid", ...chunk], { streamStderr: false })).stdout));
}

/** `sha256:<base32>` NAR hashes of valid paths, in order (`nix-store --query --hash`, a thousand per call). */
export async function narHashes(paths: string[]): Promise<string[]> {
  return inChunks(paths, async (chunk) => {
    const hashes = lines((await run("nix-store", ["--query", "--hash", ...chunk], { streamStderr: false })).stdout);
    if (hashes.length !== chunk.length) throw new Error(`nix-store --query --hash printed ${hashes.length} hashes for ${chunk.length} paths`);
    return hashes;
  });
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

let nixVersionCache: Promise<number[]> | undefined;

/** Nix's version as numbers, e.g. [2, 8, 0]; asked once per process (callers ask alongside other work). */
export function nixVersion(): Promise<number[]> {
  nixVersionCache ??= (async () => {
    const r = await run("nix", ["--version"], { streamStderr: false });
    const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(r.stdout);
    if (!m) throw new InputError(`cannot read the Nix version from 'nix --version': ${r.stdout.trim()}`);
    return [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  })().catch((e) => {
    nixVersionCache = undefined; // a failure (nix missing) is not remembered
    throw e;
  });
  return nixVersionCache;
}

/** The version asked alongside other work: an early failure is not an unhandled rejection. */
function versionAlongside(): Promise<number[]> {
  const v = nixVersion();
  v.catch(() => undefined);
  return v;
}

// ---- the derivation graph of a target ----

/** Runs `nix <args>`, parsing its stdout as a derivation dump while it is being printed. */
function streamDump(args: string[]): Promise<{ code: number | null; stderr: string; parser: DumpStreamParser; error?: Error }> {
  return new Promise((resolve, reject) => {
    const parser = new DumpStreamParser();
    const child = spawn("nix", args, { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    let error: Error | undefined;
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      if (error) return;
      try {
        parser.push(d);
      } catch (e: any) {
        error = e;
      }
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => (stderr += d));
    child.on("error", (e: NodeJS.ErrnoException) => reject(e.code === "ENOENT" ? missingTool("nix") : e));
    child.on("close", (code) => resolve({ code, stderr, parser, error }));
  });
}

/**
 * ONE recursive derivation dump of the target: evaluation (which instantiates the .drv files and adds
 * local sources to the store) and the dump happen in a single Nix process.
 */
export async function dumpDerivations(t: NixTarget): Promise<{ graph: DerivationGraph; nixVersion: string }> {
  t = validateTarget(t);
  const { features, target } = installable(t);
  return dumpInstallable(target, features, describeTarget(t), (stderr, code) => evaluationError(t, stderr, code));
}

/** The recursive dump of an already instantiated .drv (for runners that only know its path). */
export async function dumpDerivationsOfDrv(drvPath: string): Promise<{ graph: DerivationGraph; nixVersion: string }> {
  return dumpInstallable([drvPath], ["--extra-experimental-features", "nix-command"], drvPath, (stderr, code) => new Error(`cannot dump the derivation graph of ${drvPath}: ${nixError(stderr, code)}`));
}

async function dumpInstallable(
  installable: string[],
  features: string[],
  what: string,
  failure: (stderr: string, code: number | null) => Error,
): Promise<{ graph: DerivationGraph; nixVersion: string }> {
  const dump = (cmd: string[]) => streamDump([...features, ...cmd, "--recursive", ...installable]);
  // `show-derivation` exists from 2.8 on (later as an alias of `derivation show`): try it first. The dump
  // is the critical path, so it is spawned first; the version (for the manifest) is asked alongside.
  const first = dump(["show-derivation"]);
  const version = versionAlongside();
  let r = await first;
  if (r.code !== 0 && /show-derivation/.test(r.stderr) && /not a recogni[sz]ed command|unrecognised|unknown command/i.test(r.stderr)) {
    r = await dump(["derivation", "show"]);
  }
  const v = await version;
  if (r.code === 0 && r.error) throw new Error(`cannot parse the derivation dump of ${what} (Nix ${v.join(".")}): ${r.error.message}`);
  if (r.code !== 0) throw failure(r.stderr, r.code);
  let graph: DerivationGraph;
  try {
    graph = parseDerivationDump(r.parser.result());
  } catch (e: any) {
    throw new Error(`cannot parse the derivation dump of ${what} (Nix ${v.join(".")}): ${e.message}`);
  }
  if (graph.drvs.size === 0) throw new InputError(`${what} evaluates to no derivation`);
  return { graph, nixVersion: v.join(".") };
}

export interface LoadedGraph {
  graph: DerivationGraph;
  /** The target's .drv. */
  root: string;
  nixVersion: string;
}

async function fromDump(t: NixTarget): Promise<LoadedGraph> {
  const { graph, nixVersion } = await dumpDerivations(t);
  return { graph, root: findRoot(graph), nixVersion };
}

/**
 * The graph of an already instantiated target, evaluated without writing to the store (`--readonly-mode`
 * only computes the paths, noticeably faster than writing or re-checking thousands of .drv files), or
 * null when that is not enough: the target was never instantiated, or evaluating it needs to build
 * (import from derivation), or it fails (the writing evaluation then reports why). While the files are
 * read, `nix-store --check-validity` confirms the target's .drv is a registered store path; a valid
 * path's references are valid too, so every file read is one Nix wrote completely.
 */
async function readOnlyGraph(file: string, attribute: string, label: string): Promise<{ graph: DerivationGraph; root: string } | null> {
  // Only a shortcut: without nix-instantiate the main route runs (and names what is missing).
  const r = await run("nix-instantiate", ["--readonly-mode", file, "-A", attribute], { allowFailure: true, streamStderr: false }).catch(() => null);
  const roots = r ? r.stdout.split("\n").filter(Boolean) : [];
  if (!r || r.code !== 0 || roots.length !== 1 || !roots[0].endsWith(".drv")) return null;
  const validity = run("nix-store", ["--check-validity", roots[0]], { allowFailure: true, streamStderr: false }).catch(() => null);
  let graph: DerivationGraph;
  try {
    graph = readDerivationGraph(roots[0]);
  } catch (e) {
    if (!drvFilesUnreadable(e)) throw e;
    return null;
  }
  if ((await validity)?.code !== 0) return null;
  log(label, `evaluated to ${roots[0]} (already in the store); read its derivation graph from the store`);
  return { graph, root: roots[0] };
}

/**
 * The target's whole derivation graph. A file target already instantiated is evaluated read-only
 * (readOnlyGraph). Otherwise `nix path-info --derivation` evaluates it (writing its .drv files and
 * evaluation-time paths to the store, as the dump would), then the files are read (drv-file.ts).
 * Falls back to the JSON dump when the files cannot be read or parsed, saying why on stderr.
 */
export async function loadDerivationGraph(t: NixTarget, label: string): Promise<LoadedGraph> {
  t = validateTarget(t);
  if (t.flake === undefined) {
    const version = versionAlongside();
    const known = await readOnlyGraph(path.resolve(t.file), t.attribute, label);
    if (known) return { ...known, nixVersion: (await version).join(".") };
  }
  const { features, target } = installable(t);
  // Evaluation is the critical path: spawned first, the version (for the manifest) asked alongside.
  const evaluation = run("nix", [...features, "path-info", "--derivation", ...target], { allowFailure: true, streamStderr: false });
  const version = versionAlongside();
  const r = await evaluation;
  if (r.code !== 0) {
    if (/unrecogni[sz]ed (flag|option)[^\n]*--derivation/i.test(r.stderr)) {
      log(label, "this Nix has no 'path-info --derivation': reading the graph from its JSON dump instead");
      return fromDump(t);
    }
    throw evaluationError(t, r.stderr, r.code);
  }
  const root = exactlyOneDrv(t, lines(r.stdout));
  log(label, `evaluated to ${root}; reading its derivation graph from the store`);
  let graph: DerivationGraph;
  try {
    graph = readDerivationGraph(root);
  } catch (e: any) {
    if (!drvFilesUnreadable(e)) throw e;
    log(label, `cannot read the .drv files directly (${e.message}): reading the graph from Nix's JSON dump instead`);
    return fromDump(t);
  }
  return { graph, root, nixVersion: (await version).join(".") };
}

/** The graph of an already instantiated .drv (for runners that only know its path), from its files when they can be read. */
export async function graphOfDrv(drvPath: string): Promise<DerivationGraph> {
  try {
    return readDerivationGraph(drvPath);
  } catch (e) {
    if (!drvFilesUnreadable(e)) throw e;
  }
  return (await dumpDerivationsOfDrv(drvPath)).graph;
}
