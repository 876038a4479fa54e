// Build: `supply-chain build`, re-run only when the target's .drv path changes.
import * as pulumi from "@pulumi/pulumi";
import { parseStepJson, stepCommand } from "./step-command";
import { BuildJson } from "./types";

export interface BuildArgs {
  file: pulumi.Input<string>;
  attribute: pulumi.Input<string>;
  /** The target's .drv path, known at preview (nix-instantiate through the `local.run` invoke). */
  drvPath: pulumi.Input<string>;
  /** Substituters off (`--offline`): an offline stack's build must not try the network. */
  offline?: boolean;
}

export class Build extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<BuildJson>;
  readonly drvPath: pulumi.Output<string>;
  readonly outPath: pulumi.Output<string>;
  readonly narHash: pulumi.Output<string>;
  readonly narSize: pulumi.Output<number>;
  /** The bootable image: the ISO / artifact when the step names one, else the output path. */
  readonly image: pulumi.Output<string>;
  /** Content address of the image: the artifact's sha256 when there is one, else the NAR hash. */
  readonly imageDigest: pulumi.Output<string>;

  constructor(name: string, args: BuildArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Build", name, {}, opts);
    const cmd = stepCommand(
      `${name}-build`,
      { step: "build", args: ["--file", args.file, "--attribute", args.attribute, ...(args.offline ? ["--offline"] : [])], triggers: [args.drvPath] },
      { parent: this },
    );
    const r = pulumi.all([parseStepJson<BuildJson>("build", cmd.stdout), args.drvPath]).apply(([j, expected]) => {
      // The drv the preview showed must be the drv that was built.
      if (j.drvPath !== expected) throw new Error(`supply-chain build built ${j.drvPath}, but the program evaluated ${expected}`);
      return j;
    });
    this.result = r;
    this.drvPath = r.drvPath;
    this.outPath = r.outPath;
    this.narHash = r.narHash;
    this.narSize = r.narSize;
    this.image = r.apply((j) => j.artifact ?? j.outPath);
    this.imageDigest = r.apply((j) => (j.artifactSha256 ? `sha256:${j.artifactSha256}` : j.narHash));
    this.registerOutputs({ drvPath: this.drvPath, outPath: this.outPath, narHash: this.narHash, narSize: this.narSize, image: this.image, imageDigest: this.imageDigest });
  }
}
