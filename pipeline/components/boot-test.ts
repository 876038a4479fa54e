// BootTest: `supply-chain boot-test`, QEMU boots the image and the probes run against it.
import * as pulumi from "@pulumi/pulumi";
import { Policy } from "./config";
import { applyPolicy } from "./policy";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, stepCommand } from "./step-command";
import type { BootTestResult } from "../steps/boot-test";

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

const OUTPUTS = ["passed", "accel", "bootSeconds", "probes", "serialLog"] as const;

/** `passed`: the verdict after the policy (docs/pulumi.md). */
export interface BootTest extends OutputsOf<BootTestResult, (typeof OUTPUTS)[number]> {}
export class BootTest extends pulumi.ComponentResource {
  /** The step's whole JSON (docs/contracts.md): what Attest signs facts from. */
  readonly result: pulumi.Output<BootTestResult>;

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
    const r = parseStepJson<BootTestResult>("boot-test", cmd.stdout);
    this.result = r;
    const why = r.apply((j) => {
      const failed = j.probes.filter((p) => !p.ok);
      return `boot test failed: ${failed.map((p) => `${p.name} (${p.detail})`).join("; ") || "the image did not boot"}; serial log ${j.serialLog}`;
    });
    const passed = applyPolicy(args.policy, r.apply((j) => j.passed === true), why, this);
    declareOutputs(this, pulumi.all([r, passed]).apply(([j, v]) => ({ ...j, passed: v })), OUTPUTS);
  }
}
