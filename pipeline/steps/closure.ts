// `supply-chain closure`: the source-only closure of a target — every evaluation-time path and every
// fixed-output derivation in its derivation graph — exported for an offline rebuild, with a manifest
// and a report of the biggest sources and why each is needed.
//
// Speed: ONE Nix process (evaluation), the graph read from the .drv files (drv-file.ts), graph work in
// memory, NAR sizes from lstat. No per-source processes.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { expectedSources } from "../lib/closure-check";
import { chainTo, collectSources, Derivation, DerivationGraph, SourceSet, urlsOf } from "../lib/derivation";
import { humanBytes, produceAtomic, sha256Following, writeFileAtomic } from "../lib/files";
import { trackBytes } from "../lib/progress";
import { describeTarget, explainBuildFailure, loadDerivationGraph, nixOptionArgs, NixTarget, TARGET_OPTIONS, targetFrom } from "../lib/nix";
import { diskFullIn, missingTool, run } from "../lib/proc";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { nix32Encode, storePathName } from "../lib/storepath";
import { narSizeOf } from "../lib/nar";
import { localFlakeDir, pinsFilesOf, PinnedInput, resolveFlakeInputs, resolvePinnedInputs } from "../lib/eval-inputs";

export interface ClosureResult {
  closureFile: string | null;
  closureSha256: string | null;
  /** Number of fixed-output sources. */
  sources: number;
  /** Number of evaluation-time paths. */
  evalPaths: number;
  /** Total NAR size of all exported paths (null entries, i.e. unrealised ones, count as 0). */
  bytes: number;
  manifest: string;
  report: string;
  /** report.html: the same, with the dependency graph drawn (Graphviz), for a browser. */
  reportHtml: string;
}

export interface ManifestSource {
  drv: string;
  name: string;
  path: string;
  urls: string[];
  hash: { mode: string; algo: string; value: string; nix32: string };
  /** NAR size in bytes; null when the path is not valid in this store (only with --no-export). */
  size: number | null;
  /** Derivations from the target down to this source's derivation, then the source path. */
  chain: string[];
}

export interface ManifestEvalPath {
  path: string;
  /** First derivation (breadth-first from the target) whose inputSrcs list this path. */
  neededBy: string;
  size: number | null;
  chain: string[];
}

/** An evaluation-time input no derivation references (eval-inputs.ts): exported so an offline evaluation finds it. */
export interface ManifestPinnedInput extends PinnedInput {
  size: number | null;
}

export interface Manifest {
  version: 1;
  target: { file?: string; attribute?: string; flake?: string; drvPath: string };
  nixVersion: string;
  derivations: number;
  sources: ManifestSource[];
  evalPaths: ManifestEvalPath[];
  /** Inputs only the evaluation uses: pinned tarballs imported for their Nix code, a flake's locked inputs. */
  pinnedInputs: ManifestPinnedInput[];
  /** The pins files read, relative to the checkout when inside it. */
  pinsFiles: string[];
  bytes: number;
}

const STEP = "closure";

/** The checkout a target file belongs to: the nearest ancestor with .git, else the file's directory. */
export function checkoutOf(file: string): string {
  const start = fs.statSync(file).isDirectory() ? path.resolve(file) : path.dirname(path.resolve(file));
  for (let d = start; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, ".git"))) return d;
    if (path.dirname(d) === d) return start;
  }
}

function relativeTo(base: string, f: string): string {
  const rel = path.relative(base, f);
  return rel && !rel.startsWith("..") ? rel : f;
}

/**
 * NAR sizes computed from lstat (narSizeOf: the exact serialisation length, what `nix-store -q --size`
 * reports) — no Nix process, no database round trip. Paths not in the store get null.
 */
function narSizes(paths: string[]): Map<string, number | null> {
  return new Map(paths.map((p) => [p, narSizeOf(p)]));
}

const byPath = (a: { path: string }, b: { path: string }) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

