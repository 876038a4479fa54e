// Derivation JSON from every Nix we meet, normalised to one shape with absolute store paths
// (test/fixtures/derivations: real recordings of 2.8, 2.26 and 2.34):
// - Nix 2.8 .. 2.31: `{"/nix/store/x.drv": {outputs:{out:{path, hashAlgo:"r:sha256", hash}}, inputSrcs, inputDrvs}}`
//   (later 2.x, e.g. 2.26: separate `method` + `hashAlgo`, inputDrvs values `{outputs, dynamicOutputs}`);
// - Nix 2.32 (format v3): the same, but every store path is a basename;
// - Nix 2.33, 2.34 (format v4): `{version: 4, derivations: {...}}`, `inputs: {srcs, drvs}`, fixed outputs
//   as a content address `{method, hash}` (2.34: an SRI string; the schema also allows `{algorithm,
//   format, hash}`), no output `path` for them (we compute it); printed as one compact line.
// Only the model and the parsing: running Nix to get a dump is nix.ts.
import { fixedOutputPath, HashAlgo, HashMode, isHashAlgo, parseHash } from "./storepath";

export interface FixedHash {
  mode: HashMode;
  algo: HashAlgo;
  /** lowercase base16 */
  hex: string;
}

export interface DrvOutput {
  path?: string;
  fixed?: FixedHash;
}

export interface Derivation {
  drvPath: string;
  name: string;
  outputs: Record<string, DrvOutput>;
  inputDrvs: Record<string, string[]>;
  inputSrcs: string[];
  builder: string;
  env: Record<string, string>;
}

export interface DerivationGraph {
  storeDir: string;
  /** Format seen: 0 (read from the .drv files, drv-file.ts), JSON dumps: 1-2 (full paths), 3 (basenames), 4 (inputs object). */
  format: number;
  drvs: Map<string, Derivation>;
  /** Set by a reader that already walked the graph breadth-first from `root`: `drvs` is in that order and
   * `parent` maps each derivation to the one it was first reached from (collectSources reuses both). */
  walk?: { root: string; parent: Map<string, string> };
}

const METHOD_TO_MODE: Record<string, HashMode> = { nar: "recursive", recursive: "recursive", flat: "flat", text: "text", git: "git" };

function abs(storeDir: string, p: string): string {
  return p.startsWith("/") ? p : `${storeDir}/${p}`;
}

function outputsOf(x: any): string[] {
  if (Array.isArray(x)) return x.map(String);
  if (x && Array.isArray(x.outputs)) return x.outputs.map(String);
  return [];
}

export function parseOutput(storeDir: string, drvName: string, outName: string, o: any): DrvOutput {
  const out: DrvOutput = {};
  if (typeof o?.path === "string" && o.path) out.path = abs(storeDir, o.path);
  if (o?.hash !== undefined && o.hash !== null && o.hash !== "") {
    let method: string | undefined = o.method;
    let algo: string | undefined = o.hashAlgo;
    if (algo && algo.includes(":")) {
      // 2.8's A-Term spelling: "r:sha256" (recursive), "text:sha256", or plain "sha256" (flat).
      const [prefix, a] = algo.split(":");
      method = prefix === "r" ? "nar" : prefix;
      algo = a;
    }
    const parsed = parseHash(o.hash, algo && isHashAlgo(algo) ? algo : undefined);
    const mode = METHOD_TO_MODE[method ?? "flat"];
    if (!mode) throw new Error(`derivation output ${outName} of ${drvName}: unknown content-address method '${method}'`);
    out.fixed = { mode, algo: parsed.algo, hex: parsed.hex };
    if (!out.path) {
      const name = outName === "out" ? drvName : `${drvName}-${outName}`;
      out.path = fixedOutputPath(mode, parsed.algo, parsed.hex, name, storeDir);
    }
  }
  return out;
}

/** Guesses the store dir of a basename-only dump from its env (paths there stay absolute), else /nix/store. */
function guessStoreDir(drvs: Record<string, any>): string {
  for (const d of Object.values(drvs)) {
    for (const v of Object.values<string>(d?.env ?? {})) {
      const m = /^(\/[^ ]*)\/[0-9a-df-np-sv-z]{32}-/.exec(String(v));
      if (m) return m[1];
    }
  }
  return "/nix/store";
}

