// Closure: `supply-chain closure`, the exported source closure of the target.
import * as pulumi from "@pulumi/pulumi";
import { parseStepJson, stepCommand } from "./step-command";
import { ClosureJson } from "./types";

export interface ClosureArgs {
  file: pulumi.Input<string>;
  attribute: pulumi.Input<string>;
  /** The closure is a function of the derivation graph: its .drv path is the trigger. */
  drvPath: pulumi.Input<string>;
  outDir: pulumi.Input<string>;
  top?: pulumi.Input<number>;
  /** Substituters off (`--offline`) for the realisation of the sources. */
  offline?: boolean;
}

export class Closure extends pulumi.ComponentResource {
  readonly closureFile: pulumi.Output<string>;
  readonly closureSha256: pulumi.Output<string>;
  readonly sources: pulumi.Output<number>;
  readonly evalPaths: pulumi.Output<number>;
  readonly bytes: pulumi.Output<number>;
  readonly manifest: pulumi.Output<string>;
  readonly report: pulumi.Output<string>;

  constructor(name: string, args: ClosureArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Closure", name, {}, opts);
    const cmdArgs = pulumi
      .all([args.file, args.attribute, args.outDir, args.top])
      .apply(([f, a, o, t]) => ["--file", f, "--attribute", a, "--out", o, ...(t !== undefined ? ["--top", String(t)] : []), ...(args.offline ? ["--offline"] : [])]);
    const cmd = stepCommand(`${name}-closure`, { step: "closure", args: cmdArgs, triggers: [args.drvPath] }, { parent: this });
    const r = parseStepJson<ClosureJson>("closure", cmd.stdout);
    // Only `--no-export` (never passed here) leaves these null; the rebuild needs both.
    const exported = (field: "closureFile" | "closureSha256") =>
      r.apply((j) => {
        if (!j[field]) throw new Error(`the closure step printed no ${field}: was the export skipped?`);
        return j[field]!;
      });
    this.closureFile = exported("closureFile");
    this.closureSha256 = exported("closureSha256");
    this.sources = r.sources;
    this.evalPaths = r.evalPaths;
    this.bytes = r.bytes;
    this.manifest = r.manifest;
    this.report = r.report;
    this.registerOutputs({
      closureFile: this.closureFile,
      closureSha256: this.closureSha256,
      sources: this.sources,
      evalPaths: this.evalPaths,
      bytes: this.bytes,
      manifest: this.manifest,
      report: this.report,
    });
  }
}