export function buildManifest(t: NixTarget, graph: DerivationGraph, s: SourceSet, sizes: Map<string, number | null>, nixVersion: string, pinned: PinnedInput[] = [], pinsFiles: string[] = []): Manifest {
  const fodSources: ManifestSource[] = [];
  for (const d of s.fods) {
    const chain = chainTo(s, d.drvPath);
    for (const o of Object.values(d.outputs)) {
      if (!o.fixed || !o.path) continue;
      fodSources.push({
        drv: d.drvPath,
        name: d.name,
        path: o.path,
        urls: urlsOf(d),
        hash: { mode: o.fixed.mode, algo: o.fixed.algo, value: o.fixed.hex, nix32: `${o.fixed.algo}:${nix32Encode(Buffer.from(o.fixed.hex, "hex"))}` },
        size: sizes.get(o.path) ?? null,
        chain: [...chain, o.path],
      });
    }
  }
  const fodPaths = new Set(fodSources.map((f) => f.path));
  const evalPaths: ManifestEvalPath[] = [];
  for (const [p, drv] of s.evalPaths) {
    if (fodPaths.has(p)) continue;
    evalPaths.push({ path: p, neededBy: drv, size: sizes.get(p) ?? null, chain: [...chainTo(s, drv), p] });
  }
  // Code-point order: store paths differ within their [0-9a-z] hash, where it equals localeCompare's
  // order, and it is several times cheaper than ICU collation (~10 ms of the step at 1,200 sources).
  fodSources.sort(byPath);
  evalPaths.sort(byPath);
  const pinnedInputs = pinned.map((x) => ({ ...x, size: sizes.get(x.path) ?? null }));
  const bytes = [...fodSources, ...evalPaths, ...pinnedInputs].reduce((n, x) => n + (x.size ?? 0), 0);
  return {
    version: 1,
    target: { file: t.file ? path.resolve(t.file) : undefined, attribute: t.attribute, flake: t.flake, drvPath: s.root },
    nixVersion,
    derivations: graph.drvs.size,
    sources: fodSources,
    evalPaths,
    pinnedInputs,
    pinsFiles,
    bytes,
  };
}

/** Pretty at the top, one line per source: readable, and a 12,000-source manifest stays quick to write. */
export function manifestJson(m: Manifest): string {
  const list = (xs: unknown[]) => (xs.length ? `[\n    ${xs.map((x) => JSON.stringify(x)).join(",\n    ")}\n  ]` : "[]");
  const head = { ...m, sources: 0, evalPaths: 0, pinnedInputs: 0 };
  const body = JSON.stringify(head, null, 2)
    .replace('"sources": 0', `"sources": ${list(m.sources)}`)
    .replace('"evalPaths": 0', `"evalPaths": ${list(m.evalPaths)}`)
    .replace('"pinnedInputs": 0', `"pinnedInputs": ${list(m.pinnedInputs)}`);
  return body + "\n";
}

function human(n: number | null): string {
  return n === null ? "not realised" : humanBytes(n);
}

/** Every exported path as the reports list it, biggest first: what it is, its size, why it is needed. */
interface ReportEntry {
  kind: "fixed-output" | "eval-time" | "pinned input";
  path: string;
  size: number | null;
  chain: string[];
  urls: string[];
  hash?: string;
}

function reportEntries(m: Manifest): ReportEntry[] {
  const entries: ReportEntry[] = [
    ...m.sources.map((x) => ({ kind: "fixed-output" as const, path: x.path, size: x.size, chain: x.chain, urls: x.urls, hash: `${x.hash.mode} ${x.hash.algo}:${x.hash.value}` })),
    ...m.evalPaths.map((x) => ({ kind: "eval-time" as const, path: x.path, size: x.size, chain: x.chain, urls: [] as string[] })),
    ...m.pinnedInputs.map((x) => ({ kind: "pinned input" as const, path: x.path, size: x.size, chain: [x.pinnedIn.map((p) => p.pin).join(", ") || "read by the evaluation", x.path], urls: x.pinnedIn.flatMap((p) => (p.url ? [p.url] : [])), hash: `nar sha256:${x.narSha256}` })),
  ];
  return entries.sort((a, b) => (b.size ?? -1) - (a.size ?? -1) || byPath(a, b));
}