/** Parses the text or object printed by `nix show-derivation -r` / `nix derivation show -r`. */
export function parseDerivationDump(input: string | object, storeDirHint?: string): DerivationGraph {
  const doc: any = typeof input === "string" ? JSON.parse(input) : input;
  if (!doc || typeof doc !== "object") throw new Error("derivation JSON is not an object");
  let map: Record<string, any> = doc;
  let format = 2;
  if (doc.derivations && typeof doc.derivations === "object" && typeof doc.version === "number") {
    map = doc.derivations;
    format = doc.version;
  }
  const keys = Object.keys(map);
  const basenames = keys.length > 0 && !keys[0].startsWith("/");
  if (basenames && format < 3) format = 3;
  const storeDir = storeDirHint ?? (basenames ? guessStoreDir(map) : keys.length ? keys[0].slice(0, keys[0].lastIndexOf("/")) : "/nix/store");
  const drvs = new Map<string, Derivation>();
  for (const key of keys) {
    const d = map[key];
    const drvPath = abs(storeDir, key);
    const name: string = d.name ?? d.env?.name ?? key.slice(key.lastIndexOf("/") + 1).replace(/^[0-9a-z]{32}-/, "").replace(/\.drv$/, "");
    const srcsRaw: string[] = d.inputs?.srcs ?? d.inputSrcs ?? [];
    const drvsRaw: Record<string, any> = d.inputs?.drvs ?? d.inputDrvs ?? {};
    // Old formats already have the normalised shape: reuse them (50,000-drv dumps: fewer allocations).
    let inputDrvs: Record<string, string[]> = drvsRaw;
    let inputSrcs: string[] = srcsRaw;
    const drvKeys = Object.keys(drvsRaw);
    if (basenames || (drvKeys.length > 0 && !Array.isArray(drvsRaw[drvKeys[0]]))) {
      inputDrvs = {};
      for (const p of drvKeys) inputDrvs[abs(storeDir, p)] = outputsOf(drvsRaw[p]);
    }
    if (basenames) inputSrcs = srcsRaw.map((p) => abs(storeDir, p));
    const outputs: Record<string, DrvOutput> = {};
    for (const [outName, o] of Object.entries<any>(d.outputs ?? {})) outputs[outName] = parseOutput(storeDir, name, outName, o);
    drvs.set(drvPath, {
      drvPath,
      name,
      outputs,
      inputDrvs,
      inputSrcs,
      builder: d.builder ?? "",
      env: d.env ?? {},
    });
  }
  return { storeDir, format, drvs };
}

/**
 * Parses a derivation dump while Nix prints it, with native JSON.parse on whole top-level members. Nix
 * pretty-prints with an indent of 2, so "\n  },\n" ends a top-level member: a raw newline cannot occur inside
 * a JSON string, and JSON.parse of each piece proves the cut was at depth 1 (a piece is only accepted when
 * it is a complete object). Any other layout (compact, another indent, format 4's "derivations" wrapper)
 * is simply parsed whole at the end. (A per-character JS scan used to find the entries: 2-3x the CPU.)
 * Nix 2.34 prints one compact line: seen from its first bytes, its chunks are only collected (searching
 * the growing text for a cut on every chunk took 11 s for a 37 MB dump, one JSON.parse 0.13 s).
 */
export class DumpStreamParser {
  private pending = "";
  private first = true;
  private split = true;
  /** Chunks after splitting stopped, joined once at the end. */
  private readonly rest: string[] = [];
  private readonly members: Record<string, unknown> = {};

