// BootTest: `supply-chain boot-test`, QEMU boots the image and the probes run against it.
import * as pulumi from "@pulumi/pulumi";
import { Policy } from "./config";
import { applyPolicy } from "./policy";
import { parseStepJson, stepCommand } from "./step-command";
import { BootTestJson } from "./types";

export interface BootTestArgs {
  image: pulumi.Input<string>;
  /** Content address of the image (re-boot only when it changes) and of the probe spec. */
  imageDigest: pulumi.Input<string>;
  probes: pulumi.Input<string>;
  probesDigest: pulumi.Input<string>;
  timeout: number;
  memory: number;
  policy: Policy;
  /** serial.log, qemu.pid, result.json: in the stack's work dir, not a new temp dir per boot. */
  outDir: pulumi.Input<string>;
}

export class BootTest extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<BootTestJson>;
  readonly passed: pulumi.Output<boolean>;
  readonly accel: pulumi.Output<string>;
  /** Seconds from QEMU's start to the first passing probe; null when none passed. */
  readonly bootSeconds: pulumi.Output<number | null>;
  readonly probes: pulumi.Output<BootTestJson["probes"]>;
  readonly serialLog: pulumi.Output<string>;

  constructor(name: string, args: BootTestArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:BootTest", name, {}, opts);
    const cmd = stepCommand(
      `${name}-boot-test`,
      {
        step: "boot-test",
        args: ["--image", args.image, "--probes", args.probes, "--timeout", String(args.timeout), "--memory", String(args.memory), "--out", args.outDir],
        triggers: [args.imageDigest, args.probesDigest],
        allowCheckFailure: args.policy === "warn",
      },
      { parent: this },
    );
    const r = parseStepJson<BootTestJson>("boot-test", cmd.stdout);
    this.result = r;
    const why = r.apply((j) => {
      const failed = j.probes.filter((p) => !p.ok);
      return `boot test failed: ${failed.map((p) => `${p.name} (${p.detail})`).join("; ") || "the image did not boot"}; serial log ${j.serialLog}`;
    });
    this.passed = applyPolicy(args.policy, r.apply((j) => j.passed === true), why, this);
    this.accel = r.accel;
    this.bootSeconds = r.bootSeconds;
    this.probes = r.probes;
    this.serialLog = r.serialLog;
    this.registerOutputs({ passed: this.passed, accel: this.accel, bootSeconds: this.bootSeconds, probes: this.probes, serialLog: this.serialLog });
  }
}
