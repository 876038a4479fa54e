// Attest: `supply-chain attest`, the signed evidence that leaves the machine — SLSA provenance and
// a verification summary (in-toto in DSSE, Ed25519) and a CycloneDX SBOM of the sources.
// The signing key is a Pulumi secret: it reaches the step only through its environment
// (`--key-env`), marked secret in the state, never on the command line or in a file.
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { parseStepJson, stepCommand } from "./step-command";
import { BootTestJson, BuildJson, VerifyJson } from "./types";
import type { AttestResult } from "../steps/attest";

/** The environment variable the key travels in (`attest --key-env`). */
export const SIGNING_KEY_ENV = "SC_SIGNING_KEY";

export interface AttestArgs {
  build: pulumi.Input<BuildJson>;
  /** The closure step's --out directory (manifest.json, the closure file). */
  closureDir: pulumi.Input<string>;
  closureSha256: pulumi.Input<string>;
  verify: pulumi.Input<VerifyJson>;
  /** The rebuild's rebuild.json: interfaces seen inside, the rebuilder image. */
  rebuilt: pulumi.Input<string>;
  rebuildDigest: pulumi.Input<string>;
  bootTest?: pulumi.Input<BootTestJson>;
  signingKey: pulumi.Input<string>;
  builderId?: string;
  outDir: pulumi.Input<string>;
}

/** What of verify's JSON the summary records: the verdict and the paths that differ, not the file lists. */
function verdictOnly(v: VerifyJson) {
  return { ...v, mismatched: v.mismatched.map((m) => ({ path: m.path })) };
}

export class Attest extends pulumi.ComponentResource {
  readonly provenance: pulumi.Output<string>;
  readonly verification: pulumi.Output<string>;
  readonly sbom: pulumi.Output<string>;
  readonly sbomSha256: pulumi.Output<string>;
  readonly keyId: pulumi.Output<string>;
  readonly subjects: pulumi.Output<AttestResult["subjects"]>;

  constructor(name: string, args: AttestArgs, opts?: pulumi.ComponentResourceOptions) {
    super("secure-supply-chain:components:Attest", name, {}, opts);
    // Relative to the project (where the step runs), like outDir: the command names no checkout path.
    const inputs = pulumi.output(args.outDir).apply((o) => path.join(o, "inputs"));
    const files = pulumi.all([inputs, args.build, args.verify, args.bootTest]).apply(([dir, build, verify, boot]) => ({
      [path.join(dir, "build.json")]: JSON.stringify(build),
      [path.join(dir, "verify.json")]: JSON.stringify(verdictOnly(verify)),
      ...(boot ? { [path.join(dir, "boot-test.json")]: JSON.stringify(boot) } : {}),
    }));
    const cmdArgs = pulumi.all([inputs, args.closureDir, args.rebuilt, args.outDir, args.bootTest]).apply(([dir, closure, rebuilt, out, boot]) => [
      "--build",
      path.join(dir, "build.json"),
      "--closure",
      closure,
      "--verify",
      path.join(dir, "verify.json"),
      ...(boot ? ["--boot-test", path.join(dir, "boot-test.json")] : []),
      "--rebuild",
      rebuilt,
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
        triggers: [build.narHash, args.closureSha256, args.rebuildDigest, pulumi.output(args.bootTest).apply((b) => b?.passed ?? null)],
      },
      { parent: this },
    );
    const r = parseStepJson<AttestResult>("attest", cmd.stdout);
    this.provenance = r.provenance;
    this.verification = r.verification;
    this.sbom = r.sbom;
    this.sbomSha256 = r.sbomSha256;
    this.keyId = r.keyid;
    this.subjects = r.subjects;
    this.registerOutputs({ provenance: this.provenance, verification: this.verification, sbom: this.sbom, sbomSha256: this.sbomSha256, keyId: this.keyId, subjects: this.subjects });
  }
}
