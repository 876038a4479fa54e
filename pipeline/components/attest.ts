// Attest: `supply-chain attest`, the signed evidence that leaves the machine — SLSA provenance and
// a verification summary (in-toto in DSSE, Ed25519) and a CycloneDX SBOM of the sources.
// The signing key is a Pulumi secret: it reaches the step only through its environment
// (`--key-env`), marked secret in the state, never on the command line or in a file.
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { declareOutputs, OutputsOf } from "./outputs";
import { parseStepJson, stepCommand } from "./step-command";
import type { AttestResult } from "../steps/attest";
import type { BootTestResult } from "../steps/boot-test";
import type { BuildResult } from "../steps/build";
import type { VerifyResult } from "../steps/verify";

/** The environment variable the key travels in (`attest --key-env`). */
export const SIGNING_KEY_ENV = "SC_SIGNING_KEY";

export interface AttestArgs {
  build: pulumi.Input<BuildResult>;
  /** The closure step's --out directory (manifest.json, the closure file). */
  closureDir: pulumi.Input<string>;
  closureSha256: pulumi.Input<string>;
  verify: pulumi.Input<VerifyResult>;
  /** The rebuild's rebuild.json: interfaces seen inside, the rebuilder image. */
  rebuildResultFile: pulumi.Input<string>;
  /** A trigger: a new rebuild run is new evidence to sign (Rebuild.runId). */
  rebuildRunId: pulumi.Input<string>;
  bootTest?: pulumi.Input<BootTestResult>;
  signingKey: pulumi.Input<string>;
  builderId?: string;
  outDir: pulumi.Input<string>;
}

/** What of verify's JSON the summary records: the verdict and the paths that differ, not the file lists. */
function verdictOnly(v: VerifyResult) {
  return { ...v, mismatched: v.mismatched.map((m) => ({ path: m.path })) };
}

/** The step's JSON, with its key's id under the name the component has always given it (`keyId`). */
function withKeyId(j: AttestResult) {
  return { ...j, keyId: j.keyid };
}

const OUTPUTS = ["provenance", "verification", "sbom", "sbomSha256", "keyId", "subjects"] as const;

export interface Attest extends OutputsOf<ReturnType<typeof withKeyId>, (typeof OUTPUTS)[number]> {}
export class Attest extends pulumi.ComponentResource {
  constructor(name: string, args: AttestArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Attest", name, {}, opts);
    // Relative to the project (where the step runs), like outDir: the command names no checkout path.
    const inputs = pulumi.output(args.outDir).apply((o) => path.join(o, "inputs"));
    const files = pulumi.all([inputs, args.build, args.verify, args.bootTest]).apply(([dir, build, verify, boot]) => ({
      [path.join(dir, "build.json")]: JSON.stringify(build),
      [path.join(dir, "verify.json")]: JSON.stringify(verdictOnly(verify)),
      ...(boot ? { [path.join(dir, "boot-test.json")]: JSON.stringify(boot) } : {}),
    }));
    const cmdArgs = pulumi.all([inputs, args.closureDir, args.rebuildResultFile, args.outDir, args.bootTest]).apply(([dir, closure, rebuild, out, boot]) => [
      "--build",
      path.join(dir, "build.json"),
      "--closure",
      closure,
      "--verify",
      path.join(dir, "verify.json"),
      ...(boot ? ["--boot-test", path.join(dir, "boot-test.json")] : []),
      "--rebuild",
      rebuild,
      "--key-env",
      SIGNING_KEY_ENV,
      "--out",
      out,
      ...(args.builderId ? ["--builder-id", args.builderId] : []),
    ]);
    const build = pulumi.output(args.build);
    const cmd = stepCommand(
      `${name}-attest`,
      {
        step: "attest",
        args: cmdArgs,
        inputFiles: files,
        secretEnvironment: { [SIGNING_KEY_ENV]: args.signingKey },
        triggers: [build.narHash, args.closureSha256, args.rebuildRunId, pulumi.output(args.bootTest).apply((b) => b?.passed ?? null)],
      },
      { parent: this },
    );
    declareOutputs(this, parseStepJson<AttestResult>("attest", cmd.stdout).apply(withKeyId), OUTPUTS);
  }
}
