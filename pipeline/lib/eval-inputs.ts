// Evaluation-time inputs: what the evaluation itself fetches (a pinned nixpkgs tarball imported for its
// Nix code, a library) and no derivation references, so the derivation graph alone never puts it into a
// closure and an offline evaluation then fails. Two sources, both needed:
// - the pins files of the reviewed checkout (niv's and npins' `sources.json`, `--pins FILE`): the hash
//   that pins each input, and where it is pinned — what an auditor checks the closure against;
// - a trace of the evaluation (`-vv` logs every file it evaluates): store paths whose Nix code was
//   read, pinned in a file or not (a `builtins.fetchTarball { sha256 = …; }` written inline).
// Every such path is a fixed-output path, so its name commits to its content (`selfCertifies`).
import * as fs from "node:fs";
import * as path from "node:path";
import type { ExportedPath } from "./nar";
import { describeTarget, EXPERIMENTAL, narHashes, nixError, NixTarget } from "./nix";
import { run } from "./proc";
import { InputError } from "./step";
import { fixedOutputPath, parseHash, sourcePath, splitStorePath, textPath, HashAlgo } from "./storepath";

export interface Pin {
  /** The input's name in its pins file. */
  name: string;
  /** The pins file (absolute), and the layout it was read as. */
  file: string;
  layout: "niv" | "npins" | "flake.lock";
  url?: string;
  /** recursive: the unpacked tree's NAR (fetchTarball); flat: the file's bytes (fetchurl). */
  mode: "recursive" | "flat";
  /** sha256, hex. */
  sha256: string;
}

/** Where niv and npins keep their pins, relative to a directory of the checkout. */
export const PINS_LAYOUTS = ["nix/sources.json", "npins/sources.json", "sources.json"];

/**
 * The pins files of a target: `nix/sources.json` or `npins/sources.json` in the target file's
 * directory or an ancestor up to the checkout's top (the first directory holding `.git`, or 3 levels).
 */
export function findPinsFiles(targetFile: string): string[] {
  const start = fs.statSync(targetFile).isDirectory() ? path.resolve(targetFile) : path.dirname(path.resolve(targetFile));
  const found: string[] = [];
  let dir = start;
  for (let level = 0; level < 4; level++) {
    for (const rel of PINS_LAYOUTS) {
      const f = path.join(dir, rel);
      // A bare sources.json counts only next to a sources.nix that reads it (niv's own nix/ directory).
      if (rel === "sources.json" && !fs.existsSync(path.join(dir, "sources.nix"))) continue;
      if (fs.existsSync(f) && !found.includes(f)) found.push(f);
    }
    if (fs.existsSync(path.join(dir, ".git")) || path.dirname(dir) === dir) break;
    dir = path.dirname(dir);
  }
  return found;
}

function hexOf(value: unknown, what: string): string {
  try {
    return parseHash(value, "sha256").hex;
  } catch (e: any) {
    throw new InputError(`${what}: ${e.message}`);
  }
}

/** The pins of one file, niv (`{name: {url, sha256, type}}`) or npins (`{version, pins: {name: {url, hash}}}`). */
export function readPins(file: string): Pin[] {
  let json: any;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e: any) {
    throw new InputError(`cannot read the pins file ${file}: ${e.code ?? e.message}`);
  }
  if (!json || typeof json !== "object" || Array.isArray(json)) throw new InputError(`${file} is not a pins file (not a JSON object)`);
  const abs = path.resolve(file);
  if (json.pins && typeof json.pins === "object" && "version" in json) {
    return Object.entries<any>(json.pins).map(([name, p]) => {
      if (!p?.hash) throw new InputError(`${file}: pin '${name}' has no hash`);
      // npins pins a Git/GitHub input as an unpacked tree too; its tarball URL (when any) is `url`.
      return { name, file: abs, layout: "npins", url: p.url, mode: "recursive", sha256: hexOf(p.hash, `${file}: pin '${name}'`) };
    });
  }
  return Object.entries<any>(json).map(([name, p]) => {
    if (!p || typeof p !== "object" || !p.sha256) throw new InputError(`${file}: pin '${name}' has no sha256 (niv layout: {"<name>": {"url", "sha256", "type"}})`);
    const mode = p.type === "file" ? "flat" : "recursive";
    return { name, file: abs, layout: "niv", url: p.url, mode, sha256: hexOf(p.sha256, `${file}: pin '${name}'`) };
  });
}