function targetName(m: Manifest): string {
  return m.target.flake ?? `${m.target.file} -A ${m.target.attribute}`;
}

export function renderReport(m: Manifest, top: number): string {
  const all = reportEntries(m);
  const target = targetName(m);
  const lines = [
    `# Source closure of ${target}`,
    "",
    `Target derivation: \`${m.target.drvPath}\` (${m.derivations} derivations in its graph).`,
    `${m.sources.length} fixed-output sources, ${m.evalPaths.length} evaluation-time paths and ${m.pinnedInputs.length} pinned inputs, ${human(m.bytes)} in total (NAR size).`,
    "",
    `## The ${Math.min(top, all.length)} biggest sources and why each is needed`,
    "",
    "| # | source | kind | size | needed because (target → … → source) |",
    "|---|--------|------|------|--------------------------------------|",
  ];
  all.slice(0, top).forEach((x, i) => {
    const why = x.chain.map(storePathName).join(" → ");
    lines.push(`| ${i + 1} | \`${x.path}\`${x.urls.length ? `<br>${x.urls.join(" ")}` : ""} | ${x.kind} | ${human(x.size)} | ${why} |`);
  });
  lines.push("", "Full list with hashes and chains: `manifest.json`.", "");
  return lines.join("\n");
}

/** Above this many sources the graph shows only the `top` biggest (thousands of nodes are no picture). */
const GRAPH_ALL_UP_TO = 300;

const esc = (x: string) => x.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** Graphviz DOT of the chains from the target to its sources: derivations as boxes, sources as notes with their size. */
export function dependencyDot(m: Manifest, top: number): { dot: string; shown: number; of: number } {
  const all = reportEntries(m);
  const shown = all.length <= GRAPH_ALL_UP_TO ? all : all.slice(0, top);
  const ids = new Map<string, string>();
  const nodes: string[] = [];
  const edges = new Set<string>();
  const q = (x: string) => JSON.stringify(x);
  const id = (key: string, label: string, attrs: string): string => {
    let n = ids.get(key);
    if (!n) {
      n = `n${ids.size}`;
      ids.set(key, n);
      nodes.push(`  ${n} [label=${q(label)}, tooltip=${q(key)}${attrs}];`);
    }
    return n;
  };
  for (const e of shown) {
    const chain = e.chain.map((x, i) => (i === e.chain.length - 1 ? id(x, `${storePathName(x)}\n${human(e.size)}`, `, shape=note, class="source ${e.kind.replace(/ /g, "-")}"`) : id(x, storePathName(x), x === m.target.drvPath ? ", shape=box, style=bold" : ", shape=box")));
    for (let i = 1; i < chain.length; i++) edges.add(`  ${chain[i - 1]} -> ${chain[i]};`);
  }
  return { dot: ["digraph closure {", "  rankdir=LR; node [fontname=sans, fontsize=10]; edge [arrowsize=0.5];", ...nodes, ...edges, "}", ""].join("\n"), shown: shown.length, of: all.length };
}

/**
 * `dot -Tsvg`: the drawn graph, or why there is none. A picture never fails the closure: without
 * Graphviz, or when it fails, the report is written all the same and says why.
 */
async function drawGraph(dot: string): Promise<{ svg: string } | { missing: string }> {
  try {
    const r = await run("dot", ["-Tsvg"], { input: dot, streamStderr: false });
    return { svg: r.stdout.replace(/^[\s\S]*?(<svg)/, "$1") };
  } catch (e: any) {
    // CommandFailed says `dot -Tsvg failed (exit N): <its last lines>`.
    return { missing: String(e?.message ?? e).split("\n")[0] };
  }
}

