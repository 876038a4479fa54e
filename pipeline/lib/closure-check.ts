// The auditor's offline tamper check. `nix-store --import` trusts whatever a closure contains, and the
// export format carries no hashes (docs/closure.md), so we derive what every source MUST be from the reviewed
// Nix files (their derivation graph, never the closure) and re-hash each exported path:
// - fixed-output sources: content hashed in the declared mode (recursive = NAR, flat/text = the single
//   file's contents) with the declared algorithm, compared with the declared hash;
// - evaluation-time paths (local sources, builtins.toFile): the store path recomputed from content and
//   references (type "source" from the NAR's sha256, or "text" from the file's sha256) must equal the path.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { collectSources, Derivation, SourceSet, DerivationGraph } from "./derivation";
import { ExportedPath, hashIndexed, HashNeeds, IndexedPath, indexExport, NarFormatError } from "./nar";
import { sizeOrNull } from "./files";
import { trackBytes } from "./progress";
import { loadDerivationGraph, NixTarget } from "./nix";
import { CheckFailed, describeSystemError, InputError } from "./step";
import { checkoutPins, flakeArchive, flakeEvalInputs, matchesPin, Pin, pinLocation, SELF_CERTIFY_ALGOS, selfCertifies, traceEvaluation } from "./eval-inputs";
import { nix32Encode, sourcePath, splitStorePath } from "./storepath";

export interface TamperedSource {
  path: string;
  drv: string;
  mode: string;
  algo: string;
  expected: string;
  actual: string;
}

export interface ClosureCheckResult {
  ok: boolean;
  checked: number;
  tampered: TamperedSource[];
  missing: { path: string; drv: string }[];
  /** Fixed-output sources whose declared hash this check cannot recompute (git hashing): not accepted. */
  unverifiable: { path: string; drv: string; mode: string; algo: string }[];
  /** Paths in the closure that the reviewed files do not call for. They fail the check too: an extra path
   * could pre-populate a derivation's output and so skip (replace) its build in the offline rebuild. */
  extra: string[];
  /** Pins of the reviewed checkout (eval-inputs.ts) that no path of the closure holds: the closure lacks the
   * pinned input, or holds other bytes than were pinned. */
  missingPins: { pin: string; mode: string; sha256: string }[];
  /** Set when the closure is not a readable export stream. */
  error?: string;
}

export interface ExpectedSource {
  path: string;
  /** The fixed-output derivation, or for an evaluation-time path the first derivation that needs it. */
  drv: string;
  kind: "fixed-output" | "eval";
  fixed?: Derivation["outputs"][string]["fixed"];
}

/** Every path a source closure of this graph must contain. */
export function expectedSources(g: DerivationGraph, s: SourceSet): Map<string, ExpectedSource> {
  const want = new Map<string, ExpectedSource>();
  for (const d of s.fods) {
    for (const o of Object.values(d.outputs)) {
      if (o.fixed && o.path) want.set(o.path, { path: o.path, drv: d.drvPath, kind: "fixed-output", fixed: o.fixed });
    }
  }
  for (const [p, drv] of s.evalPaths) if (!want.has(p)) want.set(p, { path: p, drv, kind: "eval" });
  return want;
}

function fmt(algo: string, hex: string): string {
  return `${algo}:${nix32Encode(Buffer.from(hex, "hex"))}`;
}

/** Verifies one exported path against what the reviewed derivations say it must be; null when it matches. */
export function verifyExported(e: ExportedPath, want: ExpectedSource, storeDir: string): TamperedSource | null {
  if (want.kind === "fixed-output") {
    const f = want.fixed!;
    const actualHex = f.mode === "recursive" ? e.narHashes[f.algo] : e.flatHashes?.[f.algo];
    if (actualHex === f.hex) return null;
    return {
      path: e.path,
      drv: want.drv,
      mode: f.mode,
      algo: f.algo,
      expected: fmt(f.algo, f.hex),
      actual: actualHex ? fmt(f.algo, actualHex) : f.mode === "recursive" ? "(not hashed)" : "(not a single regular file)",
    };
  }
  // A local source, a text file or an input fetched at evaluation: the path itself commits to the bytes.
  if (selfCertifies(e, storeDir)) return null;
  const asSource = sourcePath(e.narHashes.sha256, splitStorePath(e.path).name, e.references, e.path, storeDir);
  return { path: e.path, drv: want.drv, mode: "source-path", algo: "sha256", expected: e.path, actual: asSource };
}

