// `supply-chain rebuild`: an independent, offline rebuild of the target from the closure alone.
// Order matters: the closure's sources are re-hashed against the reviewed Nix files BEFORE anything
// is built (`nix-store --import` itself checks nothing); then, isolated (bwrap or Docker) with no
// network and a store holding none of the target's paths (empty, or only the image's own Nix), the
// closure is imported and the target built with substituters off.
// Every non-fixed-output output is dumped as a NAR into <out>/nars for `verify`.
//
// <out> is only ever complete or visibly incomplete: work happens in <out>/.staging-*, and
// <out>/rebuild.json (the completion marker, also the step's result) is removed first and written last.
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { Backend, checkBackend } from "../lib/isolation";
import { Derivation, isFixedOutput, urlsOf } from "../lib/derivation";
import { describeTarget, loadDerivationGraph, NixTarget, TARGET_OPTIONS, targetFrom } from "../lib/nix";
// Part of what runners without the CLI use (docs/rebuild-verify.md).
export { graphOfDrv } from "../lib/nix";
import { checkClosure, describeFailure, stageClosure } from "../lib/closure-check";
import { BUILDER_OPTIONS, builderRecords, buildersFrom, RemoteBuilder } from "../lib/builders";
import { checkBuilderSystem, checkNixRoot, collectStaged, expectedOutputs, isolatedTarget, machineFault, readLines, REBUILD_RESULT, rebuildRefused, RebuildResult, runRebuildScript, STAGED_CLOSURE_PREFIX } from "../lib/offline-build";
export type { RebuildResult, RebuiltPath } from "../lib/offline-build";
const STEP = "rebuild";
export type OfflineBuildOptions = NixTarget & {
  /** The file that is imported (the staged copy), and what the result names: the caller's path and its digest. */
  closure: string;
  closureOrigin?: string;
  closureSha256?: string;
  isolation: Backend;
  image?: string;
  /** bwrap only: run this root file system's Nix (scripts/nix-rootfs.sh) instead of the host's. */
  nixRoot?: string;
  out: string;
  sourceCheck: { checked: number } | null;
  /** Nix remote builders (lib/builders.ts) and the local max-jobs beside them. */
  builders?: RemoteBuilder[];
  maxJobs?: number;
};

/** Names the source a failed offline build was missing, from the build log and the derivation graph. */
export function explainFailure(logText: string, drvs: Map<string, Derivation>): string | undefined {
  const failed = [...logText.matchAll(/builder for '([^']+\.drv)' failed/g)].map((m) => m[1]);
  for (const f of failed) {
    const d = drvs.get(f);
    if (d && isFixedOutput(d)) {
      const out = Object.values(d.outputs)[0]?.path;
      return `source ${out} (${d.name}${urlsOf(d).length ? `, ${urlsOf(d).join(" ")}` : ""}) is not in the closure and cannot be fetched offline`;
    }
  }
  if (failed.length) return `builder for ${failed[0]} failed`;
  const err = logText.split("\n").find((l) => /^error:/.test(l.trim()));
  return err?.trim();
}

