// Build: `supply-chain build`, re-run only when the target's .drv path changes.
import * as pulumi from "@pulumi/pulumi";
import { declareOutputs, OutputsOf } from "./outputs";
import { BuildPlacement, parseStepJson, placementArgs, stepCommand, TargetArgs } from "./step-command";
import type { BuildResult } from "../steps/build";

export interface BuildArgs extends TargetArgs, BuildPlacement {
  /** Substituters off (`--offline`): an offline stack's build must not try the network. */
  offline?: boolean;
}

/** The step's JSON and the image it names. */
function withImage(j: BuildResult) {
  return {
    ...j,
    /** The bootable image: the ISO / artifact when the step names one, else the output path. */
    image: j.artifact ?? j.outPath,
    /** Content address of the image: the artifact's sha256 when there is one, else the NAR hash. */
    imageDigest: j.artifactSha256 ? `sha256:${j.artifactSha256}` : j.narHash,
  };
}

const OUTPUTS = ["drvPath", "outPath", "narHash", "narSize", "image", "imageDigest"] as const;

export interface Build extends OutputsOf<ReturnType<typeof withImage>, (typeof OUTPUTS)[number]> {}
export class Build extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<BuildResult>;

  constructor(name: string, args: BuildArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Build", name, {}, opts);
    const cmd = stepCommand(
      `${name}-build`,
      { step: "build", args: ["--file", args.file, "--attribute", args.attribute, ...(args.offline ? ["--offline"] : []), ...placementArgs(args)], triggers: [args.drvPath] },
      { parent: this },
    );
    const r = pulumi.all([parseStepJson<BuildResult>("build", cmd.stdout), args.drvPath]).apply(([j, expected]) => {
      // The drv the preview showed must be the drv that was built.
      if (j.drvPath !== expected) throw new Error(`supply-chain build built ${j.drvPath}, but the program evaluated ${expected}`);
      return j;
    });
    this.result = r;
    declareOutputs(this, r.apply(withImage), OUTPUTS);
  }
}