  push(chunk: string): void {
    if (!this.split) {
      this.rest.push(chunk);
      return;
    }
    this.pending += chunk;
    // Pretty-printed dumps open with "{" and a newline.
    if (this.first && this.pending.length >= 2 && !this.pending.startsWith("{\n")) {
      this.split = false;
      return;
    }
    const cut = this.pending.lastIndexOf("\n  },\n");
    if (cut < 0) return;
    const piece = this.pending.slice(0, cut + 4);
    const text = this.first ? `${piece}\n}` : `{${piece}\n}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.split = false; // not the layout we expect: keep the text, parse it whole at the end
      return;
    }
    Object.assign(this.members, parsed);
    this.pending = this.pending.slice(cut + 5);
    this.first = false;
  }

  /** The whole dump as parseDerivationDump expects it. */
  result(): object {
    const text = this.pending + this.rest.join("");
    this.rest.length = 0;
    let rest: unknown;
    try {
      rest = JSON.parse(this.first ? text : `{${text}`);
    } catch (e: any) {
      throw new Error(`derivation dump ended in the middle of a JSON value or is malformed: ${e.message}`);
    }
    this.pending = "";
    if (this.first) return rest as object;
    return Object.assign(this.members, rest);
  }
}

export function isFixedOutput(d: Derivation): boolean {
  for (const name in d.outputs) if (d.outputs[name].fixed !== undefined) return true;
  return false;
}

/** URLs a fetcher declares (nixpkgs fetchurl: `urls`; builtin:fetchurl: `url`). */
export function urlsOf(d: Derivation): string[] {
  const raw = d.env.urls ?? d.env.url ?? "";
  return raw.split(/\s+/).filter(Boolean);
}

export interface SourceSet {
  root: string;
  /** BFS parent pointers over inputDrvs, root has none. */
  parent: Map<string, string>;
  fods: Derivation[];
  /** Evaluation-time paths: inputSrcs not produced by any derivation in the graph -> first drv (BFS) needing it. */
  evalPaths: Map<string, string>;
}

/** The single derivation no other derivation in the dump depends on. */
export function findRoot(g: DerivationGraph): string {
  const referenced = new Set<string>();
  for (const d of g.drvs.values()) for (const p of Object.keys(d.inputDrvs)) referenced.add(p);
  const roots = [...g.drvs.keys()].filter((p) => !referenced.has(p));
  if (roots.length !== 1) throw new Error(`expected one target derivation in the dump, found ${roots.length}${roots.length ? `: ${roots.slice(0, 3).join(", ")}` : ""}`);
  return roots[0];
}

/** Walks the graph from `root` breadth-first: fixed-output derivations, eval-time paths, and why-chains. */
export function collectSources(g: DerivationGraph, root = findRoot(g)): SourceSet {
  if (!g.drvs.has(root)) throw new Error(`derivation ${root} is not in the dump`);
  const produced = new Set<string>();
  // for-in, not Object.values: no array per derivation (this walk is on the closure step's critical path).
  for (const d of g.drvs.values()) for (const name in d.outputs) if (d.outputs[name].path) produced.add(d.outputs[name].path!);
  const fods: Derivation[] = [];
  const evalPaths = new Map<string, string>();
  if (g.walk?.root === root) {
    for (const d of g.drvs.values()) {
      if (isFixedOutput(d)) fods.push(d);
      for (const s of d.inputSrcs) if (!produced.has(s) && !evalPaths.has(s)) evalPaths.set(s, d.drvPath);
    }
    return { root, parent: g.walk.parent, fods, evalPaths };
  }
  const parent = new Map<string, string>();
  const seen = new Set<string>([root]);
  const queue: string[] = [root];
  for (let i = 0; i < queue.length; i++) {
    const p = queue[i];
    const d = g.drvs.get(p);
    if (!d) throw new Error(`derivation ${p} (input of ${parent.get(p)}) is missing from the dump`);
    if (isFixedOutput(d)) fods.push(d);
    for (const s of d.inputSrcs) if (!produced.has(s) && !evalPaths.has(s)) evalPaths.set(s, p);
    for (const dep in d.inputDrvs) {
      if (!seen.has(dep)) {
        seen.add(dep);
        parent.set(dep, p);
        queue.push(dep);
      }
    }
  }
  return { root, parent, fods, evalPaths };
}

/** Derivation chain from the root to `drv`, root first. */
export function chainTo(s: SourceSet, drv: string): string[] {
  const chain = [drv];
  for (let p = s.parent.get(drv); p !== undefined; p = s.parent.get(p)) chain.push(p);
  return chain.reverse();
}
