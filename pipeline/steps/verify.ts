// `supply-chain verify`: is the offline rebuild bit-for-bit the original? Path by path, the NAR hash
// of every rebuilt non-fixed-output path against the local store's (building the original with the
// sandbox on when it is not there); for each mismatch, the files that differ (both NARs unpacked and
// compared; diffoscope adds a detailed report when installed). Writes <out>/verify.md with the
// r13y-style "X of Y paths reproducible".
import * as fs from "node:fs";
import * as path from "node:path";
import { spawn } from "node:child_process";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { findTool, run } from "../lib/proc";
import { writeFileAtomic } from "../lib/files";
import { invalidPaths, loadDerivationGraph, narHashes, realise, TARGET_OPTIONS, targetFrom, TargetOptions } from "../lib/nix";
import { ByteReader } from "../lib/nar";
import { diffListings, FileDifference, listNar, listNarFile, narHashOfFile } from "../lib/nar-diff";
import { expectedOutputs, REBUILD_RESULT, RebuildResult } from "../lib/offline-build";

const STEP = "verify";

export interface Mismatch {
  path: string;
  original: string;
  rebuilt: string;
  files: string[];
  changes: FileDifference[];
  diffoscope?: string;
}

export interface VerifyResult {
  reproducible: boolean;
  checked: number;
  matched: number;
  mismatched: Mismatch[];
  report: string;
  drvPath: string;
  outPath: string;
  isolation: string;
}

/** Reads the rebuild's JSON and refuses anything that is not a complete rebuild. */
export async function loadRebuild(file: string): Promise<RebuildResult> {
  let r: RebuildResult;
  try {
    r = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e: any) {
    throw new InputError(`cannot read the rebuild result ${file}: ${e.message}`);
  }
  if (!r || typeof r.out !== "string" || !Array.isArray(r.paths) || typeof r.runId !== "string") {
    throw new InputError(`${file} is not the JSON of a completed \`supply-chain rebuild\` (no out/paths/runId)`);
  }
  const bad = r.paths.findIndex((p) => !p || typeof p.path !== "string" || typeof p.narHash !== "string" || typeof p.nar !== "string");
  if (bad >= 0) throw new InputError(`${file}: paths[${bad}] is ${JSON.stringify(r.paths[bad])}, not {path, narHash, nar} of a rebuilt store path`);
  const marker = path.join(r.out, REBUILD_RESULT);
  let done: RebuildResult | undefined;
  try {
    done = JSON.parse(fs.readFileSync(marker, "utf8"));
  } catch {
    done = undefined;
  }
  if (!done || done.runId !== r.runId) {
    throw new InputError(`rebuild in ${r.out} is incomplete or was superseded (${marker} ${done ? `belongs to run ${done.runId}, not ${r.runId}` : "is missing"}): re-run the rebuild`);
  }
  for (const p of r.paths) {
    if (!fs.existsSync(p.nar)) throw new InputError(`rebuilt NAR ${p.nar} of ${p.path} is missing: re-run the rebuild`);
    const h = await narHashOfFile(p.nar);
    if (h !== p.narHash) throw new InputError(`rebuilt NAR ${p.nar} has hash ${h}, the rebuild recorded ${p.narHash}: the rebuild directory was modified`);
  }
  return r;
}

async function localNarListing(storePath: string) {
  const child = spawn("nix-store", ["--dump", storePath], { stdio: ["ignore", "pipe", "inherit"] });
  // Listen before parsing: 'close' may come while the listing is still being built.
  const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
  child.on("error", () => undefined); // nix-store missing: the parse fails on the empty stream
  let listing: Awaited<ReturnType<typeof listNar>>;
  try {
    listing = await listNar(new ByteReader(child.stdout as AsyncIterable<Buffer>));
  } catch (e: any) {
    child.kill("SIGKILL");
    await closed;
    throw new Error(`cannot list the original ${storePath} (nix-store --dump): ${e.message}`);
  }
  const code = await closed;
  if (code !== 0) throw new Error(`nix-store --dump ${storePath} failed (exit ${code})`);
  return listing;
}

async function diffoscope(original: string, nar: string, work: string): Promise<string | undefined> {
  // Optional: without diffoscope the file-level diff above is the report.
  try {
    findTool("diffoscope");
  } catch {
    return undefined;
  }
  const unpacked = path.join(work, "rebuilt");
  fs.rmSync(unpacked, { recursive: true, force: true });
  await run("sh", ["-c", 'nix-store --restore "$1" < "$2"', "sh", unpacked, nar], { streamStderr: false });
  const report = path.join(work, "diffoscope.txt");
  const tmp = `${report}.tmp`;
  // Store paths always differ in mtime/mode from an unpacked NAR: compare contents only.
  const args = ["--text", tmp, "--no-progress", "--exclude-directory-metadata", "recursive", original, unpacked];
  const r = await run("diffoscope", args, { allowFailure: true, streamStderr: false });
  fs.rmSync(unpacked, { recursive: true, force: true });
  if (r.code !== 0 && r.code !== 1) {
    log(STEP, `diffoscope failed (exit ${r.code}), no detailed report: ${r.stderr.trim().split("\n").pop()}`);
    fs.rmSync(tmp, { force: true });
    return undefined;
  }
  fs.renameSync(tmp, report);
  return report;
}

