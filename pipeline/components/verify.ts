// Verify: `supply-chain verify`, the original build against the isolated rebuild, path by path.
import * as pulumi from "@pulumi/pulumi";
import { Policy } from "./config";
import { applyPolicy } from "./policy";
import { parseStepJson, stepCommand } from "./step-command";
import { VerifyJson } from "./types";

export interface VerifyArgs {
  file: pulumi.Input<string>;
  attribute: pulumi.Input<string>;
  drvPath: pulumi.Input<string>;
  /** The rebuild step's result file (`--rebuilt`). */
  rebuildResultFile: pulumi.Input<string>;
  /** The triggers: the original's NAR hash (a content address) and the rebuild's run id (Rebuild.runId). */
  buildDigest: pulumi.Input<string>;
  rebuildRunId: pulumi.Input<string>;
  policy: Policy;
}

export class Verify extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<VerifyJson>;
  readonly reproducible: pulumi.Output<boolean>;
  readonly checked: pulumi.Output<number>;
  readonly matched: pulumi.Output<number>;
  readonly reproducibleRatio: pulumi.Output<number>;
  readonly mismatched: pulumi.Output<VerifyJson["mismatched"]>;
  readonly report: pulumi.Output<string>;

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
    const r = parseStepJson<VerifyJson>("verify", cmd.stdout);
    this.result = r;
    const ok = r.apply((j) => j.reproducible === true);
    const why = r.apply(
      (j) =>
        `not reproducible: ${j.mismatched.length} of ${j.checked} store paths differ (${j.mismatched
          .slice(0, 3)
          .map((m) => m.path)
          .join(", ")}); report ${j.report}`,
    );
    this.reproducible = applyPolicy(args.policy, ok, why, this);
    this.checked = r.checked;
    this.matched = r.matched;
    this.reproducibleRatio = r.apply((j) => (j.checked ? j.matched / j.checked : 0));
    this.mismatched = r.mismatched;
    this.report = r.report;
    this.registerOutputs({
      reproducible: this.reproducible,
      checked: this.checked,
      matched: this.matched,
      reproducibleRatio: this.reproducibleRatio,
      mismatched: this.mismatched,
      report: this.report,
    });
  }
}