/**
 * Indexes the closure (nar.ts `indexExport`: structure only) and hashes each path by byte range on every
 * core, asking `needs` which hashes each path needs (in stream order); `more` names paths whose partial
 * hashes leave a verdict open, hashed again with `full`. A malformed or truncated stream is `error` (one line,
 * a verdict on the file); the paths complete before it are returned all the same. A file that cannot be read
 * (EACCES, EIO) or hashed (it changed meanwhile, a worker ran out of memory) throws: that is this machine
 * refusing (exit 2, naming the file), not a verdict on the closure's bytes.
 */
async function hashClosure(closure: string, what: string, needs: (p: IndexedPath) => HashNeeds, full: HashNeeds, more: (e: ExportedPath) => boolean, workers?: number): Promise<{ exported: ExportedPath[]; error?: string }> {
  const invalid = (m: string) => `${closure} is not a valid nix-store --export stream: ${m}`;
  const fd = fs.openSync(closure, "r");
  let error: string | undefined;
  try {
    const index = await indexExport(fd, fs.fstatSync(fd).size);
    if (index.error) error = invalid(index.error.message);
    const track = (done: () => number, total: number) => {
      const p = trackBytes(what, total, done);
      return { stop: (outcome?: "done" | "failed") => p.stop(error ? "failed" : outcome) };
    };
    const exported = await hashIndexed(fd, index.paths, needs, { track, workers });
    const again = exported.map((e, i) => (more(e) ? i : -1)).filter((i) => i >= 0);
    if (again.length) {
      const redone = await hashIndexed(fd, again.map((i) => index.paths[i]), () => full, { workers });
      again.forEach((i, k) => (exported[i] = redone[k]));
    }
    return { exported, error };
  } catch (e: any) {
    if (e instanceof NarFormatError) return { exported: [], error: invalid(e.message) };
    if (describeSystemError(e)) throw Object.assign(e, { path: e.path ?? closure });
    throw new InputError(`cannot hash ${closure}: ${e.message}`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Checks a closure stream against an already-computed expectation (no Nix needed); `pins` must each be held by a path.
 * `workers`: hashing threads (range-hash.ts; default one per core).
 */
export async function checkExportAgainst(closure: string, want: Map<string, ExpectedSource>, storeDir: string, pins: Pin[] = [], o: { workers?: number } = {}): Promise<ClosureCheckResult> {
  const algos = new Set<string>(["sha256"]);
  for (const w of want.values()) if (w.fixed) algos.add(w.fixed.algo);
  const full: HashNeeds = { nar: [...algos], flat: [...algos] };
  const result: ClosureCheckResult = { ok: false, checked: 0, tampered: [], missing: [], extra: [], unverifiable: [], missingPins: [] };
  // A fixed-output source (its first occurrence) needs only its declared hash, plus the sha256 a pin of
  // either mode compares: one pass over its bytes instead of every algorithm over the NAR and the file.
  // Every other path is hashed as before (all the algorithms, NAR and file), which selfCertifies needs.
  const pinNar = pins.some((p) => p.mode === "recursive");
  const pinFlat = pins.some((p) => p.mode !== "recursive");
  const first = new Set<string>();
  const partial = new Set<string>();
  const needs = (p: IndexedPath): HashNeeds => {
    const f = want.get(p.path)?.fixed;
    const isFirst = !first.has(p.path);
    first.add(p.path);
    if (!f || !isFirst || f.mode === "git") return full;
    partial.add(p.path);
    const n: HashNeeds = { nar: pinNar ? ["sha256"] : [], flat: pinFlat ? ["sha256"] : [] };
    (f.mode === "recursive" ? n.nar : n.flat).push(f.algo);
    return n;
  };
  // A pin's hash matched but the path did not self-certify on the hashes computed: decide on all of them.
  const more = (e: ExportedPath) =>
    partial.has(e.path) && pins.some((p) => (p.mode === "recursive" ? e.narHashes.sha256 : e.flatHashes?.sha256) === p.sha256 && !matchesPin(e, p, storeDir));
  const { exported, error } = await hashClosure(closure, "re-hashing the closure's sources", needs, full, more, o.workers);
  if (error) result.error = error;
  const seen = new Set<string>();
  const pinned = new Set<Pin>();
  for (const e of exported) {
    const holds = pins.filter((p) => matchesPin(e, p, storeDir));
    for (const p of holds) pinned.add(p);
    let w = want.get(e.path);
    // A pinned input the evaluation did not read (unused pin): expected all the same, and checked by its pin.
    if (!w && holds.length && !seen.has(e.path)) w = { path: e.path, drv: pinLocation(holds[0]), kind: "eval" };
    if (!w || seen.has(e.path)) {
      result.extra.push(e.path);
      continue;
    }
    seen.add(e.path);
    if (w.fixed?.mode === "git") {
      // A git tree hash is not a NAR or file hash; comparing those would only ever "fail". Never accept
      // what was not checked.
      result.unverifiable.push({ path: e.path, drv: w.drv, mode: w.fixed.mode, algo: w.fixed.algo });
      continue;
    }
    result.checked++;
    const bad = verifyExported(e, w, storeDir);
    if (bad) result.tampered.push(bad);
  }
  for (const w of want.values()) if (!seen.has(w.path)) result.missing.push({ path: w.path, drv: w.drv });
  result.missing.sort((a, b) => a.path.localeCompare(b.path));
  for (const p of pins) if (!pinned.has(p)) result.missingPins.push({ pin: pinLocation(p), mode: p.mode, sha256: p.sha256 });
  result.ok = !result.error && result.tampered.length === 0 && result.missing.length === 0 && result.extra.length === 0 && result.unverifiable.length === 0 && result.missingPins.length === 0;
  return result;
}

/** What `preImportCheck` found: each path's NAR sha256 (hex), and what does not self-certify or is unpinned. */
export interface PreImportCheck {
  ok: boolean;
  paths: Map<string, string>;
  /** Paths whose name does not commit to their bytes (a build output, or tampered content). */
  notSelfCertifying: string[];
  missingPins: ClosureCheckResult["missingPins"];
  error?: string;
}

/**
 * The auditor's check BEFORE anything is imported, needing no evaluation and no Nix: every path of the
 * closure self-certifies (eval-inputs.ts `selfCertifies`: importing it cannot put other bytes under its
 * name), and every pin of the reviewed checkout is held by a path with exactly the pinned hash.
 */
export async function preImportCheck(closure: string, pins: Pin[], storeDir: string, o: { workers?: number } = {}): Promise<PreImportCheck> {
  const r: PreImportCheck = { ok: false, paths: new Map(), notSelfCertifying: [], missingPins: [] };
  const pinned = new Set<Pin>();
  // sha256 of the NAR and the file first (what almost every path certifies by, and what pins compare);
  // the other algorithms only for a path that does not certify by those.
  const full: HashNeeds = { nar: SELF_CERTIFY_ALGOS, flat: SELF_CERTIFY_ALGOS };
  const sha256: HashNeeds = { nar: ["sha256"], flat: ["sha256"] };
  const { exported, error } = await hashClosure(closure, "checking the closure before import", () => sha256, full, (e) => !selfCertifies(e, storeDir), o.workers);
  if (error) r.error = error;
  for (const e of exported) {
    r.paths.set(e.path, e.narHashes.sha256);
    if (!selfCertifies(e, storeDir)) r.notSelfCertifying.push(e.path);
    for (const p of pins) if (matchesPin(e, p, storeDir)) pinned.add(p);
  }
  for (const p of pins) if (!pinned.has(p)) r.missingPins.push({ pin: pinLocation(p), mode: p.mode, sha256: p.sha256 });
  r.ok = !r.error && r.notSelfCertifying.length === 0 && r.missingPins.length === 0;
  return r;
}

/** Pins as a reason names them: where pinned and the hash the closure lacks. */
export function describeMissingPins(m: ClosureCheckResult["missingPins"]): string {
  return `${m.length} pinned input(s) not in the closure with the pinned hash: ${m.slice(0, 3).map((p) => `${p.pin} (${p.mode} sha256 ${p.sha256})`).join("; ")}`;
}

/**
 * Library entry point (docs/contracts.md): evaluates the reviewed Nix files, then checks the closure:
 * the graph's sources, the store paths the evaluation read (traced), and every pin of the checkout's
 * pins files plus `pins`. Returns the verdict; throws only for bad input (missing closure file,
 * unevaluable target, no nix).
 */
export async function checkClosure(opts: NixTarget & { closure: string; pins?: string[] }): Promise<ClosureCheckResult> {
  if (!fs.existsSync(opts.closure)) throw new InputError(`closure file not found: ${opts.closure}`);
  // Easy to pass `closure --out DIR` itself; reading a directory would look like a corrupt closure (exit 1).
  if (fs.statSync(opts.closure).isDirectory()) throw new InputError(`closure ${opts.closure} is a directory, not a closure file (e.g. ${opts.closure}/source-export.closure)`);
  const { graph, root } = await loadDerivationGraph(opts, "check-closure");
  const sources = collectSources(graph, root);
  const want = expectedSources(graph, sources);
  let traced = await traceEvaluation(opts, graph.storeDir);
  if (opts.flake) traced = flakeEvalInputs(await flakeArchive(opts.flake), traced);
  const pins = checkoutPins(opts, opts.pins);
  expectTraced(want, traced);
  return checkExportAgainst(opts.closure, want, graph.storeDir, pins);
}

/** Store paths the evaluation read are expected in the closure too (checked as self-certifying). */
export function expectTraced(want: Map<string, ExpectedSource>, traced: string[]): void {
  for (const p of traced) if (!want.has(p)) want.set(p, { path: p, drv: "(read by the evaluation)", kind: "eval" });
}

/** One line naming what failed, for exit-1 reasons. */
export function describeFailure(r: ClosureCheckResult): string {
  const parts: string[] = [];
  if (r.error) parts.push(r.error);
  if (r.tampered.length)
    parts.push(`${r.tampered.length} tampered source(s): ${r.tampered.slice(0, 3).map((t) => `${t.path} (from ${t.drv}, ${t.mode} ${t.algo} expected ${t.expected}, got ${t.actual})`).join("; ")}`);
  if (r.missing.length) parts.push(`${r.missing.length} missing source(s): ${r.missing.slice(0, 3).map((m) => `${m.path} (from ${m.drv})`).join("; ")}`);
  if (r.unverifiable.length)
    parts.push(`${r.unverifiable.length} source(s) with a hash this check cannot recompute (git hashing): ${r.unverifiable.slice(0, 3).map((u) => `${u.path} (from ${u.drv}, ${u.mode} ${u.algo})`).join("; ")}`);
  if (r.extra.length) parts.push(`${r.extra.length} unexpected path(s): ${r.extra.slice(0, 3).join("; ")}`);
  if (r.missingPins?.length) parts.push(describeMissingPins(r.missingPins));
  return parts.join(" | ");
}

export interface StagedClosure {
  /** The private, read-only copy: what is checked and what is imported. */
  file: string;
  /** SHA-256 (hex) of exactly those bytes. */
  sha256: string;
}

/**
 * Check-then-use: re-hashing the caller's closure and then opening that path again for the import
 * would let a file swapped in between be imported unchecked. So the closure is copied once into
 * `dir` (created 0700; the copy 0400), hashed while it is copied, and both the check and the
 * import read that copy. With `expectedSha256` (the closure step's digest), a closure whose bytes
 * differ is refused before anything reads it.
 */
export async function stageClosure(src: string, dir: string, expectedSha256?: string, expectedFrom = "the closure step's digest"): Promise<StagedClosure> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  const file = path.join(dir, "source-export.closure");
  const hash = crypto.createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const input = fs.createReadStream(src);
  const progress = trackBytes("copying and hashing the closure", sizeOrNull(src), () => input.bytesRead);
  try {
    const out = fs.createWriteStream(file, { flags: "wx", mode: 0o400 });
    await pipeline(input, hashing, out);
    progress.stop();
    const fd = fs.openSync(file, "r");
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e: any) {
    // E.g. a full disk: no half-copied closure left behind, and the one-line error names where (a
    // stream's write error carries no path).
    progress.stop("failed");
    fs.rmSync(dir, { recursive: true, force: true });
    if (e?.code && e.syscall && !e.path) e.path = file;
    throw e;
  }
  const sha256 = hash.digest("hex");
  if (expectedSha256 !== undefined && sha256 !== expectedSha256.replace(/^sha256:/, "")) {
    fs.rmSync(dir, { recursive: true, force: true });
    const reason = `closure ${src} has SHA-256 ${sha256}, expected ${expectedSha256.replace(/^sha256:/, "")} (${expectedFrom}): it changed since it was exported`;
    throw new CheckFailed(reason, { ok: false, refused: true, built: false, reason, closureSha256: sha256 });
  }
  return { file, sha256 };
}