/** report.html: one self-contained page (no script, no fetch): the graph, the biggest sources, every source with its hash and URLs. */
export function renderHtmlReport(m: Manifest, top: number, graph: { svg: string; shown: number; of: number } | { missing: string }): string {
  const all = reportEntries(m);
  const row = (e: ReportEntry, i: number, why: boolean) =>
    `<tr><td>${i + 1}</td><td><code>${esc(e.path)}</code>${e.urls.map((u) => `<br><span class="url">${esc(u)}</span>`).join("")}</td><td>${e.kind}</td><td class="num">${esc(human(e.size))}</td><td>${why ? esc(e.chain.map(storePathName).join(" → ")) : (e.hash ? `<code>${esc(e.hash)}</code>` : "in its store path (a source added to the store is named by its content)")}</td></tr>`;
  const picture =
    "svg" in graph
      ? `<p>${graph.shown === graph.of ? `All ${graph.of} sources` : `The ${graph.shown} biggest of ${graph.of} sources`}: derivations are boxes (the target in bold), sources are notes with their size.</p><div class="graph">${graph.svg}</div>`
      : `<p class="missing">No graph: ${esc(graph.missing)}.</p>`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Source closure of ${esc(targetName(m))}</title>
<style>
body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;font-size:.9em}
th{background:#f3f3f3;text-align:left}.num{text-align:right;white-space:nowrap}.url{color:#555}code{font-size:.85em;word-break:break-all}.graph{overflow:auto;border:1px solid #ccc;max-height:80vh}
.graph svg{max-width:none}.missing{color:#a00}
</style></head><body>
<h1>Source closure of <code>${esc(targetName(m))}</code></h1>
<p>Target derivation <code>${esc(m.target.drvPath)}</code> (${m.derivations} derivations in its graph). ${m.sources.length} fixed-output sources, ${m.evalPaths.length} evaluation-time paths and ${m.pinnedInputs.length} pinned inputs, ${esc(human(m.bytes))} in total (NAR size).</p>
<h2>From the target to its sources</h2>
${picture}
<h2>The ${Math.min(top, all.length)} biggest sources and why each is needed</h2>
<table id="biggest"><tr><th>#</th><th>source</th><th>kind</th><th>size</th><th>needed because (target → … → source)</th></tr>
${all.slice(0, top).map((e, i) => row(e, i, true)).join("\n")}
</table>
<h2>All ${all.length} sources</h2>
<table id="all"><tr><th>#</th><th>source and URLs</th><th>kind</th><th>size</th><th>hash</th></tr>
${all.map((e, i) => row(e, i, false)).join("\n")}
</table>
</body></html>
`;
}

/**
 * `nix-store --export` of the paths straight into `tmp` (streamed; closures can be GiBs), published as `target`;
 * returns the file's SHA-256, hashed behind the writer while it writes (no second pass over the file).
 */
async function exportTo(tmp: string, paths: string[], target: string, narBytes: number): Promise<string> {
  const fd = fs.openSync(tmp, "w");
  const hashing = sha256Following(tmp, (done) => trackBytes("hashing the closure", narBytes, done, { approximate: true }));
  let stopWriteBack = () => {};
  try {
    stopWriteBack = writeBackWhileWritten(tmp);
    await exportInto(fd, paths, target, narBytes);
  } catch (e) {
    await hashing.stop();
    throw e;
  } finally {
    stopWriteBack();
  }
  return hashing.finish();
}

const FLUSH_BYTES = 64 << 20;

/**
 * The file is fsynced before it is published (produceAtomic). Writing it back to disk while the export runs,
 * each time another FLUSH_BYTES have been written, leaves that fsync little to do; left alone the kernel
 * starts writing back only at GiBs dirty. Its own descriptor: fdatasync acts on the file, not the descriptor.
 */
function writeBackWhileWritten(file: string): () => void {
  const fd = fs.openSync(file, "r");
  let flushed = 0;
  let flushing = false;
  let stopped = false;
  const timer = setInterval(() => {
    if (flushing) return;
    const size = fs.fstatSync(fd).size;
    if (size - flushed < FLUSH_BYTES) return;
    flushing = true;
    fs.fdatasync(fd, () => {
      flushing = false;
      flushed = size;
      if (stopped) fs.closeSync(fd);
    });
  }, 100);
  timer.unref();
  return () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    if (!flushing) fs.closeSync(fd);
  };
}

function exportInto(fd: number, paths: string[], target: string, narBytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("nix-store", ["--export", ...paths], { stdio: ["ignore", fd, "pipe"] });
    let err = "";
    // A failed spawn emits 'error' AND 'close': a second close could hit a reused descriptor.
    let open = true;
    const closeFd = () => {
      if (open) fs.closeSync(fd);
      open = false;
    };
    // The stream is the NARs plus a little framing per path: their sum is about its size.
    let written = 0;
    const progress = trackBytes("exporting", narBytes, () => (open ? (written = fs.fstatSync(fd).size) : written), { approximate: true });
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      process.stderr.write(d);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      progress.stop("failed");
      closeFd();
      reject(e.code === "ENOENT" ? missingTool("nix-store") : e);
    });
    child.on("close", (code) => {
      progress.stop(code === 0 ? "done" : "failed");
      closeFd();
      if (code === 0) return resolve();
      // Nix re-hashes every path it exports: bytes changed since it registered them (a tampered or corrupted
      // store) are a failed check, exit 1, never published.
      const changed = /hash of path '([^']+)' has changed from '([^']+)' to '([^']+)'/.exec(err);
      if (changed) return reject(new CheckFailed(`store path ${changed[1]} is not what Nix registered (NAR hash ${changed[2]}, now ${changed[3]}): the store is corrupted or tampered, and nothing was exported`));
      // A full disk or quota is the machine refusing, not a bug: the same one line as Node's own ENOSPC.
      const full = diskFullIn(err);
      if (full) return reject(Object.assign(new Error(`${full.code}: ${full.reason}, write`), { code: full.code, syscall: "write", path: target }));
      // Anything else is Nix or its store refusing (exit 2), not a bug of ours.
      reject(new InputError(`nix-store --export failed (exit ${code ?? "signal"}): ${err.trim().split("\n").slice(-3).join(" ")}`));
    });
  });
}

export const step: StepDefinition<ClosureResult> = {
  name: "closure",
  summary: "export every source (eval-time paths + fixed-output derivations) a target needs, with manifest and report",
  options: {
    ...TARGET_OPTIONS,
    out: { type: "string", description: "directory for source-export.closure, manifest.json, report.md", required: true },
    "no-export": { type: "boolean", description: "analysis only: no realisation, no closure file (sizes of unrealised sources are null)", default: false },
    top: { type: "string", description: "how many of the biggest sources the report explains", default: "10" },
    offline: { type: "boolean", description: "turn substituters off for realising the sources: fetch only by their own fetchers", default: false },
    pins: { type: "string", description: "a pins file (niv or npins sources.json) besides those found next to --file (nix/sources.json, npins/sources.json)", multiple: true },
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const top = Number(values.top);
    if (!Number.isInteger(top) || top < 0) throw new InputError(`--top must be a non-negative integer, got '${values.top}'`);
    const t = targetFrom(values);
    const outDir = path.resolve(values.out);
    const noExport = values["no-export"] === true;

    const t0 = Date.now();
    const secs = () => `${((Date.now() - t0) / 1000).toFixed(2)} s`;
    log(STEP, `evaluating ${describeTarget(t)} and reading its derivation graph`);
    const { graph, root, nixVersion } = await loadDerivationGraph(t, STEP);
    log(STEP, `${graph.drvs.size} derivations read at ${secs()}`);
    const s = collectSources(graph, root);
    const want = expectedSources(graph, s);
    // sandbox: false only leaves the host's sandbox setting as it was (no --option sandbox).
    const nixArgs = nixOptionArgs({ sandbox: false, offline: values.offline === true });
    log(STEP, `${s.fods.length} fixed-output derivations, ${s.evalPaths.size} evaluation-time paths (graph walked at ${secs()})`);

    if (!noExport && s.fods.length) {
      log(STEP, `realising ${s.fods.length} fixed-output derivation(s)`);
      try {
        const realise = ["--realise", ...s.fods.map((d: Derivation) => d.drvPath), ...nixArgs];
        await run("nix-store", realise, { label: "nix-store -r", streamStderr: true });
      } catch (e) {
        // The command line lists every source: the reason names the one that failed instead.
        throw explainBuildFailure(e, `the ${s.fods.length} fixed-output source(s)`);
      }
    }
    // Inputs only the evaluation uses: the graph cannot name them (docs/closure.md "Pinned inputs").
    let pinned: PinnedInput[] = [];
    let pinsFiles: string[] = [];
    if (t.flake === undefined) {
      const checkout = checkoutOf(t.file);
      pinsFiles = pinsFilesOf(t.file, values.pins ?? []);
      pinned = await resolvePinnedInputs({ file: path.resolve(t.file), attribute: t.attribute, pinsFiles, storeDir: graph.storeDir, known: new Set(want.keys()), checkout, nixArgs });
      pinsFiles = pinsFiles.map((f) => relativeTo(checkout, f));
    } else {
      const dir = localFlakeDir(t.flake);
      const checkout = dir ? checkoutOf(dir) : process.cwd();
      const r = await resolveFlakeInputs({ flake: t.flake, storeDir: graph.storeDir, known: new Set(want.keys()), checkout, nixArgs });
      pinned = r.inputs;
      pinsFiles = r.lockFile ? [relativeTo(checkout, r.lockFile)] : [];
    }
    log(STEP, `${pinned.length} pinned input(s) only the evaluation uses${pinsFiles.length ? ` (pins: ${pinsFiles.join(", ")})` : ""} at ${secs()}`);
    const paths = [...new Set([...want.keys(), ...pinned.map((x) => x.path)])].sort();
    const sizes = narSizes(paths);
    log(STEP, `sizes of ${paths.length} paths at ${secs()}`);
    const manifest = buildManifest(t, graph, s, sizes, nixVersion, pinned, pinsFiles);

    fs.mkdirSync(outDir, { recursive: true });
    // Graphviz draws while the export runs (its files are written after the closure, as before).
    const depGraph = dependencyDot(manifest, top);
    const drawing = drawGraph(depGraph.dot);
    const closureFile = path.join(outDir, "source-export.closure");
    let closureSha256: string | null = null;
    if (!noExport) {
      log(STEP, `exporting ${paths.length} path(s) (${human(manifest.bytes)}) to ${closureFile}`);
      closureSha256 = await produceAtomic(closureFile, (tmp) => exportTo(tmp, paths, closureFile, manifest.bytes));
    } else if (fs.existsSync(closureFile)) {
      // An older export next to this manifest would look like the closure it describes.
      log(STEP, `removing ${closureFile} from an earlier run: --no-export writes no closure`);
      fs.rmSync(closureFile);
    }
    const manifestFile = path.join(outDir, "manifest.json");
    const reportFile = path.join(outDir, "report.md");
    writeFileAtomic(manifestFile, manifestJson(manifest));
    writeFileAtomic(reportFile, renderReport(manifest, top));
    const drawn = await drawing;
    if ("missing" in drawn) log(STEP, `report.html without its graph: ${drawn.missing}`);
    const htmlFile = path.join(outDir, "report.html");
    writeFileAtomic(htmlFile, renderHtmlReport(manifest, top, "svg" in drawn ? { ...drawn, shown: depGraph.shown, of: depGraph.of } : drawn));
    log(STEP, `manifest and report written at ${secs()}`);
    return {
      closureFile: noExport ? null : closureFile,
      closureSha256,
      sources: manifest.sources.length,
      evalPaths: manifest.evalPaths.length,
      bytes: manifest.bytes,
      manifest: manifestFile,
      report: reportFile,
      reportHtml: htmlFile,
    };
  },
};
