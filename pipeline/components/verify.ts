// Verify: `supply-chain verify`, the original build against the isolated rebuild, path by path.
import * as pulumi from "@pulumi/pulumi";
import { Policy } from "./config";
import { applyPolicy } from "./policy";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, stepCommand, TargetArgs } from "./step-command";
import type { VerifyResult } from "../steps/verify";

export interface VerifyArgs extends TargetArgs {
  /** The rebuild step's result file (`--rebuilt`). */
  rebuildResultFile: pulumi.Input<string>;
  /** The triggers: the original's NAR hash (a content address) and the rebuild's run id (Rebuild.runId). */
  buildDigest: pulumi.Input<string>;
  rebuildRunId: pulumi.Input<string>;
  policy: Policy;
}

/** The step's JSON and the share of the store paths that were reproduced. */
function withRatio(j: VerifyResult) {
  return { ...j, reproducibleRatio: j.checked ? j.matched / j.checked : 0 };
}

const OUTPUTS = ["reproducible", "checked", "matched", "reproducibleRatio", "mismatched", "report"] as const;

/** `reproducible`: the verdict after the policy (docs/pulumi.md). */
export interface Verify extends OutputsOf<ReturnType<typeof withRatio>, (typeof OUTPUTS)[number]> {}
export class Verify extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<VerifyResult>;

  constructor(name: string, args: VerifyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Verify", name, {}, opts);
    const cmd = stepCommand(
      `${name}-verify`,
      {
        step: "verify",
        args: ["--file", args.file, "--attribute", args.attribute, "--rebuilt", args.rebuildResultFile],
        triggers: [args.drvPath, args.buildDigest, args.rebuildRunId],
        allowCheckFailure: args.policy === "warn",
      },
      { parent: this },
    );
    const r = parseStepJson<VerifyResult>("verify", cmd.stdout);
    this.result = r;
    const ok = r.apply((j) => j.reproducible === true);
    const why = r.apply(
      (j) =>
        `not reproducible: ${j.mismatched.length} of ${j.checked} store paths differ (${j.mismatched
          .slice(0, 3)
          .map((m) => m.path)
          .join(", ")}); report ${j.report}`,
    );
    const reproducible = applyPolicy(args.policy, ok, why, this);
    declareOutputs(this, pulumi.all([r, reproducible]).apply(([j, v]) => withRatio({ ...j, reproducible: v })), OUTPUTS);
  }
}