/** `pinnedIn` as a manifest and a message say it: the pins file (relative to `base` when inside it) and the name. */
export function pinLocation(p: Pin, base?: string): string {
  const rel = base ? path.relative(base, p.file) : "";
  return `${rel && !rel.startsWith("..") ? rel : p.file}#${p.name}`;
}

/** niv's sanitizeName: the store path name niv's sources.nix gives a pin (`<name>-src`). */
function nivName(name: string): string {
  return name.replace(/[^A-Za-z0-9+\-._?=]/g, "-").replace(/^\.+/, "");
}

/** The store paths a fetcher may have given this pin: the name is the fetcher's choice, the hash is the pin's. */
export function pinCandidatePaths(p: Pin, storeDir: string): string[] {
  const names = new Set(["source", `${nivName(p.name)}-src`, nivName(p.name)]);
  if (p.url) names.add(decodeURIComponent(p.url.replace(/[?#].*$/, "").split("/").pop() ?? "").replace(/[^A-Za-z0-9+\-._?=]/g, "-"));
  return [...names].filter(Boolean).map((n) => fixedOutputPath(p.mode, "sha256", p.sha256, n, storeDir));
}

/** Does this exported path hold what the pin pins (and does its name commit to that content)? */
export function matchesPin(e: ExportedPath, p: Pin, storeDir: string): boolean {
  const actual = p.mode === "recursive" ? e.narHashes.sha256 : e.flatHashes?.sha256;
  return actual === p.sha256 && selfCertifies(e, storeDir);
}

const FIXED_ALGOS: HashAlgo[] = ["sha256", "sha512", "sha1"];
/** The hash algorithms `selfCertifies` needs of every exported path. */
export const SELF_CERTIFY_ALGOS: string[] = FIXED_ALGOS;

/**
 * True when the path's name commits to its content: it is the store path Nix computes from the bytes as
 * a source (local file or fetchTarball), a text file (builtins.toFile, .drv) or a fixed output in some
 * mode and algorithm. Importing such a path cannot put other content under it, so a closure may be
 * imported before evaluation says which paths are wanted. Build outputs never self-certify.
 */
export function selfCertifies(e: ExportedPath, storeDir: string): boolean {
  const { name } = splitStorePath(e.path);
  const sha = e.narHashes.sha256;
  if (sha && sourcePath(sha, name, e.references, e.path, storeDir) === e.path) return true;
  if (e.flatHashes?.sha256 && textPath(e.flatHashes.sha256, name, e.references, storeDir) === e.path) return true;
  if (e.references.length) return false;
  for (const algo of FIXED_ALGOS) {
    if (e.narHashes[algo] && fixedOutputPath("recursive", algo, e.narHashes[algo], name, storeDir) === e.path) return true;
    if (e.flatHashes?.[algo] && fixedOutputPath("flat", algo, e.flatHashes[algo], name, storeDir) === e.path) return true;
  }
  return false;
}

/** The store paths an evaluation's `-vv` log says it read Nix code from (or copied in), in order. */
export function tracedStorePaths(log: string, storeDir: string): string[] {
  const seen = new Set<string>();
  const esc = storeDir.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const re = new RegExp(`^(?:evaluating file '|copied source '[^']*' -> ')(${esc}/[0-9a-z]{32}-[^/']+)`, "gm");
  for (const m of log.matchAll(re)) seen.add(m[1]);
  return [...seen];
}

/** Evaluates the target once more with `-vv` (a flake: its drvPath) and returns the store paths the evaluation read. */
export async function traceEvaluation(t: NixTarget, storeDir: string, nixArgs: string[] = []): Promise<string[]> {
  const r = t.flake !== undefined
    ? await run("nix", [...EXPERIMENTAL, "eval", "--raw", `${t.flake}.drvPath`, "-vv", ...nixArgs], { allowFailure: true, streamStderr: false })
    : await run("nix-instantiate", [path.resolve(t.file), "-A", t.attribute, "-vv", ...nixArgs], { allowFailure: true, streamStderr: false });
  if (r.code !== 0) throw new InputError(`cannot trace the evaluation of ${describeTarget(t)}: ${nixError(r.stderr, r.code)}`);
  return tracedStorePaths(r.stderr, storeDir);
}

export interface PinnedInput {
  path: string;
  /** sha256 of its NAR, hex. */
  narSha256: string;
  /** Each pins-file entry pinning it: `<pins file relative to the checkout>#<name>`, its URL and hash. */
  pinnedIn: { pin: string; url?: string; mode: Pin["mode"]; sha256: string }[];
  /** How it was found: named by a pins file or flake.lock, read by the evaluation, or both. */
  detectedBy: ("pins" | "evaluation")[];
}

/** A pin as a manifest's `pinnedIn` records it. */
function pinnedInEntry(pin: Pin, checkout: string): PinnedInput["pinnedIn"][number] {
  return { pin: pinLocation(pin, checkout), url: pin.url, mode: pin.mode, sha256: pin.sha256 };
}

async function narSha256s(paths: string[]): Promise<string[]> {
  return (await narHashes(paths)).map((h) => parseHash(h, "sha256").hex);
}

/** Realises a pin the evaluation did not use (and the store lacks) with Nix's own fetcher and hash check. */
async function fetchPin(p: Pin, nixArgs: string[]): Promise<string> {
  if (!p.url) throw new InputError(`${pinLocation(p)} is not in the store and has no url to fetch it from`);
  const fetcher = p.mode === "recursive" ? "builtins.fetchTarball" : "builtins.fetchurl";
  const expr = `${fetcher} { ${p.mode === "recursive" ? 'name = "source"; ' : ""}url = builtins.fromJSON ${JSON.stringify(JSON.stringify(p.url))}; sha256 = "${p.sha256}"; }`;
  const r = await run("nix-instantiate", ["--eval", "--json", "-E", expr, ...nixArgs], { allowFailure: true, streamStderr: false });
  if (r.code !== 0) throw new InputError(`cannot fetch ${pinLocation(p)} (${p.url}): ${nixError(r.stderr, r.code)}`);
  return JSON.parse(r.stdout);
}

/**
 * The publisher's side: every evaluation-time input of a file target that the derivation graph does not
 * already list (`known`), with its NAR hash and the pins naming it. A pin nothing used is exported too
 * (fetched if absent): the auditor requires every pin of the reviewed checkout to be in the closure.
 */
export async function resolvePinnedInputs(o: { file: string; attribute: string; pinsFiles: string[]; storeDir: string; known: Set<string>; checkout: string; nixArgs?: string[] }): Promise<PinnedInput[]> {
  const nixArgs = o.nixArgs ?? [];
  const traced = (await traceEvaluation({ file: o.file, attribute: o.attribute }, o.storeDir, nixArgs)).filter((p) => !o.known.has(p));
  const byPath = new Map<string, PinnedInput>();
  const hashes = await narSha256s(traced);
  traced.forEach((p, i) => byPath.set(p, { path: p, narSha256: hashes[i], pinnedIn: [], detectedBy: ["evaluation"] }));
  for (const pin of o.pinsFiles.flatMap(readPins)) {
    const entry = pinnedInEntry(pin, o.checkout);
    let found = pin.mode === "recursive" ? [...byPath.values()].find((x) => x.narSha256 === pin.sha256) : undefined;
    if (!found) {
      const candidate = pinCandidatePaths(pin, o.storeDir).find((p) => fs.existsSync(p));
      const p = candidate ?? (await fetchPin(pin, nixArgs));
      if (o.known.has(p)) continue; // a pin some derivation also references: exported and checked as a source
      found = byPath.get(p) ?? { path: p, narSha256: (await narSha256s([p]))[0], pinnedIn: [], detectedBy: [] };
      byPath.set(p, found);
    }
    found.pinnedIn.push(entry);
    if (!found.detectedBy.includes("pins")) found.detectedBy.unshift("pins");
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
}

/** The directory of a local flake reference (`path:/dir`, `/dir`, `git+file:///dir`, each maybe `#attr`), else null. */
export function localFlakeDir(ref: string): string | null {
  const base = ref.replace(/#.*$/, "").replace(/\?.*$/, "");
  const m = /^(?:path:|git\+file:\/\/)?(\/.*)$/.exec(base);
  return m ? m[1] : null;
}

/** flake.lock's locked inputs as pins: each node's narHash is the hash that pins it. */
export function readFlakeLock(file: string): Pin[] {
  let lock: any;
  try {
    lock = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e: any) {
    throw new InputError(`cannot read ${file}: ${e.code ?? e.message}`);
  }
  const nodes = lock?.nodes;
  if (!nodes || typeof nodes !== "object") throw new InputError(`${file} is not a flake.lock (no nodes)`);
  const pins: Pin[] = [];
  for (const [name, node] of Object.entries<any>(nodes)) {
    if (name === (lock.root ?? "root") || !node?.locked) continue;
    if (!node.locked.narHash) throw new InputError(`${file}: input '${name}' has no narHash: it is not locked to content`);
    const l = node.locked;
    const url = l.url ?? (l.owner && l.repo ? `${l.type}:${l.owner}/${l.repo}${l.rev ? `/${l.rev}` : ""}` : l.path);
    pins.push({ name, file: path.resolve(file), layout: "flake.lock", url, mode: "recursive", sha256: hexOf(l.narHash, `${file}: input '${name}'`) });
  }
  return pins;
}

/** A local flake's flake.lock, or null (a remote flake, or none written yet). */
export function flakeLockOf(ref: string): string | null {
  const dir = localFlakeDir(ref);
  return dir && fs.existsSync(path.join(dir, "flake.lock")) ? path.join(dir, "flake.lock") : null;
}

/**
 * What a flake's evaluation needs from a closure: its locked inputs and whatever else it read — not the
 * flake's own source, which whoever evaluates it makes from the checkout.
 */
export function flakeEvalInputs(archive: { self: string; inputs: string[] }, traced: string[]): string[] {
  return [...new Set([...archive.inputs, ...traced])].filter((p) => p !== archive.self);
}

/** `nix flake archive --json --dry-run`: the flake's own source path and every input's, recursively. */
export async function flakeArchive(ref: string, nixArgs: string[] = []): Promise<{ self: string; inputs: string[] }> {
  const r = await run("nix", [...EXPERIMENTAL, "flake", "archive", "--json", "--dry-run", ref.replace(/#.*$/, ""), ...nixArgs], { allowFailure: true, streamStderr: false });
  if (r.code !== 0) throw new InputError(`cannot list the inputs of flake ${ref}: ${nixError(r.stderr, r.code)}`);
  return archivePaths(JSON.parse(r.stdout));
}

/** The paths of `nix flake archive --json` output: the top one is the flake itself. */
export function archivePaths(json: any): { self: string; inputs: string[] } {
  const inputs: string[] = [];
  const walk = (node: any) => {
    for (const child of Object.values<any>(node?.inputs ?? {})) {
      if (typeof child?.path === "string" && !inputs.includes(child.path)) inputs.push(child.path);
      walk(child);
    }
  };
  walk(json);
  return { self: json.path, inputs };
}

/**
 * The publisher's side for a flake: every locked input (`nix flake archive`), pinned by flake.lock's
 * narHash, and whatever else the evaluation read — not the flake's own source, which an auditor's Nix
 * makes from the checkout itself.
 */
export async function resolveFlakeInputs(o: { flake: string; storeDir: string; known: Set<string>; checkout: string; nixArgs?: string[] }): Promise<{ inputs: PinnedInput[]; lockFile: string | null }> {
  const nixArgs = o.nixArgs ?? [];
  const archive = await flakeArchive(o.flake, nixArgs);
  const traced = await traceEvaluation({ flake: o.flake }, o.storeDir, nixArgs);
  const paths = flakeEvalInputs(archive, traced).filter((p) => !o.known.has(p));
  const hashes = await narSha256s(paths);
  const lockFile = flakeLockOf(o.flake);
  const pins = lockFile ? readFlakeLock(lockFile) : [];
  const inputs = paths.map((p, i): PinnedInput => {
    const by = pins.filter((pin) => pin.sha256 === hashes[i]);
    return {
      path: p,
      narSha256: hashes[i],
      pinnedIn: by.map((pin) => pinnedInEntry(pin, o.checkout)),
      detectedBy: [...(by.length ? ["pins" as const] : []), ...(traced.includes(p) ? ["evaluation" as const] : [])],
    };
  });
  return { inputs: inputs.sort((a, b) => (a.path < b.path ? -1 : 1)), lockFile };
}

/** The pins a reviewed checkout declares for a target: its pins files (and `extra`), or a local flake's flake.lock. */
export function checkoutPins(t: NixTarget, extra: string[] = []): Pin[] {
  if (t.flake !== undefined) {
    const lock = flakeLockOf(t.flake);
    return lock ? readFlakeLock(lock) : [];
  }
  return pinsFilesOf(t.file, extra).flatMap(readPins);
}

/** The pins files of a non-flake target: those found next to its file, and `extra` (--pins), absolute, once each. */
export function pinsFilesOf(file: string, extra: string[] = []): string[] {
  return [...new Set([...findPinsFiles(file), ...extra.map((f) => path.resolve(f))])];
}