function markdown(r: Omit<VerifyResult, "report">, rebuilt: RebuildResult): string {
  const lines = [
    `# Reproducibility of ${r.outPath}`,
    "",
    `**${r.matched} of ${r.checked} paths reproducible** (rebuilt offline with ${rebuilt.isolation}${rebuilt.image ? ` image ${rebuilt.image}` : ""}; network inside: ${rebuilt.network.interfaces.join(", ")}).`,
    "",
    `Derivation: \`${r.drvPath}\``,
    "",
  ];
  if (r.mismatched.length) {
    lines.push("## Not reproducible", "");
    for (const m of r.mismatched) {
      lines.push(`- \`${m.path}\`: original ${m.original}, rebuild ${m.rebuilt}`);
      for (const c of m.changes.slice(0, 50)) lines.push(`  - \`${c.file}\` (${c.change})`);
      if (m.changes.length > 50) lines.push(`  - ... ${m.changes.length - 50} more`);
      if (m.diffoscope) lines.push(`  - diffoscope: ${m.diffoscope}`);
    }
    lines.push("");
  }
  return lines.join("\n") + "\n";
}

/** `target`: the target options (or a NixTarget), checked after the rebuild's JSON, which is named first when both are bad. */
export async function verify(target: TargetOptions, rebuiltFile: string): Promise<VerifyResult> {
  const rebuilt = await loadRebuild(rebuiltFile);
  const t = targetFrom(target);
  const { graph, root: drvPath } = await loadDerivationGraph(t, STEP);
  if (drvPath !== rebuilt.drvPath) {
    throw new InputError(`the rebuild in ${rebuilt.out} is of ${rebuilt.drvPath}, but ${t.flake ?? `${t.attribute} of ${t.file}`} is ${drvPath}`);
  }
  const expected = expectedOutputs(graph);
  const covered = new Set(rebuilt.paths.map((p) => p.path));
  const uncovered = [...expected].filter((p) => !covered.has(p));
  if (uncovered.length) throw new InputError(`the rebuild in ${rebuilt.out} lacks ${uncovered.length} built path(s), e.g. ${uncovered[0]}`);

  // The original: build it here, sandboxed, if the local store does not have it yet.
  const missingLocal = await invalidPaths([...expected]);
  if (missingLocal.length) {
    log(STEP, `${missingLocal.length} original path(s) not in the local store: building ${drvPath} with the sandbox on`);
    await realise(drvPath, { sandbox: true, offline: true, label: STEP });
  }

  const mismatched: Mismatch[] = [];
  // The store's recorded NAR hashes of the originals, all in one query: at a real image's thousands of paths, a process per path was most of verify's time.
  const originals = await narHashes(rebuilt.paths.map((p) => p.path));
  for (const [i, p] of rebuilt.paths.entries()) {
    const local = originals[i];
    if (local === p.narHash) continue;
    log(STEP, `${p.path} differs (original ${local}, rebuild ${p.narHash}); comparing files`);
    const changes = diffListings(await localNarListing(p.path), await listNarFile(p.nar));
    const m: Mismatch = { path: p.path, original: local, rebuilt: p.narHash, files: changes.map((c) => c.file), changes };
    const work = path.join(rebuilt.out, "diffoscope", path.basename(p.path));
    fs.mkdirSync(work, { recursive: true });
    const d = await diffoscope(p.path, p.nar, work);
    if (d) m.diffoscope = d;
    mismatched.push(m);
  }
  const checked = rebuilt.paths.length;
  const partial = {
    reproducible: mismatched.length === 0,
    checked,
    matched: checked - mismatched.length,
    mismatched,
    drvPath,
    outPath: rebuilt.outPath,
    isolation: rebuilt.isolation,
  };
  const report = path.join(rebuilt.out, "verify.md");
  writeFileAtomic(report, markdown(partial, rebuilt));
  log(STEP, `${partial.matched} of ${checked} paths reproducible (report ${report})`);
  return { ...partial, report };
}

export const step: StepDefinition<VerifyResult> = {
  name: "verify",
  summary: "Compare an offline rebuild with the original build, path by path and file by file",
  options: {
    ...TARGET_OPTIONS,
    rebuilt: { type: "string", description: "the rebuild step's JSON (e.g. <out>/rebuild.json)", required: true },
  },
  async run({ values }) {
    const r = await verify(values, values.rebuilt);
    if (!r.reproducible) {
      const first = r.mismatched[0];
      throw new CheckFailed(
        `not reproducible: ${r.mismatched.length} of ${r.checked} paths differ, e.g. ${first.path} (${first.files.slice(0, 3).join(", ") || "no file listed"})`,
        r,
      );
    }
    return r;
  },
};
