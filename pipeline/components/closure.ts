// Closure: `supply-chain closure`, the exported source closure of the target.
import * as pulumi from "@pulumi/pulumi";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, stepCommand, TargetArgs } from "./step-command";
import type { ClosureResult } from "../steps/closure";

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

const OUTPUTS = ["closureFile", "closureSha256", "sources", "evalPaths", "bytes", "manifest", "report"] as const;

export interface Closure extends OutputsOf<ReturnType<typeof exported>, (typeof OUTPUTS)[number]> {}
export class Closure extends pulumi.ComponentResource {
  constructor(name: string, args: ClosureArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Closure", name, {}, opts);
    const cmdArgs = pulumi
      .all([args.file, args.attribute, args.outDir, args.top])
      .apply(([f, a, o, t]) => ["--file", f, "--attribute", a, "--out", o, ...(t !== undefined ? ["--top", String(t)] : []), ...(args.offline ? ["--offline"] : [])]);
    const cmd = stepCommand(`${name}-closure`, { step: "closure", args: cmdArgs, triggers: [args.drvPath] }, { parent: this });
    declareOutputs(this, parseStepJson<ClosureResult>("closure", cmd.stdout).apply(exported), OUTPUTS);
  }
}
