// Closure: `supply-chain closure`, the exported source closure of the target; and, when the target's
// .drv is not the one the last closure was exported for, what the change does to its sources
// (`supply-chain diff` against that closure's manifest), printed under this resource in a preview.
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import * as command from "@pulumi/command";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, PROJECT_DIR, stepCommand, stepShell, TargetArgs } from "./step-command";
import type { ClosureResult } from "../steps/closure";
import type { DiffResult } from "../steps/diff";

/** The closure is a function of the derivation graph: its .drv path is the trigger. */
export interface ClosureArgs extends TargetArgs {
  outDir: pulumi.Input<string>;
  top?: pulumi.Input<number>;
  /** Substituters off (`--offline`) for the realisation of the sources. */
  offline?: boolean;
}

/** The step's JSON with the closure it exported: only `--no-export` (never passed here) leaves none, and the rebuild needs it. */
function exported(j: ClosureResult) {
  const field = (f: "closureFile" | "closureSha256"): string => {
    if (!j[f]) throw new Error(`the closure step printed no ${f}: was the export skipped?`);
    return j[f]!;
  };
  return { ...j, closureFile: field("closureFile"), closureSha256: field("closureSha256") };
}

const OUTPUTS = ["closureFile", "closureSha256", "sources", "evalPaths", "bytes", "manifest", "report", "reportHtml"] as const;

export interface Closure extends OutputsOf<ReturnType<typeof exported>, (typeof OUTPUTS)[number]> {
  /** What the change does to the sources against the last exported closure (null: nothing to compare). */
  readonly sourceDiff: pulumi.Output<DiffResult | null>;
}
export class Closure extends pulumi.ComponentResource {
  constructor(name: string, args: ClosureArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Closure", name, {}, opts);
    const cmdArgs = pulumi
      .all([args.file, args.attribute, args.outDir, args.top])
      .apply(([f, a, o, t]) => ["--file", f, "--attribute", a, "--out", o, ...(t !== undefined ? ["--top", String(t)] : []), ...(args.offline ? ["--offline"] : [])]);
    const cmd = stepCommand(`${name}-closure`, { step: "closure", args: cmdArgs, triggers: [args.drvPath] }, { parent: this });
    const sourceDiff = sourceDiffOf(this, name, args);
    declareOutputs(this, parseStepJson<ClosureResult>("closure", cmd.stdout).apply(exported), OUTPUTS, { sourceDiff });
  }
}

/**
 * null when there is no earlier closure (the first `up`) or it was exported for this very .drv
 * (same graph, same sources); else the diff, its lines logged on the Closure resource. The head's
 * sources come from `closure --no-export`: an evaluation, nothing fetched or exported.
 */
function sourceDiffOf(closure: Closure, name: string, args: ClosureArgs): pulumi.Output<DiffResult | null> {
  return pulumi.all([args.file, args.attribute, args.outDir, args.drvPath]).apply(([f, a, o, drv]): pulumi.Output<DiffResult | null> => {
    const base = path.join(o, "manifest.json");
    let baseDrv: unknown;
    try {
      baseDrv = JSON.parse(fs.readFileSync(path.resolve(PROJECT_DIR, base), "utf8")).target?.drvPath;
    } catch {
      return pulumi.output(null);
    }
    if (baseDrv === drv) return pulumi.output(null);
    const head = `${o}.preview`;
    const analyse = stepShell("closure", ["--file", f, "--attribute", a, "--out", head, "--no-export", ...(args.offline ? ["--offline"] : [])]);
    // It informs a review: a failure (an older manifest, a concurrent preview holding the lock) is a
    // warning, never a failed preview or update.
    const run = command.local.runOutput({ command: `{ ${analyse} >/dev/null && ${stepShell("diff", ["--base", base, "--head", head])}; } || echo null` }, { parent: closure });
    return run.stdout.apply((s): DiffResult | null => {
      let d: DiffResult | null = null;
      try {
        d = JSON.parse(s);
      } catch {}
      if (!d) {
        pulumi.log.warn(`${name}: what the change does to the sources could not be computed (closure --no-export or supply-chain diff against ${base} failed; its messages are above)`, closure);
        return null;
      }
      for (const line of d.lines) pulumi.log.info(`${name}: ${line}`, closure);
      return d;
    });
  });
}