/** The isolated part of the rebuild (no source check): import, build, dump. */
export async function offlineBuild(o: OfflineBuildOptions): Promise<RebuildResult> {
  const started = Date.now();
  const iso = isolatedTarget(o, STEP);
  const closure = path.resolve(o.closure);
  const out = path.resolve(o.out);
  const nixRoot = o.nixRoot === undefined ? undefined : path.resolve(o.nixRoot);
  checkNixRoot(o.isolation, nixRoot);
  await checkBackend(o.isolation, o.image);

  const { graph, root: drvPath } = await loadDerivationGraph(o, STEP);
  const expected = expectedOutputs(graph);

  fs.mkdirSync(out, { recursive: true });
  // Not complete until the end: the marker goes first, leftovers of a killed run with it.
  fs.rmSync(path.join(out, REBUILD_RESULT), { force: true });
  for (const e of fs.readdirSync(out)) if (e.startsWith(".staging-")) fs.rmSync(path.join(out, e), { recursive: true, force: true });
  const runId = crypto.randomBytes(8).toString("hex");
  const work = path.join(out, `.staging-${runId}`);
  fs.mkdirSync(work);
  const stagedLog = path.join(work, "build.log");
  const finalLog = path.join(out, "build.log");

  log(STEP, `offline rebuild of ${drvPath} with ${o.isolation}${o.image ? ` (${o.image})` : ""}${nixRoot ? ` on the Nix of ${nixRoot}` : ""}: ${expected.length} outputs to build`);
  const res = await runRebuildScript({
    env: { closure, ...iso.env, drvPath, isolation: o.isolation, maxJobs: o.maxJobs },
    image: o.image,
    readOnly: [iso.dir, closure],
    work,
    systemRoot: nixRoot,
    builders: o.builders,
    logFile: stagedLog,
    owner: out,
    label: STEP,
  });
  const logText = fs.existsSync(stagedLog) ? fs.readFileSync(stagedLog, "utf8") : "";
  fs.renameSync(stagedLog, finalLog);
  if (res.code !== 0) {
    const interfaces = readLines(path.join(work, "interfaces"));
    const base = { isolation: o.isolation, image: o.image, network: { interfaces }, drvPath, log: finalLog, out };
    if (interfaces.some((i) => i !== "lo")) rebuildRefused(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside`, base);
    const why = explainFailure(logText, graph.drvs) ?? `isolated build exited with ${res.code ?? res.signal}`;
    fs.rmSync(work, { recursive: true, force: true });
    const fault = machineFault(res, logText, out, finalLog);
    if (fault) throw fault;
    rebuildRefused(`offline rebuild of ${drvPath} failed: ${why} (log ${finalLog})`, base);
  }
  return collectStaged({
    work,
    out,
    drvPath,
    graph,
    isolation: o.isolation,
    image: o.image,
    nixRoot,
    builders: builderRecords(o.builders),
    closure: o.closureOrigin ? path.resolve(o.closureOrigin) : closure,
    closureSha256: o.closureSha256 ?? null,
    sourceCheck: o.sourceCheck,
    runId,
    started,
    log: finalLog,
  });
}

export const step: StepDefinition<RebuildResult> = {
  name: "rebuild",
  summary: "Rebuild the target offline from the closure alone, isolated (bwrap or Docker), after re-checking every source",
  options: {
    ...TARGET_OPTIONS,
    closure: { type: "string", description: "source closure (from `supply-chain closure`)", required: true },
    isolation: { type: "string", description: "bwrap or docker", required: true },
    image: { type: "string", description: "docker image with nix (pin by digest, e.g. nixos/nix@sha256:...); its store must hold none of the target's paths; see pipeline/rebuilder-image" },
    out: { type: "string", description: "output directory: rebuild.json (written last), build.log, nars/", required: true },
    "closure-sha256": { type: "string", description: "refuse the closure unless its SHA-256 (hex) is this, e.g. the closure step's closureSha256" },
    "nix-root": { type: "string", description: "bwrap only: a root file system (scripts/nix-rootfs.sh) whose Nix rebuilds instead of the host's" },
    ...BUILDER_OPTIONS,
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const { closure, isolation, image, out } = values as Record<string, string>;
    const nixRoot = values["nix-root"] as string | undefined;
    if (isolation !== "bwrap" && isolation !== "docker") throw new InputError(`unknown --isolation '${isolation}' (expected bwrap or docker)`);
    if (!fs.existsSync(closure)) throw new InputError(`closure file not found: ${closure}`);
    const target = targetFrom(values);
    isolatedTarget(target, STEP); // a flake that is not local is refused before anything is staged
    checkNixRoot(isolation, nixRoot);
    const { builders, maxJobs } = buildersFrom(values);
    if (builders.length) checkBuilderSystem(isolation, nixRoot);
    await checkBackend(isolation, image);
    // A stale marker goes now. --out is created by the step's lock, which removes it again if the
    // run is refused and leaves it empty.
    fs.rmSync(path.join(out, REBUILD_RESULT), { force: true });
    for (const e of fs.readdirSync(out)) if (e.startsWith(STAGED_CLOSURE_PREFIX)) fs.rmSync(path.join(out, e), { recursive: true, force: true });

    // The bytes checked are the bytes imported: one private copy serves both (stageClosure).
    const staged = await stageClosure(closure, path.join(out, `${STAGED_CLOSURE_PREFIX}${crypto.randomBytes(8).toString("hex")}`), values["closure-sha256"]);
    try {
      log(STEP, `checking every source in ${closure} (SHA-256 ${staged.sha256}, staged as ${staged.file}) against ${describeTarget(target)} before building`);
      const check = await checkClosure({ ...target, closure: staged.file });
      if (!check.ok) {
        // Refused before anything is imported or built: the isolation is never even started.
        const reason = `refusing to build ${describeTarget(target)}: ${describeFailure(check)}`;
        throw new CheckFailed(reason, { ok: false, refused: true, built: false, reason, check, closureSha256: staged.sha256 });
      }
      log(STEP, `${check.checked} sources match the hashes the reviewed files declare`);
      return await offlineBuild({ ...target, closure: staged.file, closureOrigin: closure, closureSha256: staged.sha256, isolation, image, nixRoot, out, sourceCheck: { checked: check.checked }, builders, maxJobs });
    } finally {
      fs.rmSync(path.dirname(staged.file), { recursive: true, force: true });
    }
  },
};
